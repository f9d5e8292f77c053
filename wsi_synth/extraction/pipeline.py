"""`wsi-synth extract`: annotated slides → labelled tiles, unlabelled tiles and region masks.

Everything that can be wrong with the input (slides, annotations, class names, subtypes, the output
folder) is checked before anything is written. Slides are then processed one at a time, tiles in
parallel worker processes (`extraction.worker`): each reads, rasterizes, encodes and stores its own tiles, so
this process only collects manifest rows.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely

from wsi_synth.annotations import Annotation, clip_to_slide, match_annotations, names_and_colors
from wsi_synth.classes import ClassMap, Unmapped, load_class_map
from wsi_synth.data.store import Dataset, DatasetSpec, SourceWriter, writing_dataset
from wsi_synth.errors import BadArgumentError
from wsi_synth.extraction.raster import ClassGeometries
from wsi_synth.extraction.split import assign_splits
from wsi_synth.extraction.tissue import box_fractions, tissue_mask
from wsi_synth.extraction.worker import SlideJob, TileCutter, cut_in_worker, init_worker
from wsi_synth.io.atomic import check_apart
from wsi_synth.resumable import sha256_file
from wsi_synth.slide import MPP_TOLERANCE, Slide, find_slides, open_slide

log = logging.getLogger("wsi_synth")

#: Tiles sent to a worker process at a time: amortises the round trip, small enough for a smooth progress bar.
TASKS_PER_CHUNK = 16


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of `extract`. Sizes are pixels at `mpp` µm/px; fractions are of a tile's pixels."""

    tile_size: int = 512
    mpp: float = 0.5
    min_annotated: float = 0.05
    min_tissue: float = 0.5
    unlabelled_per_slide: int = 200
    region_size: int = 2048
    region_mask_size: int = 128
    test_fraction: float = 0.2
    seed: int = 0
    workers: int = 1
    tissue_mpp: float = 16.0  # a 512 px tile at 0.5 µm/px is 16×16 thumbnail pixels: plenty for its tissue fraction
    slide_mpp: float | None = None
    classes: str | dict | None = None  # a built-in name, a YAML/JSON file, or a class-map document
    unmapped: Unmapped = "error"
    subtype: str | None = None
    subtypes_csv: str | None = None

    def validate(self) -> None:
        checks = [
            (
                "--tile",
                self.tile_size,
                self.tile_size >= 16 and self.tile_size % 8 == 0,
                "a multiple of 8, at least 16",
            ),
            ("--mpp", self.mpp, math.isfinite(self.mpp) and self.mpp > 0, "a positive finite number of µm per pixel"),
            (
                "--slide-mpp",
                self.slide_mpp,
                self.slide_mpp is None or (math.isfinite(self.slide_mpp) and self.slide_mpp > 0),
                "positive and finite",
            ),
            ("--min-annotated", self.min_annotated, 0 < self.min_annotated <= 1, "in (0, 1]"),
            ("--min-tissue", self.min_tissue, 0 <= self.min_tissue <= 1, "in [0, 1]"),
            ("--unlabelled-per-slide", self.unlabelled_per_slide, self.unlabelled_per_slide >= 0, "0 or more"),
            ("--region", self.region_size, self.region_size >= self.region_mask_size > 0, "at least --region-mask"),
            ("--test-fraction", self.test_fraction, 0 <= self.test_fraction < 1, "in [0, 1)"),
            ("--workers", self.workers, self.workers >= 1, "1 or more"),
        ]
        for flag, value, ok, rule in checks:
            if not ok:
                raise BadArgumentError(f"{flag} must be {rule}, got {value}")


@dataclass
class SlidePlan:
    """Where to cut one slide: level-0 top-left corners per kind, decided before any pixel is read."""

    slide: Slide
    sha256: Future  # of str: computed in the background, needed only when the slide is recorded
    subtype: str | None
    split: str
    geometries: ClassGeometries
    l0_tile: float
    l0_region: float
    labelled: list[tuple[int, int]] = field(default_factory=list)
    unlabelled: list[tuple[int, int]] = field(default_factory=list)
    regions: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ExtractSummary:
    dataset: str
    slides_done: list[dict] = field(default_factory=list)
    slides_skipped: list[str] = field(default_factory=list)
    unclassified_ignored: int = 0
    unmapped_ignored: int = 0
    repaired: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def extract(
    slides_path: str | Path,
    annotations_path: str | Path,
    out: str | Path,
    config: ExtractConfig = ExtractConfig(),
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Extract a training dataset from annotated slides into `out` (created, or resumed if it exists)."""
    config.validate()
    inputs = [
        slides_path,
        annotations_path,
        config.subtypes_csv,
        config.classes if isinstance(config.classes, str) and Path(config.classes).exists() else None,
    ]
    check_apart(out, inputs)
    slides = [open_slide(p, mpp=config.slide_mpp) for p in find_slides(slides_path)]
    try:
        return _extract_open(
            slides, annotations_path, Path(out), config, inputs, overwrite=overwrite, progress=progress
        )
    finally:
        for s in slides:
            s.close()


def _extract_open(
    slides: list[Slide],
    annotations_path: str | Path,
    out: Path,
    config: ExtractConfig,
    inputs: list,
    *,
    overwrite: bool,
    progress: bool,
) -> ExtractSummary:
    matched = match_annotations([s.path for s in slides], annotations_path)
    all_sets = [a for sets in matched.values() for a in sets]
    names, colors = names_and_colors(all_sets)
    class_map = load_class_map(config.classes, found_names=names, found_colors=colors, unmapped=config.unmapped)
    summary = ExtractSummary(
        str(out), unclassified_ignored=sum(s.unclassified for s in all_sets), repaired=sum(s.repaired for s in all_sets)
    )
    subtypes = _subtypes([s.path for s in slides], config)
    per_slide: dict[str, tuple[Slide, list[tuple[int, Annotation]]]] = {}
    for slide in slides:
        check_fits(slide, config)
        anns = clip_to_slide([a for s in matched[slide.path] for a in s.annotations], slide.dimensions, slide.name)
        mapped = []
        for a in anns:
            cid = class_map.class_id(a.name or "")
            if cid is None:
                summary.unmapped_ignored += 1
            else:
                mapped.append((cid, a))
        per_slide[slide.name] = (slide, mapped)
    splits = assign_splits({k: {c for c, _ in v[1]} for k, v in per_slide.items()}, config.test_fraction, config.seed)
    spec = DatasetSpec(
        config.tile_size, config.mpp, tuple(class_map.to_json()), config.region_size, config.region_mask_size
    )
    with writing_dataset(
        out, spec, overwrite=overwrite, settings={"extract": asdict(config)}, inputs=inputs
    ) as dataset:
        if config.workers > 1:
            _start_forkserver()  # its imports then overlap hashing and planning
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as hasher:
            for name, (slide, mapped) in per_slide.items():
                digest = _digest_or_skip(dataset, slide, hasher)
                if digest is None:
                    summary.slides_skipped.append(name)
                    continue
                plan = _plan_slide(
                    slide, digest, subtypes[slide.path], _existing_split(dataset, name) or splits[name], mapped, config
                )
                summary.slides_done.append(_extract_slide(dataset, plan, class_map, config, progress=progress))
    return summary


#: Finer target resolutions than this many times the slide's own are refused: upsampled tiles hold no detail.
MAX_UPSAMPLING = 4.0


def check_fits(slide: Slide, config: ExtractConfig) -> None:
    """Refuse a `--mpp` far finer than the slide's own (warn when it upsamples at all) and a tile or region
    larger than the slide: either would give an enormous read or an empty dataset."""
    upsampling = slide.mpp / config.mpp
    if upsampling > MAX_UPSAMPLING:
        raise BadArgumentError(
            f"--mpp {config.mpp:g} is {upsampling:,.0f}× finer than slide {slide.name}'s own {slide.mpp:g} µm/px: "
            f"tiles would be upsampled {upsampling:,.0f}× (at most {MAX_UPSAMPLING:g}×); use --mpp {slide.mpp:g} or "
            "coarser"
        )
    if upsampling > 1 + MPP_TOLERANCE:
        log.warning(
            "%s: --mpp %g is finer than the slide's own %g µm/px: tiles are upsampled %.2f×",
            slide.name,
            config.mpp,
            slide.mpp,
            upsampling,
        )
    width, height = (round(d / slide.scale_for(config.mpp)) for d in slide.dimensions)
    if config.tile_size > min(width, height):
        raise BadArgumentError(
            f"--tile {config.tile_size} px at {config.mpp:g} µm/px is larger than slide {slide.name} "
            f"({width}×{height} px at that resolution): choose a smaller --tile or a finer --mpp"
        )
    if config.region_size > min(width, height):
        log.warning(
            "%s: --region %d px is larger than the slide (%d×%d px at %g µm/px): it gives no region masks for the "
            "mask model",
            slide.name,
            config.region_size,
            width,
            height,
            config.mpp,
        )


def _digest_or_skip(dataset: Dataset, slide: Slide, hasher) -> Future | None:
    """The slide's sha256 (a future), or None when the dataset already holds it.

    A slide whose name and size match no source is new whatever its hash: hash it in the background while
    its tiles are cut (hashlib releases the GIL). Otherwise hash now, to decide whether to skip it.
    """
    size = slide.path.stat().st_size
    pending = hasher.submit(sha256_file, slide.path)
    if any(s["name"] == slide.name and s.get("size") == size for s in dataset.sources) and dataset.has_source(
        pending.result()
    ):
        return None
    return pending


def _existing_split(dataset: Dataset, name: str) -> str | None:
    """A slide already in the dataset under an earlier version of its file keeps its split."""
    return next((s["split"] for s in dataset.sources if s["name"] == name), None)


def _subtypes(slides: Sequence[Path], config: ExtractConfig) -> dict[Path, str]:
    if config.subtype:
        return dict.fromkeys(slides, config.subtype)
    if not config.subtypes_csv:
        return {s: s.parent.name for s in slides}
    path = Path(config.subtypes_csv)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = {row["slide"].strip(): row["subtype"].strip() for row in csv.DictReader(fh)}
    except (OSError, KeyError, AttributeError, UnicodeDecodeError, csv.Error) as exc:
        raise BadArgumentError(
            f"--subtypes {path}: needs a UTF-8 CSV with columns 'slide,subtype' ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [s.name for s in slides if s.name not in table and s.stem not in table]
    if missing:
        raise BadArgumentError(f"--subtypes {path} has no row for: {', '.join(missing)}")
    return {s: table.get(s.name) or table[s.stem] for s in slides}


def _plan_slide(
    slide: Slide,
    digest: Future,
    subtype: str | None,
    split: str,
    mapped: list[tuple[int, Annotation]],
    config: ExtractConfig,
) -> SlidePlan:
    scale = slide.scale_for(config.mpp)
    geoms = ClassGeometries.build([(cid, a.geometry) for cid, a in mapped])
    plan = SlidePlan(slide, digest, subtype, split, geoms, config.tile_size * scale, config.region_size * scale)
    tiles = _grid(slide.dimensions, plan.l0_tile)
    annotated = geoms.annotated_fractions(_boxes(tiles, plan.l0_tile))
    plan.labelled = [t for t, f in zip(tiles, annotated, strict=True) if f >= config.min_annotated]
    thumb_scale = max(config.tissue_mpp / slide.mpp, 1.0)
    tissue = tissue_mask(slide.thumbnail(config.tissue_mpp))
    tissue_frac = box_fractions(tissue, _boxes(tiles, plan.l0_tile) / thumb_scale)
    candidates = [t for t, a, f in zip(tiles, annotated, tissue_frac, strict=True) if a == 0 and f >= config.min_tissue]
    random.Random(f"{config.seed}/{slide.name}/{slide.dimensions}").shuffle(candidates)
    plan.unlabelled = sorted(candidates[: config.unlabelled_per_slide], key=lambda t: (t[1], t[0]))
    regions = _grid(slide.dimensions, plan.l0_region)
    region_frac = geoms.annotated_fractions(_boxes(regions, plan.l0_region))
    plan.regions = [r for r, f in zip(regions, region_frac, strict=True) if f >= config.min_annotated]
    return plan


def _grid(l0_size: tuple[int, int], l0_step: float) -> list[tuple[int, int]]:
    w, h = l0_size
    return [
        (round(i * l0_step), round(j * l0_step)) for j in range(int(h // l0_step)) for i in range(int(w // l0_step))
    ]


def _boxes(corners: Sequence[tuple[int, int]], l0_size: float) -> np.ndarray:
    xy = np.asarray(corners, float).reshape(-1, 2)
    return np.concatenate([xy, xy + l0_size], axis=1)


def _extract_slide(
    dataset: Dataset, plan: SlidePlan, class_map: ClassMap, config: ExtractConfig, *, progress: bool
) -> dict:
    from tqdm import tqdm

    slide = plan.slide
    source_id = f"{slide.name}-{uuid.uuid4().hex[:8]}"  # working id: the sha256 is still being computed
    writer = SourceWriter(
        dataset,
        source_id,
        n_labelled=len(plan.labelled),
        n_unlabelled=len(plan.unlabelled),
        n_regions=len(plan.regions),
    )
    level = slide.handle.get_best_level_for_downsample(slide.scale_for(config.mpp))  # type: ignore[attr-defined]
    job = SlideJob(
        str(slide.path),
        slide.mpp,
        config.mpp,
        config.tile_size,
        plan.l0_tile,
        plan.l0_region,
        config.region_mask_size,
        tuple(
            (cid, shapely.to_wkb(g)) for cid, g in zip(plan.geometries.class_ids, plan.geometries.parts, strict=True)
        ),
        tuple(class_map.names),
        writer.tiles,
    )
    tasks = [
        (kind, i, xy)
        for kind, items in (("labelled", plan.labelled), ("unlabelled", plan.unlabelled), ("regions", plan.regions))
        for i, xy in enumerate(items)
    ]
    rows: list[dict] = []
    try:
        with tqdm(total=len(tasks), desc=slide.name, unit="tile", disable=not progress, leave=False) as bar:
            for (kind, i, xy), fractions in zip(tasks, _run(job, tasks, config.workers), strict=True):
                rows.append(
                    {
                        "kind": kind,
                        "source": source_id,
                        "index": i,
                        "x": xy[0],
                        "y": xy[1],
                        "level": level,
                        "mpp": config.mpp,
                        "subtype": plan.subtype or "",
                        "split": plan.split,
                        "fractions": json.dumps(fractions) if fractions is not None else "",
                    }
                )
                bar.update()
        counts = {"labelled": len(plan.labelled), "unlabelled": len(plan.unlabelled), "regions": len(plan.regions)}
        sha256 = plan.sha256.result()
        final_id = f"{slide.name}-{sha256[:8]}"
        rows = [{**r, "source": final_id} for r in rows]
        record = {
            "id": final_id,
            "kind": "slide",
            "name": slide.name,
            "path": str(slide.path),
            "sha256": sha256,
            "size": slide.path.stat().st_size,
            "subtype": plan.subtype,
            "split": plan.split,
            "slide_mpp": slide.mpp,
            "counts": counts,
        }
        writer.commit(record, rows)
    except BaseException:
        writer.abort()
        raise
    log.info("%s: %d labelled, %d unlabelled tiles, %d regions (%s)", slide.name, *counts.values(), plan.split)
    return record


def _start_forkserver() -> None:
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(["wsi_synth.extraction.worker"])
    forkserver.ensure_running()


def _run(job: SlideJob, tasks: list[tuple], workers: int) -> Iterator[dict | None]:
    """Results of cutting every task, in order: in this process for one worker, else in worker processes."""
    if workers == 1:  # a read-ahead thread decodes the next tiles while this one encodes and writes
        from concurrent.futures import ThreadPoolExecutor

        cutter = TileCutter(job)
        try:
            with ThreadPoolExecutor(1) as reader:
                loaded = _ordered(lambda task: reader.submit(cutter.load, task[0], task[2]), tasks, window=4)
                for (kind, i, _), (image, mask) in zip(tasks, loaded, strict=True):
                    yield cutter.store(kind, i, image, mask)
        finally:
            cutter.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _start_forkserver()
    context = multiprocessing.get_context("forkserver")  # zarr keeps threads in this process: fork is unsafe
    chunks = [tasks[i : i + TASKS_PER_CHUNK] for i in range(0, len(tasks), TASKS_PER_CHUNK)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(job,)) as pool:
        for results in _ordered(lambda chunk: pool.submit(cut_in_worker, chunk), chunks, window=3 * workers):
            yield from results


def _ordered(submit: Callable, tasks: Sequence, *, window: int) -> Iterator:
    """Results of `submit(task)` futures in task order, at most `window` in flight (bounded memory)."""
    from collections import deque

    pending: deque = deque(submit(task) for task in tasks[:window])
    for following in range(window, len(tasks) + window):
        yield pending.popleft().result()
        if following < len(tasks):
            pending.append(submit(tasks[following]))
