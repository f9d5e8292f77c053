"""The training loop shared by the three stages, and what differs per stage (data, loss, preview).

Reproducibility: everything random at step `s` (batch indices, the labelled/unlabelled draw, augmentation,
noise, timesteps) comes from generators keyed by (seed, s). A checkpoint therefore needs only network,
EMA, optimizer and LR-schedule states plus `s`, and `--resume` continues exactly (same weights on CPU as
an uninterrupted run). Ctrl-C saves a checkpoint before stopping.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsi_synth.data.samplers import TileIndex, TileReader, augment, require, step_rng
from wsi_synth.data.store import Dataset, open_dataset
from wsi_synth.devices import check_device
from wsi_synth.diffusion.schedule import add_noise, alphas_cumprod
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import check_apart, claim
from wsi_synth.models.bundle import FOLDERS, STAGES, BadModelError, Bundle, LatentSpec, ScheduleSpec, open_bundle
from wsi_synth.models.config import TrainConfig
from wsi_synth.models.denoiser import autocast
from wsi_synth.models.networks import build_codec, build_unet, check_fits, codec_factor

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded


@dataclass
class StageSpec:
    """What differs between the stages of training: the network, its learning rate, its loss, preview and final record."""

    name: str
    network: torch.nn.Module
    lr: float
    loss: Callable[[torch.nn.Module, int], torch.Tensor]
    preview: Callable[[torch.nn.Module], np.ndarray]
    finish: Callable[[torch.nn.Module], dict]
    draw: Callable[[int], tuple] | None = None  # the batch of a step (for inspection and tests)


def train(
    stage: str,
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    device: str = "cpu",
    codec: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train one stage (`codec`, `image`, `mask` or `layout`) on a dataset into the bundle at `out`. The layout stage
    is a mask-stage network on another dataset's coarser regions (tissue layouts at slide scale), added to a bundle
    whose other stages bound it to a class scheme; `generate` samples it first and starts the mask stage from it.

    `overwrite` replaces that stage (its network, checkpoint and previews), never the bundle's other stages
    or other files; retraining the codec under an image stage trained on its latents is refused.

    Started by `torchrun --nproc_per_node N`, the UNet stages train data-parallel (DDP; NCCL on GPUs, gloo
    on CPU): `batch_size` is per process, each rank draws its own batch, rank 0 writes everything.
    """
    if stage not in STAGES:
        raise BadArgumentError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    rank, world, device = _init_distributed(device)
    if world > 1 and stage == "codec":
        raise BadArgumentError("train codec runs on one process (it is small): start it without torchrun")
    if resume and overwrite:
        raise BadArgumentError("--resume continues the stage and --overwrite starts it again: pass one of them")
    check_device(device)
    dataset = open_dataset(data)
    dataset.check()  # a damaged source is named now, not met as a zarr error after minutes of training
    check_apart(out, [data])
    if Path(out).exists() and not Path(out).is_dir():
        raise BadModelError(f"--out {out} is a file, not a model bundle folder: choose another --out")
    created = not Path(out).exists()
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        return _train_claimed(stage, dataset, out, config, resume=resume, device=device, codec=codec, overwrite=overwrite, progress=progress, rank=rank, world=world)
    except BaseException:
        if created and rank == 0:
            _remove_if_untrained(Path(out))
        raise


def _train_claimed(
    stage: str,
    dataset: Dataset,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool,
    device: str,
    codec: str | None,
    overwrite: bool,
    progress: bool,
    rank: int,
    world: int,
) -> dict:
    # rank 0 writes the stage: it claims it first, so a second `train STAGE` on this bundle stops at once
    with claim(Path(out) / FOLDERS[stage], f"the {stage} stage of") if rank == 0 else contextlib.nullcontext():
        bundle = open_bundle(out, create=True)
        _bind_bundle_to_dataset(bundle, dataset, stage)
        if overwrite and rank == 0:
            _discard_stage(bundle, stage)
        if rank == 0 and not (bundle.root / "model.json").is_file():
            bundle.write_meta()  # claims the folder as a bundle at once, so an interrupted first stage can --resume
        if codec is not None:
            # a local folder is recorded absolute, so that the bundle loads from any working directory
            bundle.set_external_codec(str(Path(codec).resolve()) if Path(codec).exists() else codec)
        spec = build_stage(stage, dataset, bundle, config, device, rank=rank)
        try:
            return _loop(spec, bundle, config, dataset, resume=resume, device=device, progress=progress and rank == 0, rank=rank, world=world)
        finally:
            if world > 1:
                torch.distributed.destroy_process_group()


def _remove_if_untrained(root: Path) -> None:
    """A bundle folder this run created, when the run failed before saving anything to resume from: no skeleton
    (a model.json without stages, empty folders) is left behind. A saved checkpoint keeps the folder."""
    if any((root / "checkpoints").glob("*.pt")) or any((root / name).is_dir() for name in FOLDERS.values()):
        return
    (root / "model.json").unlink(missing_ok=True)
    for folder in ("previews", "checkpoints"):
        if (root / folder).is_dir() and not any((root / folder).iterdir()):
            (root / folder).rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def _discard_stage(bundle: Bundle, stage: str) -> None:
    """What a previous `train STAGE` wrote into the bundle: its network folder, checkpoint, previews, record."""
    if stage == "codec" and bundle.has("image") and not bundle.external_codec:
        raise BadModelError(
            f"{bundle.root}: its image stage was trained on this codec's latents; retrain the codec into a new --out (or retrain the image stage after it)"
        )
    for path in (bundle.root / FOLDERS[stage], bundle.root / "checkpoints" / f"{stage}.pt"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in (bundle.root / "previews").glob(f"{stage}_step*.png"):
        path.unlink()
    bundle.drop_stage(stage)


def _init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, this process's device) — from torchrun's environment, or (0, 1, device)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.distributed.get_rank(), world, device


def _bind_bundle_to_dataset(bundle: Bundle, dataset: Dataset, stage: str) -> None:
    """A bundle serves one class scheme and subtype list: refuse a dataset that disagrees."""
    if stage == "layout":
        _bind_layout_data(bundle, dataset)
        return
    classes = dataset.classes
    subtypes = dataset.subtypes
    if bundle.has_data():
        mine = [c["name"] for c in bundle.classes]
        if mine != [c["name"] for c in classes]:
            raise BadModelError(f"{bundle.root} was trained with classes {mine}, the dataset has {[c['name'] for c in classes]}")
        if bundle.subtypes != subtypes:
            raise BadModelError(f"{bundle.root} was trained with subtypes {bundle.subtypes}, the dataset has {subtypes}")
        if bundle.tile_size != dataset.tile_size:
            raise BadModelError(f"{bundle.root} was trained on {bundle.tile_size} px tiles, the dataset has {dataset.tile_size}")
    bundle.adopt_data(
        classes=classes, subtypes=subtypes, tile_size=dataset.tile_size, mpp=dataset.mpp, region_size=dataset.region_size, region_mask_size=dataset.region_mask_size
    )


def _bind_layout_data(bundle: Bundle, dataset: Dataset) -> None:
    """The layout stage adds to a bundle bound to a class scheme: same classes, subtypes among the bundle's (a layout
    data set may hold some of them only), regions larger than the mask stage's."""
    if not bundle.has_data():
        raise BadModelError(f"{bundle.root} has no stage yet: train the codec, image and mask stages first; the layout stage adds to them")
    mine, theirs = [c["name"] for c in bundle.classes], [c["name"] for c in dataset.classes]
    if mine != theirs:
        raise BadModelError(f"{bundle.root} was trained with classes {mine}, the layout dataset has {theirs}: import it with the same --classes")
    foreign = sorted(set(dataset.subtypes) - set(bundle.subtypes))
    if foreign:
        raise BadModelError(f"the layout dataset's subtypes {foreign} are not the model's ({', '.join(bundle.subtypes)})")
    if dataset.region_size <= bundle.region_size:
        raise BadArgumentError(
            f"the layout dataset's regions ({dataset.region_size} px) are not larger than the mask stage's ({bundle.region_size} px): "
            "import the layouts with a larger --region (e.g. 2048) for the layout stage"
        )
    bundle.adopt_layout_data(region_size=dataset.region_size, region_mask_size=dataset.region_mask_size, subtypes=dataset.subtypes)


def _dataset_hash(dataset: Dataset) -> str:
    return hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest()


def build_stage(stage: str, dataset: Dataset, bundle: Bundle, config: TrainConfig, device: str, *, rank: int = 0) -> StageSpec:
    """The stage's network (initialised from the seed, not the global RNG, so every rank starts equal)
    and its data/loss/preview; `rank` selects this process's share of each step's draws."""
    build = {"codec": _codec_stage, "image": _image_stage, "mask": _mask_stage, "layout": _layout_stage}[stage]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(config.seed, stage))
        try:
            return build(dataset, bundle, config, device, rank)
        except ValueError as exc:  # diffusers refuses inconsistent sizes (e.g. channels not divisible by groups)
            raise BadArgumentError(f"the {stage} network cannot be built with this configuration: {str(exc).splitlines()[0]}") from exc


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
            z = posterior.sample(generator=torch.Generator(device="cpu").manual_seed(_seed(config.seed, step, rank)))
        else:
            z = posterior.mode()
        recon = net.decode(z).sample
        return F.l1_loss(recon, x) + 0.5 * F.mse_loss(recon, x) + config.codec.kl_weight * posterior.kl().mean()

    def preview(net) -> np.ndarray:
        x = batch(10**9)[:4]
        with torch.no_grad():
            recon = net.decode(net.encode(x).latent_dist.mode()).sample
        return _grid(torch.cat([x, recon]), rows=2)

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
        z = torch.cat([codec.encode(_to_tensor(images[i : i + n], device)).latent_dist.mode() for i in range(0, len(images), n)])
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


def _image_stage(dataset: Dataset, bundle: Bundle, config: TrainConfig, device: str, rank: int = 0) -> StageSpec:
    index, reader = TileIndex.build(dataset), TileReader(dataset)
    require(index.labelled, "labelled tiles", dataset, "conditional training needs annotated tiles (extract with annotations, or import with --masks)")
    codec = bundle.load_codec(device=device)
    for p in codec.parameters():
        p.requires_grad_(False)
    if not bundle.has_latent() or bundle.external_codec:
        images = [reader.image("labelled", s, i) for s, i in index.labelled[:64]]
        bundle.set_latent(LatentSpec(codec_factor(codec), codec.config.latent_channels, measure_scale(codec, images, device)))
    latent = bundle.latent
    tile = dataset.tile_size
    if tile % latent.factor:
        raise BadModelError(f"tile size {tile} is not a multiple of the codec's downsampling factor {latent.factor}")
    lat = tile // latent.factor
    check_fits(config.image, lat, "the latent size")
    n_classes = len(dataset.classes)
    spatial = config.image_conditioning == "spatial"
    # per-class: the class as an embedding and its binary mask as one channel; spatial: "map or null" as an
    # embedding and the whole class map as K−1 one-hot channels (all zeros = null), so one pass renders every class.
    net = build_unet(
        config.image,
        in_channels=latent.channels + (n_classes - 1 if spatial else 1),
        out_channels=latent.channels,
        num_class_embeds=2 if spatial else n_classes,
        sample_size=lat,
    )
    abar = alphas_cumprod(config.num_train_timesteps, config.beta_schedule)
    cache: dict = {}

    def encode(kind: str, source: str, i: int, k: int, flip: bool) -> torch.Tensor:
        key = (kind, source, i)
        if key not in cache:
            with torch.no_grad():
                z = codec.encode(_to_tensor([reader.image(kind, source, i)], device)).latent_dist.mode()[0] * latent.scale
            if len(cache) < LATENT_CACHE_MAX:
                cache[key] = z.half()
        z = cache[key].float() if key in cache else z
        z = torch.rot90(z, k, dims=(1, 2))  # the augmentations commute with encoding up to the codec's own error
        return z.flip(2) if flip else z

    pool = null_pool(index, config.null_tiles)

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = step_rng(config.seed, step, rank)
        latents, masks, labels = [], [], []
        for _ in range(config.batch_size):
            unconditional = rng.random() < config.p_unc
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            if unconditional:
                kind, source, i = pool[int(rng.integers(len(pool)))]
                latents.append(encode(kind, source, i, k, flip))
                masks.append(torch.zeros(n_classes - 1 if spatial else 1, lat, lat))
                labels.append(0)
                continue
            source, i = index.labelled[int(rng.integers(len(index.labelled)))]
            mask = reader.mask("labelled", source, i)
            if spatial:
                one_hot = torch.from_numpy(mask[None] == np.arange(1, n_classes, dtype=mask.dtype)[:, None, None]).float()[None]
                small = torch.rot90(F.adaptive_avg_pool2d(one_hot, lat)[0], k, dims=(1, 2))  # soft edges, as the sampler's smooth maps
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
        return _eps_loss(net, z0, step, config, abar, device, extra=mask, labels=labels, rank=rank, gamma=config.image.min_snr_gamma)

    def preview(net) -> np.ndarray:
        # an all-unknown map, then each class over the whole tile, all from the same noise
        maps = [np.full((lat, lat), c, np.uint8) for c in range(n_classes)]
        z = _preview_sample(
            net, "image", (latent.channels, lat, lat), abar, device, seed=config.seed, labels=maps, conditioning=config.image_conditioning, classes=n_classes
        ).to(device)
        with torch.no_grad():
            return _grid(codec.decode(z / latent.scale).sample.clamp(-1, 1), rows=1)

    return StageSpec("image", net, config.image.lr, loss, preview, lambda net: {}, draw)


# --- mask denoiser --------------------------------------------------------------------------------------


def _mask_stage(dataset: Dataset, bundle: Bundle, config: TrainConfig, device: str, rank: int = 0, *, name: str = "mask") -> StageSpec:
    index, reader = TileIndex.build(dataset), TileReader(dataset)
    require(index.regions, "region masks", dataset, "extract regions (--region/--region-mask) or import masks (or --layouts)")
    subtypes = bundle.subtypes
    size = dataset.region_mask_size
    network = getattr(config, name)
    check_fits(network, size, "the region mask size")
    n_classes = len(dataset.classes)
    net = build_unet(network, in_channels=n_classes, out_channels=n_classes, num_class_embeds=len(subtypes) + 1, sample_size=size)
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

    def preview(net) -> np.ndarray:
        # unconditional, then each subtype, all from the same noise
        x = _preview_sample(net, name, (n_classes, size, size), abar, device, seed=config.seed, conditions=list(range(len(subtypes) + 1))).to(device)
        colors = torch.tensor([c["color"] for c in dataset.classes], dtype=torch.float32, device=device)
        rgb = colors[x.argmax(1)].permute(0, 3, 1, 2) / 127.5 - 1
        return _grid(rgb, rows=1)

    return StageSpec(name, net, network.lr, loss, preview, lambda net: {}, draw)


def _layout_stage(dataset: Dataset, bundle: Bundle, config: TrainConfig, device: str, rank: int = 0) -> StageSpec:
    """The mask stage's network and loss on the layout dataset's regions, with the layout network's settings."""
    return _mask_stage(dataset, bundle, config, device, rank, name="layout")


# --- shared pieces --------------------------------------------------------------------------------------


def _seed(*parts: int | str) -> int:
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
    gen = torch.Generator(device="cpu").manual_seed(_seed(config.seed, step, 1, rank))
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
    unlabelled, labelled = [("unlabelled", s, i) for s, i in index.unlabelled], [("labelled", s, i) for s, i in index.labelled]
    return unlabelled + labelled if null_tiles == "all" else unlabelled or labelled


def min_snr_weights(abar_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights min(SNR, γ) / SNR of the ε-loss, SNR = ᾱ / (1 − ᾱ) (Hang et al. 2023, eq. 7)."""
    snr = abar_t / (1 - abar_t)
    return torch.clamp(snr, max=gamma) / snr


def _preview_sample(
    net,
    stage: str,
    shape: tuple[int, int, int],
    abar: torch.Tensor,
    device: str,
    *,
    seed: int,
    labels: list[np.ndarray] | None = None,
    conditions: list[int] | None = None,
    steps: int = 20,
    conditioning: str = "per-class",
    classes: int = 0,
) -> torch.Tensor:
    """Preview tiles of one crop each, by the same sampler `generate` uses (DDIM, one canvas per class map or
    condition, batched together): a preview shows what generation will make of the network."""
    from wsi_synth.models.denoiser import NetworkDenoiser
    from wsi_synth.sampling.canvas import sample_canvases
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import SamplerConfig

    n = len(labels) if labels is not None else len(conditions or [])
    config = SamplerConfig(
        PlannerConfig("fixed-grid", shape[-1], 0), steps=steps, batch_size=max(n, 1), seed=seed, solver="ddim", conditioning=conditioning, classes=classes
    )
    maps: list[np.ndarray | None] | None = list(labels) if labels is not None else None
    canvases = sample_canvases(NetworkDenoiser(net, stage, device), shape, abar.cpu(), [config] * n, labels=maps, conditions=conditions)
    return torch.from_numpy(np.stack(canvases))


def _grid(images: torch.Tensor, *, rows: int) -> np.ndarray:
    """(N, 3, H, W) in [−1, 1] → one uint8 (rows·H, cols·W, 3) picture."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    cols = math.ceil(len(x) / rows)
    h, w = x.shape[1:3]
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(x):
        out[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = im
    return out


def _loop(spec: StageSpec, bundle: Bundle, config: TrainConfig, dataset: Dataset, *, resume: bool, device: str, progress: bool, rank: int = 0, world: int = 1) -> dict:
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    net = spec.network.to(device).train()
    model = net
    if world > 1:  # gradients averaged across ranks in backward; `net` stays the plain module for saving
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    optimizer = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=1e-2)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, config.max_steps // 10 + 1), config.max_steps)
    ema = EMAModel(net.parameters(), decay=config.ema_decay)
    checkpoint = bundle.root / "checkpoints" / f"{spec.name}.pt"
    start, earlier_seconds = 0, 0.0
    losses: list[float] = []
    if resume:
        start, losses, earlier_seconds = _load_checkpoint(checkpoint, net, optimizer, schedule, ema, spec.name)
    elif checkpoint.exists() or bundle.has(spec.name):
        raise BadModelError(f"{bundle.root} already has its {spec.name} stage: pass --resume to continue it, --overwrite to train it again, or choose another --out")
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda") and not torch.cuda.is_bf16_supported())
    step_seconds = 0.0  # training steps only: previews and checkpoints are not throughput
    step = start
    try:
        with tqdm(total=config.max_steps, initial=start, desc=f"train {spec.name}", unit="step", disable=not progress) as bar:
            for step in range(start, config.max_steps):
                tick = time.perf_counter()
                with autocast(device):
                    loss = spec.loss(model, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                ema.step(net.parameters())
                losses.append(float(loss.detach()))
                step_seconds += time.perf_counter() - tick
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                bar.update()
                done = step + 1
                if rank == 0 and (done % config.checkpoint_every == 0 or done == config.max_steps):
                    _save_checkpoint(checkpoint, net, optimizer, schedule, ema, done, losses, config, earlier_seconds + step_seconds)
                if rank == 0 and (done % config.sample_every == 0 or done == config.max_steps):
                    _write_preview(spec, net, ema, bundle, done)
    except KeyboardInterrupt:
        if step > start and rank == 0:
            _save_checkpoint(checkpoint, net, optimizer, schedule, ema, step, losses[:step], config, earlier_seconds + step_seconds)
            log.warning("interrupted at step %d: checkpoint saved; re-run with --resume to continue", step)
        raise
    except torch.OutOfMemoryError as exc:
        raise BadArgumentError(f"out of GPU memory at batch size {config.batch_size}: try --batch-size {max(1, config.batch_size // 2)}") from exc
    except RuntimeError as exc:  # PyTorch's CPU allocator raises a plain RuntimeError
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        raise BadArgumentError(f"out of memory at batch size {config.batch_size}: try --batch-size {max(1, config.batch_size // 4)}") from exc
    if rank != 0:
        torch.distributed.barrier()  # rank 0 writes the bundle
        return {"stage": spec.name, "rank": rank}
    result = _finish(spec, net, ema, bundle, config, dataset, losses, step_seconds, config.max_steps - start, world, earlier_seconds)
    if world > 1:
        torch.distributed.barrier()
    return result


def _save_checkpoint(path: Path, net, optimizer, schedule, ema, step: int, losses: list[float], config: TrainConfig, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "ema": ema.state_dict(),
            "losses": losses,
            "config": config.to_json(),
            "seconds": seconds,
        },
        tmp,
    )
    tmp.replace(path)


def _load_checkpoint(path: Path, net, optimizer, schedule, ema, stage: str) -> tuple[int, list[float], float]:
    """(step, losses so far, training seconds so far) — the state restored into the given objects."""
    if not path.is_file():
        raise BadModelError(f"--resume: no {stage} checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        net.load_state_dict(state["net"])
    except RuntimeError as exc:
        raise BadModelError(f"--resume: the {stage} checkpoint does not match this configuration ({str(exc).splitlines()[0]})") from exc
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    ema.load_state_dict(state["ema"])
    return state["step"], list(state["losses"]), float(state.get("seconds", 0.0))


def _write_preview(spec: StageSpec, net, ema, bundle: Bundle, step: int) -> None:
    from PIL import Image

    ema.store(net.parameters())
    ema.copy_to(net.parameters())
    net.eval()
    try:
        picture = spec.preview(net)
    finally:
        ema.restore(net.parameters())
        net.train()
    folder = bundle.root / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(folder / f"{spec.name}_step{step:07d}.png")


def _finish(
    spec: StageSpec,
    net,
    ema,
    bundle: Bundle,
    config: TrainConfig,
    dataset: Dataset,
    losses: list[float],
    seconds: float,
    steps_run: int,
    world: int = 1,
    earlier_seconds: float = 0.0,
) -> dict:
    import diffusers

    ema.copy_to(net.parameters())
    net.eval()
    extra = spec.finish(net)
    bundle.save_network(spec.name, net)
    head, tail = float(np.mean(losses[:20])) if losses else None, float(np.mean(losses[-20:])) if losses else None
    bundle.record_stage(
        spec.name,
        {
            "steps": len(losses),
            "dataset_sha256": _dataset_hash(dataset),
            "config": config.to_json(),
            "initial_loss": head,
            "final_loss": tail,
            "world_size": world,
            "train_seconds": round(earlier_seconds + seconds, 1),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            **extra,
        },
        schedule=ScheduleSpec(config.num_train_timesteps, config.beta_schedule),
        image_conditioning=config.image_conditioning if spec.name == "image" else None,
    )
    bundle.write_stage(spec.name)
    rate = steps_run * config.batch_size * world / max(seconds, 1e-9)
    return {"stage": spec.name, "steps": len(losses), "initial_loss": head, "final_loss": tail, "samples_per_s": round(rate, 2), **extra}
