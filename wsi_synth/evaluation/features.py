"""Feature extractors: tiles (N, H, W, 3) uint8 → vectors (N, D) float32.

- `TorchScriptFeatures`: a reference network the user supplies as a TorchScript file, e.g. the FID
  Inception-v3 (`inception-2015-12-05.pt`, 2048-d) or the VGG-16 of improved precision/recall (`vgg16.pt`,
  4096-d), both called as NVIDIA's metric code calls them: uint8 NCHW in, `return_features=True`.
  Nothing is downloaded; TorchScript needs no torchvision.
- `RandomFeatures`: the offline default, a fixed-seed random CNN (random features separate image
  distributions well and need no weights). Its numbers are *not* comparable with published FID/P/R.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from wsi_synth.errors import BadArgumentError


class FeatureExtractor(Protocol):
    """Tiles (N, S, S, 3) uint8 → features (N, D) float; `comparable` when the network is one published metrics use."""

    name: str
    comparable: bool  # with published numbers

    def __call__(self, tiles: np.ndarray) -> np.ndarray: ...


class TorchScriptFeatures:
    """A TorchScript feature network from a local file."""

    comparable = True

    def __init__(
        self, path: str | Path, *, name: str | None = None, device: str = "cpu", input_range: str = "uint8"
    ) -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise BadArgumentError(
                f"--features {path}: file not found (a TorchScript network, e.g. inception-2015-12-05.pt)"
            )
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise BadArgumentError(f"--features {path} is not a TorchScript file: {str(exc).splitlines()[0]}") from exc
        if input_range not in ("uint8", "unit"):
            raise BadArgumentError(f"--feature-input must be uint8 or unit, got {input_range!r}")
        self.name = name or path.stem
        self.device = device
        self.input_range = input_range

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).to(self.device)
        if self.input_range == "unit":
            x = x.float() / 255.0
        with torch.no_grad():
            try:
                out = self.model(x, return_features=True)
            except (RuntimeError, TypeError):  # a plain feature network without the keyword
                out = self.model(x)
        return out.reshape(len(tiles), -1).float().cpu().numpy()


class RandomFeatures:
    """Offline default: a fixed-seed random CNN with mean and standard-deviation pooling (512-d)."""

    comparable = False

    def __init__(self, *, seed: int = 0, device: str = "cpu", size: int = 224) -> None:
        import torch
        from torch import nn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = (
                nn.Sequential(
                    nn.Conv2d(3, 32, 5, stride=2, padding=2),
                    nn.ReLU(),
                    nn.Conv2d(32, 64, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(64, 128, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(128, 256, 3, stride=2, padding=1),
                    nn.ReLU(),
                )
                .to(device)
                .eval()
            )
        self.name = f"offline-random-cnn-seed{seed} (not comparable with published numbers)"
        self.device = device
        self.size = size

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().to(self.device) / 127.5 - 1.0
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            h = self.net(x)
        return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1).cpu().numpy()


def load_extractor(
    spec: str | None, *, name: str | None = None, device: str = "cpu", input_range: str = "uint8"
) -> FeatureExtractor:
    """`None`/`offline` → RandomFeatures; a path → TorchScriptFeatures."""
    from wsi_synth.devices import check_device

    check_device(device)
    if spec in (None, "offline"):
        return RandomFeatures(device=device)
    return TorchScriptFeatures(spec, name=name, device=device, input_range=input_range)
