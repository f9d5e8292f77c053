"""docs/benchmarks.md's picture of few-step slides: the same slide (seed, subtype) made by the default (20 DPM-Solver++
steps) and by fewer steps, thumbnails above, the same level-0 window below, beside real tissue at the same scale.

    python -m benchmarks.quality.bench_distilled --work build/distilled      # makes build/distilled/made-RUN/...
    python examples/default_model/steps_picture.py \
        build/distilled/made-{default,student-4,student-8,teacher-4}/adenocarcinoma/s0.tiff
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import openslide
from slide_picture import LEVEL0, ROOT, compose, most_varied_corner, real_pair

THUMB = 380
WINDOW = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", type=Path, nargs="+", help="the same slide from each run (in made-RUN/ folders)")
    parser.add_argument("--dest", type=Path, default=ROOT / "docs" / "images" / "distilled_steps.jpg")
    args = parser.parse_args()
    x, y = most_varied_corner(args.slides[0])
    x, y = x + (LEVEL0 - WINDOW) // 2, y + (LEVEL0 - WINDOW) // 2
    thumbs, windows = [], []
    for path in args.slides:
        record = json.loads(path.with_suffix(".json").read_text())
        steps = record["plan"]["stages"]["image"]
        caption = f"{path.parent.parent.name.removeprefix('made-')}: {steps['steps']} {steps.get('solver', '')} steps"
        with openslide.OpenSlide(str(path)) as s:
            thumbs.append((s.get_thumbnail((THUMB, THUMB)).convert("RGB"), caption))
            windows.append((s.read_region((x, y), 0, (WINDOW, WINDOW)).convert("RGB"), f"{caption}, level 0"))
    _, tissue = real_pair()
    o = (LEVEL0 - WINDOW) // 2
    windows.append((tissue.crop((o, o, o + WINDOW, o + WINDOW)), "real WSSS4LUAD, same scale"))
    compose([thumbs, windows], args.dest)
    print(json.dumps({"picture": str(args.dest), "window": [x, y, WINDOW]}))


if __name__ == "__main__":
    main()
