"""Fidelity where users look: tiles cut from generated *slides* (both subtypes) against held-out real tiles, beside
the model's own `--count` tiles, measured alike.

    python -m benchmarks.quality.bench_slide_fidelity [--model M] [--size 2048] [--seeds 0 1] [--tiles 1500]
        [--work DIR]

1. The recipe's data (examples/default_model/import.sh: WSSS4LUAD, OCDC, LC25000 at 64 px, 1.1 µm/px). Held out:
   every tile of its test split, labelled and unlabelled, never trained on: of every source (`all`), and of each
   source alone (`wsss4luad`, `ocdc`, `lc25000`). The views say which real tissue the slides cover: a slide's every
   pixel has a class, and LC25000's tiles have none (the image stage learns them as unconditioned tiles).
2. The yardstick of each view: a seeded sample of `--tiles` real training tiles of its sources against its held-out
   tiles, in the same feature space (`wsi-synth evaluate`, offline features, 64 px).
3. One `--size`² slide per subtype and seed from `--model` (default: the bundled model; default settings), cut into
   64 px tiles at level 0 (the model's own tile): a seeded sample of `--tiles` of all of them against each view, and
   of each subtype's against `all`.
4. The model's `--count` tiles (64 px, from the mask stage's own class maps, half per subtype), `--tiles` of them,
   against the same views: the tiles the model card's tile table measures, here beside the slides.
Every set has the yardstick's count: recall falls as a synthetic set grows (the same slides' tiles: 0.40 at 546,
0.33 at 1,500, 0.21 at 8,192), so figures are compared at one count.
Prints JSON: precision, recall, FID and FID over the view's yardstick, with the counts. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, heldout_yardstick, machine
from wsi_synth.evaluation import heldout

#: Held-out views: every source, then each source alone (source ids start with these).
VIEWS = {"all": None, "wsss4luad": "wsss4luad", "ocdc": "ocdc", "lc25000": "lung_"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tiles", type=int, default=1500, help="tiles per set: yardstick, slides, --count tiles")
    parser.add_argument("--work", type=Path, default=None, help="keep the data, slides and reports here")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    doc: dict = {
        "benchmark": "slide_fidelity",
        "machine": machine(),
        "model": model,
        "size": args.size,
        "seeds": args.seeds,
        "tiles": args.tiles,
    }
    made = heldout.make_slides(model, args.size, args.seeds, work)
    slides = [p for paths in made.values() for p in paths]
    counted = count_tiles(model, list(made), args.tiles, work)
    doc["views"] = {}
    for view, prefix in VIEWS.items():
        held_out, split = heldout_yardstick(work, args.tiles, source_prefix=prefix)
        yardstick = split["yardstick"]
        row = {**split, "slides": heldout.paths_quality(slides, held_out, yardstick, work, view, tiles=args.tiles)}
        if prefix is None:
            row["subtypes"] = {
                subtype: heldout.paths_quality(paths, held_out, yardstick, work, subtype, tiles=args.tiles)
                for subtype, paths in made.items()
            }
        count = heldout.measure(held_out, counted, work / f"report-count-{view}", tiles=args.tiles)
        row["count_tiles"] = heldout.over_yardstick(count, yardstick)
        doc["views"][view] = row
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def count_tiles(model: str, subtypes: list[str], tiles: int, work: Path) -> Path:
    """`tiles` `generate --count` tiles of the model's size, split evenly over `subtypes`, in one folder."""
    folder = work / "count-tiles"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, subtype in enumerate(subtypes):
        share = tiles // len(subtypes) + (i < tiles % len(subtypes))
        out = heldout.make_tiles(model, share, work / f"count-{subtype}", subtype=subtype)
        for path in sorted((out / "images").glob("*.png")):
            shutil.copy(path, folder / f"{subtype}-{path.name}")
    return folder


if __name__ == "__main__":
    main()
