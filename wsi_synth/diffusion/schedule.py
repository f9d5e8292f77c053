"""The noise schedule and the DDIM update, as plain tensor functions.

`alphas_cumprod` comes from diffusers' DDPMScheduler (so a bundle's schedule means what it means in
diffusers); the DDIM step is written out because the sampler updates pixels of one canvas from many crops,
which a stateful scheduler object does not model.
"""

from __future__ import annotations

import torch

from wsi_synth.concurrency import import_names


def alphas_cumprod(num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear") -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 of a diffusers beta schedule (`linear` or `scaled_linear`), float64."""
    (DDPMScheduler,) = import_names("diffusers", "DDPMScheduler")

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule).alphas_cumprod.clone()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0): √ᾱ_t x₀ + √(1−ᾱ_t) ε, per sample timestep `t`."""
    a = abar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """Decreasing timesteps ending at 0 (the reference code stops one step early)."""
    return (
        sorted({round(i * (num_train_timesteps - 1) / (steps - 1)) for i in range(steps)}, reverse=True)
        if steps > 1
        else [num_train_timesteps - 1]
    )


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    *,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM update x_t → x_prev given ε̂; `abar_*` broadcast against x (so pixels may sit at different t)."""
    x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
    direction = (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    out = abar_prev.sqrt() * x0 + direction
    return out + sigma * noise if noise is not None and eta > 0 else out


def guided(eps_cond: torch.Tensor, eps_null: torch.Tensor, omega: float) -> torch.Tensor:
    """Classifier-free guidance ε̃ = (1+ω)ε(z,c) − ωε(z,∅)."""
    return (1 + omega) * eps_cond - omega * eps_null
