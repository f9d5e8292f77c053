"""Which solver, how many steps: DDIM-50 against DPM-Solver++(2M) at fewer steps, on the exact Gaussian oracle and
on the bundled model against held-out real tiles.

    python -m benchmarks.quality.bench_solvers [--size 2048] [--seeds 0 1] [--configs ddim:50 dpm-solver++:20 ...]
        [--skip-model]

1. Gaussian oracle (d = 16, 128² canvases, ℓ = 2 px, 3 seeds): variance and correlations at lags 1 and 4 against
   the target, for shifted-grid (the default) and random-patch.
2. Bundled model: the recipe's WSSS4LUAD import (64 px tiles, 0.5 µm/px), `wsi-synth generate --size S --subtype
   adenocarcinoma` per configuration and seed (the same seeds for all), and `wsi-synth evaluate` (offline
   features) of the generated slides cut into 64 px tiles against the dataset's held-out test split. The
   yardstick is the same evaluation of the real *training* tiles against the test split.
Prints JSON; scratch files go to bench-out/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, SHARED, emit, machine
from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.sampling.canvas import sample
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, field_statistics
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig, SampleStats

CONFIGS = ["ddim:50", "ddim:20", "dpm-solver++:10", "dpm-solver++:15", "dpm-solver++:20", "dpm-solver++:25"]


def oracle_rows(configs: list[str], seeds: int = 3) -> list[dict]:
    abar = alphas_cumprod(1000, "scaled_linear")
    oracle = GaussianFieldDenoiser(16, 2.0, abar)
    rows = []
    for planner in (PlannerConfig("shifted-grid", 16, 2), PlannerConfig("random-patch", 16, 0, region=128)):
        for spec in configs:
            solver, steps = spec.split(":")
            stats = SampleStats()
            config = SamplerConfig(planner, steps=int(steps), batch_size=256, solver=solver)
            x = np.stack(
                [
                    sample(oracle, (1, 128, 128), abar, SamplerConfig(**{**config.__dict__, "seed": s}), stats=stats)[0]
                    for s in range(seeds)
                ]
            )
            f = field_statistics(x, 16)
            rows.append(
                {
                    "planner": planner.name,
                    "solver": solver,
                    "steps": int(steps),
                    "variance": round(f["variance"], 3),
                    "lag1": round(f["lag1"], 3),
                    "lag4": round(f["lag4"], 3),
                    "target_lag1": round(oracle.target_correlation(1), 3),
                    "target_lag4": round(oracle.target_correlation(4), 3),
                    "evaluations": stats.evaluations // seeds,
                }
            )
    return rows


def import_wsss(folder: Path) -> Path:
    data = folder / "data"
    here = ROOT / "examples" / "default_model"
    common = [
        "--tile",
        "64",
        "--mpp",
        "0.5",
        "--region",
        "256",
        "--region-mask",
        "32",
        "--classes",
        str(here / "classes.yaml"),
        "--out",
        str(data),
        "-q",
    ]
    for split in ("wsss4luad_val", "wsss4luad_test"):
        base = SHARED / "tiles_masks" / split
        subprocess.run(
            [
                "wsi-synth",
                "import",
                str(base / "img"),
                "--masks",
                str(base / "mask"),
                "--legend",
                str(here / "wsss.yaml"),
                "--subtype",
                "adenocarcinoma",
                *common,
            ],
            check=True,
        )
    return data


def export_train_tiles(data: Path, folder: Path, limit: int) -> Path:
    """The dataset's training tiles as PNGs: the real side of the real-vs-real yardstick."""
    from PIL import Image

    from wsi_synth.data import open_dataset

    ds = open_dataset(data)
    rows = [r for r in ds.manifest() if r["split"] == "train" and r["kind"] in ("labelled", "unlabelled")]
    step = max(1, len(rows) // limit)
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict = {}
    for k, r in enumerate(rows[::step][:limit]):
        group = groups.get(r["source"]) or groups.setdefault(r["source"], ds.source_group(r["source"]))
        Image.fromarray(np.asarray(group[f"{r['kind']}/images"][int(r["index"])])).save(folder / f"{k:05d}.png")
    return folder


def evaluate(data: Path, synthetic: Path, out: Path) -> dict:
    result = subprocess.run(
        [
            "wsi-synth",
            "evaluate",
            str(data),
            str(synthetic),
            "--split",
            "test",
            "--tile",
            "64",
            "--gallery",
            "0",
            "--out",
            str(out),
            "--overwrite",
            "-q",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    metrics = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    return {
        k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if k in ("precision", "recall", "fid")
    }


def model_rows(configs: list[str], size: int, seeds: list[int], folder: Path) -> dict:
    data = import_wsss(folder)
    slides = {}
    rows = []
    for spec in configs:
        solver, steps = spec.split(":")
        where = folder / spec.replace(":", "-")
        where.mkdir()
        seconds = []
        for seed in seeds:
            started = time.perf_counter()
            subprocess.run(
                [
                    "wsi-synth",
                    "generate",
                    "--size",
                    str(size),
                    "--subtype",
                    "adenocarcinoma",
                    "--solver",
                    solver,
                    "--steps",
                    steps,
                    "--seed",
                    str(seed),
                    "--out",
                    str(where / f"s{seed}.tiff"),
                    "-q",
                ],
                check=True,
                capture_output=True,
            )
            seconds.append(round(time.perf_counter() - started, 1))
            for extra in ("mask.tiff", "geojson", "json"):
                (where / f"s{seed}.{extra}").unlink()
        slides[spec] = where
        rows.append(
            {
                "solver": solver,
                "steps": int(steps),
                "seconds_per_slide": seconds,
                **evaluate(data, where, folder / f"report-{spec}"),
            }
        )
    n_tiles = len(seeds) * (size // 64) ** 2
    real = export_train_tiles(data, folder / "train-tiles", n_tiles)
    return {
        "size_px": size,
        "seeds": seeds,
        "tiles_per_config": n_tiles,
        "runs": rows,
        "real_train_vs_real_test": evaluate(data, real, folder / "report-real"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    doc = {
        "benchmark": "solvers: DDIM vs DPM-Solver++(2M)",
        "machine": machine(),
        "gaussian_oracle": oracle_rows(args.configs),
    }
    if not args.skip_model:
        (ROOT / "bench-out").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
            doc["bundled_model"] = model_rows(args.configs, args.size, args.seeds, Path(tmp))
    emit(doc)


if __name__ == "__main__":
    main()
