import numpy as np
import pytest
import torch

from wsi_synth.diffusion.schedule import alphas_cumprod, ddim_step
from wsi_synth.diffusion.solvers import ddim_update, dpm_scheduler, make_solver
from wsi_synth.errors import BadArgumentError
from wsi_synth.sampling.canvas import sample
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, field_statistics
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig

ABAR = alphas_cumprod(1000, "scaled_linear")


def _epsilon(x: torch.Tensor, t) -> torch.Tensor:
    return torch.tanh(0.8 * x + 0.1 * x.roll(1, -1)) * (0.5 + float(t) / 1000)


@pytest.mark.parametrize("steps", [1, 2, 5, 12, 20])
def test_dpm_solver_matches_diffusers_scheduler_step_by_step(steps):
    solver = make_solver("dpm-solver++", ABAR, steps)
    reference = dpm_scheduler(ABAR)
    reference.set_timesteps(steps)
    assert list(solver.timesteps) == reference.timesteps.tolist()
    x_ref = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x, x0 = x_ref.numpy().copy(), None
    for j, t in enumerate(reference.timesteps):
        x_ref = reference.step(_epsilon(x_ref, t), t, x_ref).prev_sample
        x, x0 = solver.update(j, x, _epsilon(torch.from_numpy(x), t).numpy(), x0)
        np.testing.assert_allclose(x, x_ref.numpy(), rtol=1e-4, atol=1e-5)


def test_numpy_ddim_update_has_the_bits_of_the_torch_step():
    rng = np.random.default_rng(1)
    x, eps, noise = (rng.standard_normal((3, 17, 19), dtype=np.float32) for _ in range(3))
    for t, prev, eta in [(999, 950, 0.0), (500, 480, 0.7), (20, 0, 1.0)]:
        expected = ddim_step(
            torch.from_numpy(x), torch.from_numpy(eps), ABAR[t], ABAR[prev], eta=eta, noise=torch.from_numpy(noise)
        ).numpy()
        assert np.array_equal(ddim_update(x, eps, ABAR[t], ABAR[prev], eta=eta, noise=noise), expected)


def test_dpm_solver_at_20_steps_keeps_the_oracle_field_at_least_as_well_as_ddim_at_50():
    """The exact Gaussian denoiser: the target variance is 1 and the lag correlations are known. 3 canvases of 128²
    give the variance to about ±0.05 and correlations to ±0.02 (see test_sampling)."""
    oracle = GaussianFieldDenoiser(16, 2.0, ABAR)
    planner = PlannerConfig("shifted-grid", 16, 2)

    def stats(solver, steps):
        runs = [
            sample(
                oracle, (1, 128, 128), ABAR, SamplerConfig(planner, steps=steps, batch_size=256, seed=s, solver=solver)
            )[0]
            for s in range(3)
        ]
        return field_statistics(np.stack(runs), 16)

    ddim, dpm = stats("ddim", 50), stats("dpm-solver++", 20)
    assert dpm["variance"] >= ddim["variance"] - 0.02 and 0.85 < dpm["variance"] < 1.05
    for lag, target in (("lag1", oracle.target_correlation(1)), ("lag4", oracle.target_correlation(4))):
        assert abs(dpm[lag] - target) < 0.03 and abs(dpm[lag] - ddim[lag]) < 0.02


def test_solver_arguments_are_checked():
    with pytest.raises(BadArgumentError, match="solver"):
        make_solver("euler", ABAR, 10)
    with pytest.raises(BadArgumentError, match="eta 0.5 needs solver ddim"):
        SamplerConfig(steps=10, eta=0.5, solver="dpm-solver++").validate()
