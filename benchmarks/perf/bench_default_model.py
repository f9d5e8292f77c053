"""`wsi-synth generate` with the bundled default model, as a new user runs it: wall time per size, peak memory, work.

    python -m benchmarks.perf.bench_default_model [--sizes 2048 4096] [--subtype squamous]
        [--baseline /path/to/v0.1-checkout]

Each size runs the console script in its own process (no --model: the bundled model), with the defaults a user gets.
With --baseline (a checkout of an earlier commit, e.g. `git worktree add ../baseline 4b59e82`), the same sizes also run
that code's defaults (`python -m cli.main generate` in the checkout) and today's code with `--solver ddim --steps 50`,
alternating, so the speed-ups are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, machine


def run(
    size: int,
    subtype: str,
    folder: Path,
    *,
    extra: tuple[str, ...] = (),
    baseline: Path | None = None,
    name: str = "defaults",
) -> dict:
    out = folder / f"{name}-s{size}.tiff"
    args = ["generate", "--size", str(size), "--subtype", subtype, "--out", str(out), "--quiet", *extra]
    command = [sys.executable, "-m", "cli.main", *args] if baseline else ["wsi-synth", *args]
    env = {**os.environ, "PYTHONPATH": str(baseline)} if baseline else None
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=baseline, env=env)
    seconds = time.perf_counter() - started
    record = json.loads(out.with_suffix(".json").read_text())
    # children's peak RSS is a running maximum over every child so far: sizes run smallest first
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "run": name,
        "size_px": size,
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 2),
        "peak_rss_mb_so_far": round(peak),
        "timings_s": record.get("timings"),
        "evaluations": {k: v.get("evaluations") for k, v in record.get("evaluations", {}).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--subtype", default="squamous")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="A checkout of an earlier commit to compare against."
    )
    args = parser.parse_args()
    (ROOT / "bench-out").mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        for size in sorted(args.sizes):
            if args.baseline:
                rows.append(
                    run(size, args.subtype, Path(tmp), baseline=args.baseline.resolve(), name="baseline-defaults")
                )
                rows.append(
                    run(size, args.subtype, Path(tmp), extra=("--solver", "ddim", "--steps", "50"), name="ddim-50")
                )
            rows.append(run(size, args.subtype, Path(tmp)))
    doc = {
        "benchmark": "generate with the bundled default model",
        "machine": machine(),
        "subtype": args.subtype,
        "runs": rows,
    }
    if args.baseline:
        by = {(r["run"], r["size_px"]): r["seconds"] for r in rows}
        doc["speedup_vs_baseline"] = {
            size: round(by[("baseline-defaults", size)] / by[("defaults", size)], 2) for size in sorted(args.sizes)
        }
    emit(doc)


if __name__ == "__main__":
    main()
