"""Does the image stage draw each class's structure, or one structure in each class's tint?

    python -m benchmarks.quality.bench_class_structure [--model M ...] [--seeds 16] [--omega 0] [--picture FILE]

For each model, one tile per tissue class drawn over the whole tile from the *same* noise (seeds 0…N−1, 20 DDIM
steps, as the training previews draw them, classifier-free guidance `--omega`), decoded by the model's codec.
Structure is the tile's luminance minus its Gaussian blur (σ = 2 px: nuclei, fibres, membranes; the tint and the slow
shading removed). Per model:

- `same_noise`: the mean correlation of the structure of two classes drawn from the same noise. 1 means every class
  is one drawing in another tint; a model that draws each class's own tissue gets near `other_noise`.
- `other_noise`: the same for two classes drawn from different noises (what no shared structure gives, about 0).
- `tint_distance`: the mean distance between the classes' mean colours (0–255 RGB): what does differ.

With `--real DATASET`, `map_use`: whether the network uses the class map at all. The ε-loss on up to 256 labelled
tiles of the dataset's test split (never trained on) at t = 50, 200, 500 and 800, given their own maps, each other's
maps (shuffled) and an empty map: a network that ignores the map scores them alike (spatial bundles only).

With `--real DATASET`, also `gaussian`: the same drawing by the optimal denoiser of a Gaussian model of the dataset's
training latents (a mean per class, one covariance), and `network_vs_gaussian`, the structure correlation of the
network's tiles with those from the same noise. A diffusion network learns that linear denoiser first; near 1, the
network has learnt little beyond it (the tissue's non-Gaussian structure: nuclei, fibres, air spaces).

With several models, `between_models`: the structure correlation of the same class from the same noise in two
models (1: the two trainings draw the same tile; the conditioning they differ in changed nothing).

`--picture` writes a grid: for each model, one row per class, one column per seed; with `--real DATASET`, first real
training tiles of each class (at least 80 % of their pixels), for comparison at the same scale, and last the
Gaussian denoiser's tiles (of the last model's codec). Prints JSON; seconds
per model.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, machine


def class_tiles(model: str, seeds: int, omega: float = 0.0, denoiser=None) -> tuple[list[str], np.ndarray]:
    """(classes drawn, uint8 tiles (classes, seeds, H, W, 3)): every tissue class over a whole tile, seed by seed,
    by the sampler `generate` uses (20 DDIM steps, guidance `omega`), with the model's image network or `denoiser`,
    decoded by the model's codec."""
    import torch

    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.models.denoiser import NetworkDenoiser
    from wsi_synth.sampling.canvas import sample_canvases
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import SamplerConfig

    bundle = open_bundle(model)
    denoiser = denoiser or NetworkDenoiser(bundle.load_unet("image"), "image")
    codec, latent = bundle.load_codec(), bundle.latent
    side = bundle.tile_size // latent.factor
    classes = list(range(1, len(bundle.classes)))
    maps = [np.full((side, side), c, np.uint8) for c in classes]
    abar = bundle.schedule.alphas_cumprod().float()
    tiles = []
    for seed in range(seeds):
        config = SamplerConfig(
            PlannerConfig("fixed-grid", side, 0), steps=20, batch_size=len(maps), seed=seed, solver="ddim",
            conditioning=bundle.conditioning, omega=omega,
        )  # fmt: skip
        z = torch.from_numpy(
            np.stack(sample_canvases(denoiser, (latent.channels, side, side), abar, [config] * len(maps), labels=maps))
        )
        with torch.no_grad():
            rgb = codec.decode(z / latent.scale).sample.clamp(-1, 1)
        tiles.append(((rgb + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return [bundle.classes[c]["name"] for c in classes], np.stack(tiles, axis=1)


def labelled_latents(bundle, dataset: Path, split: str, count: int | None = None):
    """(scaled latents (n, C, h, w), masks (n, H, W)) of the first `count` labelled tiles of a split, encoded by the
    bundle's codec 256 at a time."""
    import torch

    from wsi_synth.data import open_dataset
    from wsi_synth.data.samplers import TileIndex, TileReader

    data = open_dataset(dataset)
    keys, reader = TileIndex.build(data, split).labelled[:count], TileReader(data)
    if not keys:
        return torch.zeros(0), np.zeros((0, 0, 0), np.uint8)
    codec = bundle.load_codec()
    images = torch.from_numpy(np.stack([reader.image("labelled", s, i) for s, i in keys]))
    images = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = torch.cat([codec.encode(images[i : i + 256]).latent_dist.mode() for i in range(0, len(images), 256)])
    return z * bundle.latent.scale, np.stack([reader.mask("labelled", s, i) for s, i in keys])


class GaussianDenoiser:
    """The optimal denoiser of a Gaussian model of the training latents: N(μ_c, Σ), one mean per class (tiles whose
    main class is c), one covariance (class-centred, over all eight flips and rotations of every labelled tile).

    What a diffusion network converges to first: its samples are the noise filtered by Σ, shifted to the class's
    mean. A network whose samples correlate with this denoiser's from the same noise has learnt little beyond it.
    """

    pin_memory = False

    def __init__(self, model: str, dataset: Path) -> None:
        import torch

        from wsi_synth.models.bundle import open_bundle

        bundle = open_bundle(model)
        k = len(bundle.classes)
        z, masks = labelled_latents(bundle, dataset, "train")
        main = np.array([np.bincount(mask.ravel(), minlength=k).argmax() for mask in masks])
        views = [torch.rot90(v, r, (2, 3)) for v in (z, z.flip(3)) for r in range(4)]
        flat, main = torch.cat(views).flatten(1).double(), torch.from_numpy(np.tile(main, len(views)))
        self.means = {c: flat[main == c].mean(0) for c in range(1, k) if bool((main == c).any())}
        self.overall = flat.mean(0)  # for a class no tile is mostly of
        centred = torch.cat([flat[main == c] - mean for c, mean in self.means.items()])
        variances, self.basis = torch.linalg.eigh(centred.T @ centred / len(centred))
        self.variances = variances.clamp(min=0)
        self.abar = bundle.schedule.alphas_cumprod().double()

    def __call__(self, z, t, labels, masks):
        import torch

        n = len(z)
        a = self.abar[t.long()].view(-1, 1)
        main = masks.flatten(2).mean(-1).argmax(1) + 1  # every crop here is one class
        mean = torch.stack([self.means.get(int(c), self.overall) for c in main])
        noisy = z.flatten(1).double()
        shrink = a.sqrt() * self.variances / (a * self.variances + 1 - a)
        x0 = mean + (((noisy - a.sqrt() * mean) @ self.basis) * shrink) @ self.basis.T
        return ((noisy - a.sqrt() * x0) / (1 - a).sqrt()).reshape(n, *z.shape[1:]).float()


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


def between(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structure correlation of two models' tiles of the same class and seed."""
    n_classes, n_seeds = a.shape[:2]
    pairs = [(c, s) for c in range(n_classes) for s in range(n_seeds)]
    return round(float(np.mean([np.corrcoef(structure(a[c, s]), structure(b[c, s]))[0, 1] for c, s in pairs])), 3)


def real_tiles(dataset: Path, classes: list[str], count: int) -> np.ndarray:
    """(classes, count, H, W, 3) uint8: seeded real training tiles mostly of each class (≥ 80 % of their pixels)."""
    from wsi_synth.data import TileDataset

    tiles = TileDataset(dataset, split="train")
    ids = [tiles.classes.index(name) for name in classes]
    picked: list[list[np.ndarray]] = [[] for _ in ids]
    for i in np.random.default_rng(0).permutation(len(tiles)):
        image, mask = tiles[int(i)][:2]
        for row, c in enumerate(ids):
            if len(picked[row]) < count and float((mask == c).float().mean()) >= 0.8:
                picked[row].append(image.numpy().transpose(1, 2, 0))
        if all(len(row) == count for row in picked):
            break
    blank = np.full_like(next(t for row in picked for t in row), 255)
    return np.stack([np.stack(row + [blank] * (count - len(row))) for row in picked]).astype(np.uint8)


def map_use(model: str, dataset: Path, count: int = 256) -> dict | None:
    """ε-loss of the image network on held-out labelled tiles with their own, shuffled and empty class maps."""
    import torch
    import torch.nn.functional as F

    from wsi_synth.diffusion.schedule import add_noise
    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.models.denoiser import network_eps

    bundle = open_bundle(model)
    if not bundle.conditioning.spatial:
        return None
    z0, masks = labelled_latents(bundle, dataset, "test", count)
    if not len(z0):
        return None
    net = bundle.load_unet("image")
    classes = np.arange(1, len(bundle.classes), dtype=masks.dtype)
    one_hot = torch.from_numpy(masks[:, None] == classes[None, :, None, None]).float()
    maps = F.adaptive_avg_pool2d(one_hot, z0.shape[-1])
    shuffled = maps[torch.randperm(len(maps), generator=torch.Generator().manual_seed(0))]
    abar, labels = bundle.schedule.alphas_cumprod().float(), torch.ones(len(z0), dtype=torch.long)
    out: dict = {"tiles": len(z0)}
    for t in (50, 200, 500, 800):
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(t))
        steps = torch.full((len(z0),), t)
        xt = add_noise(z0, noise, steps, abar)
        loss = {
            name: round(F.mse_loss(network_eps(net, "image", "cpu", xt, steps, labels, m), noise).item(), 4)
            for name, m in (("own", maps), ("shuffled", shuffled), ("empty", torch.zeros_like(maps)))
        }
        out[f"t{t}"] = loss
    return out


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
    parser.add_argument("--omega", type=float, default=0.0, help="classifier-free guidance (generate --omega)")
    parser.add_argument("--picture", type=Path, default=None, help="write the grid of tiles here")
    parser.add_argument("--real", type=Path, default=None, help="a dataset whose real tiles head the picture")
    args = parser.parse_args()
    models = args.model or [str(ROOT / "wsi_synth" / "default_model")]
    doc: dict = {"benchmark": "class_structure", "machine": machine(), "seeds": args.seeds, "omega": args.omega}
    doc["models"] = {}
    grids = []
    for model in models:
        classes, tiles = class_tiles(model, args.seeds, args.omega)
        doc["models"][model] = {"classes": classes, **correlations(tiles)}
        grids.append(tiles)
        if args.real:
            doc["models"][model]["map_use"] = map_use(model, args.real)
            _, linear = class_tiles(model, args.seeds, args.omega, GaussianDenoiser(model, args.real))
            doc["models"][model]["gaussian"] = {**correlations(linear), "network_vs_gaussian": between(tiles, linear)}
            gaussian = linear
    if len(models) > 1:
        doc["between_models"] = {
            f"{a} ~ {b}": between(grids[i], grids[j]) for (i, a), (j, b) in itertools.combinations(enumerate(models), 2)
        }
    if args.picture:
        real = [real_tiles(args.real, classes, args.seeds)] if args.real else []
        picture(real + grids + ([gaussian] if args.real else []), args.picture)
        doc["picture"] = str(args.picture)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
