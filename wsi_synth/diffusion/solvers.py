"""Reverse-diffusion solvers as pixel-wise updates: DDIM, and DPM-Solver++(2M) with one more buffer.

The sampler updates every pixel of a canvas exactly once per step (each pixel from its owner crop; every crop
reads the state at step t), so the canvas is an ordinary diffusion state and any multistep solver applies
pixel by pixel. A solver here is a table fixed by (schedule, steps): the timestep the denoiser sees at each
step, and an update `x_t, ε̂ (, x̂₀ of the previous step) → x_prev (, x̂₀)` that any window of the canvas can
apply on its own.

- `ddim`: the paper's sampler; η > 0 adds noise. No history.
- `dpm-solver++`: DPM-Solver++(2M) (Lu et al. 2022), the data-prediction multistep solver. Timesteps and
  sigmas come from diffusers' `DPMSolverMultistepScheduler` (linspace spacing, final sigma zero, lower-order
  final steps); the coefficients mirror its `step()` (a test runs both side by side). It keeps the previous
  step's x̂₀ per pixel, so the state is two buffers.
- `distilled`: multistep consistency sampling (Song et al. 2023; Luo et al. 2023) for a distilled student
  (`training.distill`), whose x̂₀ is the teacher's sample at the end of its ODE: x_prev = √ᾱ_prev x̂₀ + √(1−ᾱ_prev) z
  with fresh noise z, none after the last step. Timesteps and the boundary scalings come from diffusers'
  `LCMScheduler`; the update mirrors its `step()` (a test runs both side by side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wsi_synth.concurrency import import_names
from wsi_synth.diffusion.schedule import ddim_timesteps
from wsi_synth.errors import BadArgumentError
from wsi_synth.options import SOLVERS


@dataclass(frozen=True)
class Solver:
    """The per-step table of one solver for one schedule and number of steps (picklable, small)."""

    name: str
    timesteps: tuple[int, ...]
    abar: torch.Tensor  # ᾱ over the training timesteps (float32)
    # dpm-solver++: per step (α_s, σ_s) of the current timestep and (a, b, c) in x_prev = a x + b x̂₀ + c x̂₀_prev
    alpha_sigma: tuple[tuple[float, float], ...] = ()
    coefficients: tuple[tuple[float, float, float], ...] = ()
    #: distilled: per step (c_skip, c_out) of the consistency boundary condition, x̂₀ ← c_out x̂₀ + c_skip x
    boundary: tuple[tuple[float, float], ...] = ()

    @property
    def keeps_x0(self) -> bool:
        """True when the update needs the previous step's x̂₀ (a second canvas buffer)."""
        return self.name == "dpm-solver++"

    @property
    def stochastic(self) -> bool:
        """True when every step but the last draws fresh noise (the sampler keys it by seed, step and position)."""
        return self.name == "distilled"

    def __len__(self) -> int:
        return len(self.timesteps)

    def signal_noise(self, j: int) -> tuple[float, float]:
        """(α, σ) of the state before step j, x_j = α x₀ + σ ε; j = len(self) is the end, (1, 0)."""
        if j >= len(self.timesteps):
            return 1.0, 0.0
        if self.name in ("ddim", "distilled"):
            abar = float(self.abar[self.timesteps[j]])
            return math.sqrt(abar), math.sqrt(1.0 - abar)
        return self.alpha_sigma[j]

    def update(
        self,
        j: int,
        x: np.ndarray,
        eps: np.ndarray,
        x0_prev: np.ndarray | None,
        *,
        eta: float = 0.0,
        noise: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Step j for some pixels: (x_prev, x̂₀ to keep, or None). Arrays are float32 of one shape."""
        if self.name == "ddim":
            a_t = self.abar[self.timesteps[j]]
            a_prev = self.abar[self.timesteps[j + 1]] if j + 1 < len(self.timesteps) else torch.tensor(1.0)
            return ddim_update(x, eps, a_t, a_prev, eta=eta, noise=noise), None
        if self.name == "distilled":
            return self._consistency_update(j, x, eps, noise), None
        alpha, sigma = self.alpha_sigma[j]
        x0 = (x - sigma * eps) / alpha
        a, b, c = self.coefficients[j]
        out = a * x + b * x0
        if c:
            assert x0_prev is not None, "a second-order step needs the previous x̂₀"
            out += c * x0_prev
        return out.astype(np.float32, copy=False), x0.astype(np.float32, copy=False)

    def _consistency_update(self, j: int, x: np.ndarray, eps: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        abar_t = float(self.abar[self.timesteps[j]])
        c_skip, c_out = self.boundary[j]
        x0 = (x - np.float32(math.sqrt(1 - abar_t)) * eps) / np.float32(math.sqrt(abar_t))
        denoised = np.float32(c_out) * x0 + np.float32(c_skip) * x
        if j + 1 == len(self.timesteps):
            return denoised.astype(np.float32, copy=False)
        assert noise is not None, "a consistency step before the last needs fresh noise"
        abar_prev = float(self.abar[self.timesteps[j + 1]])
        out = np.float32(math.sqrt(abar_prev)) * denoised + np.float32(math.sqrt(1 - abar_prev)) * noise
        return out.astype(np.float32, copy=False)


def ddim_update(
    x: np.ndarray,
    eps: np.ndarray,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    *,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """`schedule.ddim_step` on numpy arrays, in place on one new array: the same float32 operations in the same
    order (so the same bits), without torch's temporaries — about 6× faster on a CPU canvas."""
    scalars = _ddim_scalars(abar_t, abar_prev, eta)
    out = np.multiply(eps, scalars["sqrt_1m_abar_t"])
    np.subtract(x, out, out=out)
    out /= scalars["sqrt_abar_t"]  # x̂₀
    out *= scalars["sqrt_abar_prev"]
    out += eps * scalars["direction"]
    if noise is not None and eta > 0:
        out += scalars["sigma"] * noise
    return out


def _ddim_scalars(abar_t: torch.Tensor, abar_prev: torch.Tensor, eta: float) -> dict[str, np.float32]:
    """The float32 scalars of `ddim_step`, computed by the same torch expressions."""
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
    values = {
        "sqrt_1m_abar_t": (1 - abar_t).sqrt(),
        "sqrt_abar_t": abar_t.sqrt(),
        "sqrt_abar_prev": abar_prev.sqrt(),
        "direction": (1 - abar_prev - sigma**2).clamp(min=0).sqrt(),
        "sigma": sigma,
    }
    return {k: np.float32(v.item()) for k, v in values.items()}


def make_solver(name: str, abar: torch.Tensor, steps: int, start: int = 0) -> Solver:
    """The solver `name` for a schedule ᾱ (training timesteps) and a number of steps; from `start` on, the remaining
    steps only (a canvas started part-way, diffusers' img2img `strength`: the first of them is first order, like
    diffusers' scheduler without history)."""
    if name not in SOLVERS:
        raise BadArgumentError(f"--solver must be one of {', '.join(SOLVERS)}, got {name!r}")
    if steps < 1:
        raise BadArgumentError(f"--steps must be at least 1, got {steps}")
    if not 0 <= start < steps:
        raise BadArgumentError(f"the first step must be in 0–{steps - 1}, got {start}")
    if name == "ddim":
        return Solver(name, tuple(ddim_timesteps(len(abar), steps))[start:], abar)
    if name == "distilled":
        return _consistency(abar, steps, start)
    return _dpm_solver_pp(abar, steps, start)


def lcm_scheduler(abar: torch.Tensor):
    """diffusers' LCMScheduler for the schedule ᾱ (the timesteps and boundary scalings of `distilled`)."""
    (LCMScheduler,) = import_names("diffusers", "LCMScheduler")

    return LCMScheduler(num_train_timesteps=len(abar), trained_betas=_betas(abar))


def consistency_timesteps(abar: torch.Tensor, steps: int) -> tuple[int, ...]:
    """The timesteps of `steps` multistep consistency steps (LCMScheduler's skipping-step grid)."""
    return make_solver("distilled", abar, steps).timesteps


def distillation_timesteps(abar: torch.Tensor, steps: int) -> tuple[int, ...]:
    """Every timestep a student distilled for `steps` may be asked at: those of 1 … `steps` consistency steps."""
    return tuple(sorted({t for k in range(1, steps + 1) for t in consistency_timesteps(abar, k)}, reverse=True))


def _consistency(abar: torch.Tensor, steps: int, start: int = 0) -> Solver:
    scheduler = lcm_scheduler(abar)
    scheduler.set_timesteps(steps)
    timesteps = tuple(int(t) for t in scheduler.timesteps)
    boundary = tuple(
        tuple(float(v) for v in scheduler.get_scalings_for_boundary_condition_discrete(t)) for t in timesteps
    )
    return Solver("distilled", timesteps[start:], abar, boundary=boundary[start:])  # type: ignore[arg-type]


def _betas(abar: torch.Tensor) -> np.ndarray:
    abar64 = abar.double()
    return (1 - abar64 / torch.cat([torch.ones(1, dtype=torch.float64), abar64[:-1]])).numpy()


def dpm_scheduler(abar: torch.Tensor):
    """diffusers' DPM-Solver++(2M) scheduler for the schedule ᾱ (the reference our table mirrors)."""
    (DPMSolverMultistepScheduler,) = import_names("diffusers", "DPMSolverMultistepScheduler")

    return DPMSolverMultistepScheduler(
        num_train_timesteps=len(abar),
        trained_betas=_betas(abar),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        timestep_spacing="linspace",
    )


def _dpm_solver_pp(abar: torch.Tensor, steps: int, start: int = 0) -> Solver:
    scheduler = dpm_scheduler(abar)
    scheduler.set_timesteps(steps)
    sigmas = [float(s) for s in scheduler.sigmas]  # σ = √((1−ᾱ)/ᾱ) at each timestep, then 0 after the last step
    n = len(scheduler.timesteps)
    alpha_sigma, coefficients = [], []
    for j in range(start, n):
        alpha_s, sigma_s = _alpha_sigma(sigmas[j])
        alpha_t, sigma_t = _alpha_sigma(sigmas[j + 1])
        h = _lam(alpha_t, sigma_t) - _lam(alpha_s, sigma_s)
        a, phi = (sigma_t / sigma_s), -alpha_t * math.expm1(-h)  # x_prev = (σ_t/σ_s) x + α_t (1 − e^{−h}) D
        # diffusers' order choice for 2M: first order at the first step (no history) and at the last (final σ = 0)
        first_order = j == start or j == n - 1
        if first_order:
            coefficients.append((a, phi, 0.0))
        else:
            alpha_p, sigma_p = _alpha_sigma(sigmas[j - 1])
            r = (_lam(alpha_s, sigma_s) - _lam(alpha_p, sigma_p)) / h  # D = x̂₀ + (x̂₀ − x̂₀_prev) / (2r)
            coefficients.append((a, phi * (1 + 0.5 / r), -phi * 0.5 / r))
        alpha_sigma.append((alpha_s, sigma_s))
    return Solver(
        "dpm-solver++",
        tuple(int(t) for t in scheduler.timesteps)[start:],
        abar,
        tuple(alpha_sigma),
        tuple(coefficients),
    )


def _alpha_sigma(sigma: float) -> tuple[float, float]:
    """diffusers' σ (variance-exploding) → (α_t, σ_t) of the variance-preserving process."""
    alpha = 1.0 / math.sqrt(sigma**2 + 1.0)
    return alpha, sigma * alpha


def _lam(alpha: float, sigma: float) -> float:
    """λ = log(α/σ); +∞ at σ = 0."""
    return math.inf if sigma == 0 else math.log(alpha) - math.log(sigma)
