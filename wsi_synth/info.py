"""`wsi-synth info PATH`: what a dataset, a slide or a generated pyramid holds, as a dict (and as text)."""

from __future__ import annotations

import json
from pathlib import Path

from wsi_synth.errors import BadArgumentError


def describe(path: str | Path) -> dict:
    """Summarise a dataset folder, a model, an output (TIFF, OME-TIFF, OME-Zarr, DICOM), or any slide openslide
    opens."""
    path = Path(path)
    if not path.exists():
        raise BadArgumentError(f"path not found: {path}")
    if path.is_dir() and (path / "dataset.json").is_file():
        from wsi_synth.data.store import open_dataset

        dataset = open_dataset(path)
        dataset.check()
        return {"kind": "dataset", **dataset.summary()}
    if path.is_dir() and (path / "model.json").is_file():
        from wsi_synth.models.bundle import open_bundle

        return {"kind": "model", **open_bundle(path).summary()}
    if path.is_dir() and path.suffix.lower() == ".zarr":
        from wsi_synth.io.inspect import describe_ngff

        return {"kind": "ome-zarr", **describe_ngff(path)}
    if path.is_dir() and any(path.glob("*.dcm")):
        from wsi_synth.io.dicom import describe_dicom

        return {"kind": "dicom", **describe_dicom(path)}
    if path.suffix.lower() in (".tif", ".tiff"):
        from wsi_synth.io.inspect import describe_tiff

        return {"kind": "tiff", **describe_tiff(path)}
    if path.is_dir():
        raise BadArgumentError(f"{path} is a folder but not a wsi-synth dataset (no dataset.json)")
    return {"kind": "slide", **_describe_slide(path)}


def _describe_slide(path: Path) -> dict:
    from wsi_synth.slide import open_slide

    with open_slide(path, mpp=1.0) as slide:  # the MPP argument only stops a missing MPP from failing here
        handle = slide.handle
        props = dict(getattr(handle, "properties", {}))
        return {
            "path": str(path),
            "vendor": props.get("openslide.vendor"),
            "dimensions": list(slide.dimensions),
            "levels": [list(d) for d in handle.level_dimensions],  # type: ignore[attr-defined]
            "mpp": float(props["openslide.mpp-x"]) if "openslide.mpp-x" in props else None,
            "objective_power": props.get("openslide.objective-power"),
        }


def render_text(info: dict) -> str:
    """Human-readable lines for `info` (the `--json` form is the dict itself)."""
    lines = [f"{info['kind']}: {info.get('path', '')}"]
    for key, value in info.items():
        if key in ("kind", "path"):
            continue
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"  {key}:")
            lines += ["    " + ", ".join(f"{k}={v}" for k, v in item.items()) for item in value]
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
