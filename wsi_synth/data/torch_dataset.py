"""`TileDataset`: a wsi-synth dataset (real, or synthetic tiles imported from `generate --count`) as a torch Dataset
of (image, mask) pairs, for training a segmentation network on either or both.

Tiles are read from the dataset's zarr stores on demand (JPEG-decoded), so a dataset larger than memory trains
from disk. Each DataLoader worker opens the stores itself, on its first item: zarr's I/O machinery is not carried
across a fork or a pickle, which is what makes `DataLoader(num_workers > 0)` safe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from wsi_synth.data.store import KINDS, open_dataset
from wsi_synth.errors import BadArgumentError

Transform = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class TileDataset(_TorchDataset):
    """(image, mask) pairs of a dataset: image a uint8 tensor (3, T, T), mask an int64 tensor (T, T) of class ids
    (the dataset's classes, 0 = unknown; all 0 for an unlabelled tile).

    `split`: "train", "test" or None for both. `kinds`: "labelled" and/or "unlabelled". `transform(image, mask)`
    returns the pair to use (augmentation, normalisation), applied to both so they stay aligned.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        kinds: Sequence[str] = ("labelled",),
        transform: Transform | None = None,
    ) -> None:
        bad = [k for k in kinds if k not in KINDS[:2]]
        if bad or not kinds:
            raise BadArgumentError(f"kinds must be labelled and/or unlabelled, got {list(kinds)}")
        if split not in (None, "train", "test"):
            raise BadArgumentError(f"split must be 'train', 'test' or None (both), got {split!r}")
        self.dataset = open_dataset(path)
        self.classes = self.dataset.class_names
        self.tile_size = self.dataset.tile_size
        rows = self.dataset.manifest()
        self.dataset.check(rows)
        self.items = [
            (r["kind"], r["source"], int(r["index"]))
            for r in rows
            if r["kind"] in kinds and (split is None or r["split"] == split)
        ]
        self.transform = transform
        self._groups: dict = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def __add__(self, other):
        """Concatenate (torch's `ConcatDataset`), refusing datasets whose tiles or classes differ: batches of mixed
        sizes would fail in the DataLoader, and mixed class ids would mean different tissues."""
        if isinstance(other, TileDataset) and (other.tile_size, other.classes) != (self.tile_size, self.classes):
            raise BadArgumentError(
                f"cannot concatenate TileDatasets of {self.tile_size} px tiles with classes {self.classes} and "
                f"{other.tile_size} px with {other.classes}: "
                "import both into one dataset (the second takes the first's settings), or resize in a transform"
            )
        return super().__add__(other)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        kind, source, index = self.items[i]
        group = self._group(source)
        image = torch.from_numpy(np.ascontiguousarray(group[f"{kind}/images"][index])).permute(2, 0, 1).contiguous()
        if kind == "labelled":
            mask = torch.from_numpy(np.asarray(group[f"{kind}/masks"][index]).astype(np.int64))
        else:
            mask = torch.zeros((self.tile_size, self.tile_size), dtype=torch.int64)
        return self.transform(image, mask) if self.transform is not None else (image, mask)

    def _group(self, source: str):
        if os.getpid() != self._pid:  # a forked DataLoader worker: open the stores afresh
            self._groups, self._pid = {}, os.getpid()
        if source not in self._groups:
            self._groups[source] = self.dataset.source_group(source)
        return self._groups[source]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_groups": {}}
