"""Extraction throughput against a plain openslide `read_region` loop, and peak memory on a 40,000² slide.

    python -m benchmarks.perf.bench_extract [--size 40000] [--tile 512] [--unlabelled 600]

Writes a tiled, pyramidal TIFF of real H&E texture (mirrored CMU-1) with `Aperio …|MPP = 0.5`, annotates
a few large polygons, then in one run: a plain loop of `read_region` over exactly the tile coordinates
`extract` chose (pixels only), and `wsi-synth extract` with 1 and 2 workers (tissue detection, planning,
masks, JPEG compression and writing included), each in a fresh subprocess that also reports its peak RSS,
alternating the three and keeping each one's best of two runs.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Timer, base_tissue, emit, lazy_tissue, machine

PEAK = "max(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024"

PLAIN_LOOP = """
import sys, json, csv, time, openslide
slide = openslide.OpenSlide(sys.argv[1]); tile = int(sys.argv[3])
coords = [(int(r["x"]), int(r["y"])) for r in csv.DictReader(open(sys.argv[2])) if r["kind"] != "regions"]
t = time.perf_counter()
for x, y in coords:
    slide.read_region((x, y), 0, (tile, tile))
dt = time.perf_counter() - t
print(json.dumps({"tiles": len(coords), "seconds": dt, "peak_rss_mb": PEAK}))
""".replace("PEAK", PEAK)

EXTRACT = """
import sys, json, time, threading, psutil
from wsi_synth.extraction.pipeline import ExtractConfig, extract
tree_peak = [0.0]
def sample():  # whole process tree (forkserver workers are not our waited-for children, so rusage misses them)
    me = psutil.Process()
    while True:
        try:
            total = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
        except psutil.Error:
            continue
        tree_peak[0] = max(tree_peak[0], total / 2**20)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
cfg = ExtractConfig(tile_size=int(sys.argv[4]), workers=int(sys.argv[5]), unlabelled_per_slide=int(sys.argv[6]))
t = time.perf_counter()
s = extract(sys.argv[1], sys.argv[2], sys.argv[3], cfg, progress=False)
dt = time.perf_counter() - t
c = s.slides_done[0]["counts"]
print(json.dumps({"tiles": c["labelled"] + c["unlabelled"], "regions": c["regions"], "seconds": dt,
                  "peak_rss_mb": PEAK, "process_tree_peak_rss_mb": round(tree_peak[0])}))
""".replace("PEAK", PEAK)


def make_slide(folder: Path, size: int) -> tuple[Path, Path]:
    from wsi_synth.io import write_slide_pyramid

    base, _ = base_tissue()
    slide = folder / "big.tiff"
    write_slide_pyramid(lazy_tissue(size, size, base), slide, mpp=0.5, tile=512, overwrite=True)
    s = size
    polygons = {
        "Tumor": [
            [
                [0.10 * s, 0.10 * s],
                [0.45 * s, 0.12 * s],
                [0.40 * s, 0.45 * s],
                [0.12 * s, 0.40 * s],
                [0.10 * s, 0.10 * s],
            ],
            [
                [0.20 * s, 0.20 * s],
                [0.30 * s, 0.20 * s],
                [0.30 * s, 0.30 * s],
                [0.20 * s, 0.30 * s],
                [0.20 * s, 0.20 * s],
            ],
        ],
        "Stroma": [
            [
                [0.55 * s, 0.55 * s],
                [0.90 * s, 0.60 * s],
                [0.85 * s, 0.90 * s],
                [0.55 * s, 0.85 * s],
                [0.55 * s, 0.55 * s],
            ]
        ],
    }
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }
        for name, rings in polygons.items()
    ]
    ann = folder / "big.geojson"
    ann.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return slide, ann


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _keep_best(results: dict, key: str, new: dict) -> None:
    if key not in results or new["seconds"] < results[key]["seconds"]:
        results[key] = new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--unlabelled", type=int, default=600)
    parser.add_argument(
        "--dir",
        default=str(Path(__file__).resolve().parents[2] / "bench-out"),
        help="Scratch folder (default: bench-out/ in the repo; some machines' /tmp creates files 20× slower).",
    )
    args = parser.parse_args()
    Path(args.dir).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        with Timer() as t_make:
            slide, ann = make_slide(folder, args.size)
        results: dict[str, dict] = {}
        # Alternate the configurations and keep each one's best of two: the first run after writing a 700 MB
        # slide competes with the kernel flushing it, which would otherwise penalise whichever runs first.
        for attempt in range(2):
            for workers in (1, 2):
                run_result = run(
                    EXTRACT,
                    str(slide),
                    str(ann),
                    str(folder / f"d{workers}-{attempt}"),
                    str(args.tile),
                    str(workers),
                    str(args.unlabelled),
                )
                _keep_best(results, f"extract_{workers}_worker", run_result)
            _keep_best(
                results,
                "plain_read_region_loop",
                run(PLAIN_LOOP, str(slide), str(folder / "d1-0" / "manifest.csv"), str(args.tile)),
            )
    plain = results["plain_read_region_loop"]["tiles"] / results["plain_read_region_loop"]["seconds"]
    for key in ("extract_1_worker", "extract_2_worker"):
        r = results[key]
        r["tiles_per_s"] = round(r["tiles"] / r["seconds"], 1)
        r["ratio_vs_plain_loop"] = round(r["tiles_per_s"] / plain, 3)
    results["plain_read_region_loop"]["tiles_per_s"] = round(plain, 1)
    emit(
        {
            "benchmark": "extract",
            "machine": machine(),
            "slide": f"{args.size}x{args.size} pyramidal JPEG TIFF (written in {t_make.seconds:.0f} s)",
            "tile": args.tile,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
