"""Sampler cost and fidelity: crops per step vs the minimum N0, the Gaussian-field fidelity table, batching.

    python -m benchmarks.perf.bench_generate [--fidelity-seeds 3]

1. Planner only: crops per step relative to N0 = ⌈H/d⌉·⌈W/d⌉ at 2048, 8192 and 100,000 px (f = 8, d = 64
   latent px, i.e. 512 px crops).
2. Fidelity with the exact Gaussian-field denoiser (d = 16, 128² canvas, 50 DDIM steps, ℓ = 2 px):
   variance retained, correlation at lags 1 and 4 vs the target, correlation across the fixed grid's crop
   edges vs inside crops, and the cost per step (crops / N0), for every planner and margin.
3. Batched vs one-crop-at-a-time denoiser throughput with the same tiny UNet, in one run.
4. End to end with a tiny bundle trained here on real tiles (f = 4, 16² latent crops): `generate` at two sizes
   with the canvases in a zarr work store (`--max-memory 0`), each in a fresh process: peak RSS (VmHWM),
   seconds per stage, denoiser evaluations, and decode work relative to one plain non-overlapping decode.
5. `generate --count` with the bundled model (64 px tiles, one crop each): seconds per tile, and per tile and stage
   the crops the planner plans against the evaluations made (copies of a clamped crop share one).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Timer, emit, machine
from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.sampling.canvas import sample
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, field_statistics
from wsi_synth.sampling.planners import PlannerConfig, crops_per_step, minimum_crops
from wsi_synth.sampling.sampler import SamplerConfig, SampleStats


def planner_costs() -> list[dict]:
    rows = []
    d = 64
    for px in (2048, 8192, 100_000):
        canvas = (px // 8, px // 8)
        n0 = minimum_crops(canvas, d)
        row = {"size_px": px, "latent": canvas[0], "n0": n0}
        for name, m in (
            ("fixed-grid", 0),
            ("shifted-grid", 0),
            ("shifted-grid", 8),
            ("shifted-grid", 16),
            ("random-patch", 0),
        ):
            with Timer() as t:
                n = crops_per_step(PlannerConfig(name, d, m), canvas)
            row[f"{name}-m{m}"] = {"crops_per_n0": round(n / n0, 3), "plan_s": round(t.seconds, 3)}
        row["shifted-grid-m0 bound (1+d/H)(1+d/W)"] = round((1 + d / canvas[0]) * (1 + d / canvas[1]), 4)
        rows.append(row)
    return rows


def fidelity(seeds: int) -> list[dict]:
    abar = alphas_cumprod(1000, "scaled_linear")
    oracle = GaussianFieldDenoiser(16, 2.0, abar)
    rows = []
    for name, m in (
        ("fixed-grid", 0),
        ("random-patch", 0),
        ("shifted-grid", 0),
        ("shifted-grid", 2),
        ("shifted-grid", 4),
    ):
        planner = PlannerConfig(name, 16, m, region=128)
        stats = SampleStats()
        x = np.stack(
            [
                sample(
                    oracle,
                    (1, 128, 128),
                    abar,
                    SamplerConfig(planner, steps=50, batch_size=256, seed=s, solver="ddim"),
                    stats=stats,
                )[0]
                for s in range(seeds)
            ]
        )
        f = field_statistics(x, 16)
        rows.append(
            {
                "planner": name,
                "context_m": m,
                "variance": round(f["variance"], 3),
                "lag1": round(f["lag1"], 3),
                "lag4": round(f["lag4"], 3),
                "target_lag1": round(oracle.target_correlation(1), 3),
                "target_lag4": round(oracle.target_correlation(4), 3),
                "corr_across_fixed_edges": round(f["across_edges"], 3),
                "corr_inside": round(f["inside"], 3),
                "crops_per_n0": round(stats.crops / stats.steps / minimum_crops((128, 128), 16), 3),
            }
        )
    return rows


def batching() -> dict:
    from wsi_synth.models.config import UNetConfig
    from wsi_synth.models.networks import build_unet

    torch.manual_seed(0)
    net = build_unet(
        UNetConfig(block_out_channels=(32, 64)), in_channels=5, out_channels=4, num_class_embeds=4, sample_size=16
    ).eval()
    z = torch.randn(64, 5, 16, 16)
    t = torch.full((64,), 500)
    c = torch.ones(64, dtype=torch.long)
    with torch.no_grad():
        net(z[:2], t[:2], class_labels=c[:2])
        with Timer() as single:
            for i in range(64):
                net(z[i : i + 1], t[i : i + 1], class_labels=c[i : i + 1])
        with Timer() as batched:
            net(z, t, class_labels=c)
    return {
        "unet": "tiny (32, 64), 16² latents",
        "one_at_a_time_crops_s": round(64 / single.seconds, 1),
        "batched_64_crops_s": round(64 / batched.seconds, 1),
        "speedup": round(single.seconds / batched.seconds, 2),
    }


GENERATE = """
import json, sys, time
from wsi_synth.generation import GenerateConfig, generate
t = time.perf_counter()
side = int(sys.argv[3])
config = GenerateConfig(width=side, height=side, subtype="adenocarcinoma", steps=3, batch_size=64, max_memory_gb=0.0)
r = generate(sys.argv[1], sys.argv[2], config, overwrite=True, progress=False, log=lambda m: None)
record = json.load(open(r["record"]))
peak = max(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": round(peak), "timings": r["timings"],
                  "image_evaluations": r["evaluations"]["image"]["evaluations"], "decode": record["decode"]}))
"""


def end_to_end(sizes: list[int]) -> list[dict]:
    import subprocess
    import tempfile

    from benchmarks.perf.bench_train import make_dataset
    from wsi_synth.models.config import load_config
    from wsi_synth.training import train

    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2] / "bench-out") as tmp:
        folder = Path(tmp)
        data = make_dataset(folder, 64, 256, 32)
        config = load_config("tiny", max_steps=20, batch_size=8, checkpoint_every=10**9, sample_every=10**9)
        for stage in ("codec", "image", "mask"):
            train(stage, data, folder / "model", config, progress=False)
        for size in sizes:
            out = subprocess.run(
                [sys.executable, "-c", GENERATE, str(folder / "model"), str(folder / f"s{size}.tiff"), str(size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append({"size_px": size, **json.loads(out.strip().splitlines()[-1])})
    return rows


def count_tiles(count: int) -> dict:
    """`generate --count` with the bundled model: wall seconds, and per tile and stage the planned crops (the
    shifted-grid planner's copies of a tile-sized crop included) against the evaluations made."""
    import tempfile

    from benchmarks.common import wsi_synth_cli
    from wsi_synth.generation.config import GenerateConfig, geometry, planner_config
    from wsi_synth.models.bundle import default_model, open_bundle
    from wsi_synth.sampling.planners import plan_window

    bundle, config = open_bundle(default_model()), GenerateConfig(width=64, height=64)
    g = geometry(bundle, config)
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2] / "bench-out") as tmp:
        with Timer() as t:
            wsi_synth_cli(
                "generate",
                "--count",
                str(count),
                "--size",
                "64",
                "--subtype",
                "adenocarcinoma",
                "--batch-size",
                "64",
                "--out",
                f"{tmp}/tiles",
                "-q",
            )
        record = json.loads(Path(f"{tmp}/tiles/tiles.json").read_text())["evaluations"]
    rows = {}
    for stage, crop, canvas in (("mask", g.msk_crop, g.msk), ("image", g.lat_crop, g.lat)):
        planner = planner_config(config, crop)
        planned = sum(
            len(plan_window(planner, canvas, (0, canvas[0], 0, canvas[1]), seed=0, step=j).crops)
            for j in range(config.steps)
        )
        rows[stage] = {
            "planned_crops_per_tile": planned,
            "evaluations_per_tile": round(record[stage]["evaluations"] / count, 2),
        }
    return {"tiles": count, "seconds_per_tile": round(t.seconds / count, 3), **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fidelity-seeds", type=int, default=3)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 2048], help="Output sizes for the end-to-end runs."
    )
    parser.add_argument("--count", type=int, default=128, help="Tiles for the `generate --count` run.")
    args = parser.parse_args()
    emit(
        {
            "benchmark": "generate (sampler)",
            "machine": machine(),
            "planner_costs": planner_costs(),
            "gaussian_fidelity": fidelity(args.fidelity_seeds),
            "batching": batching(),
            "end_to_end": end_to_end(args.sizes),
            "count_tiles": count_tiles(args.count),
        }
    )


if __name__ == "__main__":
    main()
