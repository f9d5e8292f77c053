"""The training loop shared by the stages, and the record each writes into the bundle.

Reproducibility: everything random at step `s` (batch indices, the labelled/unlabelled draw, augmentation,
noise, timesteps) comes from generators keyed by (seed, s). A checkpoint therefore needs only network,
EMA, optimizer and LR-schedule states plus `s`, and `--resume` continues exactly (same weights on CPU as
an uninterrupted run). Ctrl-C saves a checkpoint before stopping.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch

from wsi_synth.data.store import Dataset
from wsi_synth.errors import BadArgumentError
from wsi_synth.models.bundle import BadModelError, Bundle, ScheduleSpec
from wsi_synth.models.config import TrainConfig
from wsi_synth.models.denoiser import autocast
from wsi_synth.training.checkpoints import load_checkpoint, save_checkpoint
from wsi_synth.training.previews import write_preview
from wsi_synth.training.stages import StageSpec

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded


def loop(
    spec: StageSpec,
    bundle: Bundle,
    config: TrainConfig,
    dataset: Dataset,
    *,
    resume: bool,
    device: str,
    progress: bool,
    rank: int = 0,
    world: int = 1,
) -> dict:
    """Train `spec` for the configuration's steps (from its checkpoint with `resume`), with EMA, checkpoints and
    previews, then write the stage's record into the bundle (rank 0). Returns the record."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    net = spec.network.to(device).train()
    model = net
    if world > 1:  # gradients averaged across ranks in backward; `net` stays the plain module for saving
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
    optimizer = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=1e-2)
    schedule = get_cosine_schedule_with_warmup(
        optimizer, min(config.warmup_steps, config.max_steps // 10 + 1), config.max_steps
    )
    ema = EMAModel(net.parameters(), decay=config.ema_decay)
    checkpoint = bundle.root / "checkpoints" / f"{spec.name}.pt"
    start, earlier_seconds = 0, 0.0
    losses: list[float] = []
    if resume:
        start, losses, earlier_seconds = load_checkpoint(checkpoint, net, optimizer, schedule, ema, spec.name)
    elif checkpoint.exists() or bundle.has(spec.name):
        raise BadModelError(
            f"{bundle.root} already has its {spec.name} stage: pass --resume to continue it, --overwrite to train it "
            "again, or choose another --out"
        )
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda") and not torch.cuda.is_bf16_supported())
    step_seconds = 0.0  # training steps only: previews and checkpoints are not throughput
    step = start
    try:
        with tqdm(
            total=config.max_steps, initial=start, desc=f"train {spec.name}", unit="step", disable=not progress
        ) as bar:
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
                    save_checkpoint(
                        checkpoint, net, optimizer, schedule, ema, done, losses, config, earlier_seconds + step_seconds
                    )
                if rank == 0 and (done % config.sample_every == 0 or done == config.max_steps):
                    write_preview(spec, net, ema, bundle, done)
    except KeyboardInterrupt:
        if step > start and rank == 0:
            save_checkpoint(
                checkpoint, net, optimizer, schedule, ema, step, losses[:step], config, earlier_seconds + step_seconds
            )
            log.warning("interrupted at step %d: checkpoint saved; re-run with --resume to continue", step)
        raise
    except torch.OutOfMemoryError as exc:
        raise BadArgumentError(
            f"out of GPU memory at batch size {config.batch_size}: try --batch-size {max(1, config.batch_size // 2)}"
        ) from exc
    except RuntimeError as exc:  # PyTorch's CPU allocator raises a plain RuntimeError
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        raise BadArgumentError(
            f"out of memory at batch size {config.batch_size}: try --batch-size {max(1, config.batch_size // 4)}"
        ) from exc
    if rank != 0:
        torch.distributed.barrier()  # rank 0 writes the bundle
        return {"stage": spec.name, "rank": rank}
    result = _finish(
        spec, net, ema, bundle, config, dataset, losses, step_seconds, config.max_steps - start, world, earlier_seconds
    )
    if world > 1:
        torch.distributed.barrier()
    return result


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
    bundle.save_network(spec.name, net, half=spec.half)
    head, tail = float(np.mean(losses[:20])) if losses else None, float(np.mean(losses[-20:])) if losses else None
    bundle.record_stage(
        spec.name,
        {
            "steps": len(losses),
            "dataset_sha256": dataset_hash(dataset),
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
    return {
        "stage": spec.name,
        "steps": len(losses),
        "initial_loss": head,
        "final_loss": tail,
        "samples_per_s": round(rate, 2),
        **extra,
    }


def dataset_hash(dataset: Dataset) -> str:
    """The SHA-256 of the dataset's manifest: which data a stage was trained on."""
    return hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest()
