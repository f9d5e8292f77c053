"""Held-out quality of a model: what it generates against real tiles it never trained on, with real-vs-real in the
same feature space as the yardstick. `evaluate` does the measuring; this module lays out the inputs (a dataset's
split as a folder of tiles) and the runs (generated tiles, generated slides) so that the model release
(`examples/default_model/package.py`) and the model studies (`benchmarks/quality`) measure the same way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The model's own tile: generated slides are cut into tiles of this size at level 0, and tiles compared at it.
TILE = 64


def export_split(
    data: str | Path,
    split: str,
    folder: str | Path,
    *,
    kinds: Sequence[str] = ("labelled",),
    source_prefix: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> int:
    """The `split` tiles of the dataset `data` as PNGs in `folder` (replaced): of `kinds`, of the sources whose id
    starts with `source_prefix` (all when None), a seeded sample of `limit` (all when None). Returns how many."""
    from PIL import Image

    from wsi_synth.data import TileDataset

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    dataset = TileDataset(data, split=split, kinds=tuple(kinds))
    rows = [
        i for i, (_, source, _) in enumerate(dataset.items) if source_prefix is None or source.startswith(source_prefix)
    ]
    if limit is not None:
        rows = sorted(rows[int(k)] for k in np.random.default_rng(seed).permutation(len(rows))[:limit])
    for n, i in enumerate(rows):
        Image.fromarray(dataset[i][0].permute(1, 2, 0).numpy()).save(folder / f"{n:05d}.png")
    return len(rows)


def measure(
    real: str | Path,
    synthetic: str | Path,
    report: str | Path,
    *,
    slide_tile: int | None = None,
    tiles: int | None = None,
) -> dict:
    """Precision, recall and FID of `synthetic` (a folder of tiles, or of slides cut into `slide_tile` px tiles at
    level 0) against `real`, at the model's tile size, with offline features; and how many synthetic tiles. With
    `tiles`, each set is a seeded sample of at most that many: recall falls as the synthetic set grows, so sets are
    compared at the yardstick's count."""
    from wsi_synth.api import evaluate

    settings: dict[str, Any] = {"size": TILE, "overwrite": True, "max_tiles": tiles}
    if slide_tile is not None:
        settings["tile"] = slide_tile
    doc = evaluate(real, synthetic, report, **settings)
    return {
        **{k: doc["metrics"][k] for k in ("precision", "recall", "fid") if k in doc["metrics"]},
        "tiles": doc["inputs"]["synthetic"]["tiles"],
    }


def over_yardstick(metrics: dict, yardstick: dict) -> dict:
    """`metrics` with FID as a multiple of the yardstick's (real training tiles against the same held-out tiles)."""
    fid = yardstick.get("fid")
    return {**metrics, "fid_over_yardstick": round(metrics["fid"] / fid, 2) if fid else None}


def tiles_quality(
    model: str | Path,
    count: int,
    real: str | Path,
    yardstick: dict,
    work: str | Path,
    name: str,
    *,
    subtype: str = "adenocarcinoma",
    **settings: Any,
) -> dict:
    """`count` generated tiles of the model's tile size (`generate --count`, `settings` as `generate` takes them)
    against the held-out `real` tiles; with the image stage's denoiser evaluations per crop."""
    tiles = make_tiles(model, count, Path(work) / f"tiles-{name}", subtype=subtype, **settings)
    record = json.loads((tiles / "tiles.json").read_text())["evaluations"]["image"]
    metrics = measure(real, tiles / "images", Path(work) / f"report-{name}")
    return {
        "image_evaluations_per_crop": round(record["evaluations"] / record["crops"], 3),
        **over_yardstick(metrics, yardstick),
    }


def make_tiles(model: str | Path, count: int, out: str | Path, *, subtype: str, **settings: Any) -> Path:
    """`count` `generate --count` tiles of the model's tile size in `out` (replaced), `settings` as `generate` takes
    them. Returns `out`."""
    from wsi_synth.api import generate

    shutil.rmtree(out, ignore_errors=True)
    generate(model, out, count=count, size=TILE, subtype=subtype, **{"batch_size": 64, **settings})
    return Path(out)


def make_slides(
    model: str | Path, size: int, seeds: Sequence[int], work: str | Path, *, subtypes: Sequence[str] | None = None
) -> dict[str, list[Path]]:
    """One `size`² slide per subtype (default: every subtype of the model) and seed, default settings, in
    `work/slides/SUBTYPE/sSEED.tiff`: {subtype: paths}."""
    from wsi_synth.api import generate
    from wsi_synth.models.bundle import open_bundle

    subtypes = list(subtypes) if subtypes is not None else list(open_bundle(model).subtypes)
    slides = Path(work) / "slides"
    shutil.rmtree(slides, ignore_errors=True)
    made: dict[str, list[Path]] = {}
    for subtype in subtypes:
        for seed in seeds:
            out = slides / subtype / f"s{seed}.tiff"
            out.parent.mkdir(parents=True, exist_ok=True)
            generate(model, out, size=size, subtype=subtype, seed=seed)
            made.setdefault(subtype, []).append(out)
    return made


def paths_quality(
    paths: Sequence[Path], real: str | Path, yardstick: dict, work: str | Path, name: str, *, tiles: int | None = None
) -> dict:
    """Generated slides `paths` (named SUBTYPE/FILE) cut into the model's tiles at level 0, against the held-out
    `real` tiles, with FID over the yardstick's; a seeded sample of `tiles` of them when given."""
    folder = Path(work) / f"slides-{name}"  # the slide images only: evaluate reads every slide in the folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in paths:
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    return over_yardstick(measure(real, folder, Path(work) / f"report-{name}", slide_tile=TILE, tiles=tiles), yardstick)
