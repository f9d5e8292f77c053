"""The dataset format: what `extract` and `import` write and `train` reads.

Layout of a dataset directory::

    dataset.json            format, tile size, MPP, classes, subtypes, sources (+ sha256, split, counts)
    manifest.csv            one row per tile / region: kind, source, index, x, y, level, mpp, subtype, split, fractions
    sources/<id>.zarr/      labelled/images (N,T,T,3) JPEG Q95, labelled/masks (N,T,T) uint8,
                            unlabelled/images (M,T,T,3), regions/masks (R,r,r)
    sources/<id>.csv        that source's manifest rows

A source (a slide, or one imported tile folder) is written under `<id>.zarr.partial` and renamed when
complete, then recorded in `dataset.json` (written atomically). So an interrupted run leaves only whole
sources, and re-running skips them by sha256: tiles are never duplicated. Images are stored as JPEG Q95
(H&E barely compresses losslessly: zstd gives 0.95; JPEG Q95 is ~10× smaller and what slides hold anyway).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadDatasetError, OutputExistsError
from wsi_synth.io.atomic import check_apart
from wsi_synth.jsonfile import read_versioned, write_atomic

FORMAT = "wsi-synth-dataset"
VERSION = 1
JPEG_QUALITY = 95
MANIFEST_FIELDS = ["kind", "source", "index", "x", "y", "level", "mpp", "subtype", "split", "fractions"]
KINDS = ("labelled", "unlabelled", "regions")


@dataclass(frozen=True)
class DatasetSpec:
    """What every source of a dataset must agree on. Sizes in pixels at `mpp` µm/px."""

    tile_size: int
    mpp: float
    classes: tuple[dict, ...]  # [{id, name, color}], id 0 = unknown
    region_size: int = 2048
    region_mask_size: int = 128

    def mismatch(self, other: DatasetSpec) -> str | None:
        """What differs between this spec and `other` (a line for the error), or None."""
        for key in ("tile_size", "mpp", "classes", "region_size", "region_mask_size"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if key == "classes":
                mine, theirs = [c["name"] for c in mine], [c["name"] for c in theirs]
            if mine != theirs:
                return f"{key}: dataset has {mine}, this run asks for {theirs}"
        return None


@dataclass
class Dataset:
    """A dataset directory opened for reading (and for adding sources)."""

    root: Path
    meta: dict = field(repr=False)
    created: bool = False  # made by this run (so a failed run may remove it again)

    @property
    def spec(self) -> DatasetSpec:
        """What every source of this dataset agrees on (tile size, MPP, classes, regions)."""
        m = self.meta
        return DatasetSpec(m["tile_size"], m["mpp"], tuple(m["classes"]), m["region_size"], m["region_mask_size"])

    @property
    def sources(self) -> list[dict]:
        """The finished sources, as recorded in dataset.json."""
        return list(self.meta["sources"])

    @property
    def tile_size(self) -> int:
        """Tile side in px at `mpp`."""
        return int(self.meta["tile_size"])

    @property
    def mpp(self) -> float:
        """µm per pixel of every tile."""
        return float(self.meta["mpp"])

    @property
    def region_size(self) -> int:
        """Side in px (at `mpp`) of the regions cut for the mask stage."""
        return int(self.meta["region_size"])

    @property
    def region_mask_size(self) -> int:
        """Side of the stored region masks (regions downsampled)."""
        return int(self.meta["region_mask_size"])

    @property
    def classes(self) -> list[dict]:
        """The classes [{id, name, color}], id 0 = unknown."""
        return list(self.meta["classes"])

    @property
    def subtypes(self) -> list[str]:
        """The subtypes of the dataset's sources, sorted."""
        return sorted(self.meta.get("subtypes") or [])

    @property
    def class_names(self) -> list[str]:
        """The class names in id order (0 = unknown)."""
        return [c["name"] for c in self.meta["classes"]]

    def has_source(self, sha256: str) -> bool:
        """Whether a source with this sha256 is already in the dataset (re-runs skip it)."""
        return any(s["sha256"] == sha256 for s in self.meta["sources"])

    def source_group(self, source_id: str):  # -> zarr.Group
        """The zarr group of a finished source, read-only."""
        import zarr

        _register_codecs()
        return zarr.open_group(str(self.root / "sources" / f"{source_id}.zarr"), mode="r")

    def check(self, rows: list[dict] | None = None) -> None:
        """Every source the manifest names has its store, and each of its arrays holds every tile the manifest points
        at, at the dataset's tile and region sizes; else a one-line error naming the source and the fix."""
        rows = self.manifest() if rows is None else rows
        needed: dict[tuple[str, str], int] = {}
        for r in rows:
            key = (r["source"], r["kind"])
            needed[key] = max(needed.get(key, -1), int(r["index"]))
        fix = "re-run the extract or import that made it (or remove the dataset and import again)"
        for source in sorted({source for source, _ in needed}):
            folder = self.root / "sources" / f"{source}.zarr"
            if not folder.is_dir():
                raise BadDatasetError(
                    f"dataset {self.root}: source {source} is in the manifest but its store {folder} is missing: {fix}"
                )
            try:
                group = self.source_group(source)
                arrays = {
                    name: group[name].shape
                    for name in ("labelled/images", "labelled/masks", "unlabelled/images", "regions/masks")
                }
            except Exception as exc:  # noqa: BLE001 - any zarr failure means a damaged store; say which
                raise BadDatasetError(
                    f"dataset {self.root}: the store of source {source} is damaged ({type(exc).__name__}: {exc}): {fix}"
                ) from exc
            for kind, name in (
                ("labelled", "labelled/images"),
                ("labelled", "labelled/masks"),
                ("unlabelled", "unlabelled/images"),
                ("regions", "regions/masks"),
            ):
                last = needed.get((source, kind), -1)
                side = self.region_mask_size if kind == "regions" else self.tile_size
                if last >= arrays[name][0] or (arrays[name][0] and tuple(arrays[name][1:3]) != (side, side)):
                    raise BadDatasetError(
                        f"dataset {self.root}: source {source}'s {name} holds {arrays[name][0]} of {side} px but the "
                        "manifest points at "
                        f"item {last} (tiles of {arrays[name][1] if len(arrays[name]) > 1 else '?'} px): {fix}"
                    )

    def manifest(self) -> list[dict]:
        """Every row of manifest.csv (one per tile or region); a damaged manifest is refused."""
        path = self.root / "manifest.csv"
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BadDatasetError(
                f"{path} cannot be read ({exc}): the dataset is damaged; re-run the extract or import that made it"
            ) from exc
        if rows and set(MANIFEST_FIELDS) - set(rows[0]):
            raise BadDatasetError(
                f"{path} lacks the columns {sorted(set(MANIFEST_FIELDS) - set(rows[0]))}: the dataset is damaged; "
                "re-run the extract or import that made it"
            )
        return rows

    def summary(self) -> dict:
        """Counts per kind × split and per subtype, and each class's area in tile equivalents (labelled tiles and
        regions)."""
        rows = self.manifest()
        out: dict = {
            "path": str(self.root),
            "tile_size": self.meta["tile_size"],
            "mpp": self.meta["mpp"],
            "region_size": self.meta["region_size"],
            "region_mask_size": self.meta["region_mask_size"],
            "classes": self.class_names,
            "sources": len(self.meta["sources"]),
            "counts": {},
            "by_subtype": {},
            "class_area_tiles": {},
        }
        for r in rows:
            key = f"{r['kind']}/{r['split']}"
            out["counts"][key] = out["counts"].get(key, 0) + 1
            sub = out["by_subtype"].setdefault(r["subtype"] or "(none)", {})
            sub[r["kind"]] = sub.get(r["kind"], 0) + 1
            if r["kind"] != "unlabelled" and r["fractions"]:
                for name, frac in json.loads(r["fractions"]).items():
                    out["class_area_tiles"][name] = round(out["class_area_tiles"].get(name, 0.0) + frac, 4)
        return out

    def add_source(self, record: dict, rows: Sequence[dict]) -> None:
        """Record a finished source (its zarr store already renamed into place) and refresh the manifest."""
        _write_csv(self.root / "sources" / f"{record['id']}.csv", rows)
        self.meta["sources"].append(record)
        self.meta["subtypes"] = sorted(
            {s["subtype"] for s in self.meta["sources"] if s.get("subtype")} | set(record.get("subtypes", []))
        )
        self.meta["counts"] = {k: sum(s["counts"].get(k, 0) for s in self.meta["sources"]) for k in KINDS}
        self._rewrite_manifest()
        write_atomic(self.root / "dataset.json", self.meta)

    def _rewrite_manifest(self) -> None:
        rows: list[dict] = []
        for s in self.meta["sources"]:
            with (self.root / "sources" / f"{s['id']}.csv").open(newline="") as fh:
                rows.extend(csv.DictReader(fh))
        _write_csv(self.root / "manifest.csv", rows)


def open_dataset(root: str | Path) -> Dataset:
    """Open an existing dataset; errors name what is missing or wrong."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise BadDatasetError(
            f"{root} is not a wsi-synth dataset (no dataset.json): create one with `wsi-synth extract` or `wsi-synth "
            "import`"
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **read_versioned(meta_path, fmt=FORMAT, version=VERSION, error=BadDatasetError),
    }
    for key in ("tile_size", "mpp", "classes", "sources", "region_size", "region_mask_size"):
        if key not in meta:
            raise BadDatasetError(f"{meta_path}: missing key {key!r}")
    return Dataset(root, meta)


#: What a dataset folder holds that wsi-synth wrote: all that `overwrite` removes (other files stay).
OWN_ENTRIES = ("dataset.json", "manifest.csv", "sources")


def create_or_open(
    root: str | Path, spec: DatasetSpec, *, overwrite: bool = False, settings: dict | None = None
) -> Dataset:
    """Open `root` to add sources to it, creating it if needed.

    An existing dataset is reopened (re-running a command resumes it) when its spec matches. `overwrite`
    discards an existing dataset's own files (`OWN_ENTRIES`), never anything else; a non-empty folder that
    is not a dataset is refused either way.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"--out {root} is a file, not a dataset folder: choose another --out")
    if root.exists() and not (root / "dataset.json").is_file():
        if any(root.iterdir()):
            raise OutputExistsError(
                f"--out {root} exists and is not a wsi-synth dataset: choose another --out (--overwrite replaces only "
                "a dataset, never other files)"
            )
    elif root.exists() and overwrite:
        _remove_own(root)
    elif root.exists():
        ds = open_dataset(root)
        problem = ds.spec.mismatch(spec)
        if problem:
            raise BadDatasetError(
                f"{root} is a dataset with other settings ({problem}): use another --out, or --overwrite to replace it"
            )
        _remove_partials(root)
        return ds
    (root / "sources").mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **asdict(spec),
        "classes": list(spec.classes),
        "subtypes": [],
        "sources": [],
        "counts": dict.fromkeys(KINDS, 0),
        "settings": settings or {},
    }
    write_atomic(root / "dataset.json", meta)
    _write_csv(root / "manifest.csv", [])
    return Dataset(root, meta, created=True)


@contextmanager
def writing_dataset(
    root: str | Path,
    spec: DatasetSpec,
    *,
    overwrite: bool = False,
    settings: dict | None = None,
    inputs: Iterable[str | Path | None] = (),
) -> Iterator[Dataset]:
    """`create_or_open` for one run: claimed against concurrent runs, and a dataset this run created is removed
    again if the run fails before its first source is complete (no empty skeleton is left behind). `root` may
    not be, hold or lie inside one of `inputs`."""
    from wsi_synth.io.atomic import claim

    check_apart(root, inputs)
    with claim(Path(root), "the dataset", create_folder=True):
        dataset = create_or_open(root, spec, overwrite=overwrite, settings=settings)
        try:
            yield dataset
        except BaseException:
            if dataset.created and not dataset.meta["sources"]:
                _remove_own(dataset.root)
                if not any(dataset.root.iterdir()):
                    dataset.root.rmdir()
            raise


def existing_settings(root: str | Path) -> dict | None:
    """The spec of the dataset at `root` as command options (tile_size, mpp, region_size, region_mask_size,
    classes as a class-map document), or None when `root` is not a dataset: defaults for adding to it."""
    if not (Path(root) / "dataset.json").is_file():
        return None
    spec = open_dataset(root).spec
    classes = {"classes": [{"name": c["name"], "color": list(c["color"])} for c in spec.classes if c["id"] != 0]}
    return {
        "tile_size": spec.tile_size,
        "mpp": spec.mpp,
        "region_size": spec.region_size,
        "region_mask_size": spec.region_mask_size,
        "classes": classes,
    }


def _remove_own(root: Path) -> None:
    for name in OWN_ENTRIES:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _remove_partials(root: Path) -> None:
    for p in (root / "sources").glob("*.partial"):
        shutil.rmtree(p, ignore_errors=True)


class SourceWriter:
    """Write one source's tiles into `sources/<id>.zarr.partial`; `commit()` renames it into place.

    Arrays are created with their final length up front (the tile plan is known before pixels are read),
    one tile per chunk, so concurrent writes of different tiles never touch the same chunk.
    """

    def __init__(self, dataset: Dataset, source_id: str, *, n_labelled: int, n_unlabelled: int, n_regions: int) -> None:
        import zarr

        _register_codecs()
        self.dataset = dataset
        self.source_id = source_id
        self.partial = dataset.root / "sources" / f"{source_id}.zarr.partial"
        shutil.rmtree(self.partial, ignore_errors=True)
        t, r = dataset.spec.tile_size, dataset.spec.region_mask_size
        group = zarr.open_group(str(self.partial), mode="w", zarr_format=2)
        self.arrays = {
            "labelled/images": _image_array(group, "labelled/images", n_labelled, t),
            "labelled/masks": _mask_array(group, "labelled/masks", n_labelled, t),
            "unlabelled/images": _image_array(group, "unlabelled/images", n_unlabelled, t),
            "regions/masks": _mask_array(group, "regions/masks", n_regions, r),
        }
        self.tiles = TileStore(
            self.partial,
            {
                name: (tuple(a.shape[1:]), [c.get_config() for c in (*(a.filters or ()), *(a.compressors or ()))])
                for name, a in self.arrays.items()
            },
        )

    def write_tile(self, name: str, index: int, value: np.ndarray) -> None:
        """Store array `value` as item `index` of the source's array `name`."""
        self.tiles.write(name, index, value)

    def commit(self, record: dict, rows: Sequence[dict]) -> None:
        """Rename the finished store to `record['id']` (which may differ from the working id) and record it."""
        final = self.dataset.root / "sources" / f"{record['id']}.zarr"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(self.partial, final)
        self.dataset.add_source(record, rows)

    def abort(self) -> None:
        """Remove the partial source (nothing of it enters the dataset)."""
        shutil.rmtree(self.partial, ignore_errors=True)


class TileStore:
    """Writes single tiles of a source's arrays; picklable, so worker processes can write their own tiles.

    One tile is one chunk: encoded by the array's own codecs and stored under its zarr v2 chunk key. zarr's
    generic write path spends ~1.4 ms of Python per chunk, twice the JPEG encoding itself; the v2 chunk
    layout is a frozen spec, and zarr reads these chunks back (tests check every array round-trips).
    """

    def __init__(self, root: Path, arrays: dict[str, tuple[tuple[int, ...], list[dict]]]) -> None:
        self.root = root
        self.arrays = arrays
        self._codecs: dict | None = None

    def __getstate__(self) -> dict:
        return {"root": self.root, "arrays": self.arrays, "_codecs": None}

    def write(self, name: str, index: int, value: np.ndarray) -> None:
        """Write item `index` of array `name` (opened lazily, so a worker process opens its own)."""
        shape, configs = self.arrays[name]
        if tuple(value.shape) != shape or value.dtype != np.uint8:
            raise ValueError(f"{name}[{index}]: expected {shape} uint8, got {value.shape} {value.dtype}")
        if self._codecs is None:
            import numcodecs

            _register_codecs()
            self._codecs = {n: [numcodecs.get_codec(dict(c)) for c in cs] for n, (_, cs) in self.arrays.items()}
        data = np.ascontiguousarray(value)
        for codec in self._codecs[name]:
            data = codec.encode(data)
        with open(self.root / name / ".".join([str(index)] + ["0"] * value.ndim), "wb") as fh:
            fh.write(data.data if isinstance(data, np.ndarray) else data)


def _image_array(group, name: str, n: int, t: int):
    from imagecodecs.numcodecs import Jpeg

    return group.create_array(
        name, shape=(n, t, t, 3), chunks=(1, t, t, 3), dtype="u1", compressors=None, filters=[Jpeg(level=JPEG_QUALITY)]
    )


def _mask_array(group, name: str, n: int, t: int):
    from numcodecs import Zstd

    return group.create_array(name, shape=(n, t, t), chunks=(1, t, t), dtype="u1", compressors=Zstd(level=3))


_codecs_registered = False


def _register_codecs() -> None:
    global _codecs_registered
    if not _codecs_registered:
        import imagecodecs.numcodecs

        imagecodecs.numcodecs.register_codecs(verbose=False)
        _codecs_registered = True


def _write_csv(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
