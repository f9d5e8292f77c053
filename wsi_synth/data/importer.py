"""`wsi-synth import`: tile sets that ship as image (+ mask) files → the dataset format.

Each image is cut into whole `tile_size` windows (after an optional `scale`); images smaller than a tile
are skipped and counted. Masks are matched to images by file stem and turned into class ids through a
legend (mask value → class name); a pixel takes the legend value nearest to it, so masks re-saved as JPEG
(values smeared around 0 and 255) still map cleanly, and the share of inexact pixels is reported.
Each image file is one split unit (imported tiles rarely say which patient they came from).

`import_layouts` takes label masks without images (annotations of slides that cannot be shared, layouts from other
tools): they become region masks for the mask (layout) stage only, cut as `region_size` windows every
`layout_stride` px (half a region by default: layouts are few and large), the last row and column flush with the
layout's far edges so that every annotated pixel is seen, and downsampled by the majority class of each block, so thin
structures do not alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_synth.classes import ClassMap, Unmapped, load_class_map, read_legend
from wsi_synth.data.store import DatasetSpec, SourceWriter, writing_dataset
from wsi_synth.errors import BadArgumentError, BadDatasetError
from wsi_synth.extraction.raster import class_fractions
from wsi_synth.extraction.split import assign_splits
from wsi_synth.io.images import image_size, read_mask_values, read_rgb
from wsi_synth.resumable import sha256_file

log = logging.getLogger("wsi_synth")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


@dataclass(frozen=True)
class ImportConfig:
    """Settings of `import`. Sizes are pixels at `mpp` µm/px, after `scale`; fractions are of a tile's pixels."""

    tile_size: int = 512
    mpp: float = 0.5
    scale: float = 1.0
    subtype: str | None = None
    classes: str | dict | None = None  # a built-in name, a YAML/JSON file, or a class-map document
    unmapped: Unmapped = "error"
    min_annotated: float = 0.05
    region_size: int = 2048
    region_mask_size: int = 128
    test_fraction: float = 0.2
    seed: int = 0
    stretch: bool = False  # resize masks of another size than their image (else refused)
    layout_stride: int | None = None  # px between layout windows; None: half the region


@dataclass
class ImportSummary:
    """What one `import` did: the source it added, its tile counts, and what it skipped."""

    dataset: str
    source: str
    skipped_existing: bool = False
    images: int = 0
    too_small: int = 0
    counts: dict = field(default_factory=dict)
    inexact_mask_pixels: float = 0.0


def import_tiles(
    images: str | Path,
    out: str | Path,
    config: ImportConfig = ImportConfig(),
    *,
    masks: str | Path | None = None,
    legend: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportSummary:
    """Import a folder of tiles (and optionally their masks) into the dataset at `out`."""

    _check_settings(config)
    image_files = _list_images(Path(images))
    mask_files = _match_masks(image_files, Path(masks)) if masks else {}
    if masks and legend is None:
        raise BadArgumentError("--masks needs --legend (a YAML/JSON map from mask value to class name)")
    values, lut, class_map = _legend_classes(legend, config)
    digest = _digest(image_files, mask_files, legend)
    source_id = f"{_source_name(Path(images))}-{digest[:8]}"
    spec = DatasetSpec(
        config.tile_size, config.mpp, tuple(class_map.to_json()), config.region_size, config.region_mask_size
    )
    with writing_dataset(out, spec, overwrite=overwrite, inputs=[images, masks, legend]) as dataset:
        summary = ImportSummary(str(out), source_id, images=len(image_files))
        if dataset.has_source(digest):
            summary.skipped_existing = True
            return summary
        _import_source(
            dataset,
            source_id,
            digest,
            image_files,
            mask_files,
            values,
            lut,
            class_map,
            config,
            summary,
            Path(images),
            progress=progress,
        )
    return summary


def _check_settings(config: ImportConfig) -> None:
    """Refuse tile, scale, MPP and region settings no dataset can be made with."""
    if config.tile_size < 16 or not (math.isfinite(config.scale) and config.scale > 0):
        raise BadArgumentError(
            f"--tile must be at least 16 and --scale positive, got {config.tile_size}, {config.scale}"
        )
    if not (math.isfinite(config.mpp) and config.mpp > 0):
        raise BadArgumentError(f"--mpp must be a positive finite number of µm per pixel, got {config.mpp}")
    if not config.region_size >= config.region_mask_size >= 1:
        raise BadArgumentError(
            f"--region ({config.region_size}) must be at least --region-mask ({config.region_mask_size}): region masks "
            "are downsampled regions"
        )


def _legend_classes(legend: str | Path | None, config: ImportConfig) -> tuple[np.ndarray, np.ndarray, ClassMap]:
    """The legend's mask values, the class id of each (its lookup table) and the class map they make (no legend:
    none)."""
    values, value_names = _legend_arrays(read_legend(legend)) if legend else (np.zeros(0, int), [])
    class_map = load_class_map(
        config.classes, found_names=[n for n in value_names if n != "unknown"], unmapped=config.unmapped
    )
    return values, _legend_lut(values, value_names, class_map), class_map


def _import_source(
    dataset,
    source_id: str,
    digest: str,
    image_files: list[Path],
    mask_files: dict[Path, Path],
    values: np.ndarray,
    lut: np.ndarray,
    class_map: ClassMap,
    config: ImportConfig,
    summary: ImportSummary,
    images: Path,
    *,
    progress: bool,
) -> None:
    from tqdm import tqdm

    # Pass 1: masks only (cheap) decide which windows are labelled, so arrays get their final sizes.
    plan, inexact, pixels = [], 0, 0
    for img in image_files:
        own = image_size(img)
        size = _scaled(own, config.scale)
        windows = _windows(size, config.tile_size)
        if not windows:
            summary.too_small += 1
        labels = None
        if img in mask_files:
            labels, bad = _mask_classes(mask_files[img], img, own, size, values, lut, stretch=config.stretch)
            inexact, pixels = inexact + bad, pixels + labels.size
        plan.append((img, size, windows, labels))
    if summary.too_small == len(plan):
        largest = max((size for _, size, _, _ in plan), key=lambda wh: min(wh))
        raise BadArgumentError(
            f"every image is smaller than --tile {config.tile_size} px (the largest is {largest[0]}×{largest[1]} px"
            + (f" after --scale {config.scale:g}" if config.scale != 1 else "")
            + "): choose a smaller --tile"
        )
    summary.inexact_mask_pixels = round(inexact / max(pixels, 1), 4)
    if summary.inexact_mask_pixels > 0.5:
        raise BadArgumentError(
            f"{100 * summary.inexact_mask_pixels:.0f}% of the mask pixels are not values of --legend "
            f"({', '.join(map(str, values))}): "
            "are --masks label masks for this legend (not the images, or colour overlays)?"
        )
    if summary.inexact_mask_pixels > 0.01:
        log.warning(
            "%.1f%% of mask pixels were not exactly a legend value (lossy masks?); each took the nearest value",
            100 * summary.inexact_mask_pixels,
        )
    units = {
        img.name: set(np.unique(labels).tolist()) - {0} if labels is not None else set() for img, _, _, labels in plan
    }
    splits = assign_splits(units, config.test_fraction, config.seed)
    t, r, rs = config.tile_size, config.region_mask_size, config.region_size
    todo: dict[str, list] = {"labelled": [], "unlabelled": [], "regions": []}
    for img, size, windows, labels in plan:
        for x, y in windows:
            if labels is None:
                todo["unlabelled"].append((img, x, y))
            elif (labels[y : y + t, x : x + t] > 0).mean() >= config.min_annotated:
                todo["labelled"].append((img, x, y))
        if labels is not None:
            for x, y in _windows(size, rs):
                window = labels[y : y + rs, x : x + rs]
                if (window > 0).mean() >= config.min_annotated:
                    todo["regions"].append((img, x, y))
    if not any(todo.values()):
        raise BadArgumentError(
            f"no window of the {len(plan)} images has ≥ {config.min_annotated:g} of its pixels annotated "
            "(--min-annotated): "
            "nothing to import; check --masks and --legend, or lower --min-annotated"
        )
    writer = SourceWriter(
        dataset,
        source_id,
        n_labelled=len(todo["labelled"]),
        n_unlabelled=len(todo["unlabelled"]),
        n_regions=len(todo["regions"]),
    )
    labels_of = {img: labels for img, _, _, labels in plan}
    rows: list[dict] = []
    names = class_map.names

    def row(kind: str, i: int, img: Path, x: int, y: int, fractions: dict | None) -> dict:
        return _manifest_row(kind, source_id, i, x, y, config, splits[img.name], fractions)

    try:
        with tqdm(
            total=sum(map(len, todo.values())), desc=source_id, unit="tile", disable=not progress, leave=False
        ) as bar:
            cache: tuple[Path | None, np.ndarray | None] = (None, None)
            for kind in ("labelled", "unlabelled"):
                for i, (img, x, y) in enumerate(todo[kind]):
                    if cache[0] != img:
                        cache = (img, read_rgb(img, scale=config.scale))
                    writer.write_tile(f"{kind}/images", i, cache[1][y : y + t, x : x + t])  # type: ignore[index]
                    fractions = None
                    if kind == "labelled":
                        mask = labels_of[img][y : y + t, x : x + t]  # type: ignore[index]
                        writer.write_tile("labelled/masks", i, mask)
                        fractions = class_fractions(mask, names)
                    rows.append(row(kind, i, img, x, y, fractions))
                    bar.update()
            for i, (img, x, y) in enumerate(todo["regions"]):
                window = labels_of[img][y : y + rs, x : x + rs]  # type: ignore[index]
                small = _centre_samples(window, r)
                writer.write_tile("regions/masks", i, small)
                rows.append(row("regions", i, img, x, y, class_fractions(small, names)))
                bar.update()
        summary.counts = {k: len(v) for k, v in todo.items()}
        writer.commit(_source_record(source_id, "tiles", Path(images), digest, config, summary.counts), rows)
    except BaseException:
        writer.abort()
        raise


def _centre_samples(window: np.ndarray, r: int) -> np.ndarray:
    """A region window downsampled to r × r by the label under each block's centre."""
    rs = window.shape[0]
    centres = (np.arange(r) * rs) // r + rs // (2 * r)
    return window[centres][:, centres]


def _block_majority(window: np.ndarray, r: int, n_classes: int) -> np.ndarray:
    """A region window downsampled to r × r by the most frequent class of each block (ties: the lower id)."""
    edges = (np.arange(r + 1) * window.shape[0]) // r
    counts = np.stack(
        [
            np.add.reduceat(np.add.reduceat((window == c).astype(np.int32), edges[:-1], 0), edges[:-1], 1)
            for c in range(n_classes)
        ]
    )
    return counts.argmax(0).astype(np.uint8)


def import_layouts(
    layouts: str | Path,
    out: str | Path,
    config: ImportConfig = ImportConfig(),
    *,
    legend: str | Path,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportSummary:
    """Import a folder of label masks without images (tissue layouts) into the dataset at `out` as region masks."""
    _check_settings(config)
    files = _list_images(Path(layouts), what="layout folder")
    values, lut, class_map = _legend_classes(legend, config)
    digest = _digest(files, {}, legend)
    source_id = f"{_source_name(Path(layouts))}-{digest[:8]}"
    spec = DatasetSpec(
        config.tile_size, config.mpp, tuple(class_map.to_json()), config.region_size, config.region_mask_size
    )
    with writing_dataset(out, spec, overwrite=overwrite, inputs=[layouts, legend]) as dataset:
        summary = ImportSummary(str(out), source_id, images=len(files))
        if dataset.has_source(digest):
            summary.skipped_existing = True
            return summary
        _import_layout_source(
            dataset, source_id, digest, files, values, lut, class_map, config, summary, Path(layouts), progress=progress
        )
    return summary


def _import_layout_source(
    dataset,
    source_id: str,
    digest: str,
    files: list[Path],
    values: np.ndarray,
    lut: np.ndarray,
    class_map: ClassMap,
    config: ImportConfig,
    summary: ImportSummary,
    folder: Path,
    *,
    progress: bool,
) -> None:
    from tqdm import tqdm

    rs, r = config.region_size, config.region_mask_size
    stride = config.layout_stride or max(rs // 2, 1)
    regions, inexact, pixels, units = [], 0, 0, {}
    for path in tqdm(files, desc=source_id, unit="layout", disable=not progress, leave=False):
        own = image_size(path)
        size = _scaled(own, config.scale)
        labels, bad = _mask_classes(path, path, own, size, values, lut, stretch=False)
        inexact, pixels = inexact + bad, pixels + labels.size
        units[path.name] = set(np.unique(labels).tolist()) - {0}
        windows = layout_windows(size, rs, stride)
        if not windows:
            summary.too_small += 1
        for x, y in windows:
            small = _block_majority(labels[y : y + rs, x : x + rs], r, len(class_map.names))
            if (small > 0).mean() >= config.min_annotated:
                regions.append((path, x, y, small))
    summary.inexact_mask_pixels = round(inexact / max(pixels, 1), 4)
    if summary.inexact_mask_pixels > 0.5:
        raise BadArgumentError(
            f"{100 * summary.inexact_mask_pixels:.0f}% of the layout pixels are not values of --legend "
            f"({', '.join(map(str, values))}): "
            "are --layouts label masks for this legend (not images, or colour overlays)?"
        )
    if not regions:
        largest = max((_scaled(image_size(f), config.scale) for f in files), key=min)
        raise BadArgumentError(
            f"no --region {rs} px window of the {len(files)} layouts has ≥ {config.min_annotated:g} of its pixels "
            "annotated "
            f"(the largest layout is {largest[0]}×{largest[1]} px after --scale {config.scale:g}): choose a smaller "
            "--region, or check --legend"
        )
    splits = assign_splits(units, config.test_fraction, config.seed)
    writer = SourceWriter(dataset, source_id, n_labelled=0, n_unlabelled=0, n_regions=len(regions))
    rows = []
    try:
        for i, (path, x, y, small) in enumerate(regions):
            writer.write_tile("regions/masks", i, small)
            rows.append(
                _manifest_row(
                    "regions", source_id, i, x, y, config, splits[path.name], class_fractions(small, class_map.names)
                )
            )
        summary.counts = {"labelled": 0, "unlabelled": 0, "regions": len(regions)}
        writer.commit(_source_record(source_id, "layouts", folder, digest, config, summary.counts), rows)
    except BaseException:
        writer.abort()
        raise


def _manifest_row(
    kind: str, source_id: str, i: int, x: int, y: int, config: ImportConfig, split: str, fractions: dict | None
) -> dict:
    """One manifest.csv row of an imported source (pixels of the scaled image or layout, level 0)."""
    fields = {
        "kind": kind,
        "source": source_id,
        "index": i,
        "x": x,
        "y": y,
        "level": 0,
        "mpp": config.mpp,
        "subtype": config.subtype or "",
    }
    return {**fields, "split": split, "fractions": json.dumps(fractions) if fractions is not None else ""}


def _source_record(source_id: str, kind: str, folder: Path, digest: str, config: ImportConfig, counts: dict) -> dict:
    """The source's entry in dataset.json: imported folders are split per file."""
    return {
        "id": source_id,
        "kind": kind,
        "name": _source_name(folder),
        "path": str(folder),
        "sha256": digest,
        "subtype": config.subtype,
        "split": "per-image",
        "counts": counts,
    }


def _source_name(folder: Path) -> str:
    """`wsss4luad_test-img` rather than a bare `img`: tile sets often keep images in a generic subfolder."""
    generic = {"img", "imgs", "image", "images", "tiles", "data"}
    folder = folder.resolve()
    return f"{folder.parent.name}-{folder.name}" if folder.name.lower() in generic else folder.name


def _list_images(folder: Path, what: str = "tile folder") -> list[Path]:
    if not folder.is_dir():
        raise BadDatasetError(f"{what} not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadDatasetError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _match_masks(images: list[Path], folder: Path) -> dict[Path, Path]:
    if not folder.is_dir():
        raise BadDatasetError(f"mask folder not found: {folder}")
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [i.name for i in images if i.stem not in by_stem]
    if missing:
        raise BadDatasetError(
            f"no mask in {folder} for {len(missing)} image(s), e.g. {', '.join(missing[:3])} (masks are matched by "
            "file stem)"
        )
    return {i: by_stem[i.stem] for i in images}


def _legend_arrays(legend: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    return np.array(sorted(legend)), [legend[k] for k in sorted(legend)]


def _legend_lut(values: np.ndarray, names: list[str], class_map: ClassMap) -> np.ndarray:
    """Class id for each legend entry (in `values` order); `unknown` (or an ignored name) → 0."""
    ids = []
    for name in names:
        cid = 0 if name.lower() == "unknown" else class_map.class_id(name)
        ids.append(cid or 0)
    return np.array(ids, np.uint8)


def _mask_classes(
    path: Path,
    image: Path,
    own: tuple[int, int],
    size: tuple[int, int],
    values: np.ndarray,
    lut: np.ndarray,
    *,
    stretch: bool,
) -> tuple[np.ndarray, int]:
    """Class ids of a mask at the (scaled) image `size`; a mask of another size than its image (`own`) is refused
    unless `stretch`."""
    raw = read_mask_values(path)
    if raw.shape[::-1] != own and not stretch:
        raise BadArgumentError(
            f"mask {path.name} is {raw.shape[1]}×{raw.shape[0]} px but its image {image.name} is {own[0]}×{own[1]} px: "
            f"masks must match their images (pass --stretch to resize them to fit)"
        )
    nearest = np.abs(raw[..., None].astype(np.int32) - values[None, None, :]).argmin(-1)
    inexact = int((values[nearest] != raw).sum())
    labels = lut[nearest]
    if labels.shape[::-1] != size:
        labels = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST))
    return labels, inexact


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def layout_windows(size: tuple[int, int], region: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the `region` px windows of a layout of `size` (w, h): every `stride` px, plus a last row
    and column flush with the far edges (whose pixels a plain stride would never show); none when it is smaller."""

    def starts(length: int) -> list[int]:
        if length < region:
            return []
        return sorted(set(range(0, length - region + 1, stride)) | {length - region})

    xs, ys = starts(size[0]), starts(size[1])
    return [(x, y) for y in ys for x in xs]


def _windows(size: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    w, h = size
    return [(x, y) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def _digest(images: list[Path], masks: dict[Path, Path], legend: str | Path | None) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(f"{img.name}:{sha256_file(img)}".encode())
        if img in masks:
            h.update(f"{masks[img].name}:{sha256_file(masks[img])}".encode())
    if legend:
        h.update(Path(legend).read_bytes())
    return h.hexdigest()
