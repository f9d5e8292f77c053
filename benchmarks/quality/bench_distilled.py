"""Four-step slides: the distilled student against today's default, end to end and where users look, in one run.

    python -m benchmarks.quality.bench_distilled [--model M] [--size 2048] [--seeds 0] [--work DIR]
        [--yardstick-tiles 1500] [--runs default,student-4,student-8,teacher-4]

1. The recipe's data and held-out split, and the real-vs-real yardstick, as `bench_slide_fidelity`.
2. For each run, one `--size`² slide per subtype and seed from `--model` (default: the bundled model), timed end to
   end (`wsi_synth.generate`: every stage, decode and writing), cut into 64 px tiles at level 0 and measured against
   the held-out tiles: `default` is today's default (20 DPM-Solver++ steps, the teacher), `student-N` the distilled
   image stage at N steps (`--solver auto`), `teacher-N` the teacher at N DPM-Solver++ steps (what distillation buys
   over simply taking fewer steps). The runs alternate per slide so that machine load falls on all of them alike.
   Sharpness: the median Laplacian variance of the 64 px tissue tiles, beside the held-out real tiles' (blur is what
   a few teacher steps cost, and what the feature-space metrics barely see).
3. The exact Gaussian oracle: a stationary field sampled with its exact consistency function (the perfect student)
   at 1, 2, 4 and 8 steps, and with the exact ε-oracle and DPM-Solver++ at 4, 8 and 20 steps: variance (1 is right).
Prints JSON. About 30 minutes on 2 cores at 2048².
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, heldout_yardstick, machine
from wsi_synth.evaluation import heldout

RUNS = {
    "default": {"steps": 20, "solver": "dpm-solver++"},
    "student-4": {"steps": 4, "solver": "distilled"},
    "student-8": {"steps": 8, "solver": "distilled"},
    "teacher-4": {"steps": 4, "solver": "dpm-solver++"},
}


def gaussian_variances(d: int = 8, length: float = 2.0, seeds: int = 400) -> dict:
    """The sampled field's variance (target 1) for the perfect student and for the exact ε-oracle with DPM-Solver++."""
    from wsi_synth.diffusion.schedule import alphas_cumprod
    from wsi_synth.sampling.canvas import sample_canvases
    from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, GaussianFieldStudent
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import SamplerConfig

    abar = alphas_cumprod().float()
    out: dict = {}
    cases = [("student", "distilled", k) for k in (1, 2, 4, 8)] + [("oracle", "dpm-solver++", k) for k in (4, 8, 20)]
    for who, solver, steps in cases:
        denoiser = (GaussianFieldStudent if who == "student" else GaussianFieldDenoiser)(d, length, abar)
        configs = [
            SamplerConfig(PlannerConfig("fixed-grid", d, 0), steps=steps, batch_size=64, seed=s, solver=solver)
            for s in range(seeds)
        ]
        x = np.stack(sample_canvases(denoiser, (1, d, d), abar, configs)).astype(np.float64)
        out[f"{who}-{solver}-{steps}"] = round(float((x**2).mean()), 3)
    return out


def sharpness(images: list[np.ndarray], tile: int = heldout.TILE) -> float:
    """Median over `tile` px tiles with tissue of the variance of the grey image's Laplacian: what blur takes away,
    which the feature-space metrics barely see (a few steps of the teacher blur; the student should not)."""
    from scipy import ndimage

    values = []
    for image in images:
        grey = image[..., :3].astype(np.float32).mean(-1)
        for y in range(0, grey.shape[0] - tile + 1, tile):
            for x in range(0, grey.shape[1] - tile + 1, tile):
                crop = grey[y : y + tile, x : x + tile]
                if crop.mean() < 200:  # tissue, not glass
                    values.append(float(ndimage.laplace(crop).var()))
    return round(float(np.median(values)), 1)


def slide_pixels(path: Path) -> np.ndarray:
    """Level 0 of a generated slide."""
    import tifffile

    return tifffile.imread(path)


def real_pixels(folder: Path) -> list[np.ndarray]:
    """The held-out real tiles."""
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle with a distilled image stage (default: bundled)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--yardstick-tiles", type=int, default=1500)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"which of {', '.join(RUNS)}")
    parser.add_argument("--work", type=Path, default=None, help="keep the data, slides and reports here")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    held_out, split = heldout_yardstick(work, args.yardstick_tiles)
    yardstick = split["yardstick"]
    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    doc: dict = {"benchmark": "distilled", "machine": machine(), "model": model, "size": args.size, "seeds": args.seeds}
    doc |= split
    runs = {name: RUNS[name] for name in args.runs.split(",")}
    doc["runs"] = {}
    # one slide (subtype, seed) of every run before the next, so that a change in machine load hits all runs alike
    for name, settings in runs.items():
        doc["runs"][name] = {"settings": settings, "seconds_per_slide": []}
    slides: dict[str, list] = {name: [] for name in runs}
    from wsi_synth.api import generate
    from wsi_synth.models.bundle import open_bundle

    for subtype in open_bundle(model).subtypes:
        for seed in args.seeds:
            for name, settings in runs.items():
                out = work / f"made-{name}" / subtype / f"s{seed}.tiff"
                out.parent.mkdir(parents=True, exist_ok=True)
                tick = time.perf_counter()
                generate(model, out, size=args.size, subtype=subtype, seed=seed, overwrite=True, **settings)
                doc["runs"][name]["seconds_per_slide"].append(round(time.perf_counter() - tick, 1))
                slides[name].append(out)
    doc["real_sharpness"] = sharpness(real_pixels(held_out))
    for name in runs:
        doc["runs"][name] |= heldout.paths_quality(slides[name], held_out, yardstick, work, f"{name}-all")
        doc["runs"][name]["sharpness"] = sharpness([slide_pixels(p) for p in slides[name]])
        doc["runs"][name]["mean_seconds"] = round(float(np.mean(doc["runs"][name]["seconds_per_slide"])), 1)
    base = doc["runs"].get("default", {}).get("mean_seconds")
    for row in doc["runs"].values():
        row["speedup_over_default"] = round(base / row["mean_seconds"], 2) if base else None
    doc["gaussian_oracle_variance"] = gaussian_variances()
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
