"""`wsi-synth view`: a local web viewer for every output we write (pyramidal TIFF, OME-TIFF, OME-Zarr, DICOM) and for
real slides OpenSlide reads, with the mask as an overlay, the class legend, GeoJSON outlines, a scale bar, and two
slides side by side in step. OpenSeadragon is vendored in `static/openseadragon` (its BSD licence beside it)."""

from wsi_synth.viewer.server import Viewer
from wsi_synth.viewer.sources import open_viewed

__all__ = ["Viewer", "open_viewed"]
