"""Checkpoints of a stage: network, EMA, optimizer and schedule states, the step and the losses so far."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from wsi_synth.models.bundle import BadModelError
from wsi_synth.models.config import TrainConfig

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded


def save_checkpoint(
    path: Path, net, optimizer, schedule, ema, step: int, losses: list[float], config: TrainConfig, seconds: float
) -> None:
    """The state `load_checkpoint` restores, written atomically (a crash mid-write keeps the previous checkpoint)."""
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


def load_checkpoint(path: Path, net, optimizer, schedule, ema, stage: str) -> tuple[int, list[float], float]:
    """(step, losses so far, training seconds so far) — the state restored into the given objects."""
    if not path.is_file():
        raise BadModelError(f"--resume: no {stage} checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        net.load_state_dict(state["net"])
    except RuntimeError as exc:
        raise BadModelError(
            f"--resume: the {stage} checkpoint does not match this configuration ({str(exc).splitlines()[0]})"
        ) from exc
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    ema.load_state_dict(state["ema"])
    return state["step"], list(state["losses"]), float(state.get("seconds", 0.0))
