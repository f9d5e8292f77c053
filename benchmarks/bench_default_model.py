"""`wsi-synth generate` with the bundled default model, as a new user runs it: wall time per size, peak memory, work.

    python benchmarks/bench_default_model.py [--sizes 2048 4096] [--subtype squamous]

Each size runs the console script in its own process (no --model: the bundled model), with the defaults a user gets.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from common import emit, machine

ROOT = Path(__file__).resolve().parents[1]


def run(size: int, subtype: str, folder: Path) -> dict:
    out = folder / f"s{size}.tiff"
    started = time.perf_counter()
    subprocess.run(["wsi-synth", "generate", "--size", str(size), "--subtype", subtype, "--out", str(out), "--quiet"], check=True,
                   capture_output=True, text=True)
    seconds = time.perf_counter() - started
    record = json.loads(out.with_suffix(".json").read_text())
    # children's peak RSS is a running maximum over every child so far: sizes run smallest first
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"size_px": size, "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2), "peak_rss_mb_so_far": round(peak),
            "timings_s": record.get("timings"), "evaluations": {k: v.get("evaluations") for k, v in record.get("evaluations", {}).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--subtype", default="squamous")
    args = parser.parse_args()
    (ROOT / "bench-out").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        rows = [run(size, args.subtype, Path(tmp)) for size in sorted(args.sizes)]
    emit({"benchmark": "generate with the bundled default model", "machine": machine(), "subtype": args.subtype, "runs": rows})


if __name__ == "__main__":
    main()
