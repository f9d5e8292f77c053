"""Read region annotations (QuPath GeoJSON, Aperio ImageScope XML, ASAP XML, DSA JSON) as shapely geometry.

Owns: parsing, repairing invalid polygons, clipping to the slide, and matching annotation files to slides.
All coordinates are level-0 pixels of the slide the annotation belongs to. Never imports torch.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from wsi_synth.errors import BadAnnotationError

log = logging.getLogger("wsi_synth")

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml")


@dataclass(frozen=True)
class Annotation:
    """One annotated area: class name as written in the file (None = unclassified), polygonal geometry."""

    name: str | None
    geometry: BaseGeometry  # Polygon or MultiPolygon, level-0 px
    color: tuple[int, int, int] | None = None
    slide: str | None = None  # the `slide` property, when one file annotates several slides


@dataclass
class AnnotationSet:
    """What one file held: the usable annotations and counts of what was skipped (for the summary)."""

    source: Path
    annotations: list[Annotation]
    unclassified: int = 0
    non_area: int = 0
    repaired: int = 0


def load_annotations(path: str | Path, *, keep_unclassified: bool = False) -> AnnotationSet:
    """Parse an annotation file; format from its content. Raises `BadAnnotationError` with the reason.
    Unclassified areas are counted and dropped, or with `keep_unclassified` kept with the name None."""
    path = Path(path)
    if not path.is_file():
        raise BadAnnotationError(f"annotation file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadAnnotationError(f"cannot read annotation file {path}: {exc}") from exc
    if not text.strip():
        raise BadAnnotationError(f"annotation file {path} is empty")
    raw = _parse_xml(text, path) if text.lstrip().startswith("<") else _parse_json(text, path)
    result = AnnotationSet(path, [])
    for name, geom, color, slide in raw:
        if geom is None or geom.is_empty or not _polygonal(geom):
            result.non_area += 1
            continue
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            geom = _polygonal_part(shapely.make_valid(geom))
            result.repaired += 1
            log.warning("%s: repaired invalid %s polygon (%s)", path.name, name or "unclassified", reason)
            if geom.is_empty:
                continue
        if not name:
            result.unclassified += 1
            if not keep_unclassified:
                continue
        result.annotations.append(Annotation(name, geom, color, slide))
    if not result.annotations and not result.unclassified:
        raise BadAnnotationError(f"annotation file {path} holds no polygons")
    return result


def _polygonal(geom: BaseGeometry) -> bool:
    return isinstance(geom, (Polygon, MultiPolygon)) or geom.geom_type == "GeometryCollection"


def _polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of a (repaired) geometry; make_valid may return lines alongside them."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    return shapely.union_all(parts) if parts else Polygon()


# --- JSON: QuPath (FeatureCollection, bare array, single Feature) and Digital Slide Archive ---------------

RawAnnotation = tuple[str | None, BaseGeometry | None, tuple[int, int, int] | None, str | None]


def _parse_json(text: str, path: Path) -> list[RawAnnotation]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadAnnotationError(f"annotation file {path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadAnnotationError(
            f"annotation file {path} is nested too deeply to be annotations (GeoJSON needs a few levels)"
        ) from exc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features", [])
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, list) and all(isinstance(f, dict) and f.get("type") == "Feature" for f in doc):
        features = doc  # QuPath before 0.3 exported a bare array of Features
    elif isinstance(doc, (dict, list)) and _dsa_elements(doc) is not None:
        return _parse_dsa(_dsa_elements(doc) or [], path)
    else:
        raise BadAnnotationError(
            f"annotation file {path}: unrecognised JSON layout (expected a GeoJSON FeatureCollection, a list of "
            "Features, or Digital Slide Archive annotations)"
        )
    return [_feature(f, path, i) for i, f in enumerate(features)]


def _feature(feature: dict, path: Path, index: int) -> RawAnnotation:
    props = feature.get("properties") or {}
    cls = props.get("classification") or {}
    name = cls.get("name") if isinstance(cls, dict) else None
    color = _qupath_color(cls) if isinstance(cls, dict) else None
    geometry = feature.get("geometry")
    if geometry is None:
        return None, None, None, None
    try:
        geom = shape(geometry)
        finite = bool(np.isfinite(shapely.get_coordinates(geom)).all())
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise BadAnnotationError(
            f"{path}: feature {index} has malformed geometry: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if not finite:
        raise BadAnnotationError(
            f"{path}: feature {index} has coordinates that are not finite numbers (NaN or infinity)"
        )
    slide = props.get("slide")
    return name, geom, color, str(slide) if slide is not None else None


def _qupath_color(cls: dict) -> tuple[int, int, int] | None:
    if isinstance(cls.get("color"), list) and len(cls["color"]) >= 3:
        return tuple(int(v) for v in cls["color"][:3])  # type: ignore[return-value]
    if isinstance(cls.get("colorRGB"), int):  # packed signed ARGB (Java int)
        v = cls["colorRGB"] & 0xFFFFFF
        return (v >> 16) & 255, (v >> 8) & 255, v & 255
    return None


def _dsa_elements(doc: object) -> list | None:
    docs = doc if isinstance(doc, list) else [doc]
    elements = []
    for d in docs:
        if not isinstance(d, dict):
            return None
        ann = d.get("annotation", d)
        if not isinstance(ann, dict) or not isinstance(ann.get("elements"), list):
            return None
        elements.extend(ann["elements"])
    return elements


def _parse_dsa(elements: list, path: Path) -> list[RawAnnotation]:
    out: list[RawAnnotation] = []
    for el in elements:
        name = (el.get("label") or {}).get("value") or el.get("group")
        if el.get("type") == "polyline" and el.get("closed") and len(el.get("points", [])) >= 3:
            out.append((name, Polygon([p[:2] for p in el["points"]]), None, None))
        elif el.get("type") == "rectangle":
            cx, cy = el["center"][:2]
            w, h = el["width"], el["height"]
            out.append((name, box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), None, None))
        else:
            out.append((name, None, None, None))
    return out


# --- XML: Aperio ImageScope and ASAP --------------------------------------------------------------------


def _parse_xml(text: str, path: Path) -> list[RawAnnotation]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadAnnotationError(f"annotation file {path} is not valid XML: {exc}") from exc
    if root.tag == "Annotations":
        return _parse_aperio(root, path)
    if root.tag == "ASAP_Annotations":
        return _parse_asap(root, path)
    raise BadAnnotationError(
        f"annotation file {path}: unknown XML root <{root.tag}> (expected Aperio <Annotations> or <ASAP_Annotations>)"
    )


def _aperio_name(annotation: ET.Element) -> str | None:
    """ImageScope keeps the class in the layer Name, or in a custom attribute when Name is empty."""
    if annotation.get("Name"):
        return annotation.get("Name")
    for attr in annotation.iter("Attribute"):
        if attr.get("Name") and attr.get("Name") != "Description":
            return attr.get("Name")
    return None


def _point(element: ET.Element, x: str, y: str, path: Path) -> tuple[float, float]:
    """The finite (x, y) of a vertex; a missing or non-numeric coordinate is an error, never 0."""
    values = []
    for key in (x, y):
        raw = element.get(key)
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            attrs = " ".join(f'{k}="{v}"' for k, v in element.attrib.items())
            raise BadAnnotationError(f"{path}: <{element.tag} {attrs}> needs a finite number as {key} (got {raw!r})")
        values.append(value)
    return values[0], values[1]


def _parse_aperio(root: ET.Element, path: Path) -> list[RawAnnotation]:
    out: list[RawAnnotation] = []
    for annotation in root.iter("Annotation"):
        name = _aperio_name(annotation)
        color = _bgr_int(annotation.get("LineColor"))
        positive: list[Any] = []  # shapely polygons (shapely has no type hints)
        negative: list[Any] = []
        for region in annotation.iter("Region"):
            pts = [_point(v, "X", "Y", path) for v in region.iter("Vertex")]
            geom = _aperio_region(region.get("Type", "0"), pts)
            if geom is not None:
                (negative if region.get("NegativeROA") == "1" else positive).append(geom)
        if positive:
            geom = shapely.union_all(positive) if all(g.is_valid for g in positive) else MultiPolygon(positive)
            if negative:
                geom = geom.difference(shapely.union_all(negative))
            out.append((name, geom, color, None))
    return out


def _aperio_region(kind: str, pts: list[tuple[float, float]]) -> Polygon | None:
    if kind == "2" and len(pts) == 2:  # ellipse given by its bounding box corners
        (x0, y0), (x1, y1) = pts
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
        return Polygon([(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in (i * math.pi / 32 for i in range(64))])
    if kind == "1" and len(pts) == 2:  # rectangle given by two corners
        (x0, y0), (x1, y1) = pts
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return Polygon(pts) if len(pts) >= 3 else None


def _bgr_int(value: str | None) -> tuple[int, int, int] | None:
    if not value or not value.lstrip("-").isdigit():
        return None
    v = int(value) & 0xFFFFFF  # ImageScope stores colours as BGR integers
    return v & 255, (v >> 8) & 255, (v >> 16) & 255


def _parse_asap(root: ET.Element, path: Path) -> list[RawAnnotation]:
    colors = {g.get("Name"): _hex_color(g.get("Color")) for g in root.iter("Group")}
    out: list[RawAnnotation] = []
    for annotation in root.iter("Annotation"):
        pts = sorted((_order(c, i), *_point(c, "X", "Y", path)) for i, c in enumerate(annotation.iter("Coordinate")))
        kind = annotation.get("Type", "Polygon")
        group = annotation.get("PartOfGroup")
        name = None if group in (None, "", "None") else group
        if kind in ("Polygon", "Spline", "Rectangle") and len(pts) >= 3:
            out.append(
                (
                    name,
                    Polygon([(x, y) for _, x, y in pts]),
                    colors.get(group) or _hex_color(annotation.get("Color")),
                    None,
                )
            )
        else:
            out.append((name, None, None, None))
    return out


def _order(coordinate: ET.Element, default: int) -> int:
    raw = coordinate.get("Order")
    return int(raw) if raw is not None and raw.strip().lstrip("-").isdigit() else default


def _hex_color(value: str | None) -> tuple[int, int, int] | None:
    if not value or not value.startswith("#") or len(value) != 7:
        return None
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


# --- fitting to a slide and matching files to slides -----------------------------------------------------


def clip_to_slide(annotations: Sequence[Annotation], l0_size: tuple[int, int], slide_name: str) -> list[Annotation]:
    """Clip each annotation to the slide; warn when clipped, raise when one lies entirely outside."""
    bounds = box(0, 0, *l0_size)
    out = []
    for i, ann in enumerate(annotations):
        if bounds.contains(ann.geometry):
            out.append(ann)
            continue
        clipped = _polygonal_part(ann.geometry.intersection(bounds))
        if clipped.is_empty or clipped.area == 0:
            x0, y0, x1, y1 = (round(v) for v in ann.geometry.bounds)
            raise BadAnnotationError(
                f"annotation {i} ({ann.name}) lies entirely outside slide {slide_name} "
                f"(its box {x0},{y0}–{x1},{y1}; slide 0,0–{l0_size[0]},{l0_size[1]}): exported for another slide or "
                "level?"
            )
        lost = 1 - clipped.area / ann.geometry.area
        log.warning(
            "%s: annotation %d (%s) clipped to the slide bounds (%.1f%% of its area was outside)",
            slide_name,
            i,
            ann.name,
            100 * lost,
        )
        out.append(replace(ann, geometry=clipped))
    return out


def match_annotations(slides: Sequence[Path], annotation_path: str | Path) -> dict[Path, list[AnnotationSet]]:
    """Which annotations go with which slide.

    - one file and one slide: that file;
    - a folder: per-slide files matched by file stem (`A.svs` ↔ `A.geojson`, `A.xml`, `A.svs.geojson`);
    - one file whose features carry a `slide` property (slide file name or stem): split by it.
    Slides with no annotations at all are an error listing what was expected.
    """
    annotation_path = Path(annotation_path)
    if not annotation_path.exists():
        raise BadAnnotationError(f"annotation path not found: {annotation_path}")
    if annotation_path.is_dir():
        return _match_folder(slides, annotation_path)
    loaded = load_annotations(annotation_path)
    tagged = {a.slide for a in loaded.annotations if a.slide is not None}
    if not tagged:
        if len(slides) != 1:
            raise BadAnnotationError(
                f"{annotation_path} has no 'slide' property on its features, so it can annotate only one slide, "
                f"but {len(slides)} slides were given: use a folder of per-slide files, or tag features with 'slide'"
            )
        return {slides[0]: [loaded]}
    return _split_by_slide_property(slides, loaded)


def _match_folder(slides: Sequence[Path], folder: Path) -> dict[Path, list[AnnotationSet]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in ANNOTATION_SUFFIXES)
    out: dict[Path, list[AnnotationSet]] = {}
    missing = []
    for slide in slides:
        mine = [p for p in files if p.stem in (slide.stem, slide.name)]
        if not mine:
            missing.append(f"{slide.stem}{{{','.join(ANNOTATION_SUFFIXES)}}}")
        out[slide] = [load_annotations(p) for p in mine]
    if missing:
        raise BadAnnotationError(f"no annotation file in {folder} for: {'; '.join(missing)}")
    return out


def _split_by_slide_property(slides: Sequence[Path], loaded: AnnotationSet) -> dict[Path, list[AnnotationSet]]:
    by_key = {key: s for s in slides for key in (s.name, s.stem)}
    untagged = sum(a.slide is None for a in loaded.annotations)
    if untagged:
        raise BadAnnotationError(
            f"{loaded.source}: {untagged} feature(s) have no 'slide' property while others do: tag every feature with "
            "its slide, or use one file per slide"
        )
    out: dict[Path, list[AnnotationSet]] = {s: [] for s in slides}
    unknown = sorted({a.slide for a in loaded.annotations if a.slide is not None and a.slide not in by_key})
    if unknown:
        raise BadAnnotationError(
            f"{loaded.source}: features name slides that were not given: {', '.join(unknown)} (given: "
            f"{', '.join(s.name for s in slides)})"
        )
    for slide in slides:
        mine = [a for a in loaded.annotations if a.slide in (slide.name, slide.stem)]
        out[slide] = [AnnotationSet(loaded.source, mine)]
    empty = [s.name for s, sets in out.items() if not any(x.annotations for x in sets)]
    if empty:
        raise BadAnnotationError(f"{loaded.source}: no features carry 'slide' = any of: {', '.join(empty)}")
    return out


def names_and_colors(sets: Iterable[AnnotationSet]) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """Distinct class names (in first-seen order) and the colour the files give each."""
    names: dict[str, tuple[int, int, int] | None] = {}
    for s in sets:
        for a in s.annotations:
            if a.name is not None and a.name not in names:
                names[a.name] = a.color
    return list(names), {n: c for n, c in names.items() if c is not None}
