"""Describe a pyramidal TIFF: levels, tiles, compression, MPP, and whether openslide sees the pyramid."""

from __future__ import annotations

import re
from pathlib import Path

from wsi_synth.errors import BadSlideError


def describe_tiff(path: str | Path) -> dict:
    """What `wsi-synth info` prints for a TIFF (wsi-synth's own, or any other)."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tf:
            levels = [{"width": p.imagewidth, "height": p.imagelength, "tile": [p.tilewidth, p.tilelength] if p.is_tiled else None,
                       "compression": p.compression.name, "photometric": p.photometric.name} for p in tf.pages]
            description = tf.pages[0].description or ""
            bigtiff = tf.is_bigtiff
    except (OSError, tifffile.TiffFileError, ValueError) as exc:
        raise BadSlideError(f"cannot read TIFF {path}: {exc}") from exc
    keys = dict(re.findall(r"\|\s*([^=|]+?)\s*=\s*([^|]*)", description))
    return {"path": str(path), "bigtiff": bigtiff, "levels": levels, "mpp": _float(keys.get("MPP")), "app_mag": _float(keys.get("AppMag")),
            "classes": keys.get("Classes"), "openslide": _openslide_view(path, levels)}


def _openslide_view(path: Path, levels: list[dict]) -> dict:
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            dims = [list(d) for d in slide.level_dimensions]
            mpp = slide.properties.get("openslide.mpp-x")
            vendor = slide.properties.get("openslide.vendor")
    except openslide.OpenSlideError as exc:
        return {"reads": False, "error": str(exc)}
    tiled = [[lv["width"], lv["height"]] for lv in levels if lv["tile"]]
    return {"reads": True, "vendor": vendor, "mpp": float(mpp) if mpp else None, "levels": len(dims), "pyramid": len(dims) > 1 and dims == tiled}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
