"""Preview tiles written while a stage trains, sampled by the same sampler `generate` uses."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from wsi_synth.models.bundle import Bundle
from wsi_synth.models.conditioning import Conditioning

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded

if TYPE_CHECKING:  # stages build their previews with this module
    from wsi_synth.training.stages import StageSpec


def preview_sample(
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
    solver: str = "ddim",
    conditioning: Conditioning | None = None,
) -> torch.Tensor:
    """Preview tiles of one crop each, by the same sampler `generate` uses (DDIM, or a distilled student's
    `distilled` solver; one canvas per class map or condition, batched together): a preview shows what generation
    will make of the network."""
    from wsi_synth.models.denoiser import NetworkDenoiser
    from wsi_synth.sampling.canvas import sample_canvases
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import SamplerConfig

    n = len(labels) if labels is not None else len(conditions or [])
    config = SamplerConfig(
        PlannerConfig("fixed-grid", shape[-1], 0),
        steps=steps,
        batch_size=max(n, 1),
        seed=seed,
        solver=solver,
        conditioning=conditioning or Conditioning(),
    )
    maps: list[np.ndarray | None] | None = list(labels) if labels is not None else None
    canvases = sample_canvases(
        NetworkDenoiser(net, stage, device), shape, abar.cpu(), [config] * n, labels=maps, conditions=conditions
    )
    return torch.from_numpy(np.stack(canvases))


def grid(images: torch.Tensor, *, rows: int) -> np.ndarray:
    """(N, 3, H, W) in [−1, 1] → one uint8 (rows·H, cols·W, 3) picture."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    cols = math.ceil(len(x) / rows)
    h, w = x.shape[1:3]
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(x):
        out[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = im
    return out


def write_preview(spec: StageSpec, net, ema, bundle: Bundle, step: int) -> None:
    """previews/STAGE-STEP.png in the bundle: the stage's preview sampled with the EMA weights."""
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
