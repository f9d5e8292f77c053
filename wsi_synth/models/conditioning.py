"""How the image network takes a crop's class map, defined once for training, the denoiser, the sampler and the plan.

- per-class (the paper's): the class as the class embedding (0 = null, 1…K−1 = classes) and that class's binary mask
  as one more input channel; a crop holding several classes is evaluated once per class.
- spatial: "map or null" as the class embedding (1 = map, 0 = null) and the crop's whole class map as K−1 one-hot
  input channels (all zeros = unannotated); one evaluation renders every class of the crop.
- spatial-global: as spatial, and the crop's class fractions also as a class embedding (Σ_c f_c · E[1 + c], E[0] =
  null), which the UNet adds to its time embedding, so that every block at every resolution knows which tissue it
  draws (`models.networks.mix_class_embedding` makes a network take it). For larger image stages: on the recipe's
  small UNet it measured no different from spatial (docs/benchmarks.md, `bench_class_structure`).

Importable without numpy or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsi_synth.errors import BadArgumentError

PER_CLASS = "per-class"
SPATIAL = "spatial"
SPATIAL_GLOBAL = "spatial-global"
KINDS = (PER_CLASS, SPATIAL, SPATIAL_GLOBAL)
#: Spatial conditioning: the embedding of a crop whose map holds no class. "map" (the map embedding: training gives it
#: to every labelled tile, so an all-unknown map is the labelled sources' unannotated tissue) or "null" (the null
#: embedding, the unlabelled tiles' look, which spatial bundles from before model.json's `empty_map` learnt).
EMPTY_MAPS = ("map", "null")


@dataclass(frozen=True)
class Conditioning:
    """The image network's conditioning: `kind` (per-class or spatial), `classes` K (with unknown; spatial needs it)
    and `empty_map` (what a spatial crop without any class gets)."""

    kind: str = PER_CLASS
    classes: int = 0
    empty_map: str = "map"

    def validate(self) -> None:
        """Refuse a kind or empty-map value nothing implements, or a spatial scheme without its classes."""
        if self.kind not in KINDS:
            raise BadArgumentError(f"conditioning must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.empty_map not in EMPTY_MAPS:
            raise BadArgumentError(f"empty_map must be one of {', '.join(EMPTY_MAPS)}, got {self.empty_map!r}")
        if self.spatial and self.classes < 2:
            raise BadArgumentError(f"spatial conditioning needs the number of classes (at least 2), got {self.classes}")

    @property
    def spatial(self) -> bool:
        """One evaluation per crop with the whole class map (else one per class present)."""
        return self.kind in (SPATIAL, SPATIAL_GLOBAL)

    @property
    def global_classes(self) -> bool:
        """Whether the crop's class fractions also reach the network as a mixed class embedding."""
        return self.kind == SPATIAL_GLOBAL

    @property
    def mask_channels(self) -> int:
        """Input channels the image network takes beside the latent: K−1 one-hot classes, or one binary mask."""
        return self.classes - 1 if self.spatial else 1

    @property
    def class_embeddings(self) -> int:
        """Entries of the image network's class embedding: null and map, null and each class with unknown (mixed by
        the crop's fractions), or null and each class."""
        if self.global_classes:
            return self.classes + 1
        return 2 if self.spatial else self.classes

    @property
    def description(self) -> str:
        """How the image network takes its condition, in words (model.json's `conditioning.image`)."""
        if not self.spatial:
            return "class embedding (id 0 = null, 1..K-1 = classes) + that class's mask as an extra input channel"
        word = "label" if self.global_classes else "embedding"
        maps = (
            " + the crop's class map as K-1 one-hot input channels"
            f" (all zeros = unannotated with {word} 1, null with {word} 0)"
        )
        if self.global_classes:
            return (
                "class label 0 = null, 1 = map; with a map the class embedding is the crop's class fractions mixing "
                "embeddings 1..K (1 + class id, unknown included), embedding 0 for null" + maps
            )
        return "class embedding (0 = null, 1 = map, for every labelled tile)" + maps

    @property
    def spatial_classes(self) -> int:
        """K for a spatially conditioned denoiser (its one-hot channels are classes 1…K−1), else 0."""
        return self.classes if self.spatial else 0

    @property
    def draws_class_seams(self) -> bool:
        """Whether class maps keep the paper's unknown seams between classes: a per-class image stage renders each
        class in its own pass, so the seam is where neither pass is asked for; a spatial stage needs none."""
        return not self.spatial
