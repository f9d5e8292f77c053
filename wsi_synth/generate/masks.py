"""The class map of a generated slide: the mask stage's cleaning, a user's mask, and resampling between the
mask canvas, the latent canvas and output pixels (pixel centres, nearest class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_synth.errors import BadAnnotationError, BadArgumentError
from wsi_synth.generate.config import Geometry
from wsi_synth.io.images import read_labels
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


def load_mask(path: str | Path, bundle: Bundle, g: Geometry, *, stretch: bool = False) -> np.ndarray:
    """A user's class map at mask-canvas resolution: a label image (TIFF/PNG, values = class ids; the same aspect
    ratio as the output, or `stretch`) or annotations (QuPath GeoJSON, Aperio/ASAP XML) in output pixels."""
    path = Path(path)
    if not path.is_file():
        raise BadArgumentError(f"--mask {path}: file not found")
    if path.suffix.lower() in (".geojson", ".json", ".xml"):
        return _annotations_mask(path, bundle, g)
    labels = read_labels(path, what="--mask")
    unknown = sorted(set(np.unique(labels).tolist()) - {c["id"] for c in bundle.classes})
    if unknown:
        known = ", ".join(f"{c['id']}={c['name']}" for c in bundle.classes)
        raise BadArgumentError(f"--mask {path}: values {unknown[:8]} are not classes of the model ({known})")
    (lh, lw), (h, w) = labels.shape, g.px
    if abs(lw * h / w - lh) > 1 and not stretch:
        raise BadArgumentError(f"--mask {path} is {lw}×{lh} px, another aspect ratio than the {w}×{h} px output: "
                               "give a mask of the same shape, or pass --stretch to resize it to fit")
    ys = _centres(0, g.msk[0], g.px_per_msk, h / lh, lh)
    xs = _centres(0, g.msk[1], g.px_per_msk, w / lw, lw)
    return labels[ys][:, xs].astype(np.uint8)


def _annotations_mask(path: Path, bundle: Bundle, g: Geometry) -> np.ndarray:
    """Rasterize annotations (coordinates in output px) at pixel centres of the mask canvas; the same checks
    as `extract`: unreadable, empty or entirely out-of-bounds annotations and unknown class names are refused."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    from wsi_synth.annotations import clip_to_slide, load_annotations

    try:
        loaded = load_annotations(path)
        annotations = clip_to_slide(loaded.annotations, (g.px[1], g.px[0]), "the generated slide")
    except BadAnnotationError as exc:
        raise BadAnnotationError(f"--mask: {exc}") from exc
    if not annotations:
        raise BadAnnotationError(f"--mask {path}: no classified polygons ({loaded.unclassified} unclassified)")
    ids = {c["name"].lower(): int(c["id"]) for c in bundle.classes}
    unknown = sorted({a.name for a in annotations if a.name.lower() not in ids})  # type: ignore[union-attr]
    if unknown:
        raise BadAnnotationError(f"--mask {path}: classes {unknown} are not classes of the model ({', '.join(c['name'] for c in bundle.classes)})")
    shapes = [(a.geometry, ids[a.name.lower()]) for a in annotations]  # type: ignore[union-attr]
    return rasterize(shapes, out_shape=g.msk, transform=Affine(g.px_per_msk, 0, 0, 0, g.px_per_msk, 0), fill=0, dtype="uint8")


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
