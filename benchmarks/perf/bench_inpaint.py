"""`inpaint`: its cost follows the region's area, not the slide's, and the rest of the slide streams at the writer's
speed.

    python -m benchmarks.perf.bench_inpaint [--radii 64 128 256 512] [--steps 10] [--slide-size 40000] [--model M]

1. Cost vs region area: one round region of each radius in CMU-1-Small-Region (real H&E, 2220 × 2967 px), inpainted
   by the model (default: the bundled one) through the CLI; the sampling-and-decode time (`timings.inpaint_s` of the
   record), the denoiser evaluations, and both per region megapixel.
2. Streaming the rest: a `--slide-size`² tiled JPEG pyramid of real texture (CMU-1 mirrored, written first), one
   small region inpainted; its write phase (`timings.write_s`: reading the slide band by band through OpenSlide,
   blending, writing image, label pyramid and GeoJSON) against `write_slide_outputs` writing the same output set
   from a lazily generated source of the same size (the pyramid writer with a source that costs nearly nothing).
   Each in a fresh process, with its peak RSS.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, SHARED, emit, machine


def circle(path: Path, centre: tuple[int, int], radius: int, name: str = "stroma") -> Path:
    from shapely.geometry import Point, mapping

    feature = {
        "type": "Feature",
        "geometry": mapping(Point(centre).buffer(radius, 64)),
        "properties": {"classification": {"name": name}},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def in_process(code: str) -> dict:
    """Run `code` in a fresh Python (the repository on its path); the JSON object it prints last."""
    prelude = f"import sys, json; sys.path.insert(0, {str(ROOT)!r})\nfrom benchmarks.common import peak_rss_mb, Timer\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def inpaint_once(slide: Path, regions: Path, out: Path, *, steps: int, model: str | None) -> dict:
    code = f"""
import wsi_synth
with Timer() as t:
    record = wsi_synth.inpaint({str(slide)!r}, {str(regions)!r}, {str(out)!r}, model={model!r}, class_="stroma",
                               steps={steps}, overwrite=True)
doc = json.loads(open(record["record"]).read())
print(json.dumps({{"seconds": round(t.seconds, 2), "timings": doc["timings"], "evaluations": doc["evaluations"],
                  "peak_rss_mb": round(peak_rss_mb()),
                  "regenerated_latent_px": sum(p["regenerated_latent_px"] for p in doc["patches"])}}))
"""
    return in_process(code)


def area_scaling(radii: list[int], steps: int, model: str | None, folder: Path) -> list[dict]:
    slide = SHARED / "slides" / "CMU-1-Small-Region.svs"
    rows = []
    for radius in radii:
        regions = circle(folder / f"r{radius}.geojson", (1110, 1480), radius)
        run = inpaint_once(slide, regions, folder / "area.tiff", steps=steps, model=model)
        area_mp = 3.14159 * radius**2 / 1e6
        rows.append(
            {
                "radius_px": radius,
                "region_mp": round(area_mp, 4),
                "inpaint_s": run["timings"]["inpaint_s"],
                "write_s": run["timings"]["write_s"],
                "evaluations": run["evaluations"],
                "evaluations_per_region_mp": round(run["evaluations"] / area_mp),
                "inpaint_s_per_region_mp": round(run["timings"]["inpaint_s"] / area_mp, 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def streaming(size: int, steps: int, model: str | None, folder: Path) -> dict:
    big = folder / "big.tiff"
    made = in_process(f"""
from benchmarks.common import base_tissue, lazy_tissue
from wsi_synth.io import write_slide_pyramid
base, _ = base_tissue()
with Timer() as t:
    write_slide_pyramid(lazy_tissue({size}, {size}, base), {str(big)!r}, mpp=0.5, tile=512, overwrite=True)
print(json.dumps({{"seconds": round(t.seconds, 1)}}))
""")
    writer = in_process(f"""
import dask.array as da, numpy as np
from benchmarks.common import base_tissue, lazy_tissue
from wsi_synth.io.outputs import write_slide_outputs
base, _ = base_tissue()
image = lazy_tissue({size}, {size}, base)
labels = da.zeros(({size}, {size}), dtype=np.uint8, chunks=(1024, 1024))
classes = [dict(id=0, name="unknown", color=(0, 0, 0)), dict(id=1, name="stroma", color=(200, 0, 200))]
with Timer() as t:
    write_slide_outputs(image, labels, {str(folder / "writer.tiff")!r}, mpp=0.5, classes=classes, quality=95)
print(json.dumps({{"seconds": round(t.seconds, 1), "peak_rss_mb": round(peak_rss_mb())}}))
""")
    run = inpaint_once(
        big,
        circle(folder / "small.geojson", (size // 2, size // 2), 96),
        folder / "edited.tiff",
        steps=steps,
        model=model,
    )
    raw_mb = size * size * 3 / 1e6
    return {
        "slide_px": [size, size],
        "slide_written_s": made["seconds"],
        "pyramid_writer": {
            "seconds": writer["seconds"],
            "mb_s": round(raw_mb / writer["seconds"], 1),
            "peak_rss_mb": writer["peak_rss_mb"],
        },
        "inpaint": {
            "write_s": run["timings"]["write_s"],
            "mb_s": round(raw_mb / run["timings"]["write_s"], 1),
            "inpaint_s": run["timings"]["inpaint_s"],
            "total_s": run["seconds"],
            "peak_rss_mb": run["peak_rss_mb"],
        },
        "streaming_vs_writer": round(writer["seconds"] / run["timings"]["write_s"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radii", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--slide-size", type=int, default=40000)
    parser.add_argument("--model", default=None, help="Model bundle (default: the bundled demonstration model).")
    parser.add_argument("--skip", choices=["area", "streaming"], default=None)
    args = parser.parse_args()
    if not (SHARED / "slides" / "CMU-1-Small-Region.svs").exists():
        raise SystemExit(f"needs CMU-1-Small-Region.svs in {SHARED / 'slides'} (../shared/data)")
    doc: dict = {
        "benchmark": "inpaint",
        "machine": machine(),
        "steps": args.steps,
        "model": args.model or "bundled demonstration model",
    }
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None) as tmp:
        if args.skip != "area":
            doc["area_scaling"] = area_scaling(args.radii, args.steps, args.model, Path(tmp))
        if args.skip != "streaming":
            doc["streaming"] = streaming(args.slide_size, args.steps, args.model, Path(tmp))
    emit(doc)


if __name__ == "__main__":
    main()
