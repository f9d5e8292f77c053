"""Describe an output: a pyramidal TIFF or OME-TIFF (levels, tiles, compression, MPP, whether openslide sees the
pyramid) or an OME-Zarr (levels, pixel size, labels and their classes, as the `ome-zarr` reader sees them)."""

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
            # An OME-TIFF keeps its levels in SubIFDs of the first page; the Aperio layout has one page per level.
            frames = [lv.keyframe for lv in tf.series[0].levels] if tf.is_ome and tf.series else list(tf.pages)
            pages = [p for p in frames if isinstance(p, tifffile.TiffPage)]  # a slide's levels are pages, not frames
            levels = [
                {
                    "width": p.imagewidth,
                    "height": p.imagelength,
                    "tile": [p.tilewidth, p.tilelength] if p.is_tiled else None,
                    "compression": getattr(p.compression, "name", str(p.compression)),
                    "photometric": getattr(p.photometric, "name", str(p.photometric)),
                }
                for p in pages
            ]
            description = pages[0].description if pages else ""
            bigtiff = tf.is_bigtiff
            ome = _ome_pixel_size(tf.ome_metadata) if tf.is_ome else None
    except (OSError, tifffile.TiffFileError, ValueError) as exc:
        raise BadSlideError(f"cannot read TIFF {path}: {exc}") from exc
    if ome is not None:
        return {
            "path": str(path),
            "format": "ome-tiff",
            "bigtiff": bigtiff,
            "levels": levels,
            "mpp": ome,
            "openslide": _openslide_view(path, levels),
        }
    keys = dict(re.findall(r"\|\s*([^=|]+?)\s*=\s*([^|]*)", description))
    return {
        "path": str(path),
        "format": "tiff",
        "bigtiff": bigtiff,
        "levels": levels,
        "mpp": _float(keys.get("MPP")),
        "app_mag": _float(keys.get("AppMag")),
        "classes": keys.get("Classes"),
        "openslide": _openslide_view(path, levels),
    }


def _ome_pixel_size(xml: str | None) -> float | None:
    """PhysicalSizeX of the first image in µm (OME's default unit), or None."""
    found = re.search(r'PhysicalSizeX="([^"]+)"', xml or "")
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml or "")
    scale = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit.group(1) if unit else "µm")
    value = _float(found.group(1)) if found else None
    return value * scale if value is not None and scale is not None else None


def describe_ngff(path: str | Path) -> dict:
    """What `wsi-synth info` prints for an OME-Zarr, read through the `ome-zarr` reader (not our writer's code)."""
    from ome_zarr.format import CurrentFormat, FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = Path(path)
    # Zarr v2 metadata (.zattrs) means NGFF ≤ 0.4; naming it spares the reader's "version mismatch" warning.
    location = parse_url(str(path), fmt=FormatV04() if (path / ".zattrs").is_file() else CurrentFormat())
    if location is None:
        raise BadSlideError(f"{path} is not an OME-Zarr (no readable .zattrs/zarr.json)")
    image, labels = None, {}
    try:
        for node in Reader(location)():
            if node.specs and any(isinstance(spec, Label) for spec in node.specs):
                props = node.metadata.get("properties") or {}
                labels[str(node.metadata.get("name", "")).rsplit("/", 1)[-1]] = {
                    "levels": [list(d.shape) for d in node.data],
                    "classes": {int(k): v.get("class") for k, v in props.items()},
                }
            elif image is None and node.specs and any(isinstance(spec, Multiscales) for spec in node.specs):
                image = node
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise BadSlideError(f"cannot read OME-Zarr {path}: {exc}") from exc
    if image is None:
        raise BadSlideError(f"{path} holds no NGFF multiscales image")
    axes = [a["name"] if isinstance(a, dict) else a for a in image.metadata.get("axes", [])]
    scales = [t[0]["scale"] for t in image.metadata.get("coordinateTransformations", [])]
    mpp = scales[0][axes.index("x")] if scales and "x" in axes else None
    return {
        "path": str(path),
        "format": "ome-zarr",
        "ngff": location.fmt.version,
        "axes": axes,
        "levels": [list(d.shape) for d in image.data],
        "mpp": mpp,
        "labels": labels,
    }


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
    return {
        "reads": True,
        "vendor": vendor,
        "mpp": float(mpp) if mpp else None,
        "levels": len(dims),
        "pyramid": len(dims) > 1 and dims == tiled,
    }


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
