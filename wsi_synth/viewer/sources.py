"""What the viewer shows, read from any output of ours or any slide OpenSlide reads: the image as Deep Zoom tiles, the
class map (when there is one) as coloured transparent tiles, the class legend and the GeoJSON outlines.

A source is a list of levels, each `(width, height, read)` where `read(x0, y0, x1, y1)` returns that window of the
level as an array; Deep Zoom level L of a W × H image is the image scaled by 2^(L − max), its tiles `TILE` px, read
from the finest level no finer than needed and resized. The same code serves pyramidal TIFF (OpenSlide), OME-TIFF
(tifffile), OME-Zarr (zarr, NGFF 0.4 and 0.5), DICOM WSI (OpenSlide on the level-0 instance; the segmentation through
highdicom) and real slides.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsi_synth.errors import BadArgumentError

TILE = 256
#: Colours of class ids no legend names (tab10 in turn; id 0, unknown, transparent).
_TAB10 = ["1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"]
DEFAULT_PALETTE = np.array(
    [[0, 0, 0, 0]] + [[*bytes.fromhex(_TAB10[(i - 1) % 10]), 255] for i in range(1, 256)], np.uint8
)
Read = Callable[[int, int, int, int], np.ndarray]


@dataclass
class Levels:
    """A pyramid: level sizes (width, height), finest first, and how to read a window of each."""

    sizes: list[tuple[int, int]]
    reads: list[Read]

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level 0's (width, height)."""
        return self.sizes[0]

    @property
    def max_level(self) -> int:
        """The finest Deep Zoom level: the image at full size."""
        return max(0, math.ceil(math.log2(max(self.dimensions))))

    def tile(self, level: int, col: int, row: int) -> np.ndarray | None:
        """Deep Zoom tile (`level`, `col`, `row`) as an array, or None outside the image."""
        scale = 2.0 ** (level - self.max_level)
        width, height = self.dimensions
        out_w, out_h = max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
        x0, y0 = col * TILE, row * TILE
        if level < 0 or level > self.max_level or x0 >= out_w or y0 >= out_h:
            return None
        x1, y1 = min(x0 + TILE, out_w), min(y0 + TILE, out_h)
        k = self._level_for(scale)
        lw, lh = self.sizes[k]
        fx, fy = lw / width / scale, lh / height / scale  # level-k px per output px
        lx0, ly0 = int(x0 * fx), int(y0 * fy)
        lx1, ly1 = min(lw, max(lx0 + 1, math.ceil(x1 * fx))), min(lh, max(ly0 + 1, math.ceil(y1 * fy)))
        window = self.reads[k](lx0, ly0, lx1, ly1)
        return _resized(window, (x1 - x0, y1 - y0))

    def _level_for(self, scale: float) -> int:
        """The coarsest level still at least as fine as `scale` of level 0."""
        width = self.dimensions[0]
        fine_enough = [k for k, (w, _) in enumerate(self.sizes) if w >= width * scale * 0.999]
        return fine_enough[-1] if fine_enough else 0


def _resized(window: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if window.shape[1] == size[0] and window.shape[0] == size[1]:
        return window
    labels = window.ndim == 2
    resample = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(window).resize(size, resample))


@dataclass
class ViewedSlide:
    """One slide of the viewer: its image levels, MPP, and its class map, legend and outlines where it has them."""

    path: Path
    image: Levels
    mpp: float | None
    labels: Levels | None = None
    classes: list[dict] = field(default_factory=list)
    outlines: list[dict] = field(default_factory=list)  # {"class", "color", "rings": [[[x, y], …], …]}

    def info(self) -> dict:
        """What the page needs to set the viewer up."""
        width, height = self.image.dimensions
        return {
            "name": self.path.name,
            "width": width,
            "height": height,
            "tile": TILE,
            "max_level": self.image.max_level,
            "mpp": self.mpp,
            "mask": self.labels is not None,
            "classes": [c for c in self.classes if int(c["id"]) != 0],
            "outlines": bool(self.outlines),
        }

    def image_tile(self, level: int, col: int, row: int) -> bytes | None:
        """A JPEG Deep Zoom tile of the image."""
        tile = self.image.tile(level, col, row)
        if tile is None:
            return None
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(tile[..., :3])).save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    def mask_tile(self, level: int, col: int, row: int) -> bytes | None:
        """A PNG Deep Zoom tile of the class map in the classes' colours (unknown transparent)."""
        if self.labels is None:
            return None
        tile = self.labels.tile(level, col, row)
        if tile is None:
            return None
        palette = DEFAULT_PALETTE.copy()  # a class map without a legend still shows, in distinct colours
        for c in self.classes:
            if int(c["id"]) != 0:
                palette[int(c["id"])] = [*map(int, c.get("color") or (255, 0, 255)), 255]
        buffer = io.BytesIO()
        Image.fromarray(palette[tile], "RGBA").save(buffer, "PNG")
        return buffer.getvalue()


def open_viewed(path: str | Path) -> ViewedSlide:
    """The slide at `path` with what lies beside it: a mask, the record's classes, a GeoJSON."""
    path = Path(path)
    if not path.exists():
        raise BadArgumentError(f"path not found: {path}")
    name = path.name.lower()
    if path.is_dir() and name.endswith(".zarr"):
        slide = _ome_zarr(path)
    elif path.is_dir() and any(path.glob("*.dcm")):
        slide = _dicom(path)
    elif name.endswith((".ome.tif", ".ome.tiff")):
        slide = _ome_tiff(path)
    else:
        slide = _openslide(path)
    _add_beside(slide)
    return slide


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _add_beside(slide: ViewedSlide) -> None:
    """The record's classes (`s.json`), the label TIFF (`s.mask.tiff`) when the slide has no labels of its own, and
    the GeoJSON outlines (`s.geojson`)."""
    stem = _stem(slide.path)
    record = slide.path.with_name(f"{stem}.json")
    if record.is_file():  # the model's classes with their colours (a DICOM segmentation has names only)
        try:
            slide.classes = list(json.loads(record.read_text()).get("classes") or []) or slide.classes
        except (ValueError, AttributeError):
            pass
    masks = [slide.path.with_name(f"{stem}.mask{suffix}") for suffix in (".tiff", ".ome.tiff")]
    mask = next((p for p in masks if p.is_file()), None)
    if slide.labels is None and mask is not None:
        slide.labels = _tiff_levels(mask, labels=True)
    geojson = slide.path.with_name(f"{stem}.geojson")
    if geojson.is_file():
        slide.outlines = _outlines(geojson, slide.classes)


def _openslide(path: Path) -> ViewedSlide:
    import openslide

    try:
        handle = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise BadArgumentError(f"{path}: not a slide this viewer reads ({exc})") from exc

    def reader(k: int) -> Read:
        downsample = handle.level_downsamples[k]

        def read(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            region = handle.read_region((round(x0 * downsample), round(y0 * downsample)), k, (x1 - x0, y1 - y0))
            return np.asarray(region.convert("RGB"))

        return read

    sizes = [tuple(s) for s in handle.level_dimensions]
    mpp = handle.properties.get("openslide.mpp-x")
    levels = Levels(sizes, [reader(k) for k in range(len(sizes))])  # type: ignore[arg-type]
    return ViewedSlide(path, levels, float(mpp) if mpp else None)


def _tiff_levels(path: Path, *, labels: bool) -> Levels:
    import tifffile
    import zarr

    tif = tifffile.TiffFile(str(path))  # kept open by the stores, for as long as the viewer runs
    series = tif.series[0]
    arrays: list[Any] = [zarr.open(series.aszarr(level=k), mode="r") for k in range(len(series.levels))]

    def reader(array) -> Read:
        def read(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            window = np.asarray(array[y0:y1, x0:x1])
            return window if labels else window[..., :3]

        return read

    sizes = [(int(a.shape[1]), int(a.shape[0])) for a in arrays]
    return Levels(sizes, [reader(a) for a in arrays])  # type: ignore[arg-type]


def _ome_tiff(path: Path) -> ViewedSlide:
    from wsi_synth.io.inspect import describe_tiff

    mpp = describe_tiff(path).get("mpp")
    return ViewedSlide(path, _tiff_levels(path, labels=False), float(mpp) if mpp else None)


def _ome_zarr(path: Path) -> ViewedSlide:
    import zarr

    from wsi_synth.evaluation.inputs import _array, _multiscales

    def levels_of(group_path: Path, *, channels_first: bool) -> tuple[Levels, dict]:
        meta = _multiscales(group_path)
        if meta is None:
            raise BadArgumentError(f"{group_path}: not an OME-Zarr image (no multiscales metadata)")
        group = zarr.open_group(str(group_path), mode="r")
        arrays = [_array(group[d["path"]]) for d in meta["datasets"]]

        def reader(array) -> Read:
            def read(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
                if channels_first:
                    return np.moveaxis(np.asarray(array[:3, y0:y1, x0:x1]), 0, 2)
                return np.asarray(array[y0:y1, x0:x1])

            return read

        sizes = [(int(a.shape[-1]), int(a.shape[-2])) for a in arrays]
        return Levels(sizes, [reader(a) for a in arrays]), meta  # type: ignore[arg-type]

    image, meta = levels_of(path, channels_first=True)
    scale = meta["datasets"][0]["coordinateTransformations"][0]["scale"]
    slide = ViewedSlide(path, image, float(scale[-1]))
    tissue = path / "labels" / "tissue"
    if tissue.is_dir():
        slide.labels, _ = levels_of(tissue, channels_first=False)
        slide.classes = _ngff_classes(tissue)
    return slide


def _ngff_classes(tissue: Path) -> list[dict]:
    """The classes of an NGFF label image: `properties` (value → class) and `colors` (value → rgba)."""
    for name, keys in ((".zattrs", ()), ("zarr.json", ("attributes", "ome"))):
        try:
            doc = json.loads((tissue / name).read_text())
        except (OSError, ValueError):
            continue
        for key in keys:
            doc = doc.get(key, {})
        label = doc.get("image-label", {})
        colours = {c["label-value"]: c["rgba"][:3] for c in label.get("colors", [])}
        return [
            {
                "id": p["label-value"],
                "name": p.get("class", str(p["label-value"])),
                "color": colours.get(p["label-value"]),
            }
            for p in label.get("properties", [])
        ]
    return []


def _dicom(folder: Path) -> ViewedSlide:
    from wsi_synth.io.dicom import level0_instance, read_instances

    instances = read_instances(folder)
    slide = _openslide(level0_instance(instances, folder))
    slide.path = folder
    segmentations = [p for p, ds in instances.items() if ds.Modality == "SEG"]
    if segmentations:
        import highdicom as hd

        segmentation = hd.seg.segread(str(segmentations[0]))
        label_map = np.asarray(segmentation.get_total_pixel_matrix(combine_segments=True), np.uint8)
        slide.labels = Levels(
            [(label_map.shape[1], label_map.shape[0])], [lambda x0, y0, x1, y1: label_map[y0:y1, x0:x1]]
        )
        slide.classes = [
            {"id": int(s.SegmentNumber), "name": str(s.SegmentLabel)} for s in segmentation.SegmentSequence
        ]
    return slide


def _outlines(path: Path, classes: list[dict]) -> list[dict]:
    """The GeoJSON's polygons as rings (level-0 px), simplified to about a pixel of the overview, with class colours."""
    import shapely
    from shapely.geometry import shape

    colours = {str(c["name"]): c.get("color", [255, 255, 0]) for c in classes}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    features = doc.get("features", []) if isinstance(doc, dict) else doc
    out = []
    for feature in features if isinstance(features, list) else []:
        try:
            geometry = shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        props = feature.get("properties") or {}
        name = (props.get("classification") or {}).get("name") or props.get("name") or ""
        tolerance = max(geometry.bounds[2] - geometry.bounds[0], geometry.bounds[3] - geometry.bounds[1]) / 2000
        simple = shapely.simplify(geometry, tolerance)
        polygons = getattr(simple, "geoms", [simple])
        rings = [
            [[round(x, 1), round(y, 1)] for x, y in ring.coords]
            for polygon in polygons
            if not polygon.is_empty
            for ring in (polygon.exterior, *polygon.interiors)
        ]
        out.append({"class": name, "color": list(colours.get(name, [255, 255, 0])), "rings": rings})
    return out
