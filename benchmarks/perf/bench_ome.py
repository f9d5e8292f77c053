"""OME-Zarr (NGFF 0.4 and 0.5), OME-TIFF and DICOM writing against the Aperio-style TIFF writer: speed, peak memory,
size and file count, one run.

    python -m benchmarks.perf.bench_ome [--sizes 16384 32768] [--tile 512]

Prints JSON. Each (size, format) is written by a fresh subprocess through `write_slide_outputs` (image, label map
and GeoJSON, as `generate` writes them) from lazily generated dask arrays (real CMU-1 texture mirrored, and a
label map of blocks), so nothing is held whole and the peak RSS is that write's alone. MB/s is raw level-0 RGB
(width × height × 3) over the whole set's time, generation of the source pixels included (the same for every
format, so the ratios compare the writers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, emit, machine

NAMES = {
    "tiff": "s.tiff",
    "ome-tiff": "s.ome.tiff",
    "ome-zarr": "s.ome.zarr",
    "ome-zarr-0.5": "s.ome.zarr",
    "dicom": "s.dcm",
}
#: What each row asks `write_slide_outputs` for: its format and NGFF version.
SETTINGS = {
    "tiff": ("tiff", "0.4"),
    "ome-tiff": ("ome-tiff", "0.4"),
    "ome-zarr": ("ome-zarr", "0.4"),
    "ome-zarr-0.5": ("ome-zarr", "0.5"),
    "dicom": ("dicom", "0.4"),
}


def write_once(size: int, fmt: str, tile: int, folder: Path) -> dict:
    code = f"""
import sys, json; sys.path.insert(0, {str(ROOT)!r})
import dask.array as da, numpy as np
from benchmarks.common import base_tissue, lazy_tissue, peak_rss_mb, Timer
from wsi_synth.io.outputs import write_slide_outputs
base, _ = base_tissue()
image = lazy_tissue({size}, {size}, base)
def band_class(b, block_info=None):
    return np.full(b.shape[:2], (sum(block_info[None]["array-location"][0]) // 4096 + 1) % 4, np.uint8)
labels = da.map_blocks(band_class, image[..., 0], dtype=np.uint8)
named = [("unknown", (0, 0, 0)), ("tumour", (200, 0, 0)), ("stroma", (0, 200, 0)), ("normal", (0, 0, 200))]
classes = [dict(id=i, name=n, color=c) for i, (n, c) in enumerate(named)]
before = peak_rss_mb()
with Timer() as t:
    write_slide_outputs(image, labels, {str(folder / NAMES[fmt])!r}, mpp=0.5, classes=classes, tile={tile},
                        fmt={SETTINGS[fmt][0]!r}, ngff={SETTINGS[fmt][1]!r})
print(json.dumps({{"seconds": round(t.seconds, 1), "peak_rss_mb": round(peak_rss_mb()),
                  "baseline_rss_mb": round(before)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    written = [p for p in folder.iterdir() if not p.name.startswith(".")]
    files = [f for p in written for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    size_bytes = sum(f.stat().st_size for f in files)
    for p in written:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return {
        "size": size,
        "format": fmt,
        **doc,
        "mb_s": round(size * size * 3 / 1e6 / doc["seconds"], 1),
        "output_mb": round(size_bytes / 1e6, 1),
        "files": len(files),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--formats", nargs="+", default=list(NAMES), choices=list(NAMES))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for size in args.sizes:
            by_format = {fmt: write_once(size, fmt, args.tile, Path(tmp)) for fmt in args.formats}
            for row in by_format.values():
                if "tiff" in by_format:
                    row["speed_relative_to_tiff"] = round(by_format["tiff"]["seconds"] / row["seconds"], 3)
                rows.append(row)
    emit({"benchmark": "ome", "machine": machine(), "tile": args.tile, "rows": rows})


if __name__ == "__main__":
    main()
