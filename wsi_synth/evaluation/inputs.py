"""Tiles to evaluate, from a folder of images, a wsi-synth dataset, pyramidal TIFFs or OME-Zarr images (slides), or
a `generate --count` folder (its `images/`): everything `generate` writes can be evaluated.

Slides are cut into `tile` px tiles at level 0 ("tiled") or read whole and resized to one tile
("resized"), as in the paper. Every tile is resized to `size` px so a batch is one array.

`max_tiles` keeps a seeded sample of the input's tiles, drawn over all of it: the first N would be the top rows of
the first slide, or the first source of a dataset. Precision and recall depend on how many tiles each set has
(recall falls as the synthetic set grows), so sets are compared at equal counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_synth.classes import UNKNOWN
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.images import read_rgb
from wsi_synth.slide import open_slide

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn"})
#: `generate` writes a slide's label pyramid beside it (s.mask.tiff): class ids, not tissue, so a folder's listing
#: leaves them out (they are read as the slide's classes instead).
LABEL_SUFFIXES = (".mask.tiff", ".mask.tif", ".mask.ome.tiff", ".mask.ome.tif")


@dataclass(frozen=True)
class TileSource:
    """Where tiles come from and how to cut them."""

    path: Path
    kind: str  # "images" | "dataset" | "slides"
    items: tuple  # image paths | (source id, array name, index) | slide paths
    size: int
    mode: str = "tiled"
    tile: int = 512
    picks: frozenset[int] | None = None  # tiled slides: the sampled tiles' indices in reading order (None: all)
    available: int | None = None  # how many tiles the input holds, when a sample was drawn

    def __len__(self) -> int:
        return self.count

    @cached_property
    def count(self) -> int:
        """How many tiles: tiled slides are opened to measure their grids, once per source."""
        if self.picks is not None:
            return len(self.picks)
        if self.kind != "slides" or self.mode == "resized":
            return len(self.items)
        return sum(_grid_count(p, self.tile) for p in self.items)


def open_source(
    path: str | Path,
    *,
    size: int = 256,
    mode: str = "tiled",
    tile: int = 512,
    split: str | None = None,
    source: str | None = None,
    max_tiles: int | None = None,
    seed: int = 0,
) -> TileSource:
    """Decide what `path` is and list its tiles (lazily for slides): of a dataset, those of `split` and of the sources
    whose id starts with `source`; with `max_tiles`, a sample drawn by `seed`."""
    opened = _open_all(path, size=size, mode=mode, tile=tile, split=split, source=source)
    if source is not None and opened.kind != "dataset":
        raise BadArgumentError(f"--source {source}: {path} is not a wsi-synth dataset (only datasets name sources)")
    return _sampled(opened, max_tiles, seed)


def _sampled(source: TileSource, max_tiles: int | None, seed: int) -> TileSource:
    """`source` cut down to a seeded sample of `max_tiles` of its tiles, spread over the whole input, kept in reading
    order (slides are read once, in order)."""
    if max_tiles is not None and max_tiles < 1:
        raise BadArgumentError(f"--max-tiles must be at least 1, got {max_tiles}")
    if max_tiles is None:
        return source
    total = len(source)
    if total <= max_tiles:
        return source
    keep = np.sort(np.random.default_rng(seed).permutation(total)[:max_tiles])
    if source.kind == "slides" and source.mode == "tiled":
        return replace(source, picks=frozenset(keep.tolist()), available=total)
    return replace(source, items=tuple(source.items[i] for i in keep), available=total)


def _open_all(
    path: str | Path, *, size: int, mode: str, tile: int, split: str | None, source: str | None
) -> TileSource:
    path = Path(path)
    if mode not in ("tiled", "resized"):
        raise BadArgumentError(f"--mode must be tiled or resized, got {mode!r}")
    if not path.exists():
        raise BadArgumentError(f"evaluation input not found: {path}")
    if path.is_dir() and (path / "dataset.json").is_file():
        return TileSource(path, "dataset", _dataset_items(path, split, source), size, mode, tile)
    if _is_zarr_image(path):
        return TileSource(path, "slides", (path,), size, mode, tile)
    # a `generate --count` folder
    if path.is_dir() and (path / "images").is_dir() and (path / "manifest.csv").is_file():
        path = path / "images"
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.iterdir()
            if (p.suffix.lower() in IMAGE_SUFFIXES | SLIDE_SUFFIXES or _is_zarr_image(p))
            and not p.name.lower().endswith(LABEL_SUFFIXES)
        )
    )
    if not files:
        raise BadArgumentError(f"{path}: no images, slides or dataset.json found")
    if all(_is_slide(p, tile) for p in files):
        return TileSource(path, "slides", tuple(files), size, mode, tile)
    images = tuple(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
    return TileSource(path, "images", images, size, mode, tile)


def _is_zarr_image(path: Path) -> bool:
    """An OME-Zarr image (`generate --format ome-zarr`, NGFF 0.4 or 0.5): a folder with multiscales metadata."""
    return path.is_dir() and _multiscales(path) is not None


def _multiscales(path: Path) -> dict | None:
    """The first multiscales entry of an NGFF image: in `.zattrs` (0.4, Zarr v2) or under `ome` in `zarr.json`
    attributes (0.5, Zarr v3); None when there is none."""
    import json

    for name, keys in ((".zattrs", ()), ("zarr.json", ("attributes", "ome"))):
        try:
            doc = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        for key in keys:
            doc = doc.get(key, {}) if isinstance(doc, dict) else {}
        found = doc.get("multiscales") if isinstance(doc, dict) else None
        if isinstance(found, list) and found:
            return found[0]
    return None


class _ZarrSlide:
    """Level 0 of an OME-Zarr RGB image with the two reads evaluation needs (level-0 regions and a thumbnail)."""

    def __init__(self, path: Path) -> None:
        import zarr

        meta = _multiscales(path)
        if meta is None:
            raise BadArgumentError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
        names = [a["name"] for a in meta["axes"]]
        root = zarr.open_group(str(path), mode="r")
        self._levels = [_array(root[d["path"]]) for d in meta["datasets"]]
        self._channel_first = names[0] == "c"
        h, w = self._levels[0].shape[1:] if self._channel_first else self._levels[0].shape[:2]
        self.dimensions = (int(w), int(h))

    def _rgb(self, array, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._channel_first:
            return np.moveaxis(np.asarray(array[:3, y0:y1, x0:x1]), 0, 2)
        return np.asarray(array[y0:y1, x0:x1, :3])

    def read_level0(self, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        (x, y), (w, h) = location, size
        return self._rgb(self._levels[0], y, y + h, x, x + w)

    def thumbnail_rgb(self, size: int) -> np.ndarray:
        smallest = self._levels[-1]
        h, w = smallest.shape[1:] if self._channel_first else smallest.shape[:2]
        image = Image.fromarray(self._rgb(smallest, 0, h, 0, w))
        image.thumbnail((size, size))
        return np.asarray(image)

    def __enter__(self) -> _ZarrSlide:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _array(node):
    """A level of an OME-Zarr image: an array, not a group (a malformed image says so here)."""
    import zarr

    if not isinstance(node, zarr.Array):
        raise BadArgumentError(f"{node.path}: an OME-Zarr level must be an array, found a group")
    return node


def _open_any(path: Path):
    return _ZarrSlide(path) if _is_zarr_image(path) else open_slide(path, need_mpp=False)


def _is_slide(path: Path, tile: int) -> bool:
    """A file counts as a slide when it is a slide format, a tiled TIFF, an OME-Zarr image, or more than two tiles
    across."""
    if _is_zarr_image(path) or path.suffix.lower() in SLIDE_SUFFIXES - {".tif", ".tiff"}:
        return True
    try:
        import tifffile

        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tf:
                first = tf.pages[0]
                return isinstance(first, tifffile.TiffPage) and (
                    bool(first.is_tiled) or max(first.shape[:2]) > 2 * tile
                )
        with Image.open(path) as im:
            return max(im.size) > 2 * tile
    except Exception:  # unreadable here: read as an image, whose reader says what is wrong
        return False


def _dataset_items(path: Path, split: str | None, source: str | None) -> tuple:
    from wsi_synth.data import open_dataset

    rows = [
        r
        for r in open_dataset(path).manifest()
        if r["kind"] in ("labelled", "unlabelled") and (split is None or r["split"] == split)
    ]
    if source is not None:
        named = sorted({r["source"] for r in rows})
        rows = [r for r in rows if r["source"].startswith(source)]
        if not rows:
            raise BadArgumentError(
                f"--source {source}: no source of {path}{f' (split {split!r})' if split else ''} starts with it; "
                f"its sources: {', '.join(named) or 'none'}"
            )
    if not rows:
        raise BadArgumentError(f"{path}: no tiles{f' in split {split!r}' if split else ''}")
    return tuple((r["source"], f"{r['kind']}/images", int(r["index"])) for r in rows)


def _grid_count(slide: Path, tile: int) -> int:
    with _open_any(slide) as s:
        w, h = s.dimensions
    return _tiles_in(w, h, tile)


def _tiles_in(w: int, h: int, tile: int) -> int:
    """How many whole `tile` px tiles a w × h slide holds (a partial last row or column is not cut)."""
    return (w // tile) * (h // tile)


def _picked_origins(source: TileSource, w: int, h: int, first: int) -> Iterator[tuple[int, int]]:
    """Level-0 origins of the tiles of one w × h slide that `source` keeps, in reading order (rows, then columns);
    `first` is the index of the slide's first tile among the tiles of all the source's slides. Tiles and their
    classes are read through this one walk, so they stay in step."""
    index = first
    for y in range(0, h - source.tile + 1, source.tile):
        for x in range(0, w - source.tile + 1, source.tile):
            if source.picks is None or index in source.picks:
                yield x, y
            index += 1


def iter_batches(source: TileSource, *, batch: int = 64) -> Iterator[np.ndarray]:
    """Batches of (n, size, size, 3) uint8 tiles, in a fixed order."""
    pending: list[np.ndarray] = []
    for tile in _iter_tiles(source):
        pending.append(tile)
        if len(pending) == batch:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


def _iter_tiles(source: TileSource) -> Iterator[np.ndarray]:
    if source.kind == "images":
        for p in source.items:
            yield _resized(read_rgb(p), source.size)
    elif source.kind == "dataset":
        from wsi_synth.data import open_dataset

        ds = open_dataset(source.path)
        groups: dict = {}
        for sid, name, index in source.items:
            group = groups.get(sid) or groups.setdefault(sid, ds.source_group(sid))
            yield _resized(group[name][index], source.size)
    else:
        yield from _slide_tiles(source)


def _slide_tiles(source: TileSource) -> Iterator[np.ndarray]:
    """Slides read as `extract` reads them (`wsi_synth.slide`): white outside the scanned area, damage refused. Of a
    sample, only the picked tiles are read."""
    first = 0
    for path in source.items:
        with _open_any(path) as s:
            w, h = s.dimensions
            if source.mode == "resized":
                yield _resized(s.thumbnail_rgb(source.size), source.size)
                continue
            for x, y in _picked_origins(source, w, h, first):
                yield _resized(s.read_level0((x, y), (source.tile, source.tile)), source.size)
            first += _tiles_in(w, h, source.tile)


def _resized(tile: np.ndarray, size: int) -> np.ndarray:
    if tile.shape[0] == size and tile.shape[1] == size:
        return np.asarray(tile)
    return np.asarray(Image.fromarray(np.asarray(tile)).resize((size, size), Image.Resampling.BILINEAR))


def read_centre(slide: Path, side: int) -> np.ndarray:
    """A `side`² region from the middle of a slide's level 0 (for the seam score)."""
    with _open_any(slide) as s:
        w, h = s.dimensions
        side_w, side_h = min(side, w), min(side, h)
        return s.read_level0(((w - side_w) // 2, (h - side_h) // 2), (side_w, side_h))


def tile_classes(source: TileSource) -> list[str | None] | None:
    """Each tile's main class (the class on most of its annotated pixels; None where none is annotated), in the order
    the tiles are read; None when the input carries no classes: a folder of plain images, slides without their label
    pyramid and record (`generate` writes both beside the slide), slides read whole (`--mode resized`)."""
    if source.kind == "dataset":
        return _dataset_classes(source)
    if source.kind == "images":
        return _count_classes(source)
    if source.mode == "tiled":
        return _slide_classes(source)
    return None


def main_class(fractions: dict[str, float]) -> str | None:
    """The class with the largest share of a tile's pixels, unannotated pixels left out."""
    known = {name: share for name, share in fractions.items() if name != UNKNOWN and share > 0}
    return max(known, key=known.__getitem__) if known else None


def _dataset_classes(source: TileSource) -> list[str | None]:
    import json

    from wsi_synth.data import open_dataset

    table = {
        (r["source"], f"{r['kind']}/images", int(r["index"])): r["fractions"]
        for r in open_dataset(source.path).manifest()
    }
    return [main_class(json.loads(table.get(item) or "{}")) for item in source.items]


def _count_classes(source: TileSource) -> list[str | None] | None:
    """Classes of a `generate --count` folder's tiles, from its manifest's `fraction_<class>` columns."""
    import csv

    manifest = source.path.parent / "manifest.csv"
    if source.path.name != "images" or not manifest.is_file():
        return None
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = {Path(r.get("image") or "").name: r for r in csv.DictReader(fh)}
    prefix = "fraction_"
    classes = []
    for p in source.items:
        row = rows.get(p.name)
        if row is None:
            return None  # a tile the manifest does not know: the folder was edited, its classes cannot be trusted
        classes.append(main_class({k[len(prefix) :]: float(v or 0) for k, v in row.items() if k.startswith(prefix)}))
    return classes


def _slide_classes(source: TileSource) -> list[str | None] | None:
    """Classes of tiled slides' tiles from each slide's label pyramid (level 0, read tile by tile) and the class
    names of its record, in the order `_slide_tiles` reads the tiles."""
    classes: list[str | None] = []
    first = 0
    for path in source.items:
        labels = _label_pyramid(path)
        if labels is None:
            return None
        level0, names = labels
        h, w = level0.shape
        for x, y in _picked_origins(source, w, h, first):
            ids = np.bincount(np.asarray(level0[y : y + source.tile, x : x + source.tile]).ravel())
            classes.append(main_class({names.get(i, UNKNOWN): float(n) for i, n in enumerate(ids) if n}))
        first += _tiles_in(w, h, source.tile)
    return classes


def _label_pyramid(slide: Path):
    """(level 0 of the label pyramid as a lazily read array, class id → name) of a slide `generate` wrote as TIFF,
    or None when the mask or the record is missing or unreadable."""
    import json

    import tifffile
    import zarr

    from wsi_synth.io.outputs import OutputPaths

    try:
        paths = OutputPaths.beside(slide)
    except BadArgumentError:  # not a name generate writes: no label pyramid to find
        return None
    if paths.mask is None or not paths.mask.is_file() or not paths.record.is_file():
        return None
    try:
        record = json.loads(paths.record.read_text())
        names = {int(c["id"]): str(c["name"]) for c in record["classes"]}
        level0 = zarr.open(tifffile.imread(paths.mask, aszarr=True, level=0), mode="r")
        w, h = _open_any_dimensions(slide)
        if not isinstance(level0, zarr.Array):
            return None
    except (OSError, ValueError, KeyError, TypeError, tifffile.TiffFileError):
        return None
    if level0.ndim != 2 or level0.shape != (h, w):
        return None  # not this slide's mask
    return level0, names


def _open_any_dimensions(slide: Path) -> tuple[int, int]:
    with _open_any(slide) as s:
        return s.dimensions
