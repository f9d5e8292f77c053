"""Does a generated slide's layout have the structure of a real one? Class proportions and how far regions reach.

    python -m benchmarks.quality.bench_layout [--model M] [--size 4096] [--seeds 0 1] [--strengths 0 0.25 0.5 0.75 1]
        [--picture docs/images/layout_stage.jpg]

For the 22 real WSSS4LUAD tissue layouts (pathologist-drawn, 1.4–6.3 mm, the layout stage's training data) and for
the class maps `generate` makes (adenocarcinoma, `--size`², each seed, at each `--layout-strength`; no image is
sampled), at output resolution (1.1 µm/px):
- class proportions by area;
- same-class probability at distance d: the chance that two pixels d px apart (along x and y) have the same class,
  at 64, 256 and 1024 px (70 µm, 0.28 mm, 1.1 mm). Millimetre-scale regions (a tumour field bounded by stroma) keep
  it high at 1024 px; small blobs everywhere (camouflage) drop it towards the chance level Σ p²;
- the straight-boundary share (`wsi_synth.evaluation.boundaries`).
With `--picture`, a strip: a real layout beside generated maps at each strength, all at one scale.
Prints JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import SHARED, emit, machine
from benchmarks.quality.bench_boundaries import generated_canvases
from wsi_synth.evaluation.boundaries import boundary_stats
from wsi_synth.generation.masks import PixelLabels, Roughness

LAGS = (64, 256, 1024)
#: WSSS4LUAD's legend (0 tumour epithelium, 1 stroma, 2 normal, 3 background) as the recipe's class ids.
REAL_TO_CLASS = np.array([1, 2, 3, 4], np.uint8)


def real_layouts() -> list[np.ndarray]:
    folder = SHARED / "tiles_masks" / "wsss4luad_layout_masks"
    return [REAL_TO_CLASS[np.minimum(np.array(Image.open(f)), 3)] for f in sorted(folder.glob("*.png"))]


def same_class(maps: list[np.ndarray], lag: int) -> float | None:
    """P(class(p) = class(p + lag)) over both axes, pooled over the maps wide enough for the lag."""
    same = pairs = 0
    for m in maps:
        for a, b in ((m[:, :-lag], m[:, lag:]), (m[:-lag], m[lag:])):
            if a.size:
                same += int((a == b).sum())
                pairs += a.size
    return round(same / pairs, 3) if pairs else None


def describe(maps: list[np.ndarray], classes: dict[int, str]) -> dict:
    counts = np.bincount(np.concatenate([m.ravel() for m in maps]), minlength=max(classes) + 1)
    share = counts / counts.sum()
    doc = {"proportions": {name: round(float(share[i]), 3) for i, name in classes.items()}}
    doc["chance_same_class"] = round(float((share**2).sum()), 3)
    doc["same_class_at_px"] = {str(lag): same_class(maps, lag) for lag in LAGS}
    stats = [boundary_stats(m) for m in maps]
    doc["straight_share"] = round(sum(s.straight for s in stats) / max(sum(s.length for s in stats), 1), 4)
    return doc


def at_output(canvas: np.ndarray, px_per_pixel: float, size: int, seed: int) -> np.ndarray:
    from wsi_synth.defaults import BOUNDARY_ROUGHNESS

    return PixelLabels(canvas, px_per_pixel, (size, size), Roughness(BOUNDARY_ROUGHNESS, seed))[0:size]


def picture(
    path: Path,
    real: np.ndarray,
    generated: dict[float, np.ndarray],
    colors: dict[int, tuple],
    side: int = 4096,
    scale: int = 8,
) -> None:
    """Real layout (cropped to `side` px) and each strength's map, `side` px each, downsampled `scale`×, side by
    side."""
    lut = np.zeros((256, 3), np.uint8)
    lut[0] = (255, 255, 255)
    for i, c in colors.items():
        lut[i] = c
    panels = [real[:side, :side]] + [m[:side, :side] for m in generated.values()]
    small = [lut[p[::scale, ::scale]] for p in panels]
    height = max(p.shape[0] for p in small)
    gap = np.full((height, 8, 3), 255, np.uint8)
    strip = []
    for p in small:
        pad = np.full((height, p.shape[1], 3), 255, np.uint8)
        pad[: p.shape[0]] = p
        strip += [pad, gap]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strip[:-1], 1)).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--picture", type=Path, default=None)
    args = parser.parse_args()
    from wsi_synth.api import _model
    from wsi_synth.models.bundle import open_bundle

    started = time.perf_counter()
    bundle = open_bundle(_model(args.model))
    classes = {c["id"]: c["name"] for c in bundle.classes}
    real = real_layouts()
    doc: dict = {
        "benchmark": "layout",
        "machine": machine(),
        "model": str(bundle.root),
        "size": args.size,
        "seeds": args.seeds,
    }
    doc["real_layouts"] = {"count": len(real), **describe(real, classes)}
    px_per_msk = bundle.region_size / bundle.region_mask_size
    shown: dict[float, np.ndarray] = {}
    doc["generated"] = {}
    for strength in args.strengths:
        t0 = time.perf_counter()
        canvases = generated_canvases(args.model, args.size, args.seeds, ["adenocarcinoma"], layout_strength=strength)[
            "adenocarcinoma"
        ]
        maps = [at_output(c, px_per_msk, args.size, seed) for seed, c in canvases]
        shown[strength] = maps[0]
        doc["generated"][str(strength)] = {
            **describe(maps, classes),
            "seconds_per_map": round((time.perf_counter() - t0) / len(maps), 1),
        }
    if args.picture:
        largest = max(real, key=lambda m: min(m.shape))
        picture(args.picture, largest, shown, {c["id"]: tuple(c["color"]) for c in bundle.classes})
        doc["picture"] = str(args.picture)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    emit(doc)


if __name__ == "__main__":
    main()
