"""Does the last step's crop grid show at level 0? Seams of generated slides, with and without blended crops.

    python -m benchmarks.quality.bench_seams [--model M] [--size 2048] [--seeds 0] [--steps 4 20]
        [--subtype adenocarcinoma] [--picture docs/images/seams.jpg]

Each step of the image stage evaluates crops on a grid of owned cells with a fresh random offset; the final image
is its last step's prediction, assembled from those cells. Where neighbouring crops disagree (a brighter and a
dimmer estimate of the same glass), a hard edge between cells showed the grid at level 0. Blended plans
(`PlannerConfig.blend`, the default) cross-fade ε over the crops' context margins instead.

For each step count and seed, one slide with hard cell edges (the planner before blending) and one blended, same
model, seed and settings. The measure: the mean squared difference of adjacent level-0 pixels (grey) across the
last step's cell edges, over that of all other adjacent pairs, in glass (both pixels of the `background` class,
where flat areas show a seam most) and in tissue. 1 = no seam. The cell edges are known exactly: the offset of
the last step's grid is seeded (`planners._grid_geometry`). Prints JSON; with `--picture`, a contrast-stretched
glass crop of each run side by side.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.common import ROOT, emit, machine


def generate(model: str, out: Path, size: int, subtype: str, seed: int, steps: int, *, blend: bool) -> None:
    import wsi_synth.generation.config as config_module
    from wsi_synth.api import generate as run

    planner = config_module.planner_config

    def hard(config, crop):
        return replace(planner(config, crop), blend=False)

    with mock.patch.object(config_module, "planner_config", planner if blend else hard):
        run(model, out, size=size, subtype=subtype, seed=seed, steps=steps, overwrite=True)


def last_cells(model: str, size: int, subtype: str, seed: int, steps: int) -> tuple[int, int, int]:
    """(cell side, y offset, x offset) of the image stage's last step, in level-0 px."""
    from wsi_synth.generation.config import GenerateConfig, geometry, sampler_config
    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.sampling.planners import _grid_geometry

    bundle = open_bundle(model)
    config = GenerateConfig(width=size, height=size, subtype=subtype, seed=seed, steps=steps)
    g = geometry(bundle, config)
    sampler = sampler_config(config, g, "image", bundle)
    _, s, (oy, ox) = _grid_geometry(sampler.planner, sampler.seed, sampler.steps - 1)
    return s * g.factor, oy * g.factor, ox * g.factor


def read(slide: Path) -> tuple[np.ndarray, np.ndarray]:
    import openslide

    with openslide.OpenSlide(str(slide)) as s:
        grey = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("L"), np.float32)
    with openslide.OpenSlide(str(slide.with_name(slide.stem + ".mask.tiff"))) as m:
        labels = np.asarray(m.read_region((0, 0), 0, m.dimensions).convert("L"))
    return grey, labels


def seam_ratio(grey: np.ndarray, where: np.ndarray, cell: int, offsets: tuple[int, int]) -> float | None:
    """Mean squared step across the grid's edges over that of every other adjacent pair, pairs inside `where`."""
    across = inside = 0.0
    n_across = n_inside = 0
    for axis, offset in zip((0, 1), offsets, strict=True):
        step = np.diff(grey, axis=axis) ** 2
        both = (where[1:] & where[:-1]) if axis == 0 else (where[:, 1:] & where[:, :-1])
        n = grey.shape[axis] - 1
        edge = np.zeros(n, bool)
        edge[[k - 1 for k in range(offset % cell, n + 1, cell) if 1 <= k <= n]] = True  # pair (k − 1, k)
        edge_mask = (edge[:, None] if axis == 0 else edge[None, :]) & both
        across += float(step[edge_mask].sum())
        n_across += int(edge_mask.sum())
        rest = both & ~(edge[:, None] if axis == 0 else edge[None, :])
        inside += float(step[rest].sum())
        n_inside += int(rest.sum())
    if n_across < 100 or n_inside == 0:
        return None
    return round((across / n_across) / (inside / n_inside), 3)


def glass_crop(grey_rgb: np.ndarray, labels: np.ndarray, background: int, size: int = 256) -> np.ndarray:
    best, corner = -1.0, (0, 0)
    h, w = labels.shape
    for y in range(0, h - size + 1, size // 2):
        for x in range(0, w - size + 1, size // 2):
            share = float((labels[y : y + size, x : x + size] == background).mean())
            if share > best:
                best, corner = share, (y, x)
    y, x = corner
    crop = grey_rgb[y : y + size, x : x + size].astype(np.float32)
    lo, hi = np.percentile(crop, 2), np.percentile(crop, 98)
    return ((crop - lo) / max(hi - lo, 1) * 255).clip(0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 20])
    parser.add_argument("--subtype", default="adenocarcinoma")
    parser.add_argument("--picture", type=Path, default=None)
    args = parser.parse_args()
    from wsi_synth.models.bundle import open_bundle

    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    names = [c["name"] for c in open_bundle(model).classes]
    background = names.index("background") if "background" in names else None
    work = Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    doc: dict = {"benchmark": "seams", "machine": machine(), "model": model, "size": args.size, "runs": []}
    crops = []
    started = time.perf_counter()
    for steps in args.steps:
        for seed in args.seeds:
            cell, oy, ox = last_cells(model, args.size, args.subtype, seed, steps)
            for blend in (False, True):
                out = work / f"s{seed}-{steps}-{'blended' if blend else 'hard'}.tiff"
                t0 = time.perf_counter()
                generate(model, out, args.size, args.subtype, seed, steps, blend=blend)
                grey, labels = read(out)
                glass = labels == background if background is not None else np.zeros_like(labels, bool)
                doc["runs"].append(
                    {
                        "steps": steps,
                        "seed": seed,
                        "cells": "blended" if blend else "hard",
                        "cell_px": cell,
                        "seconds": round(time.perf_counter() - t0, 1),
                        "glass_share": round(float(glass.mean()), 3),
                        "seam_ratio_glass": seam_ratio(grey, glass, cell, (oy, ox)),
                        "seam_ratio_tissue": seam_ratio(grey, ~glass & (labels > 0), cell, (oy, ox)),
                    }
                )
                if args.picture is not None and seed == args.seeds[0] and background is not None:
                    crops.append(glass_crop(grey, labels, background))
    doc["seconds"] = round(time.perf_counter() - started, 1)
    if args.picture is not None and crops:
        from PIL import Image

        gap = 8
        strip = np.full((crops[0].shape[0], len(crops) * (crops[0].shape[1] + gap) - gap), 255, np.uint8)
        for k, crop in enumerate(crops):
            strip[:, k * (crop.shape[1] + gap) : k * (crop.shape[1] + gap) + crop.shape[1]] = crop
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip).save(args.picture, quality=90)
        doc["picture"] = str(args.picture)
    emit(doc)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
