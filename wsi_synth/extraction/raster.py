"""Class maps from polygons: clip to the window, then rasterize at pixel centres (rasterio).

A pixel takes a class when its centre lies inside the class's polygon (holes excluded, every part of a
MultiPolygon included). Where annotations overlap, the smaller annotation wins: an island of necrosis drawn
inside a tumour outline keeps its class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry


@dataclass
class ClassGeometries:
    """A slide's annotated polygons, indexed for window queries. Level-0 pixel coordinates."""

    class_ids: np.ndarray  # per polygon part
    priority: np.ndarray  # draw order: larger annotations first
    parts: np.ndarray  # shapely Polygons
    tree: shapely.STRtree
    annotated: BaseGeometry  # union of everything with a class

    @classmethod
    def build(cls, items: Sequence[tuple[int, BaseGeometry]]) -> ClassGeometries:
        ids, prio, parts = [], [], []
        order = sorted(range(len(items)), key=lambda i: -items[i][1].area)
        for rank, i in enumerate(order):
            class_id, geom = items[i]
            for part in getattr(geom, "geoms", [geom]):
                ids.append(class_id)
                prio.append(rank)
                parts.append(part)
        parts_arr = np.array(parts, dtype=object)
        union = shapely.union_all(parts_arr) if len(parts) else shapely.Polygon()
        return cls(np.array(ids, int), np.array(prio, int), parts_arr, shapely.STRtree(parts_arr), union)

    def annotated_fractions(self, l0_boxes: np.ndarray) -> np.ndarray:
        """Fraction of each `(x0, y0, x1, y1)` box covered by any class."""
        boxes = shapely.box(l0_boxes[:, 0], l0_boxes[:, 1], l0_boxes[:, 2], l0_boxes[:, 3])
        hits = np.zeros(len(boxes))
        candidates = (
            np.unique(self.tree.query(boxes, predicate="intersects")[0]) if len(self.parts) else np.empty(0, np.intp)
        )
        if len(candidates):
            prepared = self.annotated
            shapely.prepare(prepared)
            hits[candidates] = shapely.area(shapely.intersection(prepared, boxes[candidates])) / shapely.area(
                boxes[candidates]
            )
        return hits

    def rasterize(self, l0_xy: tuple[float, float], l0_px: float, size: int | tuple[int, int]) -> np.ndarray:
        """uint8 class map of the window at `l0_xy` whose pixels are `l0_px` level-0 px wide; `size` is the side of a
        square window or its (width, height)."""
        from rasterio.features import rasterize
        from rasterio.transform import Affine

        width, height = (size, size) if isinstance(size, int) else size
        x0, y0 = l0_xy
        x1, y1 = x0 + l0_px * width, y0 + l0_px * height
        found = self.tree.query(box(x0, y0, x1, y1), predicate="intersects")
        if len(found) == 0:
            return np.zeros((height, width), np.uint8)
        window = box(x0, y0, x1, y1)
        if len(found) == 1 and self.parts[found[0]].contains(window):  # deep inside one annotation: no rasterizing
            return np.full((height, width), self.class_ids[found[0]], np.uint8)
        found = found[np.argsort(self.priority[found], kind="stable")]
        shapes = []
        for i in found:
            clipped = shapely.clip_by_rect(self.parts[i], x0, y0, x1, y1)
            if not clipped.is_empty:
                shapes.append((clipped, int(self.class_ids[i])))
        if not shapes:
            return np.zeros((height, width), np.uint8)
        return rasterize(
            shapes, out_shape=(height, width), transform=Affine(l0_px, 0, x0, 0, l0_px, y0), fill=0, dtype="uint8"
        )


def class_fractions(mask: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Fraction of the mask's pixels in each class present (rounded; for the manifest)."""
    from PIL import Image

    # C; np.bincount widens to int64 first
    counts = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).histogram()
    return {names[i]: round(c / mask.size, 4) for i, c in enumerate(counts[: len(names)]) if c}
