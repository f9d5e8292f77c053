"""One reverse step of the random-patch sampler on a window of a latent canvas, at array speed.

One reverse step t → t_prev for the pixels of a window:
1. plan the crops that own them (see `planners`) and read the window plus a one-crop halo;
2. list the evaluations as arrays: per crop, one per class present in its label map (pixels of class 0 use the
   null condition) and the null condition when ω > 0 — all crops read the same state, so they are batched;
3. gather each owned pixel's ε from its owner crop's evaluation for the pixel's class (an index, not a
   search), with guidance ε̃ = (1+ω)ε(z,c) − ωε(z,∅);
4. apply the solver's update (`diffusion.solvers`) to exactly those pixels.

Random numbers (initial noise, η noise, plans) are keyed by (seed, step, position) — noise per fixed block of
`NOISE_BLOCK` px — so the result does not depend on window (chunk) size or batch size. The loop over steps,
the state buffers and resume live in `canvas`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from wsi_synth.concurrency import prefetch
from wsi_synth.diffusion.solvers import Solver
from wsi_synth.models.conditioning import Conditioning
from wsi_synth.options import DEFAULT_SOLVER, DEFAULT_STEPS, check_sampling
from wsi_synth.sampling.planners import Plan, PlannerConfig, plan_window

#: (latents (B,C,d,d), t (B,), labels (B,), masks (B,1,d,d) or None) → ε (B,C,d,d)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
NOISE_BLOCK = 64


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the sampler: planner, steps, solver, guidance, batch, window and seed."""

    planner: PlannerConfig = field(default_factory=PlannerConfig)
    steps: int = DEFAULT_STEPS
    eta: float = 0.0
    omega: float = 0.0
    batch_size: int = 16
    window: int = 0  # latent px per planning window (chunk); 0 = whole canvas
    seed: int = 0
    solver: str = DEFAULT_SOLVER
    #: How the image denoiser takes the class map (models.conditioning); the layout and mask stages take none.
    conditioning: Conditioning = field(default_factory=Conditioning)

    def validate(self) -> None:
        """Refuse settings the sampler cannot use, naming the option."""
        self.planner.validate()
        self.conditioning.validate()
        check_sampling(self)


@dataclass
class SampleStats:
    """Counts of a sampling run: steps, crops and denoiser evaluations."""

    steps: int = 0
    crops: int = 0
    evaluations: int = 0


@dataclass
class Buffers:
    """One canvas state: the latents x_t and, for multistep solvers, the previous step's x̂₀ (numpy or zarr)."""

    x: Any
    x0: Any = None


@dataclass(frozen=True)
class Jobs:
    """The denoiser evaluations of one window, as arrays (in the order they are batched)."""

    crop: np.ndarray  # (n,) crop index of each evaluation
    condition: np.ndarray  # (n,) int64 class of each evaluation (0 = null)
    index: np.ndarray  # (N crops, K) evaluation of (crop, class), −1 where none; column 0 = the null pass
    guide: np.ndarray | None = None  # (N crops,) the null pass for guidance, where it is not column 0 (spatial)

    def __len__(self) -> int:
        return len(self.crop)


def block_noise(
    seed: int,
    step: int,
    shape: tuple[int, int, int],
    window: tuple[int, int, int, int] | None = None,
    *,
    stream: int = 0,
) -> np.ndarray:
    """Standard normal noise for `window` of a (C, H, W) canvas, the same whichever window asks for it. `stream` > 0
    draws an independent sequence (e.g. the forward noise of an inpainting's known pixels)."""
    c, h, w = shape
    y0, y1, x0, x1 = window or (0, h, 0, w)
    out = np.empty((c, y1 - y0, x1 - x0), np.float32)
    b = NOISE_BLOCK
    for by in range(y0 // b, -(-y1 // b)):
        for bx in range(x0 // b, -(-x1 // b)):
            key = [seed, step + 1, by, bx] + ([stream] if stream else [])  # step −1: initial noise
            block = np.random.default_rng(key).standard_normal((c, b, b), dtype=np.float32)
            sy0, sy1 = max(by * b, y0), min((by + 1) * b, y1)
            sx0, sx1 = max(bx * b, x0), min((bx + 1) * b, x1)
            out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[
                :, sy0 - by * b : sy1 - by * b, sx0 - bx * b : sx1 - bx * b
            ]
    return out


def step_window(
    denoiser: Denoiser,
    current: Buffers,
    target: Buffers,
    window: tuple[int, int, int, int],
    j: int,
    solver: Solver,
    config: SamplerConfig,
    *,
    labels: np.ndarray | None = None,
    condition: int = 0,
    active: np.ndarray | None = None,
) -> dict:
    """One reverse step for the pixels of `window`: read it with a one-crop halo from `current` (numpy or zarr),
    evaluate the crops that own its pixels, write the solver's update of exactly those pixels into `target`.

    `active` (H, W) bool, when given, marks the pixels whose update matters (inpainting: the rest is replaced after
    the step): crops that own none of them are not evaluated, and the others' pixels get an update from any ε.

    Windows are independent, so they may run in any order, on any thread or cluster worker; the result is the
    same (plans and noise are keyed by position, not by window).
    """
    work = _prepare_window(current, window, j, config, labels, condition, active)
    (results,) = evaluate_parts(
        denoiser,
        [work.part],
        t=solver.timesteps[j],
        batch_size=config.batch_size,
        d=config.planner.crop,
        spatial_classes=config.conditioning.spatial_classes,
    )
    return _finish_window(work, results, current, target, j, solver, config)


def step_canvases(
    denoiser: Denoiser,
    canvases: list[tuple[Buffers, Buffers]],
    j: int,
    solver: Solver,
    configs: list[SamplerConfig],
    *,
    labels: list[np.ndarray | None],
    conditions: list[int],
) -> list[dict]:
    """One reverse step of several whole canvases (many small slides or tiles) whose crops share the denoiser's
    batches, so a batch is filled even when one canvas has fewer crops than it holds. Each canvas follows its own
    config (seed): its result is the one `step_window` gives it alone, up to the batched kernels' rounding."""
    works = [
        _prepare_window(current, (0, current.x.shape[1], 0, current.x.shape[2]), j, config, lab, cond)
        for (current, _), config, lab, cond in zip(canvases, configs, labels, conditions, strict=True)
    ]
    results = evaluate_parts(
        denoiser,
        [w.part for w in works],
        t=solver.timesteps[j],
        batch_size=configs[0].batch_size,
        d=configs[0].planner.crop,
        spatial_classes=configs[0].conditioning.spatial_classes,
    )
    return [
        _finish_window(w, r, current, target, j, solver, config)
        for w, r, (current, target), config in zip(works, results, canvases, configs, strict=True)
    ]


@dataclass
class _Window:
    """A window's step between planning and the solver update: its halo, plan and evaluations."""

    window: tuple[int, int, int, int]
    origin: tuple[int, int]  # the window's top-left in the halo
    plan: Plan
    labels: np.ndarray | None  # the halo's class map
    condition: int
    part: tuple  # (halo, crops, crop labels, jobs): what `evaluate_parts` needs
    evaluated_crops: int  # the distinct crops evaluated (fewer than planned: copies share one; `active` drops some)


def _prepare_window(
    current: Buffers,
    window: tuple[int, int, int, int],
    j: int,
    config: SamplerConfig,
    labels: np.ndarray | None,
    condition: int,
    active: np.ndarray | None = None,
) -> _Window:
    _, h, w = current.x.shape
    d = config.planner.crop
    y0, y1, x0, x1 = window
    hy0, hy1, hx0, hx1 = max(0, y0 - d), min(h, y1 + d), max(0, x0 - d), min(w, x1 + d)
    halo = np.asarray(current.x[:, hy0:hy1, hx0:hx1])
    plan = plan_window(config.planner, (h, w), window, seed=config.seed, step=j)
    crops = plan.crops - np.array([hy0, hx0])
    local_labels = labels[hy0:hy1, hx0:hx1] if labels is not None else None
    crop_labels = crop_views(local_labels, crops, d) if local_labels is not None else None
    jobs = plan_jobs(
        crop_labels,
        len(crops),
        omega=config.omega,
        condition=condition,
        spatial=config.conditioning.spatial,
        empty_map=config.conditioning.empty_map,
    )
    if active is not None:
        jobs = keep_crops(jobs, np.unique(plan.owner[active[y0:y1, x0:x1]]))
    jobs = share_repeated_crops(jobs, crops)
    evaluated = len(np.unique(jobs.crop))  # copies now all point at their first crop: distinct crops = distinct indices
    return _Window(
        window, (y0 - hy0, x0 - hx0), plan, local_labels, condition, (halo, crops, crop_labels, jobs), evaluated
    )


def _finish_window(
    work: _Window, results: np.ndarray, current: Buffers, target: Buffers, j: int, solver: Solver, config: SamplerConfig
) -> dict:
    c, h, w = current.x.shape
    y0, y1, x0, x1 = work.window
    halo, crops, _, jobs = work.part
    if len(jobs) == 0:  # no pixel of the window is active: it keeps its state
        oy, ox = work.origin
        target.x[:, y0:y1, x0:x1] = halo[:, oy : oy + y1 - y0, ox : ox + x1 - x0]
        if solver.keeps_x0:
            target.x0[:, y0:y1, x0:x1] = current.x0[:, y0:y1, x0:x1]
        return {"crops": 0, "evaluations": 0}
    eps = owned_eps(
        results, jobs, work.plan, crops, work.labels, work.origin, omega=config.omega, condition=work.condition
    )
    oy, ox = work.origin
    x_window = halo[:, oy : oy + y1 - y0, ox : ox + x1 - x0]
    x0_prev = np.asarray(current.x0[:, y0:y1, x0:x1]) if solver.keeps_x0 and j > 0 else None
    fresh = config.eta > 0 or (solver.stochastic and j + 1 < len(solver))
    noise = block_noise(config.seed, j, (c, h, w), work.window) if fresh else None
    x_next, x0_next = solver.update(j, x_window, eps, x0_prev, eta=config.eta, noise=noise)
    target.x[:, y0:y1, x0:x1] = x_next
    if solver.keeps_x0:
        target.x0[:, y0:y1, x0:x1] = x0_next
    return {"crops": work.evaluated_crops, "evaluations": len(jobs)}


def crop_views(labels: np.ndarray, crops: np.ndarray, d: int) -> np.ndarray:
    """(N, d, d) copies of the d×d label crops at `crops` (top-left y, x), in one gather."""
    return sliding_window_view(labels, (d, d))[crops[:, 0], crops[:, 1]]


def plan_jobs(
    crop_labels: np.ndarray | None,
    n_crops: int,
    *,
    omega: float,
    condition: int,
    spatial: bool = False,
    empty_map: str = "map",
) -> Jobs:
    """Evaluations per crop, crop by crop: each class present (ascending), then the null pass where needed
    (ω > 0, unknown pixels in the crop, or no class at all). Without labels: `condition`, then null if ω > 0.
    `spatial`: one pass per crop with its class map (condition 1) for every pixel, then the null pass where ω > 0
    guides it; a crop that holds no class takes condition 1 too, or with `empty_map="null"` only the null pass."""
    if spatial and crop_labels is not None:
        return _spatial_jobs(crop_labels, n_crops, omega=omega, empty_map=empty_map)
    if crop_labels is None:
        conditions = [condition, 0] if omega > 0 and condition != 0 else [condition]
        per_crop = len(conditions)
        index = np.empty((n_crops, 2), np.int64)
        index[:, 1] = np.arange(n_crops) * per_crop  # column 1: the condition's evaluation
        # column 0: the null pass
        index[:, 0] = index[:, 1] + 1 if per_crop == 2 else (index[:, 1] if condition == 0 else -1)
        return Jobs(np.repeat(np.arange(n_crops), per_crop), np.tile(np.array(conditions, np.int64), n_crops), index)
    k = int(crop_labels.max(initial=0)) + 1
    flat = crop_labels.reshape(n_crops, -1)
    if k <= 16:
        present = np.stack([(flat == c).any(1) for c in range(k)], 1)
    else:
        offsets = flat.astype(np.int64) + k * np.arange(n_crops)[:, None]
        present = np.bincount(offsets.ravel(), minlength=n_crops * k).reshape(n_crops, k) > 0
    need_null = present[:, 0] | ~present[:, 1:].any(1) | (omega > 0)
    wanted = np.concatenate([present[:, 1:], need_null[:, None]], 1)  # columns: classes 1..K−1, then null
    crop, column = np.nonzero(wanted)
    cls = np.where(column == k - 1, 0, column + 1).astype(np.int64)
    index = np.full((n_crops, k), -1, np.int64)
    index[crop, cls] = np.arange(len(crop))
    return Jobs(crop, cls, index)


def keep_crops(jobs: Jobs, crops: np.ndarray) -> Jobs:
    """Only the evaluations of `crops`; every (crop, class) of the others points at evaluation 0, so their pixels
    get some ε and an update that the caller discards (with no crop kept there are no evaluations at all)."""
    wanted = np.zeros(len(jobs.index), bool)
    wanted[crops] = True
    keep = wanted[jobs.crop]
    renumber = np.cumsum(keep) - 1

    def remap(index: np.ndarray) -> np.ndarray:
        out = np.where(index >= 0, renumber[np.maximum(index, 0)], -1)
        return np.where(wanted[:, None] if index.ndim == 2 else wanted, out, np.where(out >= 0, 0, -1))

    return Jobs(
        jobs.crop[keep], jobs.condition[keep], remap(jobs.index), None if jobs.guide is None else remap(jobs.guide)
    )


def share_repeated_crops(jobs: Jobs, crops: np.ndarray) -> Jobs:
    """One evaluation per distinct (crop position, condition). Planners clamp crops into the canvas, so a canvas of
    one crop plans 4–6 copies of it (every `generate --count` tile) and canvas edges repeat crops; copies see the
    same pixels and map, so they share one ε and the output is unchanged."""
    if len(jobs) == 0:
        return jobs
    y, x = crops[jobs.crop, 0].astype(np.int64), crops[jobs.crop, 1].astype(np.int64)
    # one int per (y, x, condition)
    key = (y * (int(x.max()) + 1) + x) * (int(jobs.condition.max()) + 1) + jobs.condition
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    if len(first) == len(key):
        return jobs
    kept = np.sort(first)
    number = np.full(len(key), -1, np.int64)
    number[kept] = np.arange(len(kept))
    shared = number[first[group.ravel()]]  # each evaluation's replacement: its group's first, renumbered

    def remap(index: np.ndarray) -> np.ndarray:
        return np.where(index >= 0, shared[np.maximum(index, 0)], -1)

    return Jobs(
        jobs.crop[kept], jobs.condition[kept], remap(jobs.index), None if jobs.guide is None else remap(jobs.guide)
    )


def _spatial_jobs(crop_labels: np.ndarray, n_crops: int, *, omega: float, empty_map: str) -> Jobs:
    # a crop is drawn with the map embedding (condition 1), or, for bundles that learnt an empty map as null, with
    # the null one when it holds no class; guidance acts on class pixels only, so only crops with a class need it
    has_class = (crop_labels.reshape(n_crops, -1) > 0).any(1)
    mapped = has_class if empty_map == "null" else np.ones(n_crops, bool)
    guided = has_class & (omega > 0)
    crop = np.concatenate([np.arange(n_crops), np.nonzero(guided)[0]])
    order = np.argsort(crop, kind="stable")  # crop by crop: the map pass, then its null pass
    crop = crop[order]
    condition = np.concatenate([mapped.astype(np.int64), np.zeros(int(guided.sum()), np.int64)])[order]
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    first = position[:n_crops]
    guide = first.copy()
    guide[guided] = position[n_crops:]
    k = int(crop_labels.max(initial=0)) + 1
    return Jobs(crop, condition, np.repeat(first[:, None], k, 1), guide)


def evaluate(
    denoiser: Denoiser,
    halo: np.ndarray,
    crops: np.ndarray,
    crop_labels: np.ndarray | None,
    jobs: Jobs,
    *,
    t: int,
    batch_size: int,
    d: int,
) -> np.ndarray:
    """ε of every evaluation of one window, (n, C, d, d) float32 (see `evaluate_parts`)."""
    return evaluate_parts(denoiser, [(halo, crops, crop_labels, jobs)], t=t, batch_size=batch_size, d=d)[0]


def evaluate_parts(
    denoiser: Denoiser, parts: list[tuple], *, t: int, batch_size: int, d: int, spatial_classes: int = 0
) -> list[np.ndarray]:
    """ε of every evaluation of each part — a window's (halo, crops, crop labels, jobs) — as (n, C, d, d) float32,
    the parts' evaluations batched together in order. When the denoiser runs on a GPU (it asks for `pin_memory`),
    batch k+1 is gathered and pinned in a background thread while the GPU runs batch k; on a CPU the denoiser's
    own threads use every core, and a gathering thread beside them made sampling 2.5× slower (measured)."""
    channels = parts[0][0].shape[0]
    outs = [np.empty((len(jobs), channels, d, d), np.float32) for _, _, _, jobs in parts]
    # [y, x] → (C, d, d)
    windows = [sliding_window_view(halo, (d, d), axis=(1, 2)).transpose(1, 2, 0, 3, 4) for halo, _, _, _ in parts]
    # Every evaluation as (part, index in the part), in order; a batch takes the next `batch_size` of them.
    part_of = np.concatenate([np.full(len(jobs), i) for i, (_, _, _, jobs) in enumerate(parts)]).astype(np.int64)
    local = np.concatenate([np.arange(len(jobs)) for _, _, _, jobs in parts]).astype(np.int64)
    overlap = bool(getattr(denoiser, "pin_memory", False))
    pin = overlap and torch.cuda.is_available()

    def gather(i: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        _, crops, crop_labels, jobs = parts[i]
        which = jobs.crop[rows]
        cls = jobs.condition[rows]
        masks = None
        # the crop's class map as one-hot channels 1…K−1; zeros for the null pass
        if crop_labels is not None and spatial_classes:
            one_hot = (
                crop_labels[which][:, None]
                == np.arange(1, spatial_classes, dtype=crop_labels.dtype)[None, :, None, None]
            )
            masks = (one_hot & (cls != 0)[:, None, None, None]).astype(np.float32)
        # the class's binary mask; all zeros for the null pass (255 is never a class here)
        elif crop_labels is not None:
            wanted = np.where(cls != 0, cls, 255).astype(crop_labels.dtype)[:, None, None]
            masks = np.equal(crop_labels[which], wanted).astype(np.float32)[:, None]
        return windows[i][crops[which, 0], crops[which, 1]], cls, masks

    def batches() -> Iterator[tuple[int, tuple]]:
        for b0 in range(0, len(part_of), batch_size):
            pieces = [
                gather(int(i), local[b0 : b0 + batch_size][part_of[b0 : b0 + batch_size] == i])
                for i in np.unique(part_of[b0 : b0 + batch_size])
            ]
            z = torch.from_numpy(np.concatenate([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0])
            cls = np.concatenate([p[1] for p in pieces])
            masks = None if pieces[0][2] is None else torch.from_numpy(np.concatenate([p[2] for p in pieces]))
            args = (z, torch.full((len(cls),), t, dtype=torch.long), torch.from_numpy(cls), masks)
            yield b0, tuple(a.pin_memory() if pin and a is not None else a for a in args)

    with torch.no_grad():
        for b0, args in prefetch(batches()) if overlap and len(part_of) > batch_size else batches():
            e = denoiser(*args).float().numpy()
            rows = slice(b0, b0 + len(e))
            for i in np.unique(part_of[rows]):
                take = part_of[rows] == i
                outs[i][local[rows][take]] = e[take]
    return outs


def owned_eps(
    results: np.ndarray,
    jobs: Jobs,
    plan: Plan,
    crops: np.ndarray,
    labels: np.ndarray | None,
    origin: tuple[int, int],
    *,
    omega: float,
    condition: int,
) -> np.ndarray:
    """(C, h, w) guided ε of the planned window's pixels, each from its owner crop's evaluation for its class:
    one flat index per pixel (evaluation, row and column in the crop), then one `take` per channel."""
    oy, ox = origin
    h, w = plan.owner.shape
    _, channels, d, _ = results.shape
    itype = np.int32 if results.size < 2**31 else np.int64
    owner = plan.owner
    # grid plans: a pixel's offset depends on its row and column
    if plan.row_cell is not None and plan.col_cell is not None:
        columns = int(plan.col_cell.max()) + 1
        local_y = (np.arange(oy, oy + h) - crops[plan.row_cell * columns, 0]).astype(itype)
        local_x = (np.arange(ox, ox + w) - crops[plan.col_cell, 1]).astype(itype)
        offset = local_y[:, None] * d + local_x[None, :]
    else:
        offset = (
            (np.arange(oy, oy + h)[:, None] - crops[owner, 0]) * d + (np.arange(ox, ox + w)[None, :] - crops[owner, 1])
        ).astype(itype)
    flat_results = results.reshape(-1)
    pixel_labels = labels[oy : oy + h, ox : ox + w] if labels is not None else None

    def gather(column: np.ndarray | None) -> np.ndarray:
        """ε of each pixel's evaluation `column[owner]`, or `index[owner, label]` when column is None."""
        job = (
            np.take(jobs.index.ravel(), owner * jobs.index.shape[1] + pixel_labels)
            if column is None
            else np.take(column, owner)
        )
        flat = job.astype(itype) * (channels * d * d) + offset
        out = np.empty((channels, h, w), np.float32)
        for c in range(channels):
            np.take(flat_results, flat, out=out[c])
            flat += d * d
        return out

    if labels is None:
        eps = gather(jobs.index[:, 1])
        if omega > 0 and condition != 0:
            eps = (1 + omega) * eps - omega * gather(jobs.index[:, 0])
        return eps
    eps = gather(None)
    if omega > 0:
        guided = (1 + omega) * eps - omega * gather(jobs.guide if jobs.guide is not None else jobs.index[:, 0])
        eps = np.where(pixel_labels != 0, guided, eps)
    return eps


def windows_for(config: SamplerConfig, canvas: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The windows (chunks) of a canvas: `config.window` px, rounded to whole random-patch planning regions."""
    window = config.window
    if config.planner.name == "random-patch" and window:
        r = config.planner.region_size
        window = max(r, (window // r) * r)
    h, w = canvas
    size = window or max(h, w)
    return [(y, min(y + size, h), x, min(x + size, w)) for y in range(0, h, size) for x in range(0, w, size)]
