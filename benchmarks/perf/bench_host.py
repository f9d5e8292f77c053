"""Host time per crop of the sampler (everything but the network), today's code vs v0.1.0, with a null denoiser.

    python -m benchmarks.perf.bench_host [--json] [--steps 2]

A null denoiser (returns its input: no network, no allocation) makes the sampler's own work — planning,
gathering crops and masks, batching, indexing results, the solver update — the whole of the wall time.
Canvases: 1024² latent px with a realistic class map (blobs of three classes and unknown), 64² crops (f = 8,
512 px tiles) and 16² crops (the bundled model's f = 4, 64 px tiles), shifted-grid m = d/8, ω = 0 and 2,
batch 16, in memory and in the zarr work store. Also times `generate --dry-run` at 100,000 px per planner.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, emit, machine
from benchmarks.perf import legacy_sampler
from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.sampling.canvas import sample, sample_canvas
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig, SampleStats

ABAR = alphas_cumprod(1000, "scaled_linear")


class NullDenoiser:
    """ε = the input itself: the cheapest callable with the denoiser's contract; counts its own time."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, z, t, labels, masks):
        started = time.perf_counter()
        out = z
        self.seconds += time.perf_counter() - started
        return out


def class_map(side: int, seed: int = 0) -> np.ndarray:
    """Blobs of classes 1–3 and unknown (0), like a cleaned mask-stage output upsampled to the latent canvas."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (side // 64, side // 64)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.NEAREST))


def host_per_crop(run, steps: int) -> dict:
    null = NullDenoiser()
    stats = SampleStats()
    started = time.perf_counter()
    run(null, stats)
    wall = time.perf_counter() - started
    return {
        "us_per_crop": round((wall - null.seconds) / stats.crops * 1e6, 2),
        "crops": stats.crops,
        "evaluations": stats.evaluations,
        "evaluations_per_crop": round(stats.evaluations / stats.crops, 2),
        "seconds": round(wall, 2),
    }


def compare(d: int, side: int, omega: float, steps: int) -> dict:
    labels = class_map(side)
    config = SamplerConfig(
        PlannerConfig("shifted-grid", d, d // 8),
        steps=steps,
        omega=omega,
        batch_size=16,
        window=16 * d,
        seed=0,
        solver="ddim",
    )
    shape = (4, side, side)
    legacy = host_per_crop(
        lambda den, stats: legacy_sampler.sample(den, shape, ABAR, config, labels=labels, stats=stats), steps
    )
    now = host_per_crop(lambda den, stats: sample(den, shape, ABAR, config, labels=labels, stats=stats), steps)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        zarr = host_per_crop(
            lambda den, stats: sample_canvas(
                den, shape, ABAR, config, labels=labels, stats=stats, work=Path(tmp), out_of_core=True
            ),
            steps,
        )
    return {
        "crop": d,
        "canvas": side,
        "omega": omega,
        "v0.1.0": legacy,
        "now_in_memory": now,
        "now_zarr_work_store": zarr,
        "speedup_in_memory": round(legacy["us_per_crop"] / now["us_per_crop"], 1),
    }


DRY_RUN = """
import json, sys, time
from wsi_synth.generation import GenerateConfig, make_plan
t = time.perf_counter()
plan = make_plan(sys.argv[1], GenerateConfig(width=100_000, height=100_000, subtype="squamous", planner=sys.argv[2]))
crops = plan["stages"]["image"]["crops_per_step"]
print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "image_crops_per_step": crops}))
"""


def dry_runs() -> list[dict]:
    from importlib.resources import files

    model = str(files("wsi_synth") / "default_model")
    rows = []
    for planner in ("shifted-grid", "random-patch", "fixed-grid"):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", DRY_RUN, model, planner], capture_output=True, text=True, check=True
        ).stdout
        rows.append(
            {
                "planner": planner,
                "process_seconds": round(time.perf_counter() - started, 2),
                **__import__("json").loads(out),
            }
        )
    return rows


def halo_reads(d: int = 64, channels: int = 4) -> dict:
    """ms to read one window plus its one-crop halo from the work store: v0.1's layout (one chunk per window, zarr's
    default compression) against today's (shards of one window, ~64 px inner chunks, no compression)."""
    import zarr

    from wsi_synth.sampling.canvas import _inner_chunks

    win = 16 * d
    shape = (channels, 3 * win, 3 * win)
    data = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        old = zarr.open_array(f"{tmp}/old.zarr", mode="w", shape=shape, chunks=(channels, win, win), dtype="float32")
        new = zarr.create_array(
            f"{tmp}/new.zarr",
            shape=shape,
            dtype="float32",
            chunks=_inner_chunks(channels, (win, win)),
            shards=(channels, win, win),
            compressors=None,
            fill_value=0.0,
        )
        old[:], new[:] = data, data
        for name, array in (("v0.1_window_chunks", old), ("now_sharded", new)):
            for label, region in (
                ("bare_window", (slice(None), slice(win, 2 * win), slice(win, 2 * win))),
                ("window_plus_halo", (slice(None), slice(win - d, 2 * win + d), slice(win - d, 2 * win + d))),
            ):
                np.asarray(array[region])
                started = time.perf_counter()
                for _ in range(5):
                    np.asarray(array[region])
                out[f"{name}_{label}_ms"] = round((time.perf_counter() - started) / 5 * 1000, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="(the output is always JSON)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    (ROOT / "bench-out").mkdir(exist_ok=True)
    rows = [compare(d, 1024, omega, args.steps) for d in (64, 16) for omega in (0.0, 2.0)]
    emit(
        {
            "benchmark": "sampler host time per crop (null denoiser)",
            "machine": machine(),
            "steps": args.steps,
            "host": rows,
            "halo_read_64px_crops": halo_reads(),
            "dry_run_100000px": dry_runs(),
        }
    )


if __name__ == "__main__":
    main()
