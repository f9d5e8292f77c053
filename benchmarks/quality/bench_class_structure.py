"""Does the image stage draw each class's structure, or one structure in each class's tint?

    python -m benchmarks.quality.bench_class_structure [--model M ...] [--seeds 16] [--picture FILE]

For each model, one tile per tissue class drawn over the whole tile from the *same* noise (seeds 0…N−1, 20 DDIM
steps, as the training previews draw them), decoded by the model's codec. Structure is the tile's luminance minus
its Gaussian blur (σ = 2 px: nuclei, fibres, membranes; the tint and the slow shading removed). Per model:

- `same_noise`: the mean correlation of the structure of two classes drawn from the same noise. 1 means every class
  is one drawing in another tint; a model that draws each class's own tissue gets near `other_noise`.
- `other_noise`: the same for two classes drawn from different noises (what no shared structure gives, about 0).
- `tint_distance`: the mean distance between the classes' mean colours (0–255 RGB): what does differ.

`--picture` writes a grid: for each model, one row per class, one column per seed. Prints JSON. Seconds per model.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, machine


def class_tiles(model: str, seeds: int) -> tuple[list[str], np.ndarray]:
    """(classes drawn, uint8 tiles (classes, seeds, H, W, 3)): every tissue class over a whole tile, seed by seed."""
    import torch

    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.training.previews import preview_sample

    bundle = open_bundle(model)
    net, codec, latent = bundle.load_unet("image"), bundle.load_codec(), bundle.latent
    side = bundle.tile_size // latent.factor
    classes = list(range(1, len(bundle.classes)))
    abar = bundle.schedule.alphas_cumprod().float()
    tiles = []
    for seed in range(seeds):
        maps = [np.full((side, side), c, np.uint8) for c in classes]
        z = preview_sample(
            net, "image", (latent.channels, side, side), abar, "cpu", seed=seed, labels=maps,
            conditioning=bundle.conditioning,
        )  # fmt: skip
        with torch.no_grad():
            rgb = codec.decode(z / latent.scale).sample.clamp(-1, 1)
        tiles.append(((rgb + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return [bundle.classes[c]["name"] for c in classes], np.stack(tiles, axis=1)


def structure(tile: np.ndarray) -> np.ndarray:
    """Luminance minus its Gaussian blur (σ = 2 px), as a flat vector."""
    from scipy.ndimage import gaussian_filter

    grey = tile.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return (grey - gaussian_filter(grey, 2.0)).ravel()


def correlations(tiles: np.ndarray) -> dict:
    """Structure correlation between classes from the same noise and from different noises; tint distance."""
    n_classes, n_seeds = tiles.shape[:2]
    detail = [[structure(tiles[c, s]) for s in range(n_seeds)] for c in range(n_classes)]
    pairs = list(itertools.combinations(range(n_classes), 2))
    same = [np.corrcoef(detail[a][s], detail[b][s])[0, 1] for a, b in pairs for s in range(n_seeds)]
    other = [np.corrcoef(detail[a][s], detail[b][(s + 1) % n_seeds])[0, 1] for a, b in pairs for s in range(n_seeds)]
    tint = tiles.reshape(n_classes, -1, 3).mean(axis=1)
    return {
        "same_noise": round(float(np.mean(same)), 3),
        "other_noise": round(float(np.mean(other)), 3),
        "tint_distance": round(float(np.mean([np.linalg.norm(tint[a] - tint[b]) for a, b in pairs])), 1),
    }


def picture(rows: list[np.ndarray], path: Path, scale: int = 2) -> None:
    """Models one under another, separated by a white band; each a (classes, seeds) grid of tiles."""
    from PIL import Image

    blocks = []
    for tiles in rows:
        n_classes, n_seeds, h, w, _ = tiles.shape
        blocks.append(tiles.transpose(0, 2, 1, 3, 4).reshape(n_classes * h, n_seeds * w, 3))
        blocks.append(np.full((8, n_seeds * w, 3), 255, np.uint8))
    grid = np.concatenate(blocks[:-1])
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=None, help="model bundles (default: the bundled model)")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--picture", type=Path, default=None, help="write the grid of tiles here")
    args = parser.parse_args()
    models = args.model or [str(ROOT / "wsi_synth" / "default_model")]
    doc: dict = {"benchmark": "class_structure", "machine": machine(), "seeds": args.seeds, "models": {}}
    grids = []
    for model in models:
        classes, tiles = class_tiles(model, args.seeds)
        doc["models"][model] = {"classes": classes, **correlations(tiles)}
        grids.append(tiles)
    if args.picture:
        picture(grids, args.picture)
        doc["picture"] = str(args.picture)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
