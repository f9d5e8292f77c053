"""What differs per stage (codec, image, mask, layout): its network, data, loss and preview inputs (`StageSpec`)."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsi_synth.data.samplers import TileIndex, TileReader, augment, class_balanced_weights, require, step_rng
from wsi_synth.data.store import Dataset
from wsi_synth.diffusion.schedule import add_noise, alphas_cumprod
from wsi_synth.errors import BadArgumentError
from wsi_synth.models.bundle import BadModelError, Bundle, LatentSpec
from wsi_synth.models.conditioning import Conditioning
from wsi_synth.models.config import TrainConfig
from wsi_synth.models.networks import build_codec, build_unet, check_fits, codec_factor, mix_class_embedding
from wsi_synth.training.previews import grid, preview_sample

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded


@dataclass
class StageSpec:
    """What differs between the stages of training: the network, its learning rate, its loss, preview and final
    record."""

    name: str
    network: torch.nn.Module
    lr: float
    loss: Callable[[torch.nn.Module, int], torch.Tensor]
    preview: Callable[[torch.nn.Module], np.ndarray]
    finish: Callable[[torch.nn.Module], dict]
    draw: Callable[[int], tuple] | None = None  # the batch of a step (for inspection and tests)
    half: bool = False  # saved with float16 weights (a distilled student)


#: How a stage's previews are sampled: (solver, steps); a student's previews use its own solver and steps.
TEACHER_PREVIEW = ("ddim", 20)


def build_stage(
    stage: str,
    dataset: Dataset,
    bundle: Bundle,
    config: TrainConfig,
    device: str,
    *,
    rank: int = 0,
    preview: tuple[str, int] = TEACHER_PREVIEW,
) -> StageSpec:
    """The stage's network (initialised from the seed, not the global RNG, so every rank starts equal)
    and its data/loss/preview; `rank` selects this process's share of each step's draws; `preview` is the
    (solver, steps) its previews are sampled with."""
    if stage == "codec":
        build = _codec_stage
    else:
        build = functools.partial(
            {"image": _image_stage, "mask": _mask_stage, "layout": _layout_stage}[stage], preview=preview
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of(config.seed, stage))
        try:
            return build(dataset, bundle, config, device, rank)
        except ValueError as exc:  # diffusers refuses inconsistent sizes (e.g. channels not divisible by groups)
            raise BadArgumentError(
                f"the {stage} network cannot be built with this configuration: {str(exc).splitlines()[0]}"
            ) from exc


# --- codec --------------------------------------------------------------------------------------------


def _to_tensor(images: list[np.ndarray], device: str) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def _codec_stage(dataset: Dataset, bundle: Bundle, config: TrainConfig, device: str, rank: int = 0) -> StageSpec:
    index, reader = TileIndex.build(dataset), TileReader(dataset)
    tiles = [("labelled", s, i) for s, i in index.labelled] + [("unlabelled", s, i) for s, i in index.unlabelled]
    require(tiles, "tiles", dataset, "extract or import some first")
    codec = build_codec(config.codec)

    def batch(step: int) -> torch.Tensor:
        rng = step_rng(config.seed, step, rank)
        picks = rng.integers(len(tiles), size=config.batch_size)
        return _to_tensor([augment([reader.image(*tiles[p])], rng)[0] for p in picks], device)

    def loss(net, step: int) -> torch.Tensor:
        x = batch(step)
        posterior = net.encode(x).latent_dist
        if config.codec.sample_posterior:
            z = posterior.sample(generator=torch.Generator(device="cpu").manual_seed(seed_of(config.seed, step, rank)))
        else:
            z = posterior.mode()
        recon = net.decode(z).sample
        return F.l1_loss(recon, x) + 0.5 * F.mse_loss(recon, x) + config.codec.kl_weight * posterior.kl().mean()

    def preview(net) -> np.ndarray:
        x = batch(10**9)[:4]
        with torch.no_grad():
            recon = net.decode(net.encode(x).latent_dist.mode()).sample
        return grid(torch.cat([x, recon]), rows=2)

    def finish(net) -> dict:
        # 64 tiles give ~10⁶ latent values for the scale; 64 held-out tiles for PSNR (cheap even for a large codec),
        # spread evenly over the test split so that every source counts
        scale = measure_scale(net, [reader.image(*t) for t in tiles[:64]], device)
        test = TileIndex.build(dataset, "test")
        keys = [("labelled", s, i) for s, i in test.labelled] + [("unlabelled", s, i) for s, i in test.unlabelled]
        held_out = [reader.image(*k) for k in keys[:: max(1, len(keys) // 64)][:64]]
        psnr = reconstruction_psnr(net, held_out or [reader.image(*t) for t in tiles[-32:]], device)
        bundle.set_latent(LatentSpec(codec_factor(net), net.config.latent_channels, scale))
        return {"psnr_test_db" if held_out else "psnr_train_db": psnr, "latent_scale": scale}

    return StageSpec("codec", codec, config.codec.lr, loss, preview, finish)


def _chunk(images: list[np.ndarray]) -> int:
    """Images per codec call: about four 512² tiles' worth of pixels, so a large codec stays within memory."""
    return max(1, (4 * 512 * 512) // max(1, images[0].shape[0] * images[0].shape[1])) if images else 1


def measure_scale(codec, images: list[np.ndarray], device: str) -> float:
    """1 / std of the latents (posterior means) over `images`: scaled latents have unit variance."""
    n = _chunk(images)
    with torch.no_grad():
        z = torch.cat(
            [codec.encode(_to_tensor(images[i : i + n], device)).latent_dist.mode() for i in range(0, len(images), n)]
        )
    return float(1.0 / z.float().std().clamp(min=1e-6))


def reconstruction_psnr(codec, images: list[np.ndarray], device: str) -> float:
    """The codec's mean reconstruction PSNR (dB) over `images` (posterior mode, no sampling)."""
    n = _chunk(images)
    with torch.no_grad():
        errors = []
        for i in range(0, len(images), n):
            x = _to_tensor(images[i : i + n], device)
            recon = codec.decode(codec.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
            errors.append(((recon - x) * 127.5).pow(2).mean(dim=(1, 2, 3)))
    mse = torch.cat(errors).mean().item()
    return round(10 * math.log10(255**2 / max(mse, 1e-9)), 2)


# --- image denoiser -------------------------------------------------------------------------------------


def _image_stage(
    dataset: Dataset,
    bundle: Bundle,
    config: TrainConfig,
    device: str,
    rank: int = 0,
    *,
    preview: tuple[str, int] = TEACHER_PREVIEW,
) -> StageSpec:
    index, reader = TileIndex.build(dataset), TileReader(dataset)
    require(
        index.labelled,
        "labelled tiles",
        dataset,
        "conditional training needs annotated tiles (extract with annotations, or import with --masks)",
    )
    codec = bundle.load_codec(device=device)
    for p in codec.parameters():
        p.requires_grad_(False)
    if not bundle.has_latent() or bundle.external_codec:
        images = [reader.image("labelled", s, i) for s, i in index.labelled[:64]]
        bundle.set_latent(
            LatentSpec(codec_factor(codec), codec.config.latent_channels, measure_scale(codec, images, device))
        )
    latent = bundle.latent
    tile = dataset.tile_size
    if tile % latent.factor:
        raise BadModelError(f"tile size {tile} is not a multiple of the codec's downsampling factor {latent.factor}")
    lat = tile // latent.factor
    check_fits(config.image, lat, "the latent size")
    n_classes = len(dataset.classes)
    conditioning = Conditioning(config.image_conditioning, n_classes)
    spatial = conditioning.spatial
    net = build_unet(
        config.image,
        in_channels=latent.channels + conditioning.mask_channels,
        out_channels=latent.channels,
        num_class_embeds=conditioning.class_embeddings,
        sample_size=lat,
    )
    if conditioning.global_classes:
        mix_class_embedding(net, n_classes)
    abar = alphas_cumprod(config.num_train_timesteps, config.beta_schedule)
    cache: dict = {}

    def encode(kind: str, source: str, i: int, k: int, flip: bool) -> torch.Tensor:
        key = (kind, source, i)
        if key not in cache:
            with torch.no_grad():
                z = (
                    codec.encode(_to_tensor([reader.image(kind, source, i)], device)).latent_dist.mode()[0]
                    * latent.scale
                )
            if len(cache) < LATENT_CACHE_MAX:
                cache[key] = z.half()
        z = cache[key].float() if key in cache else z
        z = torch.rot90(z, k, dims=(1, 2))  # the augmentations commute with encoding up to the codec's own error
        return z.flip(2) if flip else z

    pool = null_pool(index, config.null_tiles)
    balanced = class_balanced_weights(index.fractions, config.class_balance) if config.class_balance else None

    def labelled_tile(rng: np.random.Generator) -> tuple[str, int]:
        if balanced is None:  # as every bundle before class_balance drew, so their runs resume identically
            return index.labelled[int(rng.integers(len(index.labelled)))]
        return index.labelled[int(rng.choice(len(index.labelled), p=balanced))]

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = step_rng(config.seed, step, rank)
        latents, masks, labels = [], [], []
        for _ in range(config.batch_size):
            unconditional = rng.random() < config.p_unc
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            if unconditional:
                kind, source, i = pool[int(rng.integers(len(pool)))]
                latents.append(encode(kind, source, i, k, flip))
                masks.append(torch.zeros(conditioning.mask_channels, lat, lat))
                labels.append(0)
                continue
            source, i = labelled_tile(rng)
            mask = reader.mask("labelled", source, i)
            if spatial:
                one_hot = torch.from_numpy(
                    mask[None] == np.arange(1, n_classes, dtype=mask.dtype)[:, None, None]
                ).float()[None]
                # soft edges, as the sampler's smooth maps
                small = torch.rot90(F.adaptive_avg_pool2d(one_hot, lat)[0], k, dims=(1, 2))
                masks.append(small.flip(2) if flip else small)
                latents.append(encode("labelled", source, i, k, flip))
                labels.append(1)  # an all-unknown map too: unannotated tissue of a labelled source, not the null look
                continue
            present = [c for c in np.unique(mask) if c != 0]
            weights = np.sqrt([(mask == c).mean() for c in present])  # every class gets turns; big ones more often
            c = int(present[int(rng.choice(len(present), p=weights / weights.sum()))]) if present else 0
            binary = torch.from_numpy((mask == c).astype(np.float32))[None, None]
            small = F.adaptive_avg_pool2d(binary, lat)[0]
            small = torch.rot90(small, k, dims=(1, 2))
            masks.append(small.flip(2) if flip else small)
            latents.append(encode("labelled", source, i, k, flip))
            labels.append(c)
        return torch.stack(latents).to(device), torch.stack(masks).to(device), torch.tensor(labels, device=device)

    def loss(net, step: int) -> torch.Tensor:
        z0, mask, labels = draw(step)
        return _eps_loss(
            net, z0, step, config, abar, device, extra=mask, labels=labels, rank=rank, gamma=config.image.min_snr_gamma
        )

    def sample_preview(net) -> np.ndarray:
        # an all-unknown map, then each class over the whole tile, all from the same noise
        maps = [np.full((lat, lat), c, np.uint8) for c in range(n_classes)]
        z = preview_sample(
            net,
            "image",
            (latent.channels, lat, lat),
            abar,
            device,
            seed=config.seed,
            labels=maps,
            conditioning=conditioning,
            solver=preview[0],
            steps=preview[1],
        ).to(device)
        with torch.no_grad():
            return grid(codec.decode(z / latent.scale).sample.clamp(-1, 1), rows=1)

    return StageSpec("image", net, config.image.lr, loss, sample_preview, lambda net: {}, draw)


# --- mask denoiser --------------------------------------------------------------------------------------


def _mask_stage(
    dataset: Dataset,
    bundle: Bundle,
    config: TrainConfig,
    device: str,
    rank: int = 0,
    *,
    name: str = "mask",
    preview: tuple[str, int] = TEACHER_PREVIEW,
) -> StageSpec:
    index, reader = TileIndex.build(dataset), TileReader(dataset)
    require(
        index.regions,
        "region masks",
        dataset,
        "extract regions (--region/--region-mask) or import masks (or --layouts)",
    )
    subtypes = bundle.subtypes
    size = dataset.region_mask_size
    network = getattr(config, name)
    check_fits(network, size, "the region mask size")
    n_classes = len(dataset.classes)
    net = build_unet(
        network, in_channels=n_classes, out_channels=n_classes, num_class_embeds=len(subtypes) + 1, sample_size=size
    )
    abar = alphas_cumprod(config.num_train_timesteps, config.beta_schedule)

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = step_rng(config.seed, step, rank)
        maps, labels = [], []
        for _ in range(config.batch_size):
            source, i, subtype = index.regions[int(rng.integers(len(index.regions)))]
            m = augment([reader.mask("regions", source, i)], rng)[0]
            maps.append(F.one_hot(torch.from_numpy(m.astype(np.int64)), n_classes).permute(2, 0, 1).float() * 2 - 1)
            labels.append(0 if rng.random() < config.p_unc or subtype not in subtypes else 1 + subtypes.index(subtype))
        return torch.stack(maps).to(device), torch.tensor(labels, device=device)

    def loss(net, step: int) -> torch.Tensor:
        x0, labels = draw(step)
        return _eps_loss(net, x0, step, config, abar, device, labels=labels, rank=rank, gamma=network.min_snr_gamma)

    def sample_preview(net) -> np.ndarray:
        # unconditional, then each subtype, all from the same noise
        x = preview_sample(
            net,
            name,
            (n_classes, size, size),
            abar,
            device,
            seed=config.seed,
            conditions=list(range(len(subtypes) + 1)),
            solver=preview[0],
            steps=preview[1],
        ).to(device)
        colors = torch.tensor([c["color"] for c in dataset.classes], dtype=torch.float32, device=device)
        rgb = colors[x.argmax(1)].permute(0, 3, 1, 2) / 127.5 - 1
        return grid(rgb, rows=1)

    return StageSpec(name, net, network.lr, loss, sample_preview, lambda net: {}, draw)


def _layout_stage(
    dataset: Dataset,
    bundle: Bundle,
    config: TrainConfig,
    device: str,
    rank: int = 0,
    *,
    preview: tuple[str, int] = TEACHER_PREVIEW,
) -> StageSpec:
    """The mask stage's network and loss on the layout dataset's regions, with the layout network's settings."""
    return _mask_stage(dataset, bundle, config, device, rank, name="layout", preview=preview)


# --- shared pieces --------------------------------------------------------------------------------------


def seed_of(*parts: int | str) -> int:
    """A 63-bit seed for a torch generator from any parts (the run's seed, a stage, a step, a rank)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2**63 - 1)


def _eps_loss(
    net,
    x0: torch.Tensor,
    step: int,
    config: TrainConfig,
    abar: torch.Tensor,
    device: str,
    *,
    labels: torch.Tensor,
    extra: torch.Tensor | None = None,
    rank: int = 0,
    gamma: float | None = None,
) -> torch.Tensor:
    """ε-prediction L2 loss at uniformly drawn timesteps, min-SNR-`gamma` weighted when the stage's network asks."""
    gen = torch.Generator(device="cpu").manual_seed(seed_of(config.seed, step, 1, rank))
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=gen).to(device)
    xt = add_noise(x0, noise, t, abar)
    inputs = torch.cat([xt, extra], dim=1) if extra is not None else xt
    predicted = net(inputs, t, class_labels=labels).sample.float()
    if gamma is None:
        return F.mse_loss(predicted, noise)
    return (min_snr_weights(abar.to(device)[t], gamma) * (predicted - noise).pow(2).mean(dim=(1, 2, 3))).mean()


def null_pool(index, null_tiles: str) -> list[tuple[str, str, int]]:
    """The (kind, source, i) tiles the image network's null condition learns from (`TrainConfig.null_tiles`)."""
    unlabelled, labelled = (
        [("unlabelled", s, i) for s, i in index.unlabelled],
        [("labelled", s, i) for s, i in index.labelled],
    )
    return unlabelled + labelled if null_tiles == "all" else unlabelled or labelled


def min_snr_weights(abar_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights min(SNR, γ) / SNR of the ε-loss, SNR = ᾱ / (1 − ᾱ) (Hang et al. 2023, eq. 7)."""
    snr = abar_t / (1 - abar_t)
    return torch.clamp(snr, max=gamma) / snr
