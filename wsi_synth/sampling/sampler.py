"""The random-patch sampler: DDIM on a latent canvas, every pixel updated each step from its owner crop.

One reverse step t → t_prev:
1. plan the crops (see `planners`), window by window;
2. evaluate every crop on the state at t (all crops read the same state, so they are batched), once per
   condition present: per class in the crop's label map (pixels of class 0 use the null condition) and the
   null condition when ω > 0; guidance ε̃ = (1+ω)ε(z,c) − ωε(z,∅); conditions composited by the label map;
3. write: each pixel's ε from its owner crop, then one DDIM update of the whole canvas.

Random numbers (initial noise, η noise, plans) are keyed by (seed, step, position) — noise per fixed
block of `NOISE_BLOCK` px — so the result does not depend on window (chunk) size or batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from wsi_synth.diffusion.schedule import ddim_step, ddim_timesteps
from wsi_synth.errors import BadArgumentError
from wsi_synth.sampling.planners import Plan, PlannerConfig, plan_window

#: (latents (B,C,d,d), t (B,), labels (B,), masks (B,1,d,d) or None) → ε (B,C,d,d)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
NOISE_BLOCK = 64


@dataclass(frozen=True)
class SamplerConfig:
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    steps: int = 50
    eta: float = 0.0
    omega: float = 0.0
    batch_size: int = 16
    window: int = 0  # latent px per planning window (chunk); 0 = whole canvas
    seed: int = 0

    def validate(self) -> None:
        self.planner.validate()
        if self.steps < 1 or self.batch_size < 1:
            raise BadArgumentError(f"--steps and --batch-size must be at least 1, got {self.steps}, {self.batch_size}")
        if self.omega < 0 or not 0 <= self.eta <= 1:
            raise BadArgumentError(f"--omega must be ≥ 0 and --eta in [0, 1], got {self.omega}, {self.eta}")


@dataclass
class SampleStats:
    steps: int = 0
    crops: int = 0
    evaluations: int = 0


def block_noise(seed: int, step: int, shape: tuple[int, int, int], window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Standard normal noise for `window` of a (C, H, W) canvas, the same whichever window asks for it."""
    c, h, w = shape
    y0, y1, x0, x1 = window or (0, h, 0, w)
    out = np.empty((c, y1 - y0, x1 - x0), np.float32)
    b = NOISE_BLOCK
    for by in range(y0 // b, -(-y1 // b)):
        for bx in range(x0 // b, -(-x1 // b)):
            block = np.random.default_rng([seed, step + 1, by, bx]).standard_normal((c, b, b), dtype=np.float32)  # step −1: initial noise
            sy0, sy1 = max(by * b, y0), min((by + 1) * b, y1)
            sx0, sx1 = max(bx * b, x0), min((bx + 1) * b, x1)
            out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[:, sy0 - by * b : sy1 - by * b, sx0 - bx * b : sx1 - bx * b]
    return out


def sample(denoiser: Denoiser, shape: tuple[int, int, int], abar: torch.Tensor, config: SamplerConfig, *, labels: np.ndarray | None = None,
           condition: int = 0, start: tuple[int, np.ndarray] | None = None, on_step: Callable[[int, np.ndarray], None] | None = None,
           stats: SampleStats | None = None) -> np.ndarray:
    """Sample a (C, H, W) canvas. `labels` (H, W) uint8 gives per-pixel classes (0 = null condition); without
    it every crop uses `condition`. `start` = (step index, state) resumes; `on_step` sees each new state."""
    config.validate()
    c, h, w = shape
    d = config.planner.crop
    if h < d or w < d:
        raise BadArgumentError(f"canvas {w}×{h} is smaller than the crop {d}: pad it")
    ts = ddim_timesteps(len(abar), config.steps)
    first, x = start if start is not None else (0, block_noise(config.seed, -1, shape))
    stats = stats if stats is not None else SampleStats()
    windows = windows_for(config, (h, w))
    for j in range(first, len(ts)):
        target = np.empty_like(x)
        for window in windows:
            counts = step_window(denoiser, x, target, window, j, ts, abar, config, labels=labels, condition=condition)
            stats.crops += counts["crops"]
            stats.evaluations += counts["evaluations"]
        x = target
        stats.steps += 1
        if on_step is not None:
            on_step(j + 1, x)
    return x


def step_window(denoiser: Denoiser, current, target, window: tuple[int, int, int, int], j: int, ts: list[int], abar: torch.Tensor,
                config: SamplerConfig, *, labels: np.ndarray | None = None, condition: int = 0) -> dict:
    """One reverse step for the pixels of `window`: read it with a one-crop halo from `current` (numpy or zarr),
    evaluate the crops that own its pixels, write the DDIM update of exactly those pixels into `target`.

    Windows are independent, so they may run in any order, on any thread or cluster worker; the result is the
    same (plans and noise are keyed by position, not by window).
    """
    c, h, w = current.shape
    d = config.planner.crop
    y0, y1, x0, x1 = window
    hy0, hy1, hx0, hx1 = max(0, y0 - d), min(h, y1 + d), max(0, x0 - d), min(w, x1 + d)
    halo = np.asarray(current[:, hy0:hy1, hx0:hx1])
    plan = plan_window(config.planner, (h, w), window, seed=config.seed, step=j)
    local = Plan(plan.crops - np.array([hy0, hx0]), plan.owner, (y0 - hy0, x0 - hx0))
    local_labels = labels[hy0:hy1, hx0:hx1] if labels is not None else None
    stats = SampleStats()
    crop_eps = _evaluate(denoiser, halo, ts[j], local, config, labels=local_labels, condition=condition, stats=stats)
    eps = np.empty_like(halo)
    _write_owned(eps, local, crop_eps, d)
    wy, wx = slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0)
    a_t = abar[ts[j]]
    a_prev = abar[ts[j + 1]] if j + 1 < len(ts) else torch.tensor(1.0)
    noise = torch.from_numpy(block_noise(config.seed, j, (c, h, w), window)) if config.eta > 0 else None
    target[:, y0:y1, x0:x1] = ddim_step(torch.from_numpy(halo[:, wy, wx]), torch.from_numpy(eps[:, wy, wx]), a_t, a_prev, eta=config.eta,
                                        noise=noise).numpy()
    return {"crops": stats.crops, "evaluations": stats.evaluations}


def windows_for(config: SamplerConfig, canvas: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The windows (chunks) of a canvas: `config.window` px, rounded to whole random-patch planning regions."""
    window = config.window
    if config.planner.name == "random-patch" and window:
        r = config.planner.region_size
        window = max(r, (window // r) * r)
    return list(_windows(canvas, window))


def _windows(canvas: tuple[int, int], size: int) -> Iterator[tuple[int, int, int, int]]:
    h, w = canvas
    size = size or max(h, w)
    for y in range(0, h, size):
        for x in range(0, w, size):
            yield y, min(y + size, h), x, min(x + size, w)


def _evaluate(denoiser: Denoiser, x: np.ndarray, t: int, plan: Plan, config: SamplerConfig, *, labels: np.ndarray | None, condition: int,
              stats: SampleStats) -> np.ndarray:
    """Guided ε of every crop of a plan: all (crop, condition) pairs batched together."""
    d = config.planner.crop
    jobs: list[tuple[int, int, np.ndarray | None]] = []  # (crop index, condition, class mask or None)
    for i, (cy, cx) in enumerate(plan.crops):
        if labels is None:
            jobs.append((i, condition, None))
            if config.omega > 0:
                jobs.append((i, 0, None))
            continue
        crop_labels = labels[cy : cy + d, cx : cx + d]
        present = [int(v) for v in np.unique(crop_labels) if v != 0]
        jobs.extend((i, cls, crop_labels == cls) for cls in present)
        if config.omega > 0 or len(present) == 0 or (crop_labels == 0).any():
            jobs.append((i, 0, np.zeros((d, d), bool)))
    results: dict[tuple[int, int], np.ndarray] = {}
    for b in range(0, len(jobs), config.batch_size):
        batch = jobs[b : b + config.batch_size]
        z = torch.from_numpy(np.stack([x[:, cy : cy + d, cx : cx + d] for cy, cx in (plan.crops[i] for i, _, _ in batch)]))
        masks = None if labels is None else torch.from_numpy(np.stack([m for _, _, m in batch]).astype(np.float32))[:, None]
        with torch.no_grad():
            out = denoiser(z, torch.full((len(batch),), t, dtype=torch.long), torch.tensor([c for _, c, _ in batch]), masks)
        for (i, cls, _), e in zip(batch, out.float().numpy(), strict=True):
            results[(i, cls)] = e
    stats.crops += len(plan.crops)
    stats.evaluations += len(jobs)
    return np.stack([_composite(i, plan, results, labels, condition, config.omega, d) for i in range(len(plan.crops))]) if len(plan.crops) else np.zeros((0,))


def _composite(i: int, plan: Plan, results: dict, labels: np.ndarray | None, condition: int, omega: float, d: int) -> np.ndarray:
    null = results.get((i, 0))
    if labels is None:
        cond = results[(i, condition)]
        return cond if omega == 0 or condition == 0 else (1 + omega) * cond - omega * null
    cy, cx = plan.crops[i]
    crop_labels = labels[cy : cy + d, cx : cx + d]
    out = np.empty_like(next(v for (j, _), v in results.items() if j == i))
    for cls in np.unique(crop_labels):
        where = crop_labels == cls
        e = null if cls == 0 else results[(i, int(cls))]
        if cls != 0 and omega > 0:
            e = (1 + omega) * e - omega * null
        out[:, where] = e[:, where]
    return out


def _write_owned(eps: np.ndarray, plan: Plan, crop_eps: np.ndarray, d: int) -> None:
    """eps[:, window] ← each pixel's value from its owner crop (one gather, no loop over crops)."""
    oy, ox = plan.origin
    h, w = plan.owner.shape
    yy, xx = np.mgrid[0:h, 0:w]
    owner = plan.owner
    local_y = yy + oy - plan.crops[owner, 0]
    local_x = xx + ox - plan.crops[owner, 1]
    eps[:, oy : oy + h, ox : ox + w] = np.moveaxis(crop_eps[owner, :, local_y, local_x], -1, 0)
