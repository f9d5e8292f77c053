"""The output set of a synthetic slide: `s.tiff`, `s.mask.tiff`, `s.geojson` (and the caller's `s.json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import atomic_output, check_output
from wsi_synth.io.geojson import mask_to_geojson
from wsi_synth.io.pyramid import write_label_pyramid, write_slide_pyramid

#: The GeoJSON is traced from the first label level with sides ≤ this: exact at that level, small enough
#: for QuPath to load instantly (a 100,000² slide gives a 3,125² map, i.e. 32 level-0 px per map pixel).
GEOJSON_MAX_SIDE = 4096


@dataclass(frozen=True)
class OutputPaths:
    image: Path
    mask: Path
    geojson: Path
    record: Path

    @classmethod
    def beside(cls, image: str | Path) -> OutputPaths:
        image = Path(image)
        stem = image.name[: -len(image.suffix)] if image.suffix.lower() in (".tif", ".tiff") else image.name
        return cls(image, image.with_name(f"{stem}.mask.tiff"), image.with_name(f"{stem}.geojson"), image.with_name(f"{stem}.json"))

    def all(self) -> list[Path]:
        return [self.image, self.mask, self.geojson, self.record]


def write_slide_outputs(image, labels, out: str | Path, *, mpp: float, classes: Sequence[dict], tile: int = 512, quality: int = 90,
                        overwrite: bool = False, record: dict | Callable[[], dict] | None = None, progress: bool = False) -> dict:
    """Write image pyramid, label pyramid and GeoJSON (and `record` as JSON) beside `out`.

    Every output is checked before the first is written, so a refusal never leaves half a set. `record` may be
    a callable, asked for the document after the other outputs are written (so it can hold their timings).
    """
    paths = OutputPaths.beside(out)
    if labels is not None and tuple(labels.shape) != tuple(image.shape[:2]):
        raise BadArgumentError(f"label map is {labels.shape[1]}×{labels.shape[0]} but the image is {image.shape[1]}×{image.shape[0]}")
    for p in paths.all()[: 3 if labels is not None else 1] + ([paths.record] if record is not None else []):
        check_output(p, overwrite=overwrite)
    levels = write_slide_pyramid(image, paths.image, mpp=mpp, tile=tile, quality=quality, overwrite=overwrite, progress=progress)
    result: dict = {"image": str(paths.image), "levels": [[lv.width, lv.height] for lv in levels]}
    if labels is not None:
        _, reduced, downsample = write_label_pyramid(labels, paths.mask, mpp=mpp, tile=tile, classes=classes, overwrite=overwrite,
                                                      capture_max=GEOJSON_MAX_SIDE)
        _write_json(paths.geojson, mask_to_geojson(reduced, downsample=downsample, classes=classes), overwrite=overwrite)
        result |= {"mask": str(paths.mask), "geojson": str(paths.geojson), "geojson_downsample": downsample}
    if record is not None:
        _write_json(paths.record, {**(record() if callable(record) else record), "outputs": result}, overwrite=overwrite)
        result["record"] = str(paths.record)
    return result


def _write_json(path: Path, doc: dict, *, overwrite: bool) -> None:
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())


def open_image_lazily(path: str | Path):
    """A dask array over an image file: TIFFs (incl. pyramids, level 0) lazily via tifffile's zarr view, others whole via PIL."""
    import dask.array as da

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        import zarr

        store = tifffile.imread(path, aszarr=True, level=0)
        array = zarr.open(store, mode="r")
        return da.from_zarr(array)
    from PIL import Image

    with Image.open(path) as im:
        return da.from_array(np.asarray(im if im.mode in ("L", "P") else im.convert("RGB")), chunks=(2048, 2048) + ((3,) if im.mode not in ("L", "P") else ()))
