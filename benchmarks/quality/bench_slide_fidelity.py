"""Fidelity where users look: tiles cut from generated *slides* (both subtypes) against held-out real tiles.

    python -m benchmarks.quality.bench_slide_fidelity [--model M] [--size 2048] [--seeds 0] [--work DIR]
        [--yardstick-tiles 1500]

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
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, heldout_yardstick, machine
from wsi_synth.evaluation import heldout


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
    held_out, split = heldout_yardstick(work, args.yardstick_tiles)
    yardstick = split["yardstick"]
    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    doc: dict = {
        "benchmark": "slide_fidelity",
        "machine": machine(),
        "model": model,
        "size": args.size,
        "seeds": args.seeds,
    }
    doc |= split
    doc["slides"] = heldout.slides_quality(model, args.size, args.seeds, held_out, yardstick, work)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
