"""The sampling loop over a canvas, window by window: in memory or in a zarr work store, on any scheduler.

- State: two buffer sets (current, next), each the latents x_t and, for multistep solvers, the previous x̂₀ —
  numpy arrays, or zarr arrays in a work folder when the canvas should not live in memory (`out_of_core`).
  The zarr arrays are sharded on the windows with inner chunks of up to 256 px and no compression (noise does not
  compress), so a task's halo read touches a few inner chunks of each neighbour rather than eight whole windows.
  Each step reads `current` (a window plus a one-crop halo per task) and writes only the window's own pixels
  into `next`; then the sets swap.
- Schedulers: in this process, a local thread pool (`workers`), or a dask.distributed `client` (the state
  must then be a zarr store every worker sees; the denoiser is a small picklable spec that loads its
  network once per worker process).
- Resume: `state.json` in the work folder is the one pointer to a complete state, replaced atomically after the
  state it names is fully written: the step, the buffer set (zarr) or state file (memory) that holds it, the
  counts so far, and a fingerprint of everything that determines the result. A resume whose fingerprint differs
  is refused, naming what changed; a state saved in memory is loaded into a zarr store (and back) when the
  storage mode changed, since storage does not change the result.
- Known pixels (inpainting, RePaint-style): with `known`, the pixels outside the region to fill are set, before
  every step and at the end, to the forward-noised latents of the real image at that step's noise level; crops
  that own none of the region's pixels are not evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from wsi_synth.diffusion.solvers import Solver, make_solver
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import atomic_output, is_disk_full
from wsi_synth.jsonfile import write_atomic
from wsi_synth.resumable import check_identity
from wsi_synth.sampling.sampler import (
    Buffers,
    Denoiser,
    SamplerConfig,
    SampleStats,
    block_noise,
    step_canvases,
    step_window,
    windows_for,
)

STATE = "state.json"
#: The noise stream of known pixels' forward diffusion (independent of the sampler's own noise).
KNOWN_NOISE_STREAM = 1


@dataclass(frozen=True)
class KnownLatents:
    """Latents known outside a region (inpainting): `latents` (C, H, W), the clean x₀ of the real image, scaled as
    the denoiser sees it; `known` (H, W) bool, True where they are kept; `seed` keys their forward noise."""

    latents: np.ndarray
    known: np.ndarray
    seed: int

    def apply(self, x: np.ndarray, solver: Solver, j: int) -> None:
        """Set the known pixels of the state before step j (j = len(solver): the end) to α_j x₀ + σ_j ε, in place."""
        alpha, sigma = solver.signal_noise(j)
        forward = np.float32(alpha) * self.latents
        if sigma:
            forward += np.float32(sigma) * block_noise(self.seed, j, self.latents.shape, stream=KNOWN_NOISE_STREAM)
        np.copyto(x, forward, where=self.known[None])

    def fingerprint(self) -> str:
        """A hash of the known latents and where they are, for a resumed state's identity."""
        digest = hashlib.sha256(np.ascontiguousarray(self.latents, np.float32).data)
        digest.update(np.packbits(self.known).tobytes())
        return digest.hexdigest()


def start_step(steps: int, strength: float) -> int:
    """The step a canvas started part-way begins at: diffusers' img2img runs the last ⌊steps × strength⌋ steps; here
    at least one."""
    return steps - min(max(int(steps * strength), 1), steps)


@dataclass(frozen=True)
class StartCanvas:
    """A clean canvas x₀ to start sampling from instead of noise (SDEdit, Meng et al. 2022; diffusers' img2img):
    it is noised to the level `strength` of the way (1 = pure noise, x₀ forgotten) with the canvas's own initial
    noise, and only the remaining `strength` share of the steps is run. `rows(y0, y1)` gives x₀'s rows (C, y1 − y0,
    W), so a canvas of any size is never held whole; `fingerprint` names x₀ for a resumed state's identity."""

    rows: Callable[[int, int], np.ndarray]
    strength: float
    fingerprint: str

    def first_step(self, steps: int) -> int:
        """The step sampling starts at (`start_step`)."""
        return start_step(steps, self.strength)

    def apply(self, x, solver: Solver, windows) -> None:
        """x (the fresh canvas: its noise ε) becomes α x₀ + σ ε at the solver's first step, window by window (the
        work store's shards), in place; x₀'s rows are made once per row of windows."""
        alpha, sigma = solver.signal_noise(0)
        rows, made = np.empty(0, np.float32), None
        for y0, y1, x0, x1 in windows:
            if made != (y0, y1):
                rows, made = self.rows(y0, y1), (y0, y1)
            window = (slice(None), slice(y0, y1), slice(x0, x1))
            x[window] = np.float32(alpha) * rows[:, :, x0:x1] + np.float32(sigma) * np.asarray(x[window])


def sample(
    denoiser: Denoiser,
    shape: tuple[int, int, int],
    abar: torch.Tensor,
    config: SamplerConfig,
    *,
    labels: np.ndarray | None = None,
    condition: int = 0,
    stats: SampleStats | None = None,
) -> np.ndarray:
    """Sample a (C, H, W) canvas in memory. `labels` (H, W) uint8 gives per-pixel classes (0 = null condition);
    without it every crop uses `condition`."""
    return sample_canvas(denoiser, shape, abar, config, labels=labels, condition=condition, stats=stats)


def sample_canvas(
    denoiser: Denoiser,
    shape: tuple[int, int, int],
    abar: torch.Tensor,
    config: SamplerConfig,
    *,
    work: Path | None = None,
    out_of_core: bool = False,
    labels: np.ndarray | None = None,
    condition: int = 0,
    client=None,
    workers: int = 1,
    resume: bool = False,
    save_every: int = 5,
    stats: SampleStats | None = None,
    fingerprint: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    known: KnownLatents | None = None,
    start: StartCanvas | None = None,
):
    """Sample a (C, H, W) canvas; returns the final latents (numpy, or a zarr array when out of core).

    With a `work` folder the state is saved (every step out of core, every `save_every` steps in memory) and
    `resume` continues from it; `fingerprint` adds what else determines the result (model, mask, …) to the
    sampler's own settings, and a saved state made with other values is refused. `known` (in memory only) keeps
    the pixels outside a region on the real image's noised latents and samples the region (inpainting); `start`
    starts from a given canvas part-way instead of from noise (`StartCanvas`).
    """
    config.validate()
    if known is not None and (out_of_core or client is not None):
        raise ValueError("known latents (inpainting) are sampled in memory, in this process")
    d = config.planner.crop
    if shape[1] < d or shape[2] < d:
        raise BadArgumentError(f"canvas {shape[2]}×{shape[1]} is smaller than the crop {d}: pad it")
    solver = make_solver(config.solver, abar, config.steps, start.first_step(config.steps) if start is not None else 0)
    windows = windows_for(config, shape[1:])
    stats = stats if stats is not None else SampleStats()
    out_of_core = out_of_core or client is not None
    extra = {**(fingerprint or {}), **({"known_sha256": known.fingerprint()} if known is not None else {})}
    if start is not None:
        extra.update(start_sha256=start.fingerprint, start_strength=start.strength)
    identity = _identity(shape, config, labels, condition, extra) if work is not None else {}
    current, target, first = _open_state(
        shape,
        config,
        solver,
        windows,
        work=work,
        out_of_core=out_of_core,
        resume=resume,
        identity=identity,
        stats=stats,
    )
    if client is not None and labels is not None and work is not None:
        # in the shared work folder, not scattered into workers' memory: a lost worker's tasks are recomputed anywhere
        labels = StoredLabels.save(labels, work / "labels.npy")  # type: ignore[assignment]  # read like an array
    active = ~known.known if known is not None else None
    if start is not None and first == 0:
        start.apply(current.x, solver, windows)
    if known is not None and first == 0:
        known.apply(current.x, solver, 0)
    for j in range(first, len(solver)):
        for r in _run_step(
            denoiser, current, target, windows, j, solver, config, labels, condition, client, workers, active
        ):
            stats.crops += r["crops"]
            stats.evaluations += r["evaluations"]
        stats.steps += 1
        current, target = target, current
        if known is not None:
            known.apply(current.x, solver, j + 1)
        if work is not None and (out_of_core or (j + 1) % save_every == 0 or j + 1 == len(solver)):
            _save_state(work, j + 1, current, identity, stats, out_of_core=out_of_core)
        if progress:
            progress(j + 1, len(solver))
    return current.x


class StoredLabels:
    """A class map in an `.npy` file, memory-mapped on first use: what a cluster task reads (`labels[y0:y1, x0:x1]`)
    instead of data held in some worker's memory. It pickles as its path, so every task stays recomputable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None

    @classmethod
    def save(cls, labels: np.ndarray, path: Path) -> StoredLabels:
        """Write `labels` to `path` atomically (a rerun writes the same bytes) and return its handle."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(labels))
            fh.flush()
            os.fsync(fh.fileno())
        return cls(path)

    def _open(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        """The class map's (height, width)."""
        return self._open().shape

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._open()[key])

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path, self._array = state["path"], None


def sample_canvases(
    denoiser: Denoiser,
    shape: tuple[int, int, int],
    abar: torch.Tensor,
    configs: list[SamplerConfig],
    *,
    labels: list[np.ndarray | None] | None = None,
    conditions: list[int] | None = None,
    stats: SampleStats | None = None,
) -> list[np.ndarray]:
    """Sample several small (C, H, W) canvases in memory together, their crops sharing the denoiser's batches (so
    a batch is full even when one canvas has fewer crops). Canvas i follows `configs[i]` (its seed), `labels[i]`
    and `conditions[i]`, and gets the canvas `sample` gives it alone (up to the batched kernels' rounding), so a
    result does not depend on which canvases it was sampled with."""
    n = len(configs)
    labels = labels if labels is not None else [None] * n
    conditions = conditions if conditions is not None else [0] * n
    for config in configs:
        config.validate()
    d = configs[0].planner.crop
    if shape[1] < d or shape[2] < d:
        raise BadArgumentError(f"canvas {shape[2]}×{shape[1]} is smaller than the crop {d}: pad it")
    solver = make_solver(configs[0].solver, abar, configs[0].steps)
    stats = stats if stats is not None else SampleStats()
    canvases = [_fresh_in_memory(shape, config, solver) for config in configs]
    for j in range(len(solver)):
        for r in step_canvases(denoiser, canvases, j, solver, configs, labels=labels, conditions=conditions):
            stats.crops += r["crops"]
            stats.evaluations += r["evaluations"]
        stats.steps += 1
        canvases = [(target, current) for current, target in canvases]
    return [current.x for current, _ in canvases]


def _run_step(
    denoiser,
    current: Buffers,
    target: Buffers,
    windows,
    j: int,
    solver: Solver,
    config: SamplerConfig,
    labels,
    condition: int,
    client,
    workers: int,
    active=None,
) -> list[dict]:
    def one(window):
        return step_window(
            denoiser, current, target, window, j, solver, config, labels=labels, condition=condition, active=active
        )

    if client is not None:
        n = len(windows)
        futures = client.map(
            step_window,
            [denoiser] * n,
            [current] * n,
            [target] * n,
            windows,
            [j] * n,
            [solver] * n,
            [config] * n,
            labels=labels,
            condition=condition,
            pure=False,
        )
        return client.gather(futures)
    if workers > 1 and len(windows) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, windows))
    return [one(w) for w in windows]


# --- the state and the work folder --------------------------------------------------------------------------------


def _identity(shape, config: SamplerConfig, labels: np.ndarray | None, condition: int, extra: dict | None) -> dict:
    """Everything that determines the result of this canvas (not the window size, batch size or storage)."""
    sampler = {k: v for k, v in asdict(config).items() if k not in ("window", "batch_size")}
    doc = {"shape": list(shape), **_flatten(sampler), "condition": condition}
    if labels is not None:
        doc["labels_sha256"] = hashlib.sha256(np.ascontiguousarray(labels).data).hexdigest()
    return {**doc, **(extra or {})}


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def read_state(work: Path) -> dict | None:
    """The saved state's pointer document, or None when the folder holds no complete state."""
    path = work / STATE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "step" in doc and "identity" in doc else None


def _open_state(
    shape,
    config: SamplerConfig,
    solver: Solver,
    windows,
    *,
    work: Path | None,
    out_of_core: bool,
    resume: bool,
    identity: dict,
    stats: SampleStats,
) -> tuple[Buffers, Buffers, int]:
    """The two buffer sets and the step to start at (0, or where a resumed run stopped)."""
    saved = read_state(work) if resume and work is not None else None
    if saved is not None and work is not None:
        check_identity(saved, identity, work)
        for key, value in saved.get("stats", {}).items():
            setattr(stats, key, value)
        try:
            return _restore(saved, shape, config, solver, windows, work=work, out_of_core=out_of_core)  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            if is_disk_full(exc):
                raise
            raise BadArgumentError(
                f"cannot --resume from {work}: its saved state is damaged ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); start again with --overwrite instead of "
                "--resume"
            ) from exc
    if work is not None:
        _clear(work)
    return _restore(None, shape, config, solver, windows, work=work, out_of_core=out_of_core)


def _restore(
    saved: dict | None, shape, config: SamplerConfig, solver: Solver, windows, *, work: Path | None, out_of_core: bool
) -> tuple[Buffers, Buffers, int]:
    """The buffers of a saved state (`saved`), or of a fresh start (noise), in memory or in the work store."""
    saved_in_zarr = saved is not None and saved["storage"] == "zarr"
    if out_of_core:
        if work is None:
            raise ValueError("an out-of-core canvas needs a work folder")
        sets = {name: _zarr_buffers(work, name, shape, solver, windows, create=not saved_in_zarr) for name in "ab"}
        if saved is not None and saved_in_zarr:
            current = saved["current"]
            return sets[current], sets["b" if current == "a" else "a"], saved["step"]
        state = _load_memory_state(work, saved, shape) if saved else Buffers(None)
        for y0, y1, x0, x1 in windows:
            window = (slice(None), slice(y0, y1), slice(x0, x1))
            sets["a"].x[window] = state.x[window] if saved else block_noise(config.seed, -1, shape, (y0, y1, x0, x1))
            if state.x0 is not None:
                sets["a"].x0[window] = state.x0[window]
        return sets["a"], sets["b"], saved["step"] if saved else 0
    if saved is not None and work is not None:  # a saved state lives in the work folder
        if saved_in_zarr:
            held = _zarr_buffers(work, saved["current"], shape, solver, windows, create=False)
            current = Buffers(np.asarray(held.x[:]), None if held.x0 is None else np.asarray(held.x0[:]))
        else:
            current = _load_memory_state(work, saved, shape)
    else:
        return (*_fresh_in_memory(shape, config, solver), 0)
    return current, _like(current), saved["step"] if saved else 0


def _fresh_in_memory(shape, config: SamplerConfig, solver: Solver) -> tuple[Buffers, Buffers]:
    """The start of a canvas in memory: the seed's noise (and a zero x̂₀ for multistep solvers), and a target set."""
    current = Buffers(block_noise(config.seed, -1, shape), np.zeros(shape, np.float32) if solver.keeps_x0 else None)
    return current, _like(current)


def _like(buffers: Buffers) -> Buffers:
    return Buffers(np.empty_like(buffers.x), None if buffers.x0 is None else np.empty_like(buffers.x0))


def _zarr_buffers(work: Path, name: str, shape, solver: Solver, windows, *, create: bool) -> Buffers:
    import zarr

    def array(suffix: str):
        path = str(work / f"{name}{suffix}.zarr")
        if not create:
            return zarr.open_array(path, mode="r+")
        win = (max(1, windows[0][1] - windows[0][0]), max(1, windows[0][3] - windows[0][2]))
        return zarr.create_array(
            path,
            shape=shape,
            dtype="float32",
            chunks=_inner_chunks(shape[0], win),
            shards=(shape[0], *win),
            compressors=None,
            fill_value=0.0,
            overwrite=True,
        )

    return Buffers(array(""), array("_x0") if solver.keeps_x0 else None)


def _inner_chunks(channels: int, window: tuple[int, int]) -> tuple[int, int, int]:
    """Inner chunks of up to 256 px that tile the window exactly: a halo read then touches a few uncompressed inner
    chunks of each neighbour (benchmarks/perf/bench_host.py, 64² crops: window + halo 15 ms against v0.1's 78 ms with
    compressed window chunks; 64 px inner chunks pay zarr's per-chunk overhead hundreds of times)."""
    height, width = (max(c for c in range(1, min(256, w) + 1) if w % c == 0) for w in window)
    return channels, height, width


def _load_memory_state(work: Path, saved: dict, shape) -> Buffers:
    with np.load(work / saved["current"]) as data:
        state = Buffers(data["x"], data["x0"] if "x0" in data.files else None)
    if state.x.shape != tuple(shape):
        raise ValueError(f"the saved canvas is {state.x.shape}, this run's is {tuple(shape)}")
    return state


def _save_state(
    work: Path, step: int, current: Buffers, identity: dict, stats: SampleStats, *, out_of_core: bool
) -> None:
    """Make `current` the saved state: its data first (a new file in memory mode; zarr buffers are already
    written), then the pointer, atomically; then drop the state files the pointer no longer names."""
    if out_of_core:
        name = Path(str(current.x.store.root)).name.removesuffix(".zarr")
        storage = "zarr"
    else:
        name = f"state-{step:06d}.npz"
        tmp = work / f".{name}.partial"
        with open(tmp, "wb") as fh:
            np.savez(fh, x=current.x, **({"x0": current.x0} if current.x0 is not None else {}))
        os.replace(tmp, work / name)
        storage = "memory"
    write_atomic(
        work / STATE, {"step": step, "storage": storage, "current": name, "identity": identity, "stats": asdict(stats)}
    )
    for old in work.glob("state-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _clear(work: Path) -> None:
    """Empty a stage's work folder: a new run never builds on what another left there."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
