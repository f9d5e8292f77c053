"""The class map of a generated slide: the mask stage's cleaning, a user's mask, and resampling between the
mask canvas, the latent canvas and output pixels.

Upsampling interpolates class probabilities, never labels (the paper, Fig. 2a, interpolates linearly): each class's
one-hot is blurred into a smooth field, interpolated at the pixel centres, and the most probable class wins, so
boundaries are contours rather than the mask canvas's 8 px stair steps. Where a pixel's whole neighbourhood is one
class the class is that one, so only pixels near a boundary pay for the interpolation; the result depends on each
pixel's neighbourhood alone (any band or chunk gives the same map), and the latent canvas and the output pixels are
sampled from the same field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadAnnotationError, BadArgumentError
from wsi_synth.generation.config import GenerateConfig, Geometry
from wsi_synth.io.images import read_labels
from wsi_synth.models.bundle import Bundle


def mask_cleaning(config: GenerateConfig, bundle: Bundle, *, coarser: float = 1.0) -> dict:
    """`mask_classes`' settings for a run; the paper's unknown seams between classes only for a per-class image
    stage. For a canvas `coarser` times the mask canvas's px (the layout's), the sizes are scaled to it: the settings
    are mask-canvas px, and at the layout's an opening of 3 px would erase every region thinner than 0.2 mm."""
    return {
        "min_region": max(1, round(config.min_region / coarser)),
        "sigma": config.mask_sigma / coarser,
        "boundaries": bundle.conditioning.draws_class_seams,
    }


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


#: What a folder of masks (`generate --count N --mask DIR`) may hold: what `load_mask` reads.
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".geojson", ".json", ".xml")


def mask_sources(path: str | Path) -> list[Path]:
    """The class maps a `--count` run is given: one file (every tile's), or a folder's mask files in name order (tile
    i takes the (i mod n)-th), so that a folder of annotated tiles' masks, or a tile set's `masks/`, can be redrawn."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadArgumentError(f"--mask {path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in MASK_SUFFIXES and p.is_file())
    if not files:
        raise BadArgumentError(f"--mask {path}: the folder holds no masks ({', '.join(MASK_SUFFIXES)})")
    return files


def mask_sha256(path: str | Path) -> str:
    """The identity of a `--mask`: its file's hash, or a folder's mask names and hashes in order."""
    import hashlib

    from wsi_synth.resumable import sha256_file

    if Path(path).is_file():
        return sha256_file(path)
    return hashlib.sha256("".join(f"{p.name}\0{sha256_file(p)}\n" for p in mask_sources(path)).encode()).hexdigest()


def load_mask(path: str | Path, bundle: Bundle, g: Geometry, *, stretch: bool = False) -> np.ndarray:
    """A user's class map at mask-canvas resolution: a label image (TIFF/PNG, values = class ids; the same aspect
    ratio as the output, or `stretch`) or annotations (QuPath GeoJSON, Aperio/ASAP XML) in output pixels."""
    path = Path(path)
    if path.is_dir():
        raise BadArgumentError(
            f"--mask {path} is a folder: a slide takes one mask file (a folder of masks is for --count tiles)"
        )
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
            f"--mask {path} is {lw}×{lh} px, another aspect ratio than the {w}×{h} px output: give a mask of the same "
            "shape, or pass --stretch to resize it to fit"
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
        annotations = clip_to_slide(loaded.annotations, (g.px[1], g.px[0]), "(the generated one)")
    except BadAnnotationError as exc:
        raise BadAnnotationError(f"--mask {path}: {exc}") from exc
    if not annotations:
        raise BadAnnotationError(f"--mask {path}: no classified polygons ({loaded.unclassified} unclassified)")
    ids = {c["name"].lower(): int(c["id"]) for c in bundle.classes}
    unknown = sorted({a.name for a in annotations if a.name is not None and a.name.lower() not in ids})
    if unknown:
        raise BadAnnotationError(
            f"--mask {path}: classes {unknown} are not classes of the model "
            f"({', '.join(c['name'] for c in bundle.classes)})"
        )
    shapes = [(a.geometry, ids[a.name.lower()]) for a in annotations]  # type: ignore[union-attr]
    return rasterize(
        shapes, out_shape=g.msk, transform=Affine(g.px_per_msk, 0, 0, 0, g.px_per_msk, 0), fill=0, dtype="uint8"
    )


def _centres(start: int, stop: int, dst_px: float, src_px: float, limit: int) -> np.ndarray:
    """Source index under the centre of each destination pixel start..stop−1 (pixel sizes in output px)."""
    return np.minimum(((np.arange(start, stop) + 0.5) * dst_px / src_px).astype(int), limit - 1)


#: Gaussian σ (source px) of the class field that is upsampled: rounds a 1-px stair step into a contour, and keeps
#: any region that survives the 3-px opening (a 3-px bar still peaks at 0.87 of its class).
FIELD_SIGMA = 1.0
#: The field's blur reaches this far (source px); a band of rows reads this many more rows on each side.
FIELD_RADIUS = 4
#: Roughness scales (output px, each octave at half the weight of the one before): the wander of real outlines.
ROUGHNESS_SCALES = (12.0, 5.0, 2.5)
#: Destination rows computed at a time: bounds the field and the interpolation temporaries at any slide size.
BAND_ROWS = 1024


@dataclass(frozen=True)
class Roughness:
    """Irregularity added to the class field near boundaries, so contours wander like a pathologist's outline instead of
    following the mask canvas's smooth interpolation: seeded value noise (one field per class, keyed by the seed and
    the output-px position, so any band, chunk and canvas resolution see the same contour), of `amplitude` (in class
    probability) at `scales` output px."""

    amplitude: float = 0.0
    seed: int = 0
    scales: tuple[float, ...] = ROUGHNESS_SCALES

    def at(self, ids: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
        """Noise (classes, n) at output-px positions `py`, `px` (pixel centres)."""
        total = np.zeros((len(ids), len(py)), np.float32)
        for octave, scale in enumerate(self.scales):
            total += _value_noise(self.seed, ids, octave, py / scale, px / scale) / (octave + 1)
        return self.amplitude * total


def _value_noise(seed: int, ids: np.ndarray, octave: int, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Smoothly interpolated lattice noise in [−1, 1] at lattice coordinates (gy, gx), one field per class id."""
    iy, ix = np.floor(gy), np.floor(gx)
    ty, tx = gy - iy, gx - ix
    ty, tx = (ty * ty * (3 - 2 * ty))[None], (tx * tx * (3 - 2 * tx))[None]  # smoothstep: no creases at lattice lines
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    if iy.size == 0:
        return np.zeros((len(ids), 0), np.float32)
    # the lattice values once per lattice point of the pixels' bounding box (a lattice cell holds scale² pixels), then
    # gathered: the same hash of the same keys as hashing each pixel's four corners, at a fraction of the work
    y0, x0 = int(iy.min()), int(ix.min())
    lattice = _hash_unit(
        seed,
        ids.astype(np.int64)[:, None, None],
        octave,
        np.arange(y0, int(iy.max()) + 2)[None, :, None],
        np.arange(x0, int(ix.max()) + 2)[None, None, :],
    )
    ry, rx = iy - y0, ix - x0

    def corner(dy: int, dx: int) -> np.ndarray:
        return lattice[:, ry + dy, rx + dx]

    top = corner(0, 0) * (1 - tx) + corner(0, 1) * tx
    bottom = corner(1, 0) * (1 - tx) + corner(1, 1) * tx
    return (top * (1 - ty) + bottom * ty).astype(np.float32)


def _hash_unit(*keys) -> np.ndarray:
    """A uniform value in [−1, 1] per combination of integer keys (splitmix64 finaliser over their mix)."""
    h: np.ndarray = np.asarray(np.uint64(0x9E3779B97F4A7C15))
    with np.errstate(over="ignore"):
        for k in keys:
            h = (h ^ np.asarray(k).astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            h = h ^ (h >> np.uint64(31))
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return np.asarray((h >> np.uint64(11)).astype(np.float64) / float(1 << 52) - 1.0)


def smooth(
    labels: np.ndarray,
    src_px: float,
    shape: tuple[int, int],
    dst_px: float,
    *,
    rows: tuple[int, int] | None = None,
    chunk: int = 8192,
    roughness: Roughness = Roughness(),
) -> np.ndarray:
    """Rows `rows` (default all) of a class map whose pixels are `src_px` output px wide, resampled to `shape` pixels of
    `dst_px`. Upsampling interpolates a class-probability field, never labels: each class's one-hot is blurred
    (`FIELD_SIGMA`), interpolated bilinearly at the destination pixel centres, and the most probable class wins, so
    boundaries are contours of a smooth field rather than the source grid's stair steps. Each destination pixel
    depends on its source neighbourhood alone, so any band or chunk gives the same map. Not upsampling (`dst_px` ≥
    `src_px`), each pixel takes the label under its centre. `roughness` perturbs the field near boundaries."""
    y0, y1 = rows if rows is not None else (0, shape[0])
    if dst_px >= src_px:
        ys = _centres(y0, y1, dst_px, src_px, labels.shape[0])
        xs = _centres(0, shape[1], dst_px, src_px, labels.shape[1])
        return labels[ys][:, xs].astype(np.uint8)
    out = np.empty((y1 - y0, shape[1]), np.uint8)
    for b0 in range(y0, y1, BAND_ROWS):
        b1 = min(b0 + BAND_ROWS, y1)
        out[b0 - y0 : b1 - y0] = _smooth_band(labels, src_px, shape[1], dst_px, b0, b1, chunk, roughness)
    return out


def _smooth_band(
    labels: np.ndarray, src_px: float, width: int, dst_px: float, y0: int, y1: int, chunk: int, roughness: Roughness
) -> np.ndarray:
    y_lo, y_hi, fy = _bilinear_axis(y0, y1, dst_px, src_px, labels.shape[0])
    s0, s1 = max(int(y_lo[0]) - FIELD_RADIUS, 0), min(int(y_hi[-1]) + FIELD_RADIUS + 1, labels.shape[0])
    band = np.asarray(labels[s0:s1])
    ids, field = _class_field(band)
    # whole blur support of one class: the field's winner is that class, no need to interpolate
    settled = _settled(band)
    y_lo, y_hi = y_lo - s0, y_hi - s0
    py = (np.arange(y0, y1) + 0.5) * dst_px  # pixel centres in output px: the roughness's frame
    out = np.empty((y1 - y0, width), np.uint8)
    for x0 in range(0, width, chunk):  # column chunks bound the temporaries at any slide width
        x1 = min(x0 + chunk, width)
        x_lo, x_hi, fx = _bilinear_axis(x0, x1, dst_px, src_px, labels.shape[1])
        px = (np.arange(x0, x1) + 0.5) * dst_px
        out[:, x0:x1] = _field_vote(band, settled, ids, field, (y_lo, y_hi, fy, py), (x_lo, x_hi, fx, px), roughness)
    return out


def _class_field(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes present in `band` and each one's blurred one-hot (classes, h, w); rows within `FIELD_RADIUS` of the
    band's cut edges are wrong and never read."""
    from scipy import ndimage

    ids = np.unique(band)
    field = np.stack(
        [
            ndimage.gaussian_filter((band == c).astype(np.float32), FIELD_SIGMA, mode="nearest", radius=FIELD_RADIUS)
            for c in ids
        ]
    )
    return ids, field


def _settled(band: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    size = 2 * FIELD_RADIUS + 1
    return ndimage.maximum_filter(band, size, mode="nearest") == ndimage.minimum_filter(band, size, mode="nearest")


def bilinear_rows(array: np.ndarray, y0: int, y1: int, width: int, dst_px: float, src_px: float) -> np.ndarray:
    """Rows y0..y1−1 (and `width` columns) of `array` (..., h, w) bilinearly resampled from `src_px` to `dst_px`
    output px per pixel, as float32 (..., y1 − y0, width)."""
    height, src_width = array.shape[-2:]
    y_lo, y_hi, fy = _bilinear_axis(y0, y1, dst_px, src_px, height)
    x_lo, x_hi, fx = _bilinear_axis(0, width, dst_px, src_px, src_width)
    top, bottom = array[..., y_lo, :], array[..., y_hi, :]
    top = top[..., x_lo] * (1 - fx) + top[..., x_hi] * fx
    bottom = bottom[..., x_lo] * (1 - fx) + bottom[..., x_hi] * fx
    return (top * (1 - fy[:, None]) + bottom * fy[:, None]).astype(np.float32)


def _bilinear_axis(
    start: int, stop: int, dst_px: float, src_px: float, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For destination pixels start..stop−1: the two source indices around each centre and the weight of the second."""
    u = (np.arange(start, stop) + 0.5) * dst_px / src_px - 0.5
    lo = np.floor(u)
    frac = (u - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, limit - 1), np.clip(lo + 1, 0, limit - 1), frac


def _field_vote(band, settled, ids, field, rows: tuple, cols: tuple, roughness: Roughness) -> np.ndarray:
    (y_lo, y_hi, fy, py), (x_lo, x_hi, fx, px) = rows, cols
    out = band[y_lo][:, x_lo].copy()
    open_ = ~(settled[y_lo][:, x_lo] & settled[y_lo][:, x_hi] & settled[y_hi][:, x_lo] & settled[y_hi][:, x_hi])
    if not open_.any():
        return out
    iy, ix = np.nonzero(open_)
    wy, wx = fy[iy][None], fx[ix][None]
    ya, yb, xa, xb = y_lo[iy], y_hi[iy], x_lo[ix], x_hi[ix]
    p = (1 - wy) * ((1 - wx) * field[:, ya, xa] + wx * field[:, ya, xb]) + wy * (
        (1 - wx) * field[:, yb, xa] + wx * field[:, yb, xb]
    )
    if roughness.amplitude > 0:
        p = p + roughness.at(ids, py[iy], px[ix])
    out[iy, ix] = ids[np.argmax(p, axis=0)]
    return out


def layout_start(layout: np.ndarray, px_per_layout: float, g: Geometry, strength: float):
    """The mask stage's start from a layout: the layout stage's sampled one-hot (classes, h, w; `px_per_layout`
    output px per pixel), bilinearly upsampled onto the mask canvas as it is, not as labels, so that where the
    layout mixes classes (tumour nests with lumens, at its coarse scale) the mask stage draws the mixture's fine
    structure; noised to `strength` (SDEdit)."""
    import hashlib

    from wsi_synth.sampling.canvas import StartCanvas

    layout = np.clip(np.asarray(layout, np.float32), -1, 1)

    def rows(y0: int, y1: int) -> np.ndarray:
        return bilinear_rows(layout, y0, y1, g.msk[1], g.px_per_msk, px_per_layout)

    digest = hashlib.sha256(np.ascontiguousarray(layout).data).hexdigest()
    return StartCanvas(rows, strength, f"{digest}:{px_per_layout}")


#: Output maps up to this many pixels are computed once and kept (64 MB): the writers read the map twice (class
#: counts for the pyramid's tie-breaks, then the levels). Larger maps are recomputed band by band, never held.
KEEP_PIXELS = 64 << 20


class PixelLabels:
    """The mask-canvas class map seen at output resolution (smoothly upsampled), row band by row band (never
    materialised beyond `KEEP_PIXELS`)."""

    def __init__(
        self, labels: np.ndarray, px_per_label: float, shape: tuple[int, int], roughness: Roughness = Roughness()
    ) -> None:
        self.labels, self.px_per_label, self.roughness = labels, px_per_label, roughness
        self.shape, self.dtype = shape, np.dtype(np.uint8)
        self._kept: np.ndarray | None = None

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        if self.shape[0] * self.shape[1] <= KEEP_PIXELS:
            if self._kept is None:
                self._kept = self._rows(0, self.shape[0])
            return self._kept[y0:y1]
        return self._rows(y0, y1)

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        return smooth(self.labels, self.px_per_label, self.shape, 1.0, rows=(y0, y1), roughness=self.roughness)
