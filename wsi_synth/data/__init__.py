"""The on-disk training dataset: `dataset.json`, one zarr store per source, and a manifest CSV."""

from wsi_synth.data.store import Dataset, DatasetSpec, SourceWriter, open_dataset

__all__ = ["Dataset", "DatasetSpec", "SourceWriter", "open_dataset"]
