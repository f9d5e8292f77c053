"""The class map of a generated slide: the mask stage's cleaning, a user's mask, and resampling between the
mask canvas, the latent canvas and output pixels (pixel centres, nearest class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadAnnotationError, BadArgumentError
from wsi_synth.generate.config import Geometry
from wsi_synth.models.bundle import Bundle


def clean_mask(classes: np.ndarray, *, min_region: int) -> np.ndarray:
    """The paper's cleaning: pixels on a boundary between two classes become unknown; regions thinner than
    `min_region` px are removed (min-pooling, i.e. an opening per class)."""
    from scipy import ndimage

    out = classes.copy()
    padded = np.pad(classes, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    boundary = np.zeros(classes.shape, bool)
    for n in neighbours:
        boundary |= (n != classes) & (n != 0) & (classes != 0)
    out[boundary] = 0
    if min_region > 1:
        structure = np.ones((min_region, min_region), bool)
        for c in np.unique(out):
            if c == 0:
                continue
            region = out == c
            kept = ndimage.binary_opening(region, structure=structure)
            out[region & ~kept] = 0
    return out


def load_mask(path: str | Path, bundle: Bundle, g: Geometry) -> np.ndarray:
    """A user's class map at mask-canvas resolution: a label image (TIFF/PNG, values = class ids) or a QuPath GeoJSON."""
    path = Path(path)
    classes = bundle.classes
    if not path.is_file():
        raise BadArgumentError(f"--mask {path}: file not found")
    if path.suffix.lower() in (".geojson", ".json"):
        from wsi_synth.io.geojson import geojson_to_mask

        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise BadAnnotationError(f"--mask {path} is not valid JSON: {exc}") from exc
        return geojson_to_mask(doc, g.msk, downsample=g.px_per_msk, classes=classes)
    import tifffile
    from PIL import Image

    labels = tifffile.imread(path, level=0) if path.suffix.lower() in (".tif", ".tiff") else np.asarray(Image.open(path))
    if labels.ndim != 2:
        raise BadArgumentError(f"--mask {path}: expected a single-channel label image, got shape {labels.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {c["id"] for c in classes})
    if unknown:
        known = ", ".join(f"{c['id']}={c['name']}" for c in classes)
        raise BadArgumentError(f"--mask {path}: values {unknown} are not classes of the model ({known})")
    ys = _centres(0, g.msk[0], g.px_per_msk, g.px[0] / labels.shape[0], labels.shape[0])
    xs = _centres(0, g.msk[1], g.px_per_msk, g.px[1] / labels.shape[1], labels.shape[1])
    return labels[ys][:, xs].astype(np.uint8)


def _centres(start: int, stop: int, dst_px: float, src_px: float, limit: int) -> np.ndarray:
    """Source index under the centre of each destination pixel start..stop−1 (pixel sizes in output px)."""
    return np.minimum(((np.arange(start, stop) + 0.5) * dst_px / src_px).astype(int), limit - 1)


def nearest(labels: np.ndarray, src_px: float, shape: tuple[int, int], dst_px: float) -> np.ndarray:
    """Resample a class map whose pixels are `src_px` output px wide to `shape` pixels of `dst_px` (centres)."""
    return labels[_centres(0, shape[0], dst_px, src_px, labels.shape[0])][:, _centres(0, shape[1], dst_px, src_px, labels.shape[1])]


class PixelLabels:
    """The mask-canvas class map seen at output resolution, row band by row band (never materialised)."""

    def __init__(self, labels: np.ndarray, px_per_label: float, shape: tuple[int, int]) -> None:
        self.labels, self.px_per_label = labels, px_per_label
        self.shape, self.dtype = shape, np.dtype(np.uint8)

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        ys = _centres(y0, y1, 1.0, self.px_per_label, self.labels.shape[0])
        xs = _centres(0, self.shape[1], 1.0, self.px_per_label, self.labels.shape[1])
        return self.labels[ys][:, xs]
