"""Do generated class boundaries look drawn or stepped? The straight-boundary share of masks, real against generated.

    python -m benchmarks.quality.bench_boundaries [--model M] [--size 2048] [--seeds 0 1]

The share of a mask's class-boundary length that lies in horizontal or vertical straight runs of ≥ 16 px
(`wsi_synth.evaluation.boundaries`), for:
- the real WSSS4LUAD masks (pathologists' drawings: the validation, test and large layout masks);
- the same real masks passed through the 8 px mask grid of a generated slide and upsampled back, as blocks, as smooth
  contours and as refined contours (the default): what each upsampling costs on a drawing whose truth is known;
- masks of generated slides of `--size`² (both subtypes, each seed), from one sampled mask canvas upsampled the
  three ways: label blocks, smooth contours (`--boundary-roughness 0`), refined contours (the default).
Prints JSON. The mask stage costs about 15 s per slide on 2 CPU cores; no image is sampled.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from benchmarks.common import SHARED, emit, machine
from wsi_synth.defaults import BOUNDARY_ROUGHNESS
from wsi_synth.evaluation.boundaries import BoundaryStats, boundary_stats
from wsi_synth.generation.masks import Roughness, smooth

GRID = 8  # output px per mask-canvas px of the bundled model's geometry


def real_masks() -> list[np.ndarray]:
    folders = ["wsss4luad_val/mask", "wsss4luad_test/mask", "wsss4luad_layout_masks"]
    return [np.array(Image.open(f)) for d in folders for f in sorted((SHARED / "tiles_masks" / d).glob("*.png"))]


def upsampled(small: np.ndarray, shape: tuple[int, int], how: str, seed: int) -> np.ndarray:
    if how == "blocks":
        return np.kron(small, np.ones((GRID, GRID), np.uint8))[: shape[0], : shape[1]]
    amplitude = BOUNDARY_ROUGHNESS if how == "refined" else 0.0
    return smooth(small, float(GRID), shape, 1.0, roughness=Roughness(amplitude, seed))


def total(stats: list[BoundaryStats]) -> dict:
    s = sum(stats[1:], stats[0])
    return {"straight_share": round(s.straight_share, 5), "boundary_px": s.length}


def real_through_grid(masks: list[np.ndarray]) -> dict:
    out = {}
    for how in ("blocks", "smooth", "refined"):
        stats = []
        for m in masks:
            h, w = m.shape[0] // GRID * GRID, m.shape[1] // GRID * GRID
            if h and w:
                stats.append(boundary_stats(upsampled(m[GRID // 2 : h : GRID, GRID // 2 : w : GRID], (h, w), how, 0)))
        out[how] = total(stats)
    return out


def generated_canvases(
    model: str | None, size: int, seeds: list[int], subtypes: list[str] | None = None, **settings
) -> dict[str, list[tuple[int, np.ndarray]]]:
    """The cleaned mask canvas of `generate --size SIZE --subtype S --seed N` (layout stage included where the model
    has one; `settings` are more GenerateConfig fields), for each of `subtypes` (default: all) and seed."""
    from wsi_synth.api import _model
    from wsi_synth.generation.config import GenerateConfig, geometry
    from wsi_synth.generation.run import sample_class_map
    from wsi_synth.models.bundle import open_bundle

    path = _model(model)
    bundle = open_bundle(path)
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for subtype in subtypes or bundle.subtypes:
        for seed in seeds:
            config = GenerateConfig(width=size, height=size, subtype=subtype, seed=seed, **settings)
            out.setdefault(subtype, []).append((seed, sample_class_map(path, bundle, config, geometry(bundle, config))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    started = time.perf_counter()
    masks = real_masks()
    doc: dict = {
        "benchmark": "boundaries",
        "machine": machine(),
        "min_run_px": boundary_stats(np.zeros((1, 1))).min_run,
    }
    doc["real"] = {"masks": len(masks), **total([boundary_stats(m) for m in masks])}
    doc["real_through_8px_grid"] = real_through_grid(masks)
    generated = {}
    for subtype, canvases in generated_canvases(args.model, args.size, args.seeds).items():
        generated[subtype] = {
            how: total([boundary_stats(upsampled(c, (args.size, args.size), how, seed)) for seed, c in canvases])
            for how in ("blocks", "smooth", "refined")
        }
    doc["generated"] = {"size": args.size, "seeds": args.seeds, **generated}
    real = doc["real"]["straight_share"]
    doc["generated_refined_over_real"] = {
        s: round(v["refined"]["straight_share"] / real, 2) for s, v in generated.items()
    }
    doc["seconds"] = round(time.perf_counter() - started, 1)
    emit(doc)


if __name__ == "__main__":
    main()
