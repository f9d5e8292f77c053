"""Per-class against spatial conditioning of the image stage, on the same data and budget (issue 13, part 1).

    python -m benchmarks.quality.bench_conditioning [--steps 4000] [--tiles 512] [--schemes per-class spatial]
        [--shipped] [--work DIR]

1. The bundled model's recipe data (examples/default_model/import.sh: WSSS4LUAD, OCDC, LC25000 at 64 px, 1.1 µm/px).
2. Two copies of the bundled model; in each the image stage is trained again from scratch for `--steps` steps with
   the recipe's configuration, one `--conditioning per-class`, one `--conditioning spatial` (the codec and the mask
   stage are the bundled ones, so only the image stage differs).
3. Each generates `--tiles` 64 px tiles (`generate --count`, subtype adenocarcinoma, 20 DPM-Solver++ steps) and is
   measured with `wsi-synth evaluate` (offline features) against the 357 held-out WSSS4LUAD test tiles; the yardstick
   is the same evaluation of real training tiles. Denoiser evaluations per crop come from each run's record.

`--shipped` measures the shipped bundle as it is, too (its image stage untouched), under the key `shipped`; with
`--work DIR` the trained bundles stay in DIR/model-SCHEME (e.g. to package one as the new default model).

Prints JSON: per scheme, training seconds, evaluations per crop, precision, recall, FID and FID over the yardstick's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import RECIPE, machine, recipe_data, wsi_synth_cli
from wsi_synth.evaluation import heldout

HELD_OUT = "357 WSSS4LUAD test-split tiles of the recipe's import (never trained on)"


def held_out_setup(work: Path) -> tuple[Path, Path, dict]:
    """The recipe's data in work/data (imported once), the held-out test tiles' folder and the real-vs-real
    yardstick."""
    data = work / "data"
    if not (data / "dataset.json").is_file():
        recipe_data(data)
    test, train = work / "real-test", work / "real-train"
    for split, folder in (("test", test), ("train", train)):
        heldout.export_split(data, split, folder, source_prefix="wsss4luad")
    return data, test, heldout.measure(test, train, work / "report-yardstick")


def retrain_image(data: Path, base: Path, model: Path, keys: dict, steps: int) -> float:
    """The image stage of a copy of `base`, trained from scratch with the recipe's configuration plus `keys` (nested
    sections merged key by key); seconds."""
    import yaml

    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(base, model)
    config = model.parent / f"{model.name}.yaml"
    recipe = yaml.safe_load((RECIPE / "train.yaml").read_text())
    config.write_text(
        yaml.safe_dump(
            {**recipe, **{k: {**recipe.get(k, {}), **v} if isinstance(v, dict) else v for k, v in keys.items()}}
        )
    )
    started = time.perf_counter()
    every = ["--checkpoint-every", str(steps), "--sample-every", str(steps)]
    wsi_synth_cli(
        "train",
        "image",
        str(data),
        "--out",
        str(model),
        "--config",
        str(config),
        "--max-steps",
        str(steps),
        *every,
        "--overwrite",
        "-q",
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--work", default=None)
    parser.add_argument("--schemes", nargs="+", default=["per-class", "spatial"], choices=["per-class", "spatial"])
    parser.add_argument("--shipped", action="store_true", help="Also measure the shipped bundle as it is.")
    args = parser.parse_args()
    from wsi_synth.models.bundle import default_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, test, yardstick = held_out_setup(work)
        rows = {}
        if args.shipped:
            rows["shipped"] = heldout.tiles_quality(default_model(), args.tiles, test, yardstick, work, "shipped")
        for scheme in args.schemes:
            model = work / f"model-{scheme}"
            seconds = retrain_image(data, default_model(), model, {"image_conditioning": scheme}, args.steps)
            rows[scheme] = {
                "train_seconds": round(seconds, 1),
                **heldout.tiles_quality(model, args.tiles, test, yardstick, work, scheme),
            }
    print(
        json.dumps(
            {
                "benchmark": "conditioning",
                "machine": machine(),
                "steps": args.steps,
                "tiles": args.tiles,
                "held_out": HELD_OUT,
                "yardstick_real_train": yardstick,
                **rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
