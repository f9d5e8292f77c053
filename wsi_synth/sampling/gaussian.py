"""The exact ε-predictor for a stationary Gaussian field on a d×d crop: a known-answer denoiser.

For x₀ ~ N(0, K) and x_t = √ᾱ x₀ + √(1−ᾱ) ε, the optimal prediction is E[ε | x_t] = √(1−ᾱ) (ᾱK + (1−ᾱ)I)⁻¹ x_t,
a linear map per timestep (a Wiener filter). Sampling a canvas much larger than d with it shows exactly
what a planner costs in fidelity (variance, correlation, seams) with no training noise in the way.

`GaussianFieldStudent` is the exact distilled student of that oracle: the ε that points at the end of the
probability-flow ODE from x_t, which keeps each eigen-component's standardised value, x₀ = U diag(√(λ / (ᾱλ + 1 − ᾱ)))
Uᵀ x_t. It is what `wsi-synth distill` approximates, so sampling with it shows what the `distilled` solver can do.
"""

from __future__ import annotations

import numpy as np
import torch


class GaussianFieldDenoiser:
    """K(p, q) = exp(−|p − q|² / 2ℓ²) on a d×d crop (unit variance, correlation length ℓ px)."""

    def __init__(self, d: int, length: float, abar: torch.Tensor) -> None:
        yy, xx = np.mgrid[0:d, 0:d]
        pos = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
        sq = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
        self.K = np.exp(-sq / (2 * length**2))
        self.d, self.length, self.abar = d, length, abar.double()
        self._maps: dict[int, torch.Tensor] = {}

    def target_correlation(self, lag: int) -> float:
        """The field's correlation at `lag` px: what a sampled canvas should show."""
        return float(np.exp(-(lag**2) / (2 * self.length**2)))

    def _map(self, t: int) -> torch.Tensor:
        if t not in self._maps:
            a = float(self.abar[t])
            m = np.sqrt(1 - a) * np.linalg.inv(a * self.K + (1 - a) * np.eye(len(self.K)))
            self._maps[t] = torch.from_numpy(m).float()
        return self._maps[t]

    def __call__(
        self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        b, c = z.shape[:2]
        flat = z.reshape(b, c, -1)
        # one matrix-vector product per crop: results do not depend on how crops are batched
        out = torch.stack([torch.stack([self._map(int(t[i])) @ flat[i, j] for j in range(c)]) for i in range(b)])
        return out.reshape(z.shape)


class GaussianFieldStudent(GaussianFieldDenoiser):
    """The perfect distilled student of `GaussianFieldDenoiser`: ε̂ = (x_t − √ᾱ f(x_t)) / √(1−ᾱ), f the ODE's end."""

    def _map(self, t: int) -> torch.Tensor:
        if t not in self._maps:
            a = float(self.abar[t])
            lam, u = np.linalg.eigh(self.K)
            lam = np.clip(lam, 0, None)
            end = (u * np.sqrt(lam / (a * lam + 1 - a))) @ u.T  # x_t → where the ODE ends
            self._maps[t] = torch.from_numpy((np.eye(len(self.K)) - np.sqrt(a) * end) / np.sqrt(1 - a)).float()
        return self._maps[t]


def field_statistics(samples: np.ndarray, edge_period: int) -> dict:
    """Variance, correlation at lags 1 and 4 (along x), and lag-1 correlation across vs away from the
    columns where a fixed grid of `edge_period` px would put its crop edges. `samples` is (N, H, W)."""
    x = np.asarray(samples, np.float64)
    var = float((x**2).mean())
    width = x.shape[-1]

    def corr(cols: np.ndarray, lag: int = 1) -> float:
        return float((x[..., cols] * x[..., cols + lag]).mean() / var)

    edge = np.arange(edge_period - 1, width - 1, edge_period)
    inner = np.setdiff1d(np.arange(width - 1), edge)
    return {
        "variance": var,
        "lag1": corr(np.arange(width - 1)),
        "lag4": corr(np.arange(width - 4), 4),
        "across_edges": corr(edge),
        "inside": corr(inner),
    }
