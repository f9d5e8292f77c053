"""Class maps → ASAP annotation XML (`s.xml`), the only annotation format ASAP draws.

ASAP polygons have no holes, and ASAP discards a file whose annotation names an undeclared group. So:
- every class of the model except 0 (unknown) is declared as a group, with the model's colour, present or not;
- a region with holes is written as several hole-free polygons of its class: the region is cut into vertical
  strips at the left edge of each hole, which opens every hole onto a strip's edge. The strips tile the region
  exactly (their union is the region, cut along pixel edges), so any reader that fills polygons — ASAP's own
  annotation-to-mask conversion, QuPath's importers, shapely — gets the region with its holes back, with no draw
  order to get right. (Writing holes as annotations of a separate "exclusion" group, CAMELYON's convention,
  would instead rely on every reader drawing that group last.)

Coordinates are level-0 px, traced from the same map as the GeoJSON (`io.geojson.trace_classes`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from wsi_synth.io.geojson import trace_classes


def mask_to_asap(labels: np.ndarray, *, downsample: float, classes: Sequence[dict]) -> str:
    """ASAP XML of the non-zero classes of an (H, W) uint8 map whose pixels are `downsample` level-0 px."""
    from shapely.geometry import Polygon

    by_id = {int(c["id"]): c for c in classes}
    traced = trace_classes(labels, downsample=downsample)
    groups = {
        i: by_id.get(i, {"name": f"class {i}", "color": [128, 128, 128]}) for i in sorted({*by_id, *traced} - {0})
    }
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for class_id, found in sorted(traced.items()):
        name, colour = str(groups[class_id]["name"]), _hex(groups[class_id]["color"])
        pieces = [ring for coords in found for ring in hole_free_rings(Polygon(coords[0], coords[1:]))]
        for n, ring in enumerate(pieces):
            element = ET.SubElement(
                annotations, "Annotation", Name=f"{name} {n + 1}", Type="Polygon", PartOfGroup=name, Color=colour
            )
            coordinates = ET.SubElement(element, "Coordinates")
            for order, (x, y) in enumerate(ring):
                ET.SubElement(coordinates, "Coordinate", Order=str(order), X=_number(x), Y=_number(y))
    declared = ET.SubElement(root, "AnnotationGroups")
    for cls in groups.values():
        ET.SubElement(
            ET.SubElement(declared, "Group", Name=str(cls["name"]), PartOfGroup="None", Color=_hex(cls["color"])),
            "Attributes",
        )
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def hole_free_rings(polygon) -> list[list[tuple[float, float]]]:
    """A polygon traced along pixel edges, as hole-free exterior rings (without the closing point) whose union is
    the polygon: cut into vertical strips at the left edge of each hole. A hole's leftmost boundary is a vertical
    pixel edge, so it lies on its strip's edge and the hole opens onto the outside of every strip it crosses."""
    from shapely.geometry import box

    if not polygon.interiors:
        return [list(polygon.exterior.coords)[:-1]]
    minx, miny, maxx, maxy = polygon.bounds
    cuts = sorted({min(x for x, _ in hole.coords) for hole in polygon.interiors} | {minx, maxx})
    rings = []
    for left, right in zip(cuts, cuts[1:], strict=False):
        for part in _polygons(polygon.intersection(box(left, miny, right, maxy))):
            if part.interiors:
                raise ValueError(
                    "hole_free_rings needs rings along pixel edges (axis-parallel); a hole survived its cut"
                )
            rings.append(list(part.exterior.coords)[:-1])
    return rings


def _polygons(geometry) -> list:
    if geometry.geom_type == "Polygon":
        return [geometry] if not geometry.is_empty else []
    return [g for part in getattr(geometry, "geoms", []) for g in _polygons(part)]


def _hex(color) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in list(color)[:3]).upper()


def _number(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".")
