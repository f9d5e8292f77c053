"""Run the sampler over a canvas window by window: in memory or in a zarr work store, on any scheduler.

- State: two buffers (current, next) — numpy arrays, or zarr arrays chunked on the windows in a work folder
  when the canvas should not live in memory (`out_of_core`). Each step reads `current` (a window plus a
  one-crop halo per task) and writes only the window's own pixels into `next`; then the buffers swap.
- Schedulers: in this process, a local thread pool (`workers`), or a dask.distributed `client` (the state
  must then be a zarr store every worker sees; the denoiser is a small picklable spec that loads its
  network once per worker process).
- Resume: `state.json` in the work folder records the last completed step and which buffer holds it
  (in-memory runs also save the state every `save_every` steps); the continued run gives the same result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsi_synth.diffusion.schedule import ddim_timesteps
from wsi_synth.jsonfile import write_atomic
from wsi_synth.sampling.sampler import Denoiser, SamplerConfig, SampleStats, block_noise, step_window, windows_for


@dataclass(frozen=True)
class BundleDenoiser:
    """A bundle's network as a denoiser: picklable (path, stage, device); loads the UNet once per process."""

    model: str
    stage: str  # "image" or "mask"
    device: str = "cpu"

    def network(self):
        key = (self.model, self.stage, self.device)
        if key not in _NETWORKS:
            from wsi_synth.models.bundle import open_bundle

            _NETWORKS[key] = open_bundle(self.model).load_unet(self.stage, device=self.device)
        return _NETWORKS[key]

    def __call__(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        net = self.network()
        if self.stage == "image":
            z = torch.cat([z, masks if masks is not None else torch.zeros(z.shape[0], 1, *z.shape[2:])], 1)
        with torch.no_grad(), _autocast(self.device):
            return net(z.to(self.device), t.to(self.device), class_labels=labels.to(self.device)).sample.float().cpu()


_NETWORKS: dict = {}


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast("cpu", enabled=False)


def sample_canvas(denoiser: Denoiser, shape: tuple[int, int, int], abar: torch.Tensor, config: SamplerConfig, *, work: Path | None = None,
                  out_of_core: bool = False, labels: np.ndarray | None = None, condition: int = 0, client=None, workers: int = 1,
                  resume: bool = False, save_every: int = 5, stats: SampleStats | None = None,
                  progress: Callable[[int, int], None] | None = None):
    """Sample a (C, H, W) canvas; returns the final state (numpy, or a zarr array when out of core)."""
    config.validate()
    ts = ddim_timesteps(len(abar), config.steps)
    windows = windows_for(config, shape[1:])
    stats = stats if stats is not None else SampleStats()
    buffers, first = _open_state(shape, config, windows, work=work, out_of_core=out_of_core or client is not None, resume=resume)
    current, target = buffers
    if client is not None and labels is not None:
        labels = client.scatter(labels, broadcast=True)
    for j in range(first, len(ts)):
        results = _run_step(denoiser, current, target, windows, j, ts, abar, config, labels, condition, client, workers)
        for r in results:
            stats.crops += r["crops"]
            stats.evaluations += r["evaluations"]
        stats.steps += 1
        current, target = target, current
        _record(work, j + 1, current, out_of_core or client is not None, save_every, done=j + 1 == len(ts))
        if progress:
            progress(j + 1, len(ts))
    return current


def _run_step(denoiser, current, target, windows, j, ts, abar, config, labels, condition, client, workers) -> list[dict]:
    def one(window):
        return step_window(denoiser, current, target, window, j, ts, abar, config, labels=labels, condition=condition)

    if client is not None:
        futures = client.map(step_window, [denoiser] * len(windows), [current] * len(windows), [target] * len(windows), windows,
                             [j] * len(windows), [ts] * len(windows), [abar] * len(windows), [config] * len(windows),
                             labels=labels, condition=condition, pure=False)
        return client.gather(futures)
    if workers > 1 and len(windows) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, windows))
    return [one(w) for w in windows]


def _open_state(shape, config: SamplerConfig, windows, *, work: Path | None, out_of_core: bool, resume: bool):
    """The two state buffers and the step to start at (0, or where a resumed run stopped)."""
    state = _read_state(work) if resume and work is not None else None
    if out_of_core:
        if work is None:
            raise ValueError("an out-of-core canvas needs a work folder")
        import zarr

        win = max(1, windows[0][1] - windows[0][0]), max(1, windows[0][3] - windows[0][2])
        mode = "a" if state else "w"
        a = zarr.open_array(str(work / "a.zarr"), mode=mode, shape=shape, chunks=(shape[0], *win), dtype="float32")
        b = zarr.open_array(str(work / "b.zarr"), mode=mode, shape=shape, chunks=(shape[0], *win), dtype="float32")
        if state:
            return ((a, b) if state["current"] == "a" else (b, a)), state["step"]
        for w in windows:
            a[:, w[0] : w[1], w[2] : w[3]] = block_noise(config.seed, -1, shape, w)
        return (a, b), 0
    if state and (work / "state.npy").exists():
        current = np.load(work / "state.npy")
        return (current, np.empty_like(current)), state["step"]
    current = block_noise(config.seed, -1, shape)
    return (current, np.empty_like(current)), 0


def _read_state(work: Path) -> dict | None:
    path = work / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _record(work: Path | None, step: int, current, out_of_core: bool, save_every: int, *, done: bool) -> None:
    if work is None:
        return
    if out_of_core:
        name = Path(current.store.root if hasattr(current.store, "root") else current.store.path).name[0]
    else:
        if step % save_every and not done:
            return
        np.save(work / "state.tmp.npy", current)
        os.replace(work / "state.tmp.npy", work / "state.npy")
        name = "memory"
    write_atomic(work / "state.json", {"step": step, "current": name})
