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
from wsi_synth.io.atomic import atomic_output

Halve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LevelInfo:
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


def write_slide_pyramid(image, path: str | Path, *, mpp: float, tile: int = 512, quality: int = 90, app_mag: float | None = None,
                        overwrite: bool = False, workers: int | None = None, progress: bool = False) -> list[LevelInfo]:
    """Write an (H, W, 3) uint8 array (numpy, zarr or dask) as a JPEG pyramidal BigTIFF at `path`."""
    _check_args(image, 3, mpp, tile)
    if not 1 <= quality <= 100:
        raise BadArgumentError(f"quality must be 1–100, got {quality}")
    height, width = image.shape[:2]
    mag = app_mag if app_mag is not None else round(10.0 / mpp, 2)
    page = dict(photometric="rgb", subsampling=(1, 1), compression="jpeg", compressionargs={"level": quality})
    header = f"({tile}x{tile}) JPEG/RGB Q={quality}|AppMag = {mag}|MPP = {mpp}"
    levels, _ = _write_pyramid(image, path, mpp=mpp, tile=tile, page=page, header=header, halve=halve_rgb, overwrite=overwrite,
                               workers=workers, need_bytes=_estimate_bytes(width, height, 3, output_ratio=0.15), progress=progress)
    return levels


def write_label_pyramid(labels, path: str | Path, *, mpp: float, tile: int = 512, classes: Sequence[dict] = (),
                        overwrite: bool = False, capture_max: int = 0) -> tuple[list[LevelInfo], np.ndarray | None, float]:
    """Write an (H, W) uint8 class map as an LZW pyramidal BigTIFF, downsampled by mode (never mean).

    Ties in a 2×2 block go to the class rarest in the whole map, so thin classes survive downsampling.
    The legend (`classes`, [{id, name, color}]) goes into the description as `Classes = 0:name;1:name`.
    With `capture_max`, also returns the first level whose sides are ≤ `capture_max` (and its downsample),
    e.g. for polygonizing the regions without reading the map again.
    """
    _check_args(labels, 2, mpp, tile)
    legend = ";".join(f"{c['id']}:{c['name']}" for c in classes)
    header = f"({tile}x{tile}) LZW/LABELS|AppMag = {round(10.0 / mpp, 2)}|MPP = {mpp}" + (f"|Classes = {legend}" if legend else "")
    priority = _rarity_priority(labels)
    levels, captured = _write_pyramid(labels, path, mpp=mpp, tile=tile, page=dict(photometric="minisblack", compression="lzw"), header=header,
                                      halve=lambda band: halve_labels(band, priority), overwrite=overwrite, workers=1,
                                      need_bytes=_estimate_bytes(*labels.shape[::-1], 1, output_ratio=0.05), capture_max=capture_max)
    if captured is None:
        return levels, None, 1.0
    return levels, captured, labels.shape[1] / captured.shape[1]


def _check_args(array, ndim: int, mpp: float, tile: int) -> None:
    shape = tuple(array.shape)
    if len(shape) != ndim or (ndim == 3 and shape[2] != 3) or np.dtype(array.dtype) != np.uint8:
        want = "(height, width, 3) uint8" if ndim == 3 else "(height, width) uint8"
        raise BadArgumentError(f"image must be {want}, got shape {shape} dtype {array.dtype}")
    if min(shape[:2]) < 1:
        raise BadArgumentError(f"image must be at least 1×1 px, got {shape[1]}×{shape[0]}")
    if tile % 16 or not 16 <= tile <= 4096:
        raise BadArgumentError(f"tile must be a multiple of 16 in 16–4096 (256 or 512 for viewers), got {tile}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise BadArgumentError(f"--mpp must be a positive finite number of µm per pixel, got {mpp}")


def slide_output_bytes(width: int, height: int) -> int:
    """Disk needed to write a slide's image and label pyramids (outputs and spools), an upper estimate."""
    return _estimate_bytes(width, height, 3, output_ratio=0.15) + _estimate_bytes(width, height, 1, output_ratio=0.05)


def _estimate_bytes(width: int, height: int, channels: int, *, output_ratio: float) -> int:
    raw = width * height * channels
    return int(raw * output_ratio + raw / 3)  # compressed output + raw spools of levels 1..n


def _write_pyramid(source, path: str | Path, *, mpp: float, tile: int, page: dict, header: str, halve: Halve, overwrite: bool,
                   workers: int | None, need_bytes: int, progress: bool = False, capture_max: int = 0) -> tuple[list[LevelInfo], np.ndarray | None]:
    """Write every level; also return the first level whose sides are ≤ `capture_max` (when asked), read
    back from its spool rather than recomputed."""
    import tifffile
    from tqdm import tqdm

    height, width = source.shape[:2]
    sizes = level_sizes(width, height, tile)
    levels = [LevelInfo(w, h, width / w) for w, h in sizes]
    with atomic_output(path, overwrite=overwrite, need_bytes=need_bytes) as tmp, \
            tempfile.TemporaryDirectory(prefix=f".{Path(path).name}.levels-", dir=Path(tmp).parent) as spool_dir, \
            tifffile.TiffWriter(tmp, bigtiff=True) as tw, \
            tqdm(total=sum(w * h for w, h in sizes), unit="px", unit_scale=True, desc=Path(path).name, disable=not progress, leave=False) as bar:
        read_band: Callable[[int, int], np.ndarray] = lambda y0, y1: _read(source, y0, y1)  # noqa: E731
        captured = _read(source, 0, height) if capture_max and max(sizes[0]) <= capture_max else None
        for k, (w, h) in enumerate(sizes):
            spool = _Spool(Path(spool_dir) / f"level{k + 1}.raw", source.shape[2:], sizes[k + 1][0]) if k + 1 < len(sizes) else None
            description = f"Aperio Image Library wsi-synth {__version__}\r\n{width}x{height} [0,0 {width}x{height}] " \
                          f"{'' if k == 0 else f'-> {w}x{h} '}{header}"
            level_mpp = mpp * width / w
            tw.write(_tiles(read_band, w, h, tile, spool, halve, bar), shape=(h, w, *source.shape[2:]), dtype=np.uint8, tile=(tile, tile),
                     description=description, metadata=None, subfiletype=0, resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                     resolutionunit="CENTIMETER", software=f"wsi-synth {__version__}", maxworkers=workers or os.cpu_count(),
                     buffersize=tile * w * int(np.prod(source.shape[2:] or (1,))), **page)
            if spool is not None:
                read_band = spool.read
                if captured is None and capture_max and max(sizes[k + 1]) <= capture_max:
                    captured = spool.read(0, sizes[k + 1][1]).copy()
    return levels, captured


def _read(source, y0: int, y1: int) -> np.ndarray:
    band = source[y0:y1]
    band = band.compute() if hasattr(band, "compute") else band
    return np.ascontiguousarray(band, dtype=np.uint8)


def _tiles(read_band: Callable[[int, int], np.ndarray], width: int, height: int, tile: int, spool, halve: Halve, bar) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, read in row bands; each band's half goes to the next spool."""
    # tifffile encodes a buffer of tiles on its worker threads, then asks for more: producing the next bands (read,
    # halve, spool) in a thread lets the two overlap instead of taking turns.
    for band in prefetch(_bands(read_band, height, tile, spool, halve)):
        padded = _pad_to(band, tile, math.ceil(width / tile) * tile)
        for x0 in range(0, padded.shape[1], tile):
            yield padded[:, x0 : x0 + tile]
        bar.update(band.shape[0] * width)


def _bands(read_band: Callable[[int, int], np.ndarray], height: int, rows: int, spool, halve: Halve) -> Iterator[np.ndarray]:
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


def _rarity_priority(labels) -> np.ndarray:
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
