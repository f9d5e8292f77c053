"""Render labelled tiles of a dataset with their class masks overlaid, as one PNG (to look, not to read).

    wsi-synth extract ../shared/data/slides/CMU-1-Small-Region.svs \
        ../shared/data/annotations/cmu1_derived/CMU-1-Small-Region.geojson --tile 256 --out data/
    python examples/show_tiles.py data/ --out tiles.jpg --count 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image

from wsi_synth.data import open_dataset


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    tinted = image.astype(np.float32)
    labelled = mask > 0
    tinted[labelled] = (1 - alpha) * tinted[labelled] + alpha * colors[mask[labelled]]
    return tinted.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    ds = open_dataset(args.dataset)
    colors = np.array([c["color"] for c in ds.classes], np.float32)
    rows = [r for r in ds.manifest() if r["kind"] == "labelled" and len(json.loads(r["fractions"])) >= 3]
    rows = (
        rows[:: max(1, len(rows) // args.count)][: args.count]
        or [r for r in ds.manifest() if r["kind"] == "labelled"][: args.count]
    )
    panels = []
    for r in rows:
        group = ds.source_group(r["source"])
        image, mask = group["labelled/images"][int(r["index"])], group["labelled/masks"][int(r["index"])]
        panels.append(np.concatenate([image, overlay(image, mask, colors)], axis=0))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    strip = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    Image.fromarray(strip).save(args.out)
    print(f"{args.out}: {len(panels)} tiles (top: image, bottom: mask overlay)")


if __name__ == "__main__":
    main()
