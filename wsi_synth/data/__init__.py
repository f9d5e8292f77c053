"""The on-disk training dataset: `dataset.json`, one zarr store per source, and a manifest CSV; `TileDataset` serves
it to torch (imported on first use, so `wsi_synth.data` itself does not load torch)."""

from wsi_synth.data.store import Dataset, DatasetSpec, SourceWriter, open_dataset

__all__ = ["Dataset", "DatasetSpec", "SourceWriter", "TileDataset", "open_dataset"]


def __getattr__(name: str):
    if name == "TileDataset":
        from wsi_synth.data.torch_dataset import TileDataset

        return TileDataset
    raise AttributeError(f"module 'wsi_synth.data' has no attribute {name!r}")
