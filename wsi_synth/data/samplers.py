"""Training batches drawn from a dataset, reproducibly: the draw at step `s` depends only on (seed, s).

So resuming at step `s` needs no saved random state. Flips and 90° rotations are drawn the same way.
Arrays are read from the dataset's zarr stores (tiles decode from JPEG on read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from wsi_synth.classes import UNKNOWN
from wsi_synth.data.store import Dataset
from wsi_synth.errors import BadDatasetError


@dataclass
class TileIndex:
    """Which (source, kind, index) rows of a dataset belong to a split, by kind."""

    labelled: list[tuple[str, int]]
    unlabelled: list[tuple[str, int]]
    regions: list[tuple[str, int, str]]  # (source, index, subtype)
    #: Each labelled tile's class fractions (name → share of its pixels), in the order of `labelled`.
    fractions: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def build(cls, dataset: Dataset, split: str = "train") -> TileIndex:
        rows = [r for r in dataset.manifest() if r["split"] == split]
        labelled = [r for r in rows if r["kind"] == "labelled"]
        return cls(
            [(r["source"], int(r["index"])) for r in labelled],
            [(r["source"], int(r["index"])) for r in rows if r["kind"] == "unlabelled"],
            [(r["source"], int(r["index"]), r["subtype"]) for r in rows if r["kind"] == "regions"],
            [json.loads(r["fractions"] or "{}") for r in labelled],
        )


def class_balanced_weights(fractions: list[dict[str, float]], strength: float) -> np.ndarray:
    """Drawing probabilities of labelled tiles that favour rare classes: a tile weighs Σ_c f_c · (p_c / p_max)^−s,
    with f_c its share of class c, p_c the class's share of all labelled pixels and s the `strength` (0: every tile
    alike; 1: every class drawn about equally often). Unannotated pixels (no class) weigh as the commonest class.

    Why: an image stage learns each class from the pixels it is shown, so a class on 6 % of the tiles (normal lung in
    WSSS4LUAD) is drawn as its neighbours look; the layouts keep the real proportions, only the lessons change."""
    names = sorted({c for f in fractions for c in f if c != UNKNOWN})
    shares = np.array([[f.get(c, 0.0) for c in names] for f in fractions], np.float64).reshape(len(fractions), -1)
    totals = shares.sum(0)
    relative = totals / max(totals.max(initial=0.0), 1e-12)
    factor = np.where(relative > 0, np.maximum(relative, 1e-12) ** -strength, 0.0)
    weights = shares @ factor + np.clip(1.0 - shares.sum(1), 0.0, 1.0)
    weights = np.where(weights > 0, weights, 1.0)
    return weights / weights.sum()


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator of training step `step` (stream separates independent uses within a step)."""
    return np.random.default_rng([seed, step, stream])


def augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip and 90° rotation applied to each (H, W, ...) array."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


class TileReader:
    """Reads tiles and masks by (source, index), caching the opened zarr groups."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._groups: dict = {}

    def _group(self, source: str):
        if source not in self._groups:
            self._groups[source] = self.dataset.source_group(source)
        return self._groups[source]

    def image(self, kind: str, source: str, index: int) -> np.ndarray:
        """The (T, T, 3) uint8 tile `index` of `kind` in `source`."""
        return self._group(source)[f"{kind}/images"][index]

    def mask(self, kind: str, source: str, index: int) -> np.ndarray:
        """The (T, T) uint8 class map of tile `index` of `kind` in `source`."""
        return self._group(source)[f"{kind}/masks"][index]


def require(items: list, what: str, dataset: Dataset, hint: str) -> None:
    """Refuse to train on an empty set of `what`, with the `hint` that fixes it."""
    if not items:
        raise BadDatasetError(f"{dataset.root} has no {what} in its train split: {hint}")
