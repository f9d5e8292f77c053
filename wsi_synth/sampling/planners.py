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

PLANNERS = ("shifted-grid", "random-patch", "fixed-grid")


@dataclass(frozen=True)
class PlannerConfig:
    name: str = "shifted-grid"
    crop: int = 64  # d, latent px
    context: int = 8  # m, latent px (shifted-grid)
    region: int = 0  # random-patch planning region; 0 = 16 d

    def validate(self) -> None:
        if self.name not in PLANNERS:
            raise BadArgumentError(f"--planner must be one of {', '.join(PLANNERS)}, got {self.name!r}")
        if not 0 <= self.context < self.crop / 2:
            raise BadArgumentError(f"--context must be in [0, d/2) = [0, {self.crop / 2:g}) latent px, got {self.context}")

    @property
    def region_size(self) -> int:
        return self.region or 16 * self.crop


@dataclass(frozen=True)
class Plan:
    """Crops (top-left, latent px) and, for the planned window, each pixel's owner crop index."""

    crops: np.ndarray  # (N, 2) int64 (y, x)
    owner: np.ndarray  # (h, w) int32
    origin: tuple[int, int]  # the window's top-left in the canvas


def plan_window(config: PlannerConfig, canvas: tuple[int, int], window: tuple[int, int, int, int], *, seed: int, step: int) -> Plan:
    """The crops that own the pixels of `window` = (y0, y1, x0, x1), and the owner map of that window."""
    h, w = canvas
    d = config.crop
    if h < d or w < d:
        raise BadArgumentError(f"canvas {w}×{h} latent px is smaller than one crop ({d}): pad it first")
    if config.name == "random-patch":
        return _random_patch(config, canvas, window, seed=seed, step=step)
    m = config.context if config.name == "shifted-grid" else 0
    s = d - 2 * m
    offset = (0, 0) if config.name == "fixed-grid" else tuple(int(v) for v in np.random.default_rng([seed, step, 7]).integers(0, s, 2))
    return _grid(canvas, window, d, m, s, offset)


def _grid(canvas: tuple[int, int], window: tuple[int, int, int, int], d: int, m: int, s: int, offset: tuple[int, int]) -> Plan:
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


def _random_patch(config: PlannerConfig, canvas: tuple[int, int], window: tuple[int, int, int, int], *, seed: int, step: int) -> Plan:
    r = config.region_size
    y0, y1, x0, x1 = window
    if y0 % r or x0 % r or (y1 % r and y1 != canvas[0]) or (x1 % r and x1 != canvas[1]):
        raise BadArgumentError(f"random-patch windows must be whole planning regions of {r} latent px, got {window}")
    crops: list[tuple[int, int]] = []
    owner = np.empty((y1 - y0, x1 - x0), np.int32)
    for ry in range(y0, y1, r):
        for rx in range(x0, x1, r):
            region = (ry, min(ry + r, canvas[0]), rx, min(rx + r, canvas[1]))
            region_crops, region_owner = _plan_region(config.crop, canvas, region, np.random.default_rng([seed, step, ry, rx]))
            owner[ry - y0 : region[1] - y0, rx - x0 : region[3] - x0] = region_owner + len(crops)
            crops.extend(region_crops)
    return Plan(np.array(crops, np.int64).reshape(-1, 2), owner, (y0, x0))


def _plan_region(d: int, canvas: tuple[int, int], region: tuple[int, int, int, int], rng: np.random.Generator) -> tuple[list, np.ndarray]:
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


def crops_per_step(config: PlannerConfig, canvas: tuple[int, int], *, seed: int = 0, step: int = 0) -> int:
    """Number of distinct crops one step evaluates on the whole canvas, without a canvas-sized owner map."""
    h, w = canvas
    if config.name != "random-patch":
        m = config.context if config.name == "shifted-grid" else 0
        s = config.crop - 2 * m
        oy, ox = (0, 0) if config.name == "fixed-grid" else np.random.default_rng([seed, step, 7]).integers(0, s, 2)
        return len(_cell_starts(int(oy), s, 0, h)) * len(_cell_starts(int(ox), s, 0, w))
    r = config.region_size  # regions own disjoint pixels, and each crop belongs to one region
    return sum(len(plan_window(config, canvas, (y, min(y + r, h), x, min(x + r, w)), seed=seed, step=step).crops)
               for y in range(0, h, r) for x in range(0, w, r))


def minimum_crops(canvas: tuple[int, int], d: int) -> int:
    """N0 = ⌈H/d⌉·⌈W/d⌉: the fewest d×d crops that can cover the canvas."""
    return -(-canvas[0] // d) * -(-canvas[1] // d)
