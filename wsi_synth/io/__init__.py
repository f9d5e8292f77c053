"""Gigapixel outputs viewers open: streamed pyramidal TIFF (image and labels), QuPath GeoJSON, inspection.

Knows nothing about diffusion: inputs are arrays (numpy, zarr or dask) of pixels or class ids.
"""

from wsi_synth.io.atomic import atomic_output
from wsi_synth.io.geojson import geojson_to_mask, mask_to_geojson
from wsi_synth.io.pyramid import write_label_pyramid, write_slide_pyramid

__all__ = ["atomic_output", "geojson_to_mask", "mask_to_geojson", "write_label_pyramid", "write_slide_pyramid"]
