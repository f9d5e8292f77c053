"""Pyramid write throughput against libvips on the same pixels, and peak memory when streaming.

    python -m benchmarks.perf.bench_pyramid [--sizes 8192 16384 32768] [--tile 512] [--quality 90]

Prints JSON. Throughput is MB/s of raw level-0 RGB (width × height × 3), whole pyramid included, both
writers given the same in-memory array. The memory figure comes from a fresh subprocess that streams a
lazily generated dask array (nothing held whole) through the writer and reports its peak RSS.
Needs `pip install pyvips[binary]` (benchmark-only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, Timer, base_tissue, emit, machine, tissue


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)))


def compare(size: int, tile: int, quality: int, base: np.ndarray, folder: Path) -> dict:
    import pyvips
    import tifffile

    from wsi_synth.io import write_slide_pyramid

    img = tissue(size, size, base)
    mb = img.nbytes / 1e6
    ours, vips = folder / "ours.tiff", folder / "vips.tiff"
    with Timer() as t_ours:
        write_slide_pyramid(img, ours, mpp=0.5, tile=tile, quality=quality, overwrite=True)
    vimg = pyvips.Image.new_from_memory(img.data, size, size, 3, "uchar")
    with Timer() as t_vips:
        vimg.tiffsave(
            str(vips),
            tile=True,
            tile_width=tile,
            tile_height=tile,
            pyramid=True,
            compression="jpeg",
            Q=quality,
            bigtiff=True,
        )
    crop = (slice(size // 3, size // 3 + 2048), slice(size // 3, size // 3 + 2048))
    with tifffile.TiffFile(ours) as a, tifffile.TiffFile(vips) as b:
        quality_ours = psnr(a.pages[0].asarray()[crop], img[crop])
        quality_vips = psnr(b.pages[0].asarray()[crop], img[crop])
    row = {
        "size": size,
        "raw_mb": round(mb),
        "ours_mb_s": round(mb / t_ours.seconds, 1),
        "vips_mb_s": round(mb / t_vips.seconds, 1),
        "ratio_ours_over_vips": round(t_vips.seconds / t_ours.seconds, 3),
        "ours_file_mb": round(ours.stat().st_size / 1e6, 1),
        "vips_file_mb": round(vips.stat().st_size / 1e6, 1),
        "ours_psnr_db": round(quality_ours, 2),
        "vips_psnr_db": round(quality_vips, 2),
    }
    ours.unlink()
    vips.unlink()
    return row


def streamed_peak(size: int, tile: int, folder: Path) -> dict:
    """Run in a subprocess so the peak RSS is this write's alone."""
    code = f"""
import sys, json; sys.path.insert(0, {str(ROOT)!r})
from benchmarks.common import base_tissue, lazy_tissue, peak_rss_mb, Timer
from wsi_synth.io import write_slide_pyramid
base, _ = base_tissue()
before = peak_rss_mb()
with Timer() as t:
    write_slide_pyramid(lazy_tissue({size}, {size}, base), {str(folder / "lazy.tiff")!r}, mpp=0.5, tile={tile},
                        overwrite=True)
print(json.dumps({{"peak_rss_mb": round(peak_rss_mb()), "baseline_rss_mb": round(before),
                  "seconds": round(t.seconds, 1)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    doc = json.loads(out.strip().splitlines()[-1])
    (folder / "lazy.tiff").unlink(missing_ok=True)
    return {
        "size": size,
        "source": "lazily generated dask array",
        **doc,
        "mb_s_including_generation": round(size * size * 3 / 1e6 / doc["seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--memory-size", type=int, default=32768)
    parser.add_argument(
        "--dir",
        default=str(Path(__file__).resolve().parents[2] / "bench-out"),
        help="Scratch folder (default: bench-out/ in the repo).",
    )
    args = parser.parse_args()
    base, content = base_tissue()
    Path(args.dir).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        rows = [compare(s, args.tile, args.quality, base, folder) for s in args.sizes]
        memory = streamed_peak(args.memory_size, args.tile, folder)
    emit(
        {
            "benchmark": "pyramid",
            "machine": machine(),
            "content": content,
            "tile": args.tile,
            "quality": args.quality,
            "threads": os.cpu_count(),
            "throughput": rows,
            "streaming_memory": memory,
        }
    )


if __name__ == "__main__":
    main()
