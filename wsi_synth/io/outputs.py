"""The output set of a synthetic slide: `s.tiff`, `s.mask.tiff`, `s.geojson` (and the caller's `s.json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import atomic_output, claim, output_set
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


def claim_outputs(out: str | Path):
    """Hold the output set beside `out` for one run (a context manager): a second run on it fails at once."""
    return claim(OutputPaths.beside(out).image, "the output set of")


def write_slide_outputs(image, labels, out: str | Path, *, mpp: float, classes: Sequence[dict], tile: int = 512, quality: int = 90,
                        overwrite: bool = False, record: dict | Callable[[], dict] | None = None, progress: bool = False) -> dict:
    """Write image pyramid, label pyramid and GeoJSON (and `record` as JSON) beside `out`.

    The set is written under temporary names and renamed into place together once every file is complete, so
    a refusal or a failure never leaves half a set, nor a new image beside an old record. `record` may be a
    callable, asked for the document after the other outputs are written (so it can hold their timings).
    """
    paths = OutputPaths.beside(out)
    if labels is not None and tuple(labels.shape[:2]) != tuple(image.shape[:2]):
        raise BadArgumentError(f"the label map is {labels.shape[1]}×{labels.shape[0]} px but the image is {image.shape[1]}×{image.shape[0]} px")
    if labels is not None and (len(labels.shape) != 2 or np.dtype(labels.dtype) != np.uint8):
        raise BadArgumentError(f"the label map must be one channel of uint8 class ids, got shape {tuple(labels.shape)} {labels.dtype}")
    wanted = paths.all()[: 3 if labels is not None else 1] + ([paths.record] if record is not None else [])
    with output_set(wanted, overwrite=overwrite) as temps:
        tmp = dict(zip(wanted, temps, strict=True))
        levels = write_slide_pyramid(image, tmp[paths.image], mpp=mpp, tile=tile, quality=quality, overwrite=True, progress=progress)
        result: dict = {"image": str(paths.image), "levels": [[lv.width, lv.height] for lv in levels]}
        if labels is not None:
            _, reduced, downsample = write_label_pyramid(labels, tmp[paths.mask], mpp=mpp, tile=tile, classes=classes, overwrite=True,
                                                          capture_max=GEOJSON_MAX_SIDE)
            _write_json(tmp[paths.geojson], mask_to_geojson(reduced, downsample=downsample, classes=classes), overwrite=True)
            result |= {"mask": str(paths.mask), "geojson": str(paths.geojson), "geojson_downsample": downsample}
        if record is not None:
            _write_json(tmp[paths.record], {**(record() if callable(record) else record), "outputs": result}, overwrite=True)
            result["record"] = str(paths.record)
    return result


def _write_json(path: Path, doc: dict, *, overwrite: bool) -> None:
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())


def open_image_lazily(path: str | Path, *, labels: bool = False):
    """A dask array over an image file: TIFFs (incl. pyramids, level 0) lazily via tifffile's zarr view, others
    whole through `wsi_synth.io.images` (RGB, or with `labels` one channel of class ids). A TIFF whose tiles
    run past the end of the file (truncated) is refused, never read as blank."""
    import dask.array as da

    from wsi_synth.io.images import check_tiff_complete, read_labels, read_rgb

    path = Path(path)
    what = "--labels" if labels else "image"
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        import zarr

        try:
            with tifffile.TiffFile(path) as tf:
                check_tiff_complete(tf, path, what)
            store = tifffile.imread(path, aszarr=True, level=0)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
            raise BadArgumentError(f"{what} {path}: not a readable TIFF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        return da.from_zarr(zarr.open(store, mode="r"))
    array = read_labels(path, what=what) if labels else read_rgb(path, what=what)
    return da.from_array(array, chunks=(2048, 2048) + array.shape[2:])
