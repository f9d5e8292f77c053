"""Fidelity where users look: tiles cut from generated *slides* (both subtypes) against held-out real tiles.

    python benchmarks/bench_slide_fidelity.py [--model M] [--size 2048] [--seeds 0] [--work DIR] [--yardstick-tiles 1500]

1. The recipe's data (examples/default_model/import.sh: WSSS4LUAD, OCDC, LC25000 at 64 px, 1.1 µm/px). Held out:
   every tile of its test split, labelled and unlabelled, of every source (never trained on).
2. The yardstick: real training tiles (a seeded sample of `--yardstick-tiles`) against the held-out tiles, in the
   same feature space (`wsi-synth evaluate`, offline features, 64 px).
3. One `--size`² slide per subtype and seed from `--model` (default: the bundled model; default settings), cut into
   64 px tiles at level 0 (`evaluate --tile 64`: the model's own tile), all slides together against the held-out
   tiles; and each subtype's slides alone.
Prints JSON: precision, recall, FID and FID over the yardstick's, with the counts. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, recipe_data, wsi_synth_cli  # noqa: E402


def real_split(data: Path, split: str, folder: Path, limit: int | None = None) -> int:
    """The `split` tiles of every source (labelled and unlabelled) as PNGs in `folder`; a seeded sample of `limit`."""
    from PIL import Image

    from wsi_synth.data import TileDataset

    folder.mkdir(parents=True, exist_ok=True)
    dataset = TileDataset(data, split=split, kinds=("labelled", "unlabelled"))
    order = np.random.default_rng(0).permutation(len(dataset))[:limit] if limit else np.arange(len(dataset))
    for n, i in enumerate(sorted(order)):
        Image.fromarray(dataset[int(i)][0].permute(1, 2, 0).numpy()).save(folder / f"{n:05d}.png")
    return len(order)


def measure(real: Path, synthetic: Path, report: Path, *extra: str) -> dict:
    wsi_synth_cli("evaluate", str(real), str(synthetic), "--size", "64", *extra, "--out", str(report), "--overwrite", "-q")
    doc = json.loads((report / "report.json").read_text())
    return {**{k: doc["metrics"][k] for k in ("precision", "recall", "fid")}, "tiles": doc["inputs"]["synthetic"]["tiles"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--yardstick-tiles", type=int, default=1500)
    parser.add_argument("--work", type=Path, default=None, help="keep the data, slides and reports here")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    data = work / "data"
    if not (data / "dataset.json").is_file():
        recipe_data(data)
    held_out, train = work / "real-test", work / "real-train"
    for folder in (held_out, train):
        shutil.rmtree(folder, ignore_errors=True)
    n_test = real_split(data, "test", held_out)
    n_train = real_split(data, "train", train, args.yardstick_tiles)
    yardstick = measure(held_out, train, work / "report-yardstick")
    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    subtypes = json.loads((Path(model) / "model.json").read_text())["subtypes"]
    slides = work / "slides"
    shutil.rmtree(slides, ignore_errors=True)
    for subtype in subtypes:
        for seed in args.seeds:
            out = slides / subtype / f"s{seed}.tiff"
            out.parent.mkdir(parents=True, exist_ok=True)
            wsi_synth_cli("generate", "--model", model, "--size", str(args.size), "--subtype", subtype, "--seed", str(seed), "--out", str(out), "-q")
    generated = sorted(p for p in slides.glob("*/s*.tiff") if not p.name.endswith(".mask.tiff"))  # listed before copying
    combined = work / "slides-all"
    shutil.rmtree(combined, ignore_errors=True)
    combined.mkdir()
    for path in generated:
        shutil.copy(path, combined / f"{path.parent.name}-{path.name}")
    doc: dict = {"benchmark": "slide_fidelity", "machine": machine(), "model": model, "size": args.size, "seeds": args.seeds}
    doc["held_out_tiles"], doc["yardstick_train_tiles"] = n_test, n_train
    doc["yardstick"] = yardstick
    doc["slides"] = {"all": measure(held_out, combined, work / "report-all", "--tile", "64")}
    for subtype in subtypes:
        only = work / f"slides-{subtype}"
        shutil.rmtree(only, ignore_errors=True)
        only.mkdir()
        for path in generated:
            if path.parent.name == subtype:
                shutil.copy(path, only / path.name)
        doc["slides"][subtype] = measure(held_out, only, work / f"report-{subtype}", "--tile", "64")
    for row in doc["slides"].values():
        row["fid_over_yardstick"] = round(row["fid"] / yardstick["fid"], 2)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
