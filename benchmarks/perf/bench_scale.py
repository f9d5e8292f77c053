"""Scale rehearsal: the real `generate` path end to end at gigapixel size with a minimal bundle.

    python -m benchmarks.perf.bench_scale --size 100000 --out bench-out/scale [--steps N] [--json]

The bundle is built here from the real diffusers classes with a few channels and random weights, with the
interfaces of a trained one: an f = 8 `AutoencoderKL` (4 channels, one resnet per decoder block, no mid-block
attention), 512 px tiles (64² latent crops, the paper's geometry), an image and a mask `UNet2DModel` of (8, 16)
channels without attention, model.json with every key `generate` reads. Its pictures are noise, and its random
mask model gives a map that cleaning turns all "unknown" (one evaluation per crop, where real maps need ~2);
its costs are those of the pipeline: mask stage, out-of-core image stage (zarr work store), batched decode,
pyramid, mask pyramid, GeoJSON. Peak memory is the point of interest; the time is that of these networks on
this machine (PyTorch's CPU convolutions at 4–16 channels run at a few % of the cores' peak).

`wsi-synth generate` runs as a user runs it (the console script, default settings but the model), in its own
process; the benchmark samples the whole process tree's RSS and the work store's size on disk every second.
Prints JSON: seconds per stage, peak RSS, peak work-store bytes, the output, and `wsi-synth info` of it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, machine

CLASSES = [
    {"id": 0, "name": "unknown", "color": [128, 128, 128]},
    {"id": 1, "name": "tumour", "color": [200, 0, 0]},
    {"id": 2, "name": "stroma", "color": [0, 150, 0]},
    {"id": 3, "name": "necrosis", "color": [0, 0, 200]},
]


def build_bundle(root: Path) -> Path:
    """A minimal bundle with the real network classes and random weights (f = 8, 64² latent crops, 32² masks)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DModel

    from wsi_synth.models.bundle import Bundle

    torch.manual_seed(0)
    codec = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=0,
        norm_num_groups=2,
        sample_size=512,
        mid_block_add_attention=False,
    )
    unet = dict(
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        norm_num_groups=4,
        add_attention=False,
    )
    image = UNet2DModel(sample_size=64, in_channels=5, out_channels=4, num_class_embeds=len(CLASSES), **unet)
    mask = UNet2DModel(sample_size=32, in_channels=len(CLASSES), out_channels=len(CLASSES), num_class_embeds=3, **unet)
    bundle = Bundle(
        root,
        {
            "classes": CLASSES,
            "subtypes": ["adenocarcinoma", "squamous"],
            "tile_size": 512,
            "mpp": 0.5,
            "region_size": 1024,
            "region_mask_size": 32,
            "latent": {"factor": 8, "channels": 4, "scale": 1.0},
            "schedule": {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear"},
            "conditioning": "per-class",
            "stages": {},
        },
    )
    for stage, network in (("codec", codec), ("image", image), ("mask", mask)):
        bundle.save_network(stage, network)
        bundle.meta["stages"][stage] = {"steps": 0, "note": "random weights: bench_scale.py"}
    bundle.write_meta()
    return root


class Sampler:
    """Peak RSS of a process and all its descendants, and peak bytes under a folder, sampled every second."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder = pid, folder
        self.peak_rss = self.peak_disk = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.wait(1.0):
            try:
                procs = [root, *root.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self.peak_disk = max(self.peak_disk, _bytes_under(self.folder))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _bytes_under(folder: Path) -> int:
    total = 0
    for work in folder.glob(".*.work"):
        for p in work.rglob("*"):
            try:
                total += p.stat().st_size if p.is_file() else 0
            except OSError:
                pass
    return total


def rehearse(size: int, out: Path, steps: int | None, max_memory: float | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    model = build_bundle(out / "model")
    slide = out / f"s{size}.tiff"
    command = [
        "wsi-synth",
        "generate",
        "--model",
        str(model),
        "--size",
        str(size),
        "--subtype",
        "adenocarcinoma",
        "--out",
        str(slide),
        "--overwrite",
        "--quiet",
        *(["--steps", str(steps)] if steps else []),
        *(["--max-memory", str(max_memory)] if max_memory is not None else []),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(process.pid, out)
    stdout, stderr = process.communicate()
    sampler.close()
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"generate failed ({process.returncode}): {stderr.strip()[-2000:]}")
    record = json.loads(slide.with_suffix(".json").read_text())
    info = subprocess.run(["wsi-synth", "info", str(slide)], capture_output=True, text=True, check=True).stdout
    import openslide

    with openslide.OpenSlide(str(slide)) as s:
        opened = {
            "dimensions": list(s.dimensions),
            "level_count": s.level_count,
            "mpp_x": s.properties.get("openslide.mpp-x"),
        }
    return {
        "size_px": size,
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 2),
        "timings_s": record["timings"],
        "steps": record["plan"]["steps"],
        "solver": record["config"]["solver"],
        "out_of_core": record["out_of_core"],
        "evaluations": {k: v["evaluations"] for k, v in record["evaluations"].items()},
        "crops": {k: v["crops"] for k, v in record["evaluations"].items()},
        "peak_rss_bytes": sampler.peak_rss,
        "peak_work_store_bytes": sampler.peak_disk,
        "output": str(slide),
        "output_bytes": {p.name: p.stat().st_size for p in sorted(out.glob(f"s{size}.*"))},
        "openslide": opened,
        "info": info.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[16384])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "scale")
    parser.add_argument("--steps", type=int, default=None, help="Solver steps (default: generate's default).")
    parser.add_argument(
        "--max-memory", type=float, default=None, help="generate --max-memory (0: the work store at any size)."
    )
    parser.add_argument("--json", action="store_true", help="(the output is always JSON)")
    args = parser.parse_args()
    runs = []
    for size in args.size:
        runs.append(rehearse(size, args.out, args.steps, args.max_memory))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    emit(
        {
            "benchmark": "scale rehearsal (minimal f = 8 bundle, random weights)",
            "machine": machine(),
            "runs": runs,
            "linearity": linearity(runs),
        }
    )


def linearity(runs: list[dict]) -> list[dict]:
    """Cost per unit of work for each run: image-stage seconds per crop-step, decode+write seconds per megapixel."""
    return [
        {
            "size_px": r["size_px"],
            "image_ms_per_crop": round(r["timings_s"]["image_s"] / max(r["crops"]["image"], 1) * 1000, 2),
            "mask_ms_per_crop": round(r["timings_s"]["mask_s"] / max(r["crops"]["mask"], 1) * 1000, 2),
            "decode_write_s_per_mpx": round(r["timings_s"]["decode_write_s"] / (r["size_px"] ** 2 / 1e6), 4),
            "peak_rss_gb": round(r["peak_rss_bytes"] / 1e9, 2),
        }
        for r in runs
    ]


if __name__ == "__main__":
    main()
