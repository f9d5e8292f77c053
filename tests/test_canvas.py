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
    return SamplerConfig(
        PlannerConfig(planner, 16, 2 if planner == "shifted-grid" else 0, region=32),
        steps=6,
        eta=0.7,
        batch_size=16,
        window=window,
        seed=11,
        solver="ddim",
    )


@pytest.mark.parametrize("planner", ["shifted-grid", "random-patch"])
def test_in_memory_zarr_and_threads_give_the_same_canvas(tmp_path, planner):
    reference = sample(ORACLE, SHAPE, ABAR, _config(planner, window=0))
    in_memory = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=64))
    on_disk = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=32), work=tmp_path / "w", out_of_core=True)
    threaded = sample_canvas(ORACLE, SHAPE, ABAR, _config(planner, window=32), workers=2)
    assert (
        np.array_equal(reference, in_memory)
        and np.array_equal(reference, np.asarray(on_disk[:]))
        and np.array_equal(reference, threaded)
    )


def test_out_of_core_run_resumes_after_an_interruption(tmp_path):
    full = sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "a", out_of_core=True)

    def stop_at_3(step, total):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "b", out_of_core=True, progress=stop_at_3)
    resumed = sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path / "b", out_of_core=True, resume=True)
    assert np.array_equal(np.asarray(full[:]), np.asarray(resumed[:]))


@pytest.mark.slow
def test_a_two_worker_dask_cluster_gives_the_same_canvas(tmp_path):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')"
    )
    reference = sample(ORACLE, SHAPE, ABAR, _config(window=0))
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        out = sample_canvas(ORACLE, SHAPE, ABAR, _config(window=32), work=tmp_path / "w", client=client)
    assert np.array_equal(reference, np.asarray(out[:]))


@pytest.mark.slow
def test_a_cluster_run_survives_losing_its_workers_one_after_another(tmp_path):
    import os
    import signal
    import threading

    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')"
    )
    labels = np.kron(np.random.default_rng(5).integers(0, 3, (8, 6)), np.ones((16, 16), int)).astype(np.uint8)
    reference = sample(ORACLE, SHAPE, ABAR, _config(window=0), labels=labels)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        victims = dict(zip((2, 4), client.run(os.getpid).values(), strict=True))

        def kill_a_worker_during_the_next_step(step, total):
            # SIGKILL while the next step's window tasks run: no goodbye, the nanny starts a fresh worker
            if step in victims:
                threading.Timer(0.05, os.kill, (victims[step], signal.SIGKILL)).start()

        out = sample_canvas(
            ORACLE,
            SHAPE,
            ABAR,
            _config(window=32),
            work=tmp_path / "w",
            client=client,
            labels=labels,
            progress=kill_a_worker_during_the_next_step,
        )
        assert not set(victims.values()) & set(client.run(os.getpid).values())  # both original workers really died
    # nothing the tasks need lived only in the dead workers' memory: the same canvas as one process makes
    assert np.array_equal(reference, np.asarray(out[:]))


def _interrupted_at(step_to_stop: int):
    def stop(step, total):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return stop


@pytest.mark.parametrize("solver", ["ddim", "dpm-solver++", "distilled"])
@pytest.mark.parametrize(
    "first_out_of_core, then_out_of_core", [(False, False), (False, True), (True, False), (True, True)]
)
def test_a_run_resumes_to_the_same_canvas_in_either_storage(tmp_path, solver, first_out_of_core, then_out_of_core):
    """A state saved in memory is loaded into the zarr store (and back), never replaced by an empty canvas."""
    from dataclasses import replace

    from wsi_synth.sampling.sampler import SampleStats

    config = replace(_config(), eta=0.7 if solver == "ddim" else 0.0, solver=solver)
    full_stats, resumed_stats = SampleStats(), SampleStats()
    full = sample_canvas(ORACLE, SHAPE, ABAR, config, stats=full_stats)
    with pytest.raises(KeyboardInterrupt):
        sample_canvas(
            ORACLE,
            SHAPE,
            ABAR,
            config,
            work=tmp_path,
            out_of_core=first_out_of_core,
            save_every=1,
            progress=_interrupted_at(4),
        )
    resumed = sample_canvas(
        ORACLE, SHAPE, ABAR, config, work=tmp_path, out_of_core=then_out_of_core, resume=True, stats=resumed_stats
    )
    assert np.array_equal(full, np.asarray(resumed[:]))
    assert resumed_stats == full_stats  # the counts cover every step, not only the resumed ones


def test_resume_with_other_settings_is_refused_naming_what_changed(tmp_path):
    from dataclasses import replace

    from wsi_synth.errors import BadArgumentError

    with pytest.raises(KeyboardInterrupt):
        sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path, save_every=1, progress=_interrupted_at(2))
    for changed, name in [(replace(_config(), seed=12), "seed 11 → 12"), (replace(_config(), steps=9), "steps 6 → 9")]:
        with pytest.raises(BadArgumentError, match=name):
            sample_canvas(ORACLE, SHAPE, ABAR, changed, work=tmp_path, resume=True)
    with pytest.raises(BadArgumentError, match="model"):
        sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path, resume=True, fingerprint={"model": "other"})
    # batch and window sizes do not change the result: resuming with others is fine
    resumed = sample_canvas(
        ORACLE, SHAPE, ABAR, replace(_config(), batch_size=5, window=96), work=tmp_path, resume=True
    )
    assert np.array_equal(resumed, sample_canvas(ORACLE, SHAPE, ABAR, _config()))


def test_the_saved_pointer_always_names_a_complete_state(tmp_path):
    import json

    with pytest.raises(KeyboardInterrupt):
        sample_canvas(ORACLE, SHAPE, ABAR, _config(), work=tmp_path, save_every=2, progress=_interrupted_at(5))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["step"] == 4 and state["storage"] == "memory" and (tmp_path / state["current"]).is_file()
    # no partial or older states
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-000004.npz", "state.json"]


@pytest.mark.parametrize("solver", ["ddim", "dpm-solver++"])
def test_canvases_sampled_together_are_those_sampled_alone(solver):
    from dataclasses import replace

    from wsi_synth.sampling.canvas import sample_canvases

    shape = (2, 48, 40)
    configs = [
        replace(_config(window=0), seed=seed, solver=solver, eta=0.0 if solver != "ddim" else 0.5, batch_size=7)
        for seed in (3, 4, 5)
    ]
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, (48, 40)).astype(np.uint8) for _ in configs]

    # the oracle, shifted by each evaluation's class inside its mask: misrouted classes show
    def by_class(z, t, cls, masks):
        return ORACLE(z, t, cls, masks) + 0.05 * cls.float().view(-1, 1, 1, 1) * masks

    together = sample_canvases(by_class, shape, ABAR, configs, labels=labels)
    alone = [sample(by_class, shape, ABAR, c, labels=lab) for c, lab in zip(configs, labels, strict=True)]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone, strict=True))
    assert not np.array_equal(together[0], together[1])


def _start(x0: np.ndarray, strength: float):
    from wsi_synth.sampling.canvas import StartCanvas

    return StartCanvas(lambda y0, y1: x0[:, y0:y1], strength, f"test:{strength}")


@pytest.mark.parametrize("solver", ["ddim", "dpm-solver++"])
def test_a_canvas_started_part_way_keeps_more_of_its_start_the_lower_the_strength(solver):
    """SDEdit: a field sampled from another seed, noised part-way and denoised, stays near it at a low strength and
    forgets it at a high one; the canvas keeps the variance sampling from noise gives, whatever the strength."""
    from dataclasses import replace

    config = replace(_config(), solver=solver, eta=0.0, steps=10)
    x0 = sample(ORACLE, SHAPE, ABAR, replace(config, seed=99))
    reference = sample(ORACLE, SHAPE, ABAR, config)
    distances = []
    for strength in (0.2, 0.5, 0.9):
        out = sample_canvas(ORACLE, SHAPE, ABAR, config, start=_start(x0, strength))
        distances.append(float(np.mean((out - x0) ** 2)))
        assert float(np.var(out)) == pytest.approx(float(np.var(reference)), rel=0.1)
    unrelated = float(np.mean((reference - x0) ** 2))
    assert distances[0] < 0.25 * unrelated and distances[0] < distances[1] < distances[2] <= 1.1 * unrelated


def test_a_started_canvas_is_the_same_in_any_storage_and_window_and_resumes(tmp_path):
    from dataclasses import replace

    from wsi_synth.errors import BadArgumentError
    from wsi_synth.sampling.sampler import SampleStats

    config = replace(_config(), solver="dpm-solver++", eta=0.0, steps=8)
    x0 = sample(ORACLE, SHAPE, ABAR, replace(config, seed=5))
    stats = SampleStats()
    reference = sample_canvas(ORACLE, SHAPE, ABAR, config, start=_start(x0, 0.5), stats=stats)
    assert stats.steps == 4  # the last half of the steps only
    on_disk = sample_canvas(
        ORACLE, SHAPE, ABAR, replace(config, window=32), start=_start(x0, 0.5), work=tmp_path / "a", out_of_core=True
    )
    assert np.array_equal(reference, np.asarray(on_disk[:]))
    with pytest.raises(KeyboardInterrupt):
        sample_canvas(
            ORACLE,
            SHAPE,
            ABAR,
            config,
            start=_start(x0, 0.5),
            work=tmp_path / "b",
            save_every=1,
            progress=_interrupted_at(2),
        )
    with pytest.raises(BadArgumentError, match="start_strength"):
        sample_canvas(ORACLE, SHAPE, ABAR, config, start=_start(x0, 0.6), work=tmp_path / "b", resume=True)
    resumed = sample_canvas(ORACLE, SHAPE, ABAR, config, start=_start(x0, 0.5), work=tmp_path / "b", resume=True)
    assert np.array_equal(reference, resumed)
