"""The work on one tile, runnable in this process or in worker processes.

Each worker opens the slide once and reads, rasterizes, encodes and stores its own tiles (one file per
tile, so workers never contend), returning only the manifest fields. Processes rather than threads:
reading and converting openslide regions holds the GIL long enough that two threads gained only 1.3×.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from wsi_synth.data.store import TileStore
from wsi_synth.extraction.raster import ClassGeometries, class_fractions


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker needs to cut tiles from one slide (picklable: geometry travels as WKB)."""

    slide_path: str
    slide_mpp: float
    mpp: float
    tile: int
    l0_tile: float
    l0_region: float
    region_mask: int
    items: tuple[tuple[int, bytes], ...]
    names: tuple[str, ...]
    store: TileStore


class TileCutter:
    """Open slide + indexed geometry + tile store for one `SlideJob`."""

    def __init__(self, job: SlideJob) -> None:
        from wsi_synth.slide import open_slide

        self.job = job
        self.slide = open_slide(job.slide_path, mpp=job.slide_mpp)
        self.geometries = ClassGeometries.build([(cid, shapely.from_wkb(wkb)) for cid, wkb in job.items])

    def cut(self, kind: str, index: int, l0_xy: tuple[int, int]) -> dict | None:
        """Store tile `index` of `kind`; return its class fractions (None for unlabelled tiles)."""
        return self.store(kind, index, *self.load(kind, l0_xy))

    def load(self, kind: str, l0_xy: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Pixels and/or mask of one tile (the part that decodes and rasterizes; releases the GIL mostly)."""
        job, t = self.job, self.job.tile
        if kind == "regions":
            return None, self.geometries.rasterize(l0_xy, job.l0_region / job.region_mask, job.region_mask)
        image = self.slide.read(l0_xy, (t, t), job.mpp)
        return image, self.geometries.rasterize(l0_xy, job.l0_tile / t, t) if kind == "labelled" else None

    def store(self, kind: str, index: int, image: np.ndarray | None, mask: np.ndarray | None) -> dict | None:
        """Encode and write one tile's arrays; its class fractions (None without a mask)."""
        if image is not None:
            self.job.store.write(f"{kind}/images", index, image)
        if mask is None:
            return None
        self.job.store.write(f"{kind}/masks", index, mask)
        return class_fractions(mask, self.job.names)

    def close(self) -> None:
        self.slide.close()


_cutter: TileCutter | None = None


def init_worker(job: SlideJob) -> None:
    global _cutter
    _cutter = TileCutter(job)


def cut_in_worker(tasks: list[tuple[str, int, tuple[int, int]]]) -> list[dict | None]:
    """Cut a chunk of tiles: one round trip per chunk, not per tile, keeps the parent's share of the CPU small."""
    assert _cutter is not None, "init_worker was not called"
    return [_cutter.cut(*task) for task in tasks]
