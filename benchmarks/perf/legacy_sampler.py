"""Today's (v0.1.0) sampler and planners, frozen as the reference for bit-identity tests and the host-overhead benchmark.

Not used by the library. `tests/test_sampling_vectorised.py` checks that the vectorised sampler gives bit-identical
canvases for the same batch shapes, and `benchmarks/perf/bench_host.py` measures the host time of both in one run.
"""

# ruff: noqa
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wsi_synth.diffusion.schedule import ddim_step, ddim_timesteps
from wsi_synth.errors import BadArgumentError
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SampleStats

NOISE_BLOCK = 64


def block_noise(seed, step, shape, window=None):
    from wsi_synth.sampling.sampler import block_noise as current

    return current(seed, step, shape, window)


def windows_for(config, canvas):
    window = config.window
    if config.planner.name == "random-patch" and window:
        r = config.planner.region_size
        window = max(r, (window // r) * r)
    h, w = canvas
    size = window or max(h, w)
    return [(y, min(y + size, h), x, min(x + size, w)) for y in range(0, h, size) for x in range(0, w, size)]


@dataclass(frozen=True)
class Plan:
    """Crops (top-left, latent px) and, for the planned window, each pixel's owner crop index."""

    crops: np.ndarray  # (N, 2) int64 (y, x)
    owner: np.ndarray  # (h, w) int32
    origin: tuple[int, int]  # the window's top-left in the canvas


def plan_window(
    config: PlannerConfig, canvas: tuple[int, int], window: tuple[int, int, int, int], *, seed: int, step: int
) -> Plan:
    """The crops that own the pixels of `window` = (y0, y1, x0, x1), and the owner map of that window."""
    h, w = canvas
    d = config.crop
    if h < d or w < d:
        raise BadArgumentError(f"canvas {w}×{h} latent px is smaller than one crop ({d}): pad it first")
    if config.name == "random-patch":
        return _random_patch(config, canvas, window, seed=seed, step=step)
    m = config.context if config.name == "shifted-grid" else 0
    s = d - 2 * m
    offset = (
        (0, 0)
        if config.name == "fixed-grid"
        else tuple(int(v) for v in np.random.default_rng([seed, step, 7]).integers(0, s, 2))
    )
    return _grid(canvas, window, d, m, s, offset)


def _grid(
    canvas: tuple[int, int], window: tuple[int, int, int, int], d: int, m: int, s: int, offset: tuple[int, int]
) -> Plan:
    y0, y1, x0, x1 = window
    ys = _cell_starts(offset[0], s, y0, y1)
    xs = _cell_starts(offset[1], s, x0, x1)
    crops, owner = [], np.empty((y1 - y0, x1 - x0), np.int32)
    for cy in ys:
        for cx in xs:
            crops.append((min(max(cy - m, 0), canvas[0] - d), min(max(cx - m, 0), canvas[1] - d)))
            oy0, oy1 = max(cy, y0), min(cy + s, y1)
            ox0, ox1 = max(cx, x0), min(cx + s, x1)
            owner[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = len(crops) - 1
    return Plan(np.array(crops, np.int64).reshape(-1, 2), owner, (y0, x0))


def _cell_starts(offset: int, s: int, lo: int, hi: int) -> list[int]:
    """Starts of the cells [offset + k s, offset + (k+1) s) that intersect [lo, hi)."""
    first = offset + ((lo - offset) // s) * s
    return list(range(first, hi, s))


def _random_patch(
    config: PlannerConfig, canvas: tuple[int, int], window: tuple[int, int, int, int], *, seed: int, step: int
) -> Plan:
    r = config.region_size
    y0, y1, x0, x1 = window
    if y0 % r or x0 % r or (y1 % r and y1 != canvas[0]) or (x1 % r and x1 != canvas[1]):
        raise BadArgumentError(f"random-patch windows must be whole planning regions of {r} latent px, got {window}")
    crops: list[tuple[int, int]] = []
    owner = np.empty((y1 - y0, x1 - x0), np.int32)
    for ry in range(y0, y1, r):
        for rx in range(x0, x1, r):
            region = (ry, min(ry + r, canvas[0]), rx, min(rx + r, canvas[1]))
            region_crops, region_owner = _plan_region(
                config.crop, canvas, region, np.random.default_rng([seed, step, ry, rx])
            )
            owner[ry - y0 : region[1] - y0, rx - x0 : region[3] - x0] = region_owner + len(crops)
            crops.extend(region_crops)
    return Plan(np.array(crops, np.int64).reshape(-1, 2), owner, (y0, x0))


def _plan_region(
    d: int, canvas: tuple[int, int], region: tuple[int, int, int, int], rng: np.random.Generator
) -> tuple[list, np.ndarray]:
    ry0, ry1, rx0, rx1 = region
    rh, rw = ry1 - ry0, rx1 - rx0
    owner = np.full((rh, rw), -1, np.int32)
    crops: list[tuple[int, int]] = []
    # Walking a random permutation and skipping owned pixels picks a uniformly random unowned pixel each time.
    for flat in rng.permutation(rh * rw):
        py, px = divmod(int(flat), rw)
        if owner[py, px] >= 0:
            continue
        cy = min(max(ry0 + py - d // 2, 0), canvas[0] - d)  # centred on the pixel, clamped into the canvas
        cx = min(max(rx0 + px - d // 2, 0), canvas[1] - d)
        sy0, sy1 = max(cy - ry0, 0), min(cy + d - ry0, rh)
        sx0, sx1 = max(cx - rx0, 0), min(cx + d - rx0, rw)
        view = owner[sy0:sy1, sx0:sx1]
        view[view < 0] = len(crops)
        crops.append((cy, cx))
    return crops, owner


def sample(
    denoiser: Denoiser,
    shape: tuple[int, int, int],
    abar: torch.Tensor,
    config: SamplerConfig,
    *,
    labels: np.ndarray | None = None,
    condition: int = 0,
    start: tuple[int, np.ndarray] | None = None,
    on_step: Callable[[int, np.ndarray], None] | None = None,
    stats: SampleStats | None = None,
) -> np.ndarray:
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


def step_window(
    denoiser: Denoiser,
    current,
    target,
    window: tuple[int, int, int, int],
    j: int,
    ts: list[int],
    abar: torch.Tensor,
    config: SamplerConfig,
    *,
    labels: np.ndarray | None = None,
    condition: int = 0,
) -> dict:
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
    target[:, y0:y1, x0:x1] = ddim_step(
        torch.from_numpy(halo[:, wy, wx]), torch.from_numpy(eps[:, wy, wx]), a_t, a_prev, eta=config.eta, noise=noise
    ).numpy()
    return {"crops": stats.crops, "evaluations": stats.evaluations}


def _evaluate(
    denoiser: Denoiser,
    x: np.ndarray,
    t: int,
    plan: Plan,
    config: SamplerConfig,
    *,
    labels: np.ndarray | None,
    condition: int,
    stats: SampleStats,
) -> np.ndarray:
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
        z = torch.from_numpy(
            np.stack([x[:, cy : cy + d, cx : cx + d] for cy, cx in (plan.crops[i] for i, _, _ in batch)])
        )
        masks = (
            None if labels is None else torch.from_numpy(np.stack([m for _, _, m in batch]).astype(np.float32))[:, None]
        )
        with torch.no_grad():
            out = denoiser(
                z, torch.full((len(batch),), t, dtype=torch.long), torch.tensor([c for _, c, _ in batch]), masks
            )
        for (i, cls, _), e in zip(batch, out.float().numpy(), strict=True):
            results[(i, cls)] = e
    stats.crops += len(plan.crops)
    stats.evaluations += len(jobs)
    return (
        np.stack([_composite(i, plan, results, labels, condition, config.omega, d) for i in range(len(plan.crops))])
        if len(plan.crops)
        else np.zeros((0,))
    )


def _composite(
    i: int, plan: Plan, results: dict, labels: np.ndarray | None, condition: int, omega: float, d: int
) -> np.ndarray:
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
