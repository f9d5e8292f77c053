"""`wsi-synth extract`: annotated slides → labelled tiles, unlabelled tiles and region masks.

Everything that can be wrong with the input (slides, annotations, class names, subtypes, the output
folder) is checked before anything is written. Slides are then processed one at a time, tiles in
parallel threads (openslide decoding, rasterio and JPEG encoding release the GIL), written in batches.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wsi_synth.annotations import Annotation, clip_to_slide, match_annotations, names_and_colors
from wsi_synth.classes import ClassMap, Unmapped, load_class_map
from wsi_synth.data.store import Dataset, DatasetSpec, SourceWriter, create_or_open, sha256_file
from wsi_synth.errors import BadArgumentError
from wsi_synth.extract.raster import ClassGeometries, class_fractions
from wsi_synth.extract.split import assign_splits
from wsi_synth.extract.tissue import box_fractions, tissue_mask
from wsi_synth.slide import Slide, find_slides, open_slide

log = logging.getLogger("wsi_synth")

#: Tiles read and written together: enough to keep the reader threads busy while one batch is written.
BATCH = 16


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
    tissue_mpp: float = 8.0
    slide_mpp: float | None = None
    classes: str | None = None
    unmapped: Unmapped = "error"
    subtype: str | None = None
    subtypes_csv: str | None = None

    def validate(self) -> None:
        checks = [
            ("--tile", self.tile_size, self.tile_size >= 16 and self.tile_size % 8 == 0, "a multiple of 8, at least 16"),
            ("--mpp", self.mpp, self.mpp > 0, "positive"),
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
    sha256: str
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


def extract(slides_path: str | Path, annotations_path: str | Path, out: str | Path, config: ExtractConfig = ExtractConfig(),
            *, overwrite: bool = False, progress: bool = True) -> ExtractSummary:
    """Extract a training dataset from annotated slides into `out` (created, or resumed if it exists)."""
    config.validate()
    slides = [open_slide(p, mpp=config.slide_mpp) for p in find_slides(slides_path)]
    try:
        return _extract_open(slides, annotations_path, Path(out), config, overwrite=overwrite, progress=progress)
    finally:
        for s in slides:
            s.close()


def _extract_open(slides: list[Slide], annotations_path: str | Path, out: Path, config: ExtractConfig,
                  *, overwrite: bool, progress: bool) -> ExtractSummary:
    matched = match_annotations([s.path for s in slides], annotations_path)
    all_sets = [a for sets in matched.values() for a in sets]
    names, colors = names_and_colors(all_sets)
    class_map = load_class_map(config.classes, found_names=names, found_colors=colors, unmapped=config.unmapped)
    summary = ExtractSummary(str(out), unclassified_ignored=sum(s.unclassified for s in all_sets),
                             repaired=sum(s.repaired for s in all_sets))
    subtypes = _subtypes([s.path for s in slides], config)
    per_slide: dict[str, tuple[Slide, list[tuple[int, Annotation]]]] = {}
    for slide in slides:
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
    spec = DatasetSpec(config.tile_size, config.mpp, tuple(class_map.to_json()), config.region_size, config.region_mask_size)
    dataset = create_or_open(out, spec, overwrite=overwrite, settings={"extract": asdict(config)})
    for name, (slide, mapped) in per_slide.items():
        digest = sha256_file(slide.path)
        if dataset.has_source(digest):
            summary.slides_skipped.append(name)
            continue
        plan = _plan_slide(slide, digest, subtypes[slide.path], _existing_split(dataset, name) or splits[name], mapped, config)
        summary.slides_done.append(_extract_slide(dataset, plan, class_map, config, progress=progress))
    return summary


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
        with path.open(newline="") as fh:
            table = {row["slide"].strip(): row["subtype"].strip() for row in csv.DictReader(fh)}
    except (OSError, KeyError) as exc:
        raise BadArgumentError(f"--subtypes {path}: needs a CSV with columns 'slide,subtype' ({exc})") from exc
    missing = [s.name for s in slides if s.name not in table and s.stem not in table]
    if missing:
        raise BadArgumentError(f"--subtypes {path} has no row for: {', '.join(missing)}")
    return {s: table.get(s.name) or table[s.stem] for s in slides}


def _plan_slide(slide: Slide, digest: str, subtype: str | None, split: str, mapped: list[tuple[int, Annotation]],
                config: ExtractConfig) -> SlidePlan:
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
    random.Random(f"{config.seed}/{digest}").shuffle(candidates)
    plan.unlabelled = sorted(candidates[: config.unlabelled_per_slide], key=lambda t: (t[1], t[0]))
    regions = _grid(slide.dimensions, plan.l0_region)
    region_frac = geoms.annotated_fractions(_boxes(regions, plan.l0_region))
    plan.regions = [r for r, f in zip(regions, region_frac, strict=True) if f >= config.min_annotated]
    return plan


def _grid(l0_size: tuple[int, int], l0_step: float) -> list[tuple[int, int]]:
    w, h = l0_size
    return [(round(i * l0_step), round(j * l0_step)) for j in range(int(h // l0_step)) for i in range(int(w // l0_step))]


def _boxes(corners: Sequence[tuple[int, int]], l0_size: float) -> np.ndarray:
    xy = np.asarray(corners, float).reshape(-1, 2)
    return np.concatenate([xy, xy + l0_size], axis=1)


def _extract_slide(dataset: Dataset, plan: SlidePlan, class_map: ClassMap, config: ExtractConfig, *, progress: bool) -> dict:
    from tqdm import tqdm

    slide, t, names = plan.slide, config.tile_size, class_map.names
    source_id = f"{slide.name}-{plan.sha256[:8]}"
    writer = SourceWriter(dataset, source_id, n_labelled=len(plan.labelled), n_unlabelled=len(plan.unlabelled), n_regions=len(plan.regions))
    rows: list[dict] = []
    total = len(plan.labelled) + len(plan.unlabelled) + len(plan.regions)
    level = slide.handle.get_best_level_for_downsample(slide.scale_for(config.mpp))  # type: ignore[attr-defined]

    def row(kind: str, index: int, xy: tuple[int, int], fractions: dict | None) -> dict:
        return {"kind": kind, "source": source_id, "index": index, "x": xy[0], "y": xy[1], "level": level, "mpp": config.mpp,
                "subtype": plan.subtype or "", "split": plan.split, "fractions": json.dumps(fractions) if fractions is not None else ""}

    def labelled_tile(xy: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return slide.read(xy, (t, t), config.mpp), plan.geometries.rasterize(xy, plan.l0_tile / t, t)

    try:
        with tqdm(total=total, desc=slide.name, unit="tile", disable=not progress, leave=False) as bar, \
                ThreadPoolExecutor(config.workers) as pool:
            for start, batch in _batched(pool, labelled_tile, plan.labelled):
                images, masks = np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
                writer.write("labelled/images", start, images)
                writer.write("labelled/masks", start, masks)
                rows += [row("labelled", start + i, plan.labelled[start + i], class_fractions(m, names)) for i, m in enumerate(masks)]
                bar.update(len(batch))
            for start, batch in _batched(pool, lambda xy: slide.read(xy, (t, t), config.mpp), plan.unlabelled):
                writer.write("unlabelled/images", start, np.stack(batch))
                rows += [row("unlabelled", start + i, plan.unlabelled[start + i], None) for i in range(len(batch))]
                bar.update(len(batch))
            r = config.region_mask_size
            for start, batch in _batched(pool, lambda xy: plan.geometries.rasterize(xy, plan.l0_region / r, r), plan.regions):
                writer.write("regions/masks", start, np.stack(batch))
                rows += [row("regions", start + i, plan.regions[start + i], class_fractions(m, names)) for i, m in enumerate(batch)]
                bar.update(len(batch))
        counts = {"labelled": len(plan.labelled), "unlabelled": len(plan.unlabelled), "regions": len(plan.regions)}
        record = {"id": source_id, "kind": "slide", "name": slide.name, "path": str(slide.path), "sha256": plan.sha256,
                  "subtype": plan.subtype, "split": plan.split, "slide_mpp": slide.mpp, "counts": counts}
        writer.commit(record, rows)
    except BaseException:
        writer.abort()
        raise
    log.info("%s: %d labelled, %d unlabelled tiles, %d regions (%s)", slide.name, *counts.values(), plan.split)
    return record


def _batched(pool: ThreadPoolExecutor, fn: Callable, items: Sequence) -> Iterator[tuple[int, list]]:
    """Results of `fn` over `items` in order, BATCH at a time, with the next batch already submitted."""
    pending = [pool.submit(fn, x) for x in items[:BATCH]]
    for start in range(0, len(items), BATCH):
        following = [pool.submit(fn, x) for x in items[start + BATCH : start + 2 * BATCH]]
        yield start, [f.result() for f in pending]
        pending = following
