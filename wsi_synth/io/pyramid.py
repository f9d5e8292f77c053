"""Streaming pyramidal TIFF writer for RGB slides (JPEG) and label maps (LZW).

Layout (what OpenSlide, QuPath, ASAP and Bio-Formats all read as one pyramid with a physical pixel size):
tiled BigTIFF, one top-level IFD per level, each level half the one above (rounded up) down to a level
that fits in one tile, `NewSubfileType = 0` on every level, X/YResolution in pixels per centimetre, an
Aperio-style `ImageDescription` (`Aperio …|AppMag = …|MPP = …`) on every level, no stripped thumbnail
before the levels (ASAP indexes levels by IFD), JPEG YCbCr 4:4:4 (4:2:0 costs ~10 dB PSNR on nuclei).

Streaming: level 0 is read from the source in row bands of one tile height; each band is written and
its half-size band appended to a raw spool file for level 1, and so on down the levels. The image is
never held whole; memory is a few bands. Spools are plain files read and written with explicit offsets
(not memory-mapped), so they live in the page cache, not in the process's memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_synth import __version__
from wsi_synth.concurrency import prefetch
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import atomic_output, output_name

Halve = Callable[[np.ndarray], np.ndarray]
#: Compressed size over raw size of an H&E image in Blosc-zstd (OME-Zarr), an upper estimate for disk checks.
LOSSLESS_RATIO = 0.8


@dataclass(frozen=True)
class LevelInfo:
    """One pyramid level: its size and its downsample from level 0."""

    width: int
    height: int
    downsample: float


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) per level: halving (rounded up) until the level fits in one tile."""
    sizes = [(width, height)]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return sizes


def write_slide_pyramid(
    image,
    path: str | Path,
    *,
    mpp: float,
    tile: int = 512,
    quality: int = 90,
    app_mag: float | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
    ome: bool = False,
) -> list[LevelInfo]:
    """Write an (H, W, 3) uint8 array (numpy, zarr or dask) as a JPEG pyramidal BigTIFF at `path`: Aperio-style
    (OpenSlide), or with `ome` an OME-TIFF (levels in SubIFDs, OME-XML physical sizes)."""
    check_pyramid_args(image, 3, mpp, tile)
    check_write_settings(tile=tile, quality=quality)
    height, width = image.shape[:2]
    mag = app_mag if app_mag is not None else round(10.0 / mpp, 2)
    page = dict(photometric="rgb", subsampling=(1, 1), compression="jpeg", compressionargs={"level": quality})
    header = f"({tile}x{tile}) JPEG/RGB Q={quality}|AppMag = {mag}|MPP = {mpp}"
    levels, _ = _write_pyramid(
        image,
        path,
        mpp=mpp,
        tile=tile,
        page=page,
        header=header,
        halve=halve_rgb,
        overwrite=overwrite,
        workers=workers,
        need_bytes=_estimate_bytes(width, height, 3, output_ratio=0.15),
        progress=progress,
        ome={"Name": Path(path).name.split(".")[0]} if ome else None,
    )
    return levels


def write_label_pyramid(
    labels,
    path: str | Path,
    *,
    mpp: float,
    tile: int = 512,
    classes: Sequence[dict] = (),
    overwrite: bool = False,
    capture_max: int = 0,
    ome: bool = False,
) -> tuple[list[LevelInfo], np.ndarray | None, float]:
    """Write an (H, W) uint8 class map as an LZW pyramidal BigTIFF, downsampled by mode (never mean).

    Ties in a 2×2 block go to the class rarest in the whole map, so thin classes survive downsampling.
    The legend (`classes`, [{id, name, color}]) goes into the description as `Classes = 0:name;1:name`, or with
    `ome` (an OME-TIFF) into an OME MapAnnotation {id: name}.
    With `capture_max`, also returns the first level whose sides are ≤ `capture_max` (and its downsample),
    e.g. for polygonizing the regions without reading the map again.
    """
    check_pyramid_args(labels, 2, mpp, tile)
    legend = ";".join(f"{c['id']}:{c['name']}" for c in classes)
    header = f"({tile}x{tile}) LZW/LABELS|AppMag = {round(10.0 / mpp, 2)}|MPP = {mpp}" + (
        f"|Classes = {legend}" if legend else ""
    )
    priority = rarity_priority(labels)
    levels, captured = _write_pyramid(
        labels,
        path,
        mpp=mpp,
        tile=tile,
        page=dict(photometric="minisblack", compression="lzw"),
        header=header,
        halve=lambda band: halve_labels(band, priority),
        overwrite=overwrite,
        workers=1,
        need_bytes=_estimate_bytes(labels.shape[1], labels.shape[0], 1, output_ratio=0.05),
        capture_max=capture_max,
        ome={"Name": "labels", "MapAnnotation": {str(c["id"]): c["name"] for c in classes}} if ome else None,
    )
    if captured is None:
        return levels, None, 1.0
    return levels, captured, labels.shape[1] / captured.shape[1]


def check_pyramid_args(array, ndim: int, mpp: float, tile: int) -> None:
    """Refuse an array, MPP or tile size no viewer could use, naming what is wrong."""
    shape = tuple(array.shape)
    if len(shape) != ndim or (ndim == 3 and shape[2] != 3) or np.dtype(array.dtype) != np.uint8:
        want = "(height, width, 3) uint8" if ndim == 3 else "(height, width) uint8"
        raise BadArgumentError(f"image must be {want}, got shape {shape} dtype {array.dtype}")
    if min(shape[:2]) < 1:
        raise BadArgumentError(f"image must be at least 1×1 px, got {shape[1]}×{shape[0]}")
    check_write_settings(tile=tile)
    if not (math.isfinite(mpp) and mpp > 0):
        raise BadArgumentError(f"--mpp must be a positive finite number of µm per pixel, got {mpp}")


def check_write_settings(*, tile: int, quality: int = 90) -> None:
    """Refuse a tile size or JPEG quality no pyramid can be written with: called where a run's settings enter, so a
    bad value fails before the sampling, not after it."""
    if tile % 16 or not 16 <= tile <= 4096:
        raise BadArgumentError(f"--tile must be a multiple of 16 in 16–4096 (256 or 512 for viewers), got {tile}")
    if not 1 <= quality <= 100:
        raise BadArgumentError(f"--quality must be 1–100, got {quality}")


def slide_output_bytes(width: int, height: int, *, lossless: bool = False) -> int:
    """Disk needed to write a slide's image and label pyramids (outputs and spools), an upper estimate; `lossless`
    for an OME-Zarr's Blosc-zstd image instead of JPEG."""
    return _estimate_bytes(width, height, 3, output_ratio=LOSSLESS_RATIO if lossless else 0.15) + _estimate_bytes(
        width, height, 1, output_ratio=0.05
    )


def _estimate_bytes(width: int, height: int, channels: int, *, output_ratio: float) -> int:
    raw = width * height * channels
    return int(raw * output_ratio + raw / 3)  # compressed output + raw spools of levels 1..n


def _write_pyramid(
    source,
    path: str | Path,
    *,
    mpp: float,
    tile: int,
    page: dict,
    header: str,
    halve: Halve,
    overwrite: bool,
    workers: int | None,
    need_bytes: int,
    progress: bool = False,
    capture_max: int = 0,
    ome: dict | None = None,
) -> tuple[list[LevelInfo], np.ndarray | None]:
    """Write every level; also return the first level whose sides are ≤ `capture_max` (when asked), read
    back from its spool rather than recomputed.

    Without `ome`: one top-level IFD per level with the Aperio description (OpenSlide's layout). With `ome`
    (OME metadata for tifffile: Name, MapAnnotation, …): an OME-TIFF, level 0 in the top IFD with its OME-XML
    and the smaller levels in its SubIFDs (Bio-Formats' and QuPath's pyramid layout).
    """
    import tifffile

    height, width = source.shape[:2]
    with (
        atomic_output(path, overwrite=overwrite, need_bytes=need_bytes) as tmp,
        LevelStream(
            source,
            tile,
            halve,
            spool_dir=Path(tmp).parent,
            capture_max=capture_max,
            progress=progress,
            name=output_name(path),
        ) as stream,
        tifffile.TiffWriter(tmp, bigtiff=True, ome=ome is not None) as tw,
    ):
        for k, (w, h), bands in stream:
            level_mpp = mpp * width / w
            if ome is None:
                reduced = "" if k == 0 else f"-> {w}x{h} "
                box = f"{width}x{height} [0,0 {width}x{height}] {reduced}"
                description = f"Aperio Image Library wsi-synth {__version__}\r\n{box}{header}"
                layout: dict = dict(description=description, metadata=None, subfiletype=0)
            elif k == 0:
                layout = dict(
                    subifds=len(stream.sizes) - 1,
                    metadata={
                        "axes": "YXS" if len(source.shape) == 3 else "YX",
                        "PhysicalSizeX": mpp,
                        "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": mpp,
                        "PhysicalSizeYUnit": "µm",
                        **ome,
                    },
                )
            else:
                layout = dict(subfiletype=1, metadata=None)
            tw.write(
                _tiles(bands, w, tile),
                shape=(h, w, *source.shape[2:]),
                dtype=np.uint8,
                tile=(tile, tile),
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                software=f"wsi-synth {__version__}",
                maxworkers=workers or os.cpu_count(),
                buffersize=tile * w * int(np.prod(source.shape[2:] or (1,))),
                **layout,
                **page,
            )
    return stream.levels, stream.captured


class LevelStream:
    """The levels of a pyramid as row bands of `tile` rows, level after level, for any writer (TIFF, Zarr).

    Iterating yields `(k, (width, height), bands)` per level. Level 0's bands are read from `source`; while a
    level's bands are consumed, their halves (`halve`) are appended to a raw spool file that the next level is
    read from, so a level's bands must be consumed before the next level is asked for. The image is never held
    whole: memory is a few bands. With `capture_max`, `captured` is the first level whose sides are ≤ it.
    """

    def __init__(
        self,
        source,
        tile: int,
        halve: Halve,
        *,
        spool_dir: Path,
        capture_max: int = 0,
        progress: bool = False,
        name: str = "",
    ) -> None:
        self.source, self.tile, self.halve, self.capture_max = source, tile, halve, capture_max
        height, width = source.shape[:2]
        self.sizes = level_sizes(width, height, tile)
        self.levels = [LevelInfo(w, h, width / w) for w, h in self.sizes]
        self.captured: np.ndarray | None = None
        self._spools = tempfile.TemporaryDirectory(prefix=f".{name}.levels-", dir=spool_dir)
        self._progress, self._name = progress, name

    def __enter__(self) -> LevelStream:
        from tqdm import tqdm

        self._bar = tqdm(
            total=sum(w * h for w, h in self.sizes),
            unit="px",
            unit_scale=True,
            desc=self._name,
            disable=not self._progress,
            leave=False,
        )
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
        self._spools.cleanup()

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int], Iterator[np.ndarray]]]:
        source = self.source
        read_band: Callable[[int, int], np.ndarray] = lambda y0, y1: _read(source, y0, y1)  # noqa: E731
        if self.capture_max and max(self.sizes[0]) <= self.capture_max:
            self.captured = _read(source, 0, self.sizes[0][1])
        for k, (w, h) in enumerate(self.sizes):
            last = k + 1 == len(self.sizes)
            spool = (
                None
                if last
                else _Spool(Path(self._spools.name) / f"level{k + 1}.raw", source.shape[2:], self.sizes[k + 1][0])
            )
            yield k, (w, h), self._counted(_bands(read_band, h, self.tile, spool, self.halve), w)
            if spool is not None:
                if spool.rows != self.sizes[k + 1][1]:
                    raise RuntimeError(f"level {k} was not read to its end before level {k + 1} was asked for")
                read_band = spool.read
                if self.captured is None and self.capture_max and max(self.sizes[k + 1]) <= self.capture_max:
                    self.captured = spool.read(0, self.sizes[k + 1][1]).copy()

    def _counted(self, bands: Iterator[np.ndarray], width: int) -> Iterator[np.ndarray]:
        # Producing the next bands (read, halve, spool) in a thread overlaps the writer's encoding of this one.
        for band in prefetch(bands):
            yield band
            self._bar.update(band.shape[0] * width)


def _read(source, y0: int, y1: int) -> np.ndarray:
    band = source[y0:y1]
    band = band.compute() if hasattr(band, "compute") else band
    return np.ascontiguousarray(band, dtype=np.uint8)


def _tiles(bands: Iterator[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, from its row bands."""
    for band in bands:
        padded = _pad_to(band, tile, math.ceil(width / tile) * tile)
        for x0 in range(0, padded.shape[1], tile):
            yield padded[:, x0 : x0 + tile]


def _bands(
    read_band: Callable[[int, int], np.ndarray], height: int, rows: int, spool, halve: Halve
) -> Iterator[np.ndarray]:
    for y0 in range(0, height, rows):
        band = read_band(y0, min(y0 + rows, height))
        if spool is not None:
            spool.append(halve(band))
        yield band


def _pad_to(band: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Edge-replicate a band to whole tiles: JPEG blocks at the border see continuous content, not black."""
    pad = [(0, rows - band.shape[0]), (0, cols - band.shape[1])] + [(0, 0)] * (band.ndim - 2)
    return np.pad(band, pad, mode="edge") if any(p[1] for p in pad) else band


class _Spool:
    """A level held as raw rows in a temporary file, appended and read back in bands."""

    def __init__(self, path: Path, channels: tuple, width: int) -> None:
        self.row_bytes = width * int(np.prod(channels or (1,)))
        self.shape_tail = (width, *channels)
        self.rows = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def append(self, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows).tobytes()
        written = os.pwrite(self.fd, data, self.rows * self.row_bytes)
        if written != len(data):
            raise OSError(28, "short write (disk full?)")
        self.rows += rows.shape[0]

    def read(self, y0: int, y1: int) -> np.ndarray:
        data = os.pread(self.fd, (y1 - y0) * self.row_bytes, y0 * self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(y1 - y0, *self.shape_tail)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def halve_rgb(band: np.ndarray) -> np.ndarray:
    """2× box downsample (mean of each 2×2 block; edges average what exists). PIL's `reduce` is C and exact."""
    from PIL import Image

    return np.asarray(Image.fromarray(band).reduce(2))


def halve_labels(band: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """2× mode downsample of a class map; ties go to the higher `priority` (the rarer class)."""
    padded = _pad_to(band, band.shape[0] + band.shape[0] % 2, band.shape[1] + band.shape[1] % 2)
    quads = [padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2]]
    best, best_score = quads[0], np.full(quads[0].shape, -1, np.int32)
    for candidate in quads:
        count = sum((q == candidate).astype(np.int32) for q in quads)
        score = count * 256 + priority[candidate]
        take = score > best_score
        best = np.where(take, candidate, best)
        best_score = np.where(take, score, best_score)
    return best.astype(np.uint8)


def rarity_priority(labels) -> np.ndarray:
    """Per class value 0–255: 255 for the rarest class present, lower for commoner ones (for tie-breaks)."""
    counts = np.zeros(256, np.int64)
    height = labels.shape[0]
    step = max(1, (64 << 20) // max(labels.shape[1], 1))
    for y0 in range(0, height, step):
        counts += np.bincount(_read(labels, y0, min(height, y0 + step)).ravel(), minlength=256)
    order = np.argsort(-counts, kind="stable")  # commonest first
    priority = np.empty(256, np.int32)
    priority[order] = np.arange(256)
    return priority
