"""Crop planners: at one reverse step, which d×d crops are evaluated and which crop owns each pixel.

Coordinates are latent pixels of the canvas, `(y, x)` / `(height, width)` throughout this module.

- `shifted-grid`: owned cells of side s = d − 2m on a grid with a fresh random offset every step (one offset
  per step, from (seed, step)); each crop is its cell grown by the context margin m and clamped into the
  canvas, so every owned pixel sees ≥ m pixels of context where the canvas allows. m = 0: plain shifted
  windows (≈1.0× the minimum number of crops); m = d/8: ≈1.8×.
- `fixed-grid`: the same with no offset and m = 0: shows tiling seams (benchmarks and tests only).
- `random-patch` (the paper): inside each fixed planning region (a sampler constant, not the chunk size),
  repeatedly pick a random pixel not yet owned, centre a d×d crop on it (clamped into the canvas), own its
  not-yet-owned pixels within the region: ≈2.2× the minimum number of crops (a crop at a uniformly random
  position around the pixel instead costs ≈2.7×). Seeded by (seed, step, region),
  so the plan of a region does not depend on which chunk plans it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_synth.errors import BadArgumentError
from wsi_synth.options import PLANNERS


@dataclass(frozen=True)
class PlannerConfig:
    """Which crops a step evaluates: the planner, crop size d, context margin and random-patch region."""

    name: str = "shifted-grid"
    crop: int = 64  # d, latent px
    context: int = 8  # m, latent px (shifted-grid)
    region: int = 0  # random-patch planning region; 0 = 16 d

    def validate(self) -> None:
        """Refuse an unknown planner or sizes it cannot use."""
        if self.name not in PLANNERS:
            raise BadArgumentError(f"--planner must be one of {', '.join(PLANNERS)}, got {self.name!r}")
        if not 0 <= self.context < self.crop / 2:
            raise BadArgumentError(
                f"--context must be in [0, d/2) = [0, {self.crop / 2:g}) latent px, got {self.context}"
            )

    @property
    def region_size(self) -> int:
        """Side of a random-patch planning region, latent px."""
        return self.region or 16 * self.crop


@dataclass(frozen=True)
class Plan:
    """Crops (top-left, latent px) and, for the planned window, each pixel's owner crop index.

    Grid plans also say which row and column of cells each window row and column falls in (the owner is then
    `row_cell[:, None] * columns + col_cell[None, :]`), so per-pixel lookups can be built from 1-D arrays.
    """

    crops: np.ndarray  # (N, 2) int64 (y, x)
    owner: np.ndarray  # (h, w) int32
    origin: tuple[int, int]  # the window's top-left in the canvas
    row_cell: np.ndarray | None = None  # (h,) grid plans: cell row of each window row
    col_cell: np.ndarray | None = None  # (w,) grid plans: cell column of each window column


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
    m, s, offset = _grid_geometry(config, seed, step)
    return _grid(canvas, window, d, m, s, offset)


def _grid_geometry(config: PlannerConfig, seed: int, step: int) -> tuple[int, int, tuple[int, int]]:
    """(context m, owned cell side s, offset) of a grid planner at one step."""
    m = config.context if config.name == "shifted-grid" else 0
    s = config.crop - 2 * m
    offset = (
        (0, 0)
        if config.name == "fixed-grid"
        else tuple(int(v) for v in np.random.default_rng([seed, step, 7]).integers(0, s, 2))
    )
    return m, s, offset  # type: ignore[return-value]


def _grid(
    canvas: tuple[int, int], window: tuple[int, int, int, int], d: int, m: int, s: int, offset: tuple[int, int]
) -> Plan:
    y0, y1, x0, x1 = window
    ys = _cell_starts(offset[0], s, y0, y1)
    xs = _cell_starts(offset[1], s, x0, x1)
    crop_y = np.clip(ys - m, 0, canvas[0] - d)
    crop_x = np.clip(xs - m, 0, canvas[1] - d)
    crops = np.stack(np.broadcast_arrays(crop_y[:, None], crop_x[None, :]), -1).reshape(-1, 2).astype(np.int64)
    # Each pixel's cell, row-major over the cells that intersect the window: the same numbering as `crops`.
    cell_row = (np.arange(y0, y1) - ys[0]) // s
    cell_col = (np.arange(x0, x1) - xs[0]) // s
    owner = (cell_row[:, None] * len(xs) + cell_col[None, :]).astype(np.int32)
    return Plan(crops, owner, (y0, x0), cell_row, cell_col)


def _cell_starts(offset: int, s: int, lo: int, hi: int) -> np.ndarray:
    """Starts of the cells [offset + k s, offset + (k+1) s) that intersect [lo, hi)."""
    first = offset + ((lo - offset) // s) * s
    return np.arange(first, hi, s, dtype=np.int64)


def _random_patch(
    config: PlannerConfig, canvas: tuple[int, int], window: tuple[int, int, int, int], *, seed: int, step: int
) -> Plan:
    r = config.region_size
    y0, y1, x0, x1 = window
    if y0 % r or x0 % r or (y1 % r and y1 != canvas[0]) or (x1 % r and x1 != canvas[1]):
        raise BadArgumentError(f"random-patch windows must be whole planning regions of {r} latent px, got {window}")
    crops: list[np.ndarray] = []
    count = 0
    owner = np.empty((y1 - y0, x1 - x0), np.int32)
    for ry in range(y0, y1, r):
        for rx in range(x0, x1, r):
            region = (ry, min(ry + r, canvas[0]), rx, min(rx + r, canvas[1]))
            region_crops, region_owner = plan_region(
                config.crop, canvas, region, np.random.default_rng([seed, step, ry, rx])
            )
            owner[ry - y0 : region[1] - y0, rx - x0 : region[3] - x0] = region_owner + count
            crops.append(region_crops)
            count += len(region_crops)
    return Plan(np.concatenate(crops).astype(np.int64).reshape(-1, 2), owner, (y0, x0))


def plan_region(
    d: int, canvas: tuple[int, int], region: tuple[int, int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's random patches in one planning region: crops (N, 2) in canvas px and the region's owner map.

    Walk a random permutation of the region's pixels; a pixel not covered by an earlier crop becomes the centre
    of the next crop (clamped into the canvas), which owns the pixels of the region it covers first. That walk is
    sequential, but it is resolved here a batch of candidates at a time with array operations: among the next
    unowned pixels in permutation order, a candidate is a centre exactly when no earlier *accepted* candidate's
    crop covers it, decided in a few rounds over the batch. Same plan as the pixel-by-pixel walk, same seeds.
    """
    ry0, ry1, rx0, rx1 = region
    rh, rw = ry1 - ry0, rx1 - rx0
    order = rng.permutation(rh * rw)
    covered = np.zeros(rh * rw, bool)
    covered_2d = covered.reshape(rh, rw)
    centres_y: list[np.ndarray] = []
    centres_x: list[np.ndarray] = []
    pos, batch = 0, 64
    while pos < len(order):
        candidates, pos = _next_uncovered(order, covered, pos, batch)
        if len(candidates) == 0:
            break
        py, px = np.divmod(candidates, rw)
        cy = np.clip(ry0 + py - d // 2, 0, canvas[0] - d) - ry0  # crop top-left, region-relative
        cx = np.clip(rx0 + px - d // 2, 0, canvas[1] - d) - rx0
        accepted = _accept_in_order(py, px, cy, cx, d)
        cy, cx = cy[accepted], cx[accepted]
        for y0, y1, x0, x1 in zip(
            np.maximum(cy, 0).tolist(), (cy + d).tolist(), np.maximum(cx, 0).tolist(), (cx + d).tolist(), strict=True
        ):
            covered_2d[y0:y1, x0:x1] = True
        centres_y.append(cy)
        centres_x.append(cx)
    cy = np.concatenate(centres_y) if centres_y else np.zeros(0, np.int64)
    cx = np.concatenate(centres_x) if centres_x else np.zeros(0, np.int64)
    owner = np.empty((rh, rw), np.int32)
    bounds = zip(
        np.maximum(cy, 0).tolist(), (cy + d).tolist(), np.maximum(cx, 0).tolist(), (cx + d).tolist(), strict=True
    )
    # later crops first: each pixel ends with the first that covers it
    for k, (y0, y1, x0, x1) in reversed(list(enumerate(bounds))):
        owner[y0:y1, x0:x1] = k
    return np.stack([cy + ry0, cx + rx0], 1), owner


def _next_uncovered(order: np.ndarray, covered: np.ndarray, pos: int, count: int) -> tuple[np.ndarray, int]:
    """The next `count` pixels of `order` from `pos` that are not covered, and the position after the last one."""
    span = 4 * count
    while True:
        chunk = order[pos : pos + span]
        free = np.flatnonzero(~covered[chunk])
        if len(free) >= count or pos + span >= len(order):
            free = free[:count]
            return chunk[free], (pos + int(free[-1]) + 1 if len(free) else len(order))
        span *= 4


def _accept_in_order(py: np.ndarray, px: np.ndarray, cy: np.ndarray, cx: np.ndarray, d: int) -> np.ndarray:
    """Which candidates (in order) become centres: those no earlier accepted candidate's crop covers."""
    n = len(py)
    # covers[i, j]: candidate i's crop contains candidate j, for i < j only
    covers = (
        (cy[:, None] <= py[None, :])
        & (py[None, :] < cy[:, None] + d)
        & (cx[:, None] <= px[None, :])
        & (px[None, :] < cx[:, None] + d)
    )
    covers &= np.triu(np.ones((n, n), bool), 1)
    accepted = np.zeros(n, bool)
    undecided = np.ones(n, bool)
    while undecided.any():
        hit = covers[accepted].any(0)
        blocked = covers[undecided].any(0)
        undecided_before = undecided.copy()
        undecided &= ~hit  # covered by an accepted crop: rejected
        newly = undecided & ~blocked  # nothing undecided before it covers it: accepted
        accepted |= newly
        undecided &= ~newly
        if (undecided == undecided_before).all():
            # cannot happen: the first undecided is always decidable
            raise AssertionError("random-patch planning made no progress")
    return accepted


def crops_per_step(config: PlannerConfig, canvas: tuple[int, int], *, seed: int = 0, step: int = 0) -> int:
    """Number of distinct crops one step evaluates on the whole canvas, without a canvas-sized owner map."""
    h, w = canvas
    if config.name != "random-patch":
        _, s, (oy, ox) = _grid_geometry(config, seed, step)
        return len(_cell_starts(oy, s, 0, h)) * len(_cell_starts(ox, s, 0, w))
    r = config.region_size  # regions own disjoint pixels, and each crop belongs to one region
    return sum(
        len(
            plan_region(
                config.crop, canvas, (y, min(y + r, h), x, min(x + r, w)), np.random.default_rng([seed, step, y, x])
            )[0]
        )
        for y in range(0, h, r)
        for x in range(0, w, r)
    )


def estimate_crops_per_step(
    config: PlannerConfig, canvas: tuple[int, int], *, seed: int = 0, step: int = 0, sample_regions: int = 48
) -> tuple[int, bool]:
    """(crops per step, exact?) — exact for the grids; for random-patch, exact up to `sample_regions` planning
    regions, else estimated from a sample of interior, edge and corner regions (each kind planned as it would be).

    Planning every random-patch region of a 100,000 px slide takes tens of seconds (a seeded permutation of
    every pixel); a plan's purpose is the cost, which a sample gives to well under 1%.
    """
    h, w = canvas
    r = config.region_size
    ny, nx = -(-h // r), -(-w // r)
    if config.name != "random-patch" or ny * nx <= sample_regions:
        return crops_per_step(config, canvas, seed=seed, step=step), True
    rng = np.random.default_rng([seed, step, 11])
    kinds: dict[tuple[bool, bool, bool, bool], list[tuple[int, int]]] = {}
    for ry in range(ny):  # group regions by which canvas edges they touch (and so how their crops clamp)
        for rx in range(nx):
            kinds.setdefault((ry == 0, ry == ny - 1, rx == 0, rx == nx - 1), []).append((ry * r, rx * r))
    total = 0.0
    per_kind = max(2, sample_regions // len(kinds))
    for regions in kinds.values():
        chosen = [regions[i] for i in rng.choice(len(regions), min(per_kind, len(regions)), replace=False)]
        counts = [
            len(
                plan_region(
                    config.crop, canvas, (y, min(y + r, h), x, min(x + r, w)), np.random.default_rng([seed, step, y, x])
                )[0]
            )
            for y, x in chosen
        ]
        total += float(np.mean(counts)) * len(regions)
    return int(round(total)), False


def minimum_crops(canvas: tuple[int, int], d: int) -> int:
    """N0 = ⌈H/d⌉·⌈W/d⌉: the fewest d×d crops that can cover the canvas."""
    return -(-canvas[0] // d) * -(-canvas[1] // d)
