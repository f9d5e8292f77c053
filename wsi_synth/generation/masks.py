"""The class map of a generated slide: the mask stage's cleaning, a user's mask, and resampling between the
mask canvas, the latent canvas and output pixels.

Upsampling is smooth, as in the paper (Fig. 2a): each class's one-hot is interpolated bilinearly at the pixel
centres and the class with the largest weight wins, so boundaries follow the map's contours instead of its
pixel blocks (32 px blocks at 100,000²). Where the four surrounding map pixels agree the class is theirs, so only
boundary pixels pay for the interpolation; the result depends on each pixel alone (any band or chunk gives the
same map), and the latent canvas and the output pixels are sampled from the same field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_synth.errors import BadAnnotationError, BadArgumentError
from wsi_synth.generation.config import GenerateConfig, Geometry
from wsi_synth.io.images import read_labels
from wsi_synth.models.bundle import Bundle


def mask_cleaning(config: GenerateConfig, bundle: Bundle) -> dict:
    """`mask_classes`' settings for a run; the paper's unknown seams between classes only for a per-class image stage."""
    return {"min_region": config.min_region, "sigma": config.mask_sigma, "boundaries": bundle.image_conditioning == "per-class"}


def mask_classes(one_hot: np.ndarray, *, min_region: int, sigma: float, boundaries: bool) -> np.ndarray:
    """The class map of the mask stage's sampled one-hot (classes, h, w): each class's channel smoothed with a
    Gaussian of `sigma` mask px, the largest wins, then `clean_mask`. The smoothing takes off the sampled map's
    speckle and its stair-step edges, which an image stage that follows the map pixel by pixel would draw as squares."""
    from scipy import ndimage

    if sigma > 0:
        one_hot = np.stack([ndimage.gaussian_filter(np.asarray(c, np.float32), sigma, mode="nearest") for c in one_hot])
    return clean_mask(np.asarray(one_hot).argmax(0).astype(np.uint8), min_region=min_region, boundaries=boundaries)


def clean_mask(classes: np.ndarray, *, min_region: int, boundaries: bool = True) -> np.ndarray:
    """The paper's cleaning (`boundaries`): pixels on a boundary between two classes become unknown; regions
    thinner than `min_region` px are removed (min-pooling, i.e. an opening per class) and become unknown.

    Without `boundaries` (spatial conditioning, where the image stage draws transitions between classes itself and an
    unknown seam would be drawn as a gap of the null condition's tissue), unknown is a region like any other and what
    the opening removes takes the nearest surviving region's class."""
    from scipy import ndimage

    out = classes.copy()
    if boundaries:
        out[_class_boundaries(classes)] = 0
    if min_region <= 1:
        return out
    structure = np.ones((min_region, min_region), bool)
    removed = np.zeros(classes.shape, bool)
    for c in np.unique(out):
        if c == 0 and boundaries:
            continue
        region = out == c
        removed |= region & ~ndimage.binary_opening(region, structure=structure)
    if boundaries:
        out[removed] = 0
    elif removed.any() and not removed.all():
        nearest = ndimage.distance_transform_edt(removed, return_distances=False, return_indices=True)
        out = out[nearest[0], nearest[1]]
    return out


def _class_boundaries(classes: np.ndarray) -> np.ndarray:
    padded = np.pad(classes, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    boundary = np.zeros(classes.shape, bool)
    for n in neighbours:
        boundary |= (n != classes) & (n != 0) & (classes != 0)
    return boundary


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
        raise BadArgumentError(
            f"--mask {path} is {lw}×{lh} px, another aspect ratio than the {w}×{h} px output: give a mask of the same shape, or pass --stretch to resize it to fit"
        )
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


def smooth(labels: np.ndarray, src_px: float, shape: tuple[int, int], dst_px: float, *, rows: tuple[int, int] | None = None, chunk: int = 8192) -> np.ndarray:
    """Rows `rows` (default all) of a class map whose pixels are `src_px` output px wide, resampled to `shape`
    pixels of `dst_px` by bilinear interpolation of each class's one-hot, then the most weighted class."""
    y0, y1 = rows if rows is not None else (0, shape[0])
    y_lo, y_hi, fy = _bilinear_axis(y0, y1, dst_px, src_px, labels.shape[0])
    out = np.empty((y1 - y0, shape[1]), np.uint8)
    for x0 in range(0, shape[1], chunk):  # column chunks bound the temporaries at any slide width
        x1 = min(x0 + chunk, shape[1])
        x_lo, x_hi, fx = _bilinear_axis(x0, x1, dst_px, src_px, labels.shape[1])
        out[:, x0:x1] = _bilinear_vote(labels, y_lo, y_hi, fy, x_lo, x_hi, fx)
    return out


def _bilinear_axis(start: int, stop: int, dst_px: float, src_px: float, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For destination pixels start..stop−1: the two source indices around each centre and the weight of the second."""
    u = (np.arange(start, stop) + 0.5) * dst_px / src_px - 0.5
    lo = np.floor(u)
    frac = (u - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, limit - 1), np.clip(lo + 1, 0, limit - 1), frac


def _bilinear_vote(labels: np.ndarray, y_lo, y_hi, fy, x_lo, x_hi, fx) -> np.ndarray:
    corners = [labels[y_lo][:, x_lo], labels[y_lo][:, x_hi], labels[y_hi][:, x_lo], labels[y_hi][:, x_hi]]
    out = corners[0].copy()
    mixed = (corners[0] != corners[1]) | (corners[0] != corners[2]) | (corners[0] != corners[3])
    if not mixed.any():
        return out
    iy, ix = np.nonzero(mixed)
    wy, wx = fy[iy], fx[ix]
    weights = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx])
    candidates = np.stack([c[iy, ix] for c in corners])
    # the weight of each corner's class: the sum of the weights of the corners holding that class
    score = np.einsum("jn,kjn->kn", weights, (candidates[None, :, :] == candidates[:, None, :]).astype(np.float32))
    out[iy, ix] = candidates[np.argmax(score, axis=0), np.arange(len(iy))]
    return out


class PixelLabels:
    """The mask-canvas class map seen at output resolution (smoothly upsampled), row band by row band (never
    materialised)."""

    def __init__(self, labels: np.ndarray, px_per_label: float, shape: tuple[int, int]) -> None:
        self.labels, self.px_per_label = labels, px_per_label
        self.shape, self.dtype = shape, np.dtype(np.uint8)

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        return smooth(self.labels, self.px_per_label, self.shape, 1.0, rows=(y0, y1))
