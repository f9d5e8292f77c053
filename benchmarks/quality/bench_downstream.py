"""Does synthetic data help a segmentation network? The paper's protocol (Sec. 5.3) at a scale a CPU can run.

    python -m benchmarks.quality.bench_downstream [--quick] [--json] [--model M] [--work DIR] [--sets S,…] [--seeds N,…]
        [--train-steps N]

1. Real data: the WSSS4LUAD tiles with masks, imported exactly as the bundled model's recipe imports them
   (examples/train_default_model.sh: 64 px at a nominal 0.5 µm/px, the model's classes). Their `train` split is the
   real training set; their `test` split (20 % of the images, chosen per image) is held out — never seen by the
   bundled generator (trained on the train split only) nor by the segmenters.
2. Synthetic data: `wsi-synth generate --count N --size 64 --subtype adenocarcinoma` on the model, imported with
   `wsi-synth import` into a dataset with the same classes; and N tiles drawn for the low-label run's own masks
   (`generate --count N --mask DIR`, the quarter's masks, each about twice): the user's annotations with new tissue.
3. A MONAI BasicUNet (2-D, 3 → the recipe's classes) is trained on (a) real, (b) synthetic, (c) real + synthetic
   tiles, and, for the low-label case, (d) a seeded quarter of the real tiles and (e) that quarter + synthetic; and
   (f–h) the tiles drawn for the quarter's masks alone, with all real tiles, and with the quarter; for the same
   number of steps, with flips and 90° rotations, one run per seed. Unknown pixels (class 0: what nobody
   annotated, or what the mask model left unknown) are ignored by the loss and the metric, as in the paper's
   semi-supervised setting; background is a class where the recipe has it.
4. Dice per class (MONAI's `compute_dice`, over all held-out pixels of known class); macro Dice over the tissue
   classes (tumour, stroma, normal: comparable with the figures of bundles without background) and over all.
5. Why, per class: `wsi-synth evaluate` of each synthetic tile set against the held-out tiles, with the real
   training tiles as the reference of its per-class table (which class each class's tiles look like).

Prints JSON with a key per training set (`real`, `synthetic`, `real_plus_synthetic`, `real_quarter`, …: mean, std
and per-seed values), the data sizes,
the settings and the paper's figures. `--quick`: one seed, fewer tiles and steps (≤ 10 minutes on 2 cores).
Needs `pip install -e .[bench]` (monai).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RECIPE, RECIPE_IMPORT, SHARED, import_wsss, machine, wsi_synth_cli

TISSUE = ("tumour", "stroma", "normal")  # the macro Dice comparable across class schemes
PAPER = {
    "source": "DiffInfinite (Aversa et al., NeurIPS 2023), Sec. 5.3, held-out patients, F1",
    "real": 0.614,
    "real_plus_synthetic": 0.710,
}
SETS = (
    "real",
    "synthetic",
    "real_plus_synthetic",
    "real_quarter",
    "real_quarter_plus_synthetic",
    "synthetic_for_masks",
    "real_plus_synthetic_for_masks",
    "real_quarter_plus_synthetic_for_masks",
)
SETTINGS = {
    "quick": {"seeds": [0], "synthetic_tiles": 160, "generate_steps": 10, "train_steps": 250},
    "full": {"seeds": [0, 1, 2], "synthetic_tiles": 1000, "generate_steps": 20, "train_steps": 800},
}


def import_real(work: Path) -> Path:
    out = work / "real"
    import_wsss(out)
    return out


def make_synthetic(
    work: Path, model: str | None, count: int, steps: int, *, masks: Path | None = None, name: str = "synthetic"
) -> tuple[Path, float]:
    """`count` synthetic tiles imported as a dataset: the mask stage's class maps, or with `masks` new tissue for those
    masks (`generate --count --mask DIR`); returns the dataset and the generation's seconds."""
    tiles, out = work / f"{name}_tiles", work / name
    started = time.perf_counter()
    model_args = ["--model", model] if model else []
    size = ["--size", "64", "--subtype", "adenocarcinoma"] + (["--mask", str(masks)] if masks else [])
    wsi_synth_cli(
        "generate",
        *model_args,
        "--count",
        str(count),
        *size,
        "--steps",
        str(steps),
        "--batch-size",
        "64",
        "--out",
        str(tiles),
        "-q",
    )
    seconds = time.perf_counter() - started
    labelled = ["--masks", str(tiles / "masks"), "--legend", str(tiles / "legend.yaml"), "--subtype", "adenocarcinoma"]
    wsi_synth_cli("import", str(tiles / "images"), *labelled, *RECIPE_IMPORT, "--test-fraction", "0", "--out", str(out))
    return out, seconds


def write_masks(masks, folder: Path) -> Path:
    """Label PNGs of a stack of masks (the low-label run's masks, for `generate --count --mask`)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        Image.fromarray(mask.numpy().astype(np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def load(path: Path, split: str, classes: tuple[str, ...]):
    """All (image, mask) pairs of a split as two tensors (small: a few thousand 64 px tiles)."""
    import torch

    from wsi_synth.data import TileDataset

    dataset = TileDataset(path, split=split)
    if dataset.classes != ["unknown", *classes]:
        raise SystemExit(f"{path}: classes {dataset.classes}, expected {['unknown', *classes]}")
    pairs = [dataset[i] for i in range(len(dataset))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def recipe_classes() -> tuple[str, ...]:
    """The recipe's classes after unknown (examples/default_model/classes.yaml)."""
    import yaml

    doc = yaml.safe_load((RECIPE / "classes.yaml").read_text())
    return tuple(c["name"] for c in doc["classes"])


def train(images, masks, classes: tuple[str, ...], *, steps: int, seed: int):
    """A BasicUNet trained on uint8 tiles and masks (class 0 ignored); returns the network in eval mode."""
    import torch
    from monai.networks.nets import BasicUNet

    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=len(classes), features=(16, 16, 32, 64, 128, 16))
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    targets = masks - 1  # classes 0..K−2; unknown becomes −1, ignored
    net.train()
    for _ in range(steps):
        pick = torch.from_numpy(rng.integers(0, len(images), 32))
        x, y = images[pick].float() / 127.5 - 1, targets[pick]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
        if flip:
            x, y = x.flip(3), y.flip(2)
        loss = torch.nn.functional.cross_entropy(net(x), y, ignore_index=-1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return net.eval()


def dice(net, images, masks, classes: tuple[str, ...]) -> dict:
    """Dice per class over every held-out pixel of known class (global, not averaged per tile); macro Dice over the
    tissue classes and over all."""
    import torch
    from monai.metrics import compute_dice

    with torch.no_grad():
        predicted = torch.cat(
            [net(images[i : i + 128].float() / 127.5 - 1).argmax(1) for i in range(0, len(images), 128)]
        )
    known = masks > 0
    one_hot = lambda labels: torch.stack([(labels == c) & known for c in range(len(classes))], 0)[None].float()  # noqa: E731
    scores = compute_dice(one_hot(predicted), one_hot(masks - 1), include_background=True)[0]
    per_class = {name: round(float(s), 4) for name, s in zip(classes, scores, strict=True)}
    tissue = [per_class[c] for c in TISSUE]
    return {
        "per_class": per_class,
        "macro": round(float(np.mean(tissue)), 4),
        "macro_all_classes": round(float(np.mean(list(per_class.values()))), 4),
    }


def class_table(real: Path, tiles: Path, out: Path) -> dict:
    """`evaluate`'s per-class figures of a `--count` tile set against the held-out tiles (offline features)."""
    import wsi_synth

    report = wsi_synth.evaluate(real, tiles, out, train=real, split="test", gallery=0, overwrite=True)
    return report["metrics"]["classes"]


def summarise(runs: list[dict]) -> dict:
    macro = [r["macro"] for r in runs]
    per_class = {c: round(float(np.mean([r["per_class"][c] for r in runs])), 4) for c in runs[0]["per_class"]}
    return {
        "macro_dice_mean": round(float(np.mean(macro)), 4),
        "macro_dice_std": round(float(np.std(macro)), 4),
        "dice_per_class_mean": per_class,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="One seed, fewer synthetic tiles and steps (≤ 10 min on 2 cores)."
    )
    parser.add_argument(
        "--json", action="store_true", help="Print only the JSON document (the default prints progress to stderr too)."
    )
    parser.add_argument("--model", default=None, help="Model bundle (default: the bundled demonstration model).")
    parser.add_argument("--work", default=None, help="Keep the datasets here (default: a temporary folder).")
    parser.add_argument(
        "--sets",
        default=None,
        help="Comma-separated training sets to run (default: all); e.g. only those a new image stage changes.",
    )
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: the mode's).")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="Segmenter training steps (default: the mode's; the full mode's 800 leave the segmenters short of "
        "converged: real tiles reach macro Dice 0.75 at 3,200).",
    )
    args = parser.parse_args()
    import torch

    if not (SHARED / "tiles_masks" / "wsss4luad_test").is_dir():
        raise SystemExit(f"needs the WSSS4LUAD tiles in {SHARED / 'tiles_masks'} (../shared/data)")
    if importlib.util.find_spec("monai") is None:  # before generating: the segmenters come last
        raise SystemExit("needs monai for the segmenters: pip install -e .[bench]")
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    if args.seeds:
        settings["seeds"] = [int(seed) for seed in args.seeds.split(",")]
    if args.train_steps is not None:
        if args.train_steps < 1:
            raise SystemExit(f"--train-steps must be at least 1, got {args.train_steps}")
        settings["train_steps"] = args.train_steps
    chosen = args.sets.split(",") if args.sets else list(SETS)
    if set(chosen) - set(SETS):
        raise SystemExit(f"--sets: unknown {', '.join(sorted(set(chosen) - set(SETS)))}; known: {', '.join(SETS)}")
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        say("importing the real tiles")
        real = import_real(work)
        say(f"generating {settings['synthetic_tiles']} synthetic tiles")
        synthetic, generate_seconds = make_synthetic(
            work, args.model, settings["synthetic_tiles"], settings["generate_steps"]
        )
        classes = recipe_classes()
        real_x, real_y = load(real, "train", classes)
        test_x, test_y = load(real, "test", classes)
        synth_x, synth_y = load(synthetic, "train", classes)
        quarter = torch.from_numpy(np.sort(np.random.default_rng(0).permutation(len(real_x))[: len(real_x) // 4]))
        low_x, low_y = real_x[quarter], real_y[quarter]
        say(f"generating {settings['synthetic_tiles']} synthetic tiles for the quarter's masks")
        drawn, drawn_seconds = make_synthetic(
            work,
            args.model,
            settings["synthetic_tiles"],
            settings["generate_steps"],
            masks=write_masks(low_y, work / "quarter_masks"),
            name="synthetic_for_masks",
        )
        drawn_x, drawn_y = load(drawn, "train", classes)
        say("per-class figures of both synthetic sets")
        class_fidelity = {
            name: class_table(real, work / f"{name}_tiles", work / f"{name}_report")
            for name in ("synthetic", "synthetic_for_masks")
        }
        sets = {
            "real": (real_x, real_y),
            "synthetic": (synth_x, synth_y),
            "real_plus_synthetic": (torch.cat([real_x, synth_x]), torch.cat([real_y, synth_y])),
            "real_quarter": (low_x, low_y),
            "real_quarter_plus_synthetic": (torch.cat([low_x, synth_x]), torch.cat([low_y, synth_y])),
            "synthetic_for_masks": (drawn_x, drawn_y),
            "real_plus_synthetic_for_masks": (torch.cat([real_x, drawn_x]), torch.cat([real_y, drawn_y])),
            "real_quarter_plus_synthetic_for_masks": (torch.cat([low_x, drawn_x]), torch.cat([low_y, drawn_y])),
        }
        sets = {name: sets[name] for name in chosen}
        results: dict = {name: [] for name in sets}
        for seed in settings["seeds"]:
            for name, (x, y) in sets.items():
                say(f"seed {seed}: training on {name} ({len(x)} tiles)")
                net = train(x, y, classes, steps=settings["train_steps"], seed=seed)
                results[name].append({"seed": seed, **dice(net, test_x, test_y, classes)})
    known = test_y > 0
    doc = {
        "benchmark": "downstream",
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
        "settings": settings,
        "model": args.model or "bundled demonstration model",
        "data": {
            "real_train_tiles": len(real_x),
            "synthetic_tiles_generated": settings["synthetic_tiles"],
            "synthetic_tiles_imported": len(synth_x),
            "synthetic_for_masks_imported": len(drawn_x),
            "held_out_tiles": len(test_x),
            "real_quarter_tiles": len(low_x),
            "held_out_class_share": {
                c: round(float((test_y[known] == i + 1).float().mean()), 4) for i, c in enumerate(classes)
            },
            "held_out": "WSSS4LUAD test split as the bundled model's recipe imports it (never trained on)",
        },
        **{name: summarise(runs) for name, runs in results.items()},
        "class_fidelity": class_fidelity,
        "generate_seconds": round(generate_seconds, 1),
        "generate_for_masks_seconds": round(drawn_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "paper": PAPER,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
