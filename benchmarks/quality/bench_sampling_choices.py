"""Sampling choices for one bundle, measured against held-out real tiles (issue 13): how all-unknown crops are
drawn, guidance and steps.

    python -m benchmarks.quality.bench_sampling_choices [--model MODEL] [--tiles 512] [--work DIR]
        [--variants map null omega-1 ...]

The model's weights are the same in every variant; only `generate` differs. Each variant makes `--tiles` 64 px
adenocarcinoma tiles (`generate --count`) measured as bench_conditioning.py measures them: `wsi-synth evaluate`
against the 357 held-out WSSS4LUAD test tiles of the recipe's data, with real-vs-real as the yardstick.

Variants: `map` (the defaults: 20 DPM-Solver++ steps, ω = 0, all-unknown crops with the map embedding), `null`
(all-unknown crops with the null embedding, as spatial bundles from before `empty_map` draw them: the model copied
with `empty_map: null`), `steps-50`, `omega-1`, `omega-2`.

Prints JSON: per variant, evaluations per crop, precision, recall, FID and FID over the yardstick's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchmarks.common import machine
from benchmarks.quality.bench_conditioning import HELD_OUT, held_out_setup
from wsi_synth.evaluation import heldout

VARIANTS: dict[str, dict] = {
    "map": {},
    "null": {},
    "steps-50": {"steps": 50},
    "omega-1": {"omega": 1.0},
    "omega-2": {"omega": 2.0},
}


def with_empty_map(model: Path, empty_map: str, dest: Path) -> Path:
    """A copy of `model` whose model.json says how it draws all-unknown crops."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("checkpoints", "previews"))
    meta = json.loads((dest / "model.json").read_text())
    (dest / "model.json").write_text(json.dumps({**meta, "empty_map": empty_map}, indent=2))
    return dest


def main() -> None:
    from wsi_synth.models.bundle import default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("bench-out/sampling-choices"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    _, test, yardstick = held_out_setup(args.work)
    rows = {}
    for name in args.variants:
        model = with_empty_map(args.model, "null" if name == "null" else "map", args.work / f"model-{name}")
        rows[name] = {
            "generate_options": VARIANTS[name],
            **heldout.tiles_quality(model, args.tiles, test, yardstick, args.work, name, **VARIANTS[name]),
        }
    doc = {
        "benchmark": "sampling-choices",
        "machine": machine(),
        "model": str(args.model),
        "tiles": args.tiles,
        "held_out": HELD_OUT,
    }
    print(json.dumps({**doc, "yardstick_real_train": yardstick, **rows}, indent=2))


if __name__ == "__main__":
    main()
