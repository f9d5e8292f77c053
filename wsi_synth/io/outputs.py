"""The output set of a synthetic slide: the image (`s.tiff`, `s.ome.tiff` or `s.ome.zarr/`), its label map
(`s.mask.tiff`, `s.mask.ome.tiff`, or `labels/` inside the OME-Zarr), its annotations (`s.geojson` for QuPath,
`s.xml` for ASAP) and the caller's record (`s.json`)."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_synth.errors import BadArgumentError, OutputBusyError
from wsi_synth.io.atomic import atomic_output, claim, output_set, remove_output, remove_path
from wsi_synth.io.geojson import mask_to_geojson
from wsi_synth.io.pyramid import write_label_pyramid, write_slide_pyramid
from wsi_synth.options import FORMATS

#: The annotations are traced from the first label level with sides ≤ this: exact at that level, small enough
#: for QuPath to load instantly (a 100,000² slide gives a 3,125² map, i.e. 32 level-0 px per map pixel).
GEOJSON_MAX_SIDE = 4096
#: Image formats: Aperio-style TIFF (OpenSlide, QuPath, ASAP), OME-TIFF (Bio-Formats, QuPath, OMERO), OME-Zarr
#: (NGFF v0.4: napari, vizarr/Viv, QuPath, OMERO).
#: Annotation formats: QuPath GeoJSON and ASAP XML.
ANNOTATION_FORMATS = ("geojson", "asap")


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """The image format of `out`: `fmt` when given, else implied by the name (`.ome.zarr`/`.zarr`, `.ome.tif(f)`,
    otherwise the TIFF). A name that implies another container than `fmt` is refused rather than written misnamed."""
    name = Path(out).name.lower()
    implied = (
        "ome-zarr"
        if name.endswith(".zarr")
        else "dicom"
        if name.endswith((".dcm", ".dicom"))
        else "ome-tiff"
        if name.endswith((".ome.tif", ".ome.tiff"))
        else "tiff"
        if name.endswith((".tif", ".tiff"))
        else None
    )
    if fmt is None:
        return implied or "tiff"
    if fmt not in FORMATS:
        raise BadArgumentError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if implied is not None and implied != fmt and not (implied == "tiff" and fmt == "ome-tiff"):
        suggestion = {"ome-zarr": "s.ome.zarr", "ome-tiff": "s.ome.tiff", "tiff": "s.tiff", "dicom": "s.dcm"}[fmt]
        raise BadArgumentError(
            f"--out {Path(out).name} names a {implied} output but --format is {fmt}: name it like {suggestion} (or "
            "leave out --format)"
        )
    return fmt


def annotation_formats(value: str | Sequence[str]) -> tuple[str, ...]:
    """`geojson,asap` (or a sequence) → the annotation formats, in canonical order; unknown or none is refused."""
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value)]
    unknown = [n for n in names if n not in ANNOTATION_FORMATS]
    if unknown or not any(names):
        raise BadArgumentError(
            f"annotations must be a comma-separated list of {', '.join(ANNOTATION_FORMATS)}, got {','.join(names)!r}"
        )
    return tuple(f for f in ANNOTATION_FORMATS if f in names)


@dataclass(frozen=True)
class OutputPaths:
    """Where each file of an output set goes; `mask` is None for an OME-Zarr (its labels live inside it), and an
    annotation path is None when that format was not asked for."""

    image: Path
    mask: Path | None
    geojson: Path | None
    asap: Path | None
    record: Path
    format: str = "tiff"

    @classmethod
    def beside(
        cls, image: str | Path, fmt: str | None = None, annotations: Sequence[str] = ("geojson",)
    ) -> OutputPaths:
        image = Path(image)
        fmt = output_format(image, fmt)
        lower = image.name.lower()
        suffix = next(
            (
                s
                for s in (".ome.zarr", ".zarr", ".dicom", ".dcm", ".ome.tiff", ".ome.tif", ".tiff", ".tif")
                if lower.endswith(s)
            ),
            "",
        )
        stem = image.name[: len(image.name) - len(suffix)] if suffix and len(suffix) < len(image.name) else image.name
        # the mask mirrors the image's own name: o.ome.tiff → o.mask.ome.tiff, but an OME-TIFF named o.tiff →
        # o.mask.tiff
        mask_suffix = (
            image.name[len(stem) :] if suffix and stem != image.name else ".ome.tiff" if fmt == "ome-tiff" else ".tiff"
        )
        mask = None if fmt in ("ome-zarr", "dicom") else image.with_name(f"{stem}.mask{mask_suffix}")  # inside
        return cls(
            image,
            mask,
            image.with_name(f"{stem}.geojson") if "geojson" in annotations else None,
            image.with_name(f"{stem}.xml") if "asap" in annotations else None,
            image.with_name(f"{stem}.json"),
            fmt,
        )

    def all(self) -> list[Path]:
        """The paths of the set that will be written, in order."""
        return [p for p in (self.image, self.mask, self.geojson, self.asap, self.record) if p is not None]

    def replaced(self) -> list[Path]:
        """Files of the earlier set that this set's record (`s.json`) names and this set will not write again: another
        format's image and mask (`s.tiff` when writing `s.ome.zarr`), annotations not asked for this time. Replacing
        the set removes them, so no file is left beside a record and annotations of another slide. A file the record
        does not name is never touched."""
        try:
            outputs = json.loads(self.record.read_text()).get("outputs")
        except (OSError, ValueError, AttributeError):
            return []
        if not isinstance(outputs, dict):
            return []
        mine = {p.resolve() for p in self.all()}
        named = [
            self.record.with_name(Path(v).name)
            for k in ("image", "mask", "geojson", "asap")
            if isinstance(v := outputs.get(k), str) and v
        ]
        return [p for p in named if p.exists() and p.resolve() not in mine]

    def touched(self, *, overwrite: bool) -> list[Path]:
        """Every file writing this set changes: its own, and with `overwrite` the old set's files it removes."""
        return [*self.all(), *(self.replaced() if overwrite else [])]


@contextmanager
def claim_outputs(out: str | Path) -> Iterator[Path]:
    """Hold the output set beside `out` for one run (a context manager): a second run on it fails at once. The claim is
    on the set's stem (its record, `s.json`): `s.tiff` and `s.ome.zarr` share the record and annotations, so two
    runs on them exclude each other too. Once held, temporaries that a killed run of this set left are removed."""
    record = OutputPaths.beside(out).record
    with ExitStack() as stack:
        try:
            lock = stack.enter_context(claim(record, "the output set of"))
        except OutputBusyError:
            raise OutputBusyError(
                f"another run is writing {out} or another output set named {record.name[: -len('.json')]}.* (they "
                f"share {record.name}): "
                "wait for it to finish, or choose another --out"
            ) from None
        remove_stale_temporaries(record)
        yield lock


#: The names a set of stem S can hold: every image format, its mask, annotations and record.
SET_SUFFIXES = (
    ".tiff",
    ".tif",
    ".ome.tiff",
    ".ome.tif",
    ".ome.zarr",
    ".zarr",
    ".dcm",
    ".dicom",
    ".mask.tiff",
    ".mask.tif",
    ".mask.ome.tiff",
    ".mask.ome.tif",
    ".geojson",
    ".xml",
    ".json",
)
#: Temporaries of a set's files: `output_set`'s `.NAME.set-PID`, `atomic_output`'s `.NAME.partial-PID`, and the
#: pyramid writer's level spools `.NAME.levels-*` (an OME-Zarr's labels: `.NAME labels.levels-*`).
_TEMPORARY = re.compile(r"\.(?P<name>.+?)(?: labels)?\.(?:set-\d+|partial-\d+|levels-[^/]+)")


def remove_stale_temporaries(record: Path) -> list[Path]:
    """Remove the temporaries of the set whose record is `record` (call only while holding its claim: then no live
    run is writing them). Names of other sets are matched exactly and never touched. Returns what was removed."""
    stem = record.name[: -len(".json")]
    removed = []
    for path in record.parent.glob(f".{glob.escape(stem)}.*"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and match["name"] in {stem + suffix for suffix in SET_SUFFIXES}:
            remove_path(path)
            removed.append(path)
    return removed


def check_ngff(version: str, fmt: str) -> None:
    """Refuse an NGFF version nothing writes, or 0.5 asked of an output that is not an OME-Zarr."""
    from wsi_synth.options import NGFF_VERSIONS

    if version not in NGFF_VERSIONS:
        raise BadArgumentError(f"--ngff must be one of {', '.join(NGFF_VERSIONS)}, got {version!r}")
    if version != "0.4" and fmt != "ome-zarr":
        raise BadArgumentError(
            f"--ngff {version} applies to an OME-Zarr output (--format ome-zarr, or an --out ending .ome.zarr), "
            f"not to {fmt}"
        )


def write_slide_outputs(
    image,
    labels,
    out: str | Path,
    *,
    mpp: float,
    classes: Sequence[dict],
    tile: int = 512,
    quality: int = 90,
    overwrite: bool = False,
    record: dict | Callable[[], dict] | None = None,
    progress: bool = False,
    fmt: str | None = None,
    annotations: Sequence[str] = ("geojson",),
    ngff: str = "0.4",
) -> dict:
    """Write the image, its label map and annotations (and `record` as JSON) beside `out`, in format `fmt`
    (`tiff`, `ome-tiff`, `ome-zarr` in NGFF version `ngff`; default: from the name of `out`) with `annotations`
    (`geojson`, `asap`).

    The set is written under temporary names and renamed into place together once every file is complete, so
    a refusal or a failure never leaves half a set, nor a new image beside an old record. `record` may be a
    callable, asked for the document after the other outputs are written (so it can hold their timings).
    """
    paths = OutputPaths.beside(out, fmt, annotation_formats(annotations))
    check_ngff(ngff, paths.format)
    stale = paths.replaced() if overwrite else []
    if labels is not None and tuple(labels.shape[:2]) != tuple(image.shape[:2]):
        raise BadArgumentError(
            f"the label map is {labels.shape[1]}×{labels.shape[0]} px but the image is "
            f"{image.shape[1]}×{image.shape[0]} px"
        )
    if labels is not None and (len(labels.shape) != 2 or np.dtype(labels.dtype) != np.uint8):
        raise BadArgumentError(
            f"the label map must be one channel of uint8 class ids, got shape {tuple(labels.shape)} {labels.dtype}"
        )
    wanted = (
        [paths.image]
        + ([p for p in (paths.mask, paths.geojson, paths.asap) if p is not None] if labels is not None else [])
        + ([paths.record] if record is not None else [])
    )
    with output_set(wanted, overwrite=overwrite) as temps:
        tmp = dict(zip(wanted, temps, strict=True))
        result: dict = {"format": paths.format, "image": str(paths.image)}
        # the folder formats hold the image and its labels in one output
        common: dict[str, Any] = {"mpp": mpp, "classes": classes, "tile": tile, "capture_max": GEOJSON_MAX_SIDE}
        common["progress"] = progress
        if paths.format == "ome-zarr":
            from wsi_synth.io.ngff import write_ngff

            levels, reduced, downsample = write_ngff(image, labels, tmp[paths.image], version=ngff, **common)
            if labels is not None:
                result["labels"] = f"{paths.image}/labels/tissue"
        elif paths.format == "dicom":
            from wsi_synth.io.dicom import write_dicom

            levels, reduced, downsample = write_dicom(image, labels, tmp[paths.image], quality=quality, **common)
        else:
            ome = paths.format == "ome-tiff"
            levels = write_slide_pyramid(
                image, tmp[paths.image], mpp=mpp, tile=tile, quality=quality, overwrite=True, progress=progress, ome=ome
            )
            if labels is not None and paths.mask is not None:
                _, reduced, downsample = write_label_pyramid(
                    labels,
                    tmp[paths.mask],
                    mpp=mpp,
                    tile=tile,
                    classes=classes,
                    overwrite=True,
                    capture_max=GEOJSON_MAX_SIDE,
                    ome=ome,
                )
                result["mask"] = str(paths.mask)
        result["levels"] = [[lv.width, lv.height] for lv in levels]
        if labels is not None:
            assert reduced is not None, "the label writers return the reduced labels they were given"
            if paths.geojson is not None:
                _write_json(
                    tmp[paths.geojson], mask_to_geojson(reduced, downsample=downsample, classes=classes), overwrite=True
                )
                result["geojson"] = str(paths.geojson)
            if paths.asap is not None:
                from wsi_synth.io.asap import mask_to_asap

                _write_text(tmp[paths.asap], mask_to_asap(reduced, downsample=downsample, classes=classes))
                result["asap"] = str(paths.asap)
            result["annotations_downsample"] = downsample
        if record is not None:
            _write_json(
                tmp[paths.record], {**(record() if callable(record) else record), "outputs": result}, overwrite=True
            )
            result["record"] = str(paths.record)
    for path in stale:  # the new set is in place: the old set's files it does not replace go
        remove_output(path)
    return result


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


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
            raise BadArgumentError(
                f"{what} {path}: not a readable TIFF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from exc
        return da.from_zarr(zarr.open(store, mode="r"))
    array = read_labels(path, what=what) if labels else read_rgb(path, what=what)
    return da.from_array(array, chunks=(2048, 2048) + array.shape[2:])
