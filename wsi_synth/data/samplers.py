"""Training batches drawn from a dataset, reproducibly: the draw at step `s` depends only on (seed, s).

So resuming at step `s` needs no saved random state. Flips and 90° rotations are drawn the same way.
Arrays are read from the dataset's zarr stores (tiles decode from JPEG on read).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_synth.data.store import Dataset
from wsi_synth.errors import BadDatasetError


@dataclass
class TileIndex:
    """Which (source, kind, index) rows of a dataset belong to a split, by kind."""

    labelled: list[tuple[str, int]]
    unlabelled: list[tuple[str, int]]
    regions: list[tuple[str, int, str]]  # (source, index, subtype)

    @classmethod
    def build(cls, dataset: Dataset, split: str = "train") -> TileIndex:
        rows = [r for r in dataset.manifest() if r["split"] == split]
        return cls(
            [(r["source"], int(r["index"])) for r in rows if r["kind"] == "labelled"],
            [(r["source"], int(r["index"])) for r in rows if r["kind"] == "unlabelled"],
            [(r["source"], int(r["index"]), r["subtype"]) for r in rows if r["kind"] == "regions"],
        )


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
