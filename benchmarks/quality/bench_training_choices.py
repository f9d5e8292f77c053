"""Training-efficiency choices of the image stage, measured on the bundled model's recipe data (issue 13, part 3).

    python -m benchmarks.quality.bench_training_choices [--steps 4000] [--tiles 512] [--work DIR] [--base MODEL]
        [--variants eps min-snr null-all]

Each variant trains the image stage from scratch for `--steps` steps with the recipe's configuration
(examples/default_model/train.yaml) plus its own keys, on the recipe's data (examples/default_model/import.sh), with
the codec and mask stage of `--base` (default: the bundled model), so only the image stage's training differs.
Each is measured as bench_conditioning.py measures: `--tiles` generated 64 px tiles against the 357 held-out
WSSS4LUAD test tiles, with real-vs-real as the yardstick.

Variants: `eps` (the plain ε-loss), `min-snr` (min-SNR-5 weighting), `null-all` (the null condition learns from every
tile, not only the unlabelled ones), `min-snr-null-all` (both).

Prints JSON: per variant, its keys, training seconds, precision, recall, FID and FID over the yardstick's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import machine
from benchmarks.quality.bench_conditioning import HELD_OUT, held_out_setup, retrain_image
from wsi_synth.evaluation import heldout

VARIANTS = {
    "eps": {},
    "min-snr": {"image": {"min_snr_gamma": 5.0}},
    "null-all": {"null_tiles": "all"},
    "min-snr-null-all": {"image": {"min_snr_gamma": 5.0}, "null_tiles": "all"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--work", default="bench-out/training-choices")
    parser.add_argument(
        "--base", default=None, help="Bundle whose codec and mask stage are used (default: the bundled model)."
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    from wsi_synth.models.bundle import default_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, test, yardstick = held_out_setup(work)
    rows = {}
    for name in args.variants:
        seconds = retrain_image(
            data, Path(args.base) if args.base else default_model(), work / f"model-{name}", VARIANTS[name], args.steps
        )
        rows[name] = {
            "keys": VARIANTS[name],
            "train_seconds": round(seconds, 1),
            **heldout.tiles_quality(work / f"model-{name}", args.tiles, test, yardstick, work, name),
        }
        print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)
    report = {
        "benchmark": "training-choices",
        "machine": machine(),
        "steps": args.steps,
        "tiles": args.tiles,
        "held_out": HELD_OUT,
    }
    print(json.dumps({**report, "yardstick_real_train": yardstick, **rows}, indent=2))


if __name__ == "__main__":
    main()
