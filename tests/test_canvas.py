import numpy as np
import pytest

from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.sampling.canvas import sample, sample_canvas
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig

ABAR = alphas_cumprod(1000, "scaled_linear")
ORACLE = GaussianFieldDenoiser(16, 2.0, ABAR)
SHAPE = (2, 128, 96)


def _config(planner="shifted-grid", window=64):
    return SamplerConfig(PlannerConfig(planner, 16, 2 if planner == "shifted-grid" else 0, region=32), steps=6, eta=0.7, batch_size=16,
                         window=window, seed=11)


@pytest.mark.parametrize("planner", ["shifted-grid", "random-patch"])
def test_in_memory_zarr_and_threads_give_the_same_canvas(tmp_path, planner):
    reference = sample(ORACLE, SHAPE, ABAR, _config(planner, window=0))
    in_memory = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=64))
    on_disk = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=32), work=tmp_path / "w", out_of_core=True)
    threaded = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=32), workers=2)
    assert np.array_equal(reference, in_memory) and np.array_equal(reference, np.asarray(on_disk[:])) and np.array_equal(reference, threaded)


def test_out_of_core_run_resumes_after_an_interruption(tmp_path):
    full = sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "a", out_of_core=True)

    def stop_at_3(step, total):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "b", out_of_core=True, progress=stop_at_3)
    resumed = sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "b", out_of_core=True, resume=True)
    assert np.array_equal(np.asarray(full[:]), np.asarray(resumed[:]))


def test_a_two_worker_dask_cluster_gives_the_same_canvas(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')")
    reference = sample(ORACLE, SHAPE, ABAR, _config(window=0))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        out = sample_canvas(ORACLE, SHAPE, ABAR, _config(window=32), work=tmp_path / "w", client=client)
    assert np.array_equal(reference, np.asarray(out[:]))
