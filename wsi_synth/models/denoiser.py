"""A bundle's UNet as the sampler's denoiser `(latents, t, labels, masks) → ε`, and the one autocast helper.

`BundleDenoiser` is a small picklable spec (bundle path, stage, device): a dask worker that receives it loads
the network once and keeps it in a small per-process cache (least recently used first out), so a cluster runs
one model per worker without shipping weights through the scheduler.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

_CACHE_SIZE = 2  # the image and the mask network of one bundle
_NETWORKS: OrderedDict = OrderedDict()


def autocast(device: str):
    """bf16 (or fp16 where bf16 is missing) autocast on CUDA; full precision elsewhere."""
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast("cpu", enabled=False)


@dataclass(frozen=True)
class BundleDenoiser:
    """A bundle's network as a denoiser: picklable (path, stage, device); loads the UNet once per process."""

    model: str
    stage: str  # "image", "mask" or "layout"
    device: str = "cpu"
    student: bool = False  # the stage's distilled student instead of its own network

    @property
    def pin_memory(self) -> bool:
        """Ask the sampler for page-locked batches, so host-to-GPU copies run asynchronously."""
        return self.device.startswith("cuda")

    def network(self):
        """The stage's UNet, loaded once per process and device (a small LRU cache)."""
        key = (self.model, self.stage, self.device, self.student)
        if key in _NETWORKS:
            _NETWORKS.move_to_end(key)
            return _NETWORKS[key]
        from wsi_synth.models.bundle import STUDENTS, open_bundle

        name = STUDENTS[self.stage] if self.student else self.stage
        _NETWORKS[key] = open_bundle(self.model).load_unet(name, device=self.device)
        while len(_NETWORKS) > _CACHE_SIZE:
            _NETWORKS.popitem(last=False)
        return _NETWORKS[key]

    def __call__(
        self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        return network_eps(self.network(), self.stage, self.device, z, t, labels, masks, non_blocking=self.pin_memory)


@dataclass(frozen=True)
class NetworkDenoiser:
    """A network in memory as a denoiser (e.g. the one being trained, for its previews); not for a cluster."""

    net: torch.nn.Module
    stage: str  # "image" or "mask"
    device: str = "cpu"

    def __call__(
        self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        return network_eps(self.net, self.stage, self.device, z, t, labels, masks)


def network_eps(
    net,
    stage: str,
    device: str,
    z: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    non_blocking: bool = False,
) -> torch.Tensor:
    """ε of a stage's UNet for a batch, on the CPU in float32: the image UNet takes the conditioning class's mask (or,
    spatially conditioned, the crop's one-hot class map) as more input channels (zeros: the null condition); the
    mask UNet takes the subtype as its class label."""
    move: dict[str, Any] = {"non_blocking": True} if non_blocking else {}
    z = z.to(device, **move)
    if stage == "image":  # per-class: one mask channel; spatial: K−1 one-hot channels (all zeros: the null condition)
        if masks is None:
            channels = getattr(net, "module", net).config.in_channels - z.shape[1]
            masks = torch.zeros(z.shape[0], channels, *z.shape[2:])
        z = torch.cat([z, masks.to(device, **move)], 1)
    with torch.no_grad(), autocast(device):
        out = net(z, t.to(device, **move), class_labels=labels.to(device, **move)).sample
    return out.float().cpu()
