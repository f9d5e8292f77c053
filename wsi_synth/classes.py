"""Training classes and the map from annotation class names to them.

Owns: the class scheme of a dataset (id 0 is always `unknown`, i.e. unannotated), the built-in schemes,
and loading a user's YAML/JSON class map. Pathologists use dozens of names; training uses a handful.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wsi_synth.errors import BadAnnotationError, BadArgumentError

Unmapped = Literal["error", "others", "ignore"]
UNKNOWN = "unknown"


@dataclass(frozen=True)
class TissueClass:
    """One training class: its id in masks (0 = unknown), name and display colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def to_json(self) -> dict:
        """The class as stored in dataset.json and model.json."""
        return {"id": self.id, "name": self.name, "color": list(self.color)}


@dataclass(frozen=True)
class ClassMap:
    """Training classes (index = id, 0 = unknown) and lower-cased annotation name → class name aliases."""

    classes: tuple[TissueClass, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    unmapped: Unmapped = "error"

    @property
    def names(self) -> list[str]:
        """The class names in id order, unknown first."""
        return [c.name for c in self.classes]

    def class_id(self, annotation_name: str) -> int | None:
        """Training class id for an annotation class name; None = drop it (`unmapped='ignore'`)."""
        key = annotation_name.strip().lower()
        target = self.aliases.get(key, key)
        for c in self.classes:
            if c.name.lower() == target:
                return c.id
        if self.unmapped == "others":
            return self.class_id("others")
        if self.unmapped == "ignore":
            return None
        known = sorted({*self.aliases, *(c.name.lower() for c in self.classes[1:])})
        raise BadAnnotationError(
            f"annotation class {annotation_name!r} is not in the class map (known: {', '.join(known)}); add it to "
            "--classes, or pass --unmapped others|ignore"
        )

    def to_json(self) -> list[dict]:
        """The class map as stored in dataset.json: the classes and the name mapping."""
        return [c.to_json() for c in self.classes]


_PALETTE = [
    (0, 0, 0),
    (200, 40, 40),
    (40, 40, 40),
    (220, 130, 180),
    (70, 140, 200),
    (240, 200, 60),
    (90, 180, 90),
    (150, 90, 200),
    (240, 140, 50),
    (60, 200, 200),
    (160, 160, 160),
]


def _color(i: int) -> tuple[int, int, int]:
    return _PALETTE[i % len(_PALETTE)] if i < len(_PALETTE) else ((i * 67) % 256, (i * 131) % 256, (i * 197) % 256)


def scheme(names: Iterable[str], colors: Mapping[str, tuple[int, int, int]] | None = None) -> tuple[TissueClass, ...]:
    """Classes `unknown, *names` with ids in that order; colours from `colors` or a fixed palette."""
    colors = colors or {}
    all_names = [UNKNOWN, *[n for n in names if n.lower() != UNKNOWN]]
    return tuple(TissueClass(i, n, tuple(colors.get(n, _color(i)))) for i, n in enumerate(all_names))  # type: ignore[arg-type]


#: The paper's 5-class scheme (DiffInfinite, Sec. 4) with the names pathologists commonly use for each.
PAPER5_ALIASES = {
    "tumor": "carcinoma",
    "tumour": "carcinoma",
    "carcinoma": "carcinoma",
    "cancer": "carcinoma",
    "invasive carcinoma": "carcinoma",
    "adenocarcinoma": "carcinoma",
    "squamous cell carcinoma": "carcinoma",
    "tumor epithelium": "carcinoma",
    "tumour epithelium": "carcinoma",
    "mostly_tumor": "carcinoma",
    "necrosis": "necrosis",
    "necrotic": "necrosis",
    "mostly_necrosis": "necrosis",
    "tumor stroma": "tumour stroma",
    "tumour stroma": "tumour stroma",
    "stroma": "tumour stroma",
    "mostly_stroma": "tumour stroma",
    "desmoplastic stroma": "tumour stroma",
    "others": "others",
    "other": "others",
    "normal": "others",
    "lymphocytes": "others",
    "mostly_lymphocytic_infiltrate": "others",
    "immune cells": "others",
    "negative": "others",
}
BUILTIN_MAPS = {"paper5": (("carcinoma", "necrosis", "tumour stroma", "others"), PAPER5_ALIASES)}


def load_class_map(
    spec: str | Path | dict | None,
    *,
    found_names: Iterable[str] = (),
    unmapped: Unmapped = "error",
    found_colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> ClassMap:
    """A built-in name (`paper5`), a YAML/JSON file, or None: one class per annotation name found.

    File layout::

        classes: [carcinoma, {name: stroma, color: [40, 40, 40]}]   # ids 1, 2, ... in this order
        map: {Tumor: carcinoma, "Tumor stroma": stroma}             # annotation name -> class
    """
    if unmapped not in ("error", "others", "ignore"):
        raise BadArgumentError(f"--unmapped must be error, others or ignore, got {unmapped!r}")
    if spec is None:
        names = sorted({n for n in found_names}, key=str.lower)
        return ClassMap(scheme(names, found_colors), {}, unmapped)
    if isinstance(spec, dict):  # a class-map document, e.g. an existing dataset's classes
        return _class_map_from_doc(spec, Path("(the dataset's classes)"), unmapped)
    if str(spec) in BUILTIN_MAPS:
        builtin, aliases = BUILTIN_MAPS[str(spec)]
        return ClassMap(scheme(list(builtin)), aliases, unmapped)
    path = Path(spec)
    if not path.is_file():
        raise BadArgumentError(f"--classes: {spec} is neither a built-in map ({', '.join(BUILTIN_MAPS)}) nor a file")
    doc = _read_yaml_or_json(path)
    return _class_map_from_doc(doc, path, unmapped)


def read_legend(path: str | Path) -> dict[int, str]:
    """A legend file (YAML/JSON): label value 0–255 → class name, e.g. `{0: unknown, 1: tumour, 2: stroma}`."""
    path = Path(path)
    try:
        doc = _read_yaml_or_json(path)
    except BadArgumentError as exc:
        raise BadArgumentError(f"--legend: {exc}") from exc
    if (
        not isinstance(doc, dict)
        or not doc
        or not all(str(k).lstrip("-").isdigit() and 0 <= int(k) <= 255 for k in doc)
    ):
        raise BadArgumentError(
            f"--legend {path} must be a mapping of label values 0–255 to class names, e.g. "
            f"{{0: unknown, 1: tumour, 2: stroma}} (got {type(doc).__name__})"
        )
    return {int(k): str(v) for k, v in doc.items()}


def _read_yaml_or_json(path: Path) -> object:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise BadArgumentError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc


def _class_map_from_doc(doc: object, path: Path, unmapped: Unmapped) -> ClassMap:
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list):
        raise BadArgumentError(f"class map {path}: needs a 'classes' list (and optionally a 'map' of names)")
    names: list[str] = []
    colors: dict[str, tuple[int, int, int]] = {}
    for i, entry in enumerate(doc["classes"]):
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise BadArgumentError(f"class map {path}: classes[{i}] needs a name, got {entry!r}")
        names.append(name)
        if isinstance(entry, dict) and "color" in entry:
            color = entry["color"]
            if not (
                isinstance(color, (list, tuple))
                and len(color) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in color)
            ):
                raise BadArgumentError(
                    f"class map {path}: classes[{i}] ({name}) color must be [r, g, b] with 0–255 integers, got "
                    f"{color!r}"
                )
            colors[name] = tuple(color)  # type: ignore[assignment]
    classes = scheme(names, colors)
    lower = {c.name.lower() for c in classes}
    aliases = {}
    for source, target in (doc.get("map") or {}).items():
        if str(target).lower() not in lower:
            raise BadArgumentError(f"class map {path}: map[{source!r}] = {target!r} is not one of the classes {names}")
        aliases[str(source).strip().lower()] = str(target).lower()
    return ClassMap(classes, aliases, unmapped)
