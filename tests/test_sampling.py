import numpy as np
import pytest
import torch

from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.errors import BadArgumentError
from wsi_synth.models.conditioning import Conditioning
from wsi_synth.sampling.canvas import sample
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, field_statistics
from wsi_synth.sampling.planners import PlannerConfig, crops_per_step, minimum_crops, plan_window
from wsi_synth.sampling.sampler import SamplerConfig, SampleStats

ABAR = alphas_cumprod(1000, "scaled_linear")
PLANNERS = [
    PlannerConfig("fixed-grid", 16, 0),
    PlannerConfig("shifted-grid", 16, 0),
    PlannerConfig("shifted-grid", 16, 2),
    PlannerConfig("shifted-grid", 16, 4),
    PlannerConfig("random-patch", 16, 0, region=64),
]


@pytest.mark.parametrize("planner", PLANNERS, ids=lambda p: f"{p.name}-m{p.context}")
@pytest.mark.parametrize("canvas", [(128, 128), (100, 77), (16, 40)])
def test_every_pixel_has_one_owner_whose_crop_contains_it(planner, canvas):
    h, w = canvas
    plan = (
        plan_window(planner, canvas, (0, h, 0, w), seed=3, step=5)
        if planner.name != "random-patch"
        else plan_window(planner, canvas, (0, h, 0, w), seed=3, step=5)
    )
    assert plan.owner.shape == canvas and plan.owner.min() >= 0 and plan.owner.max() < len(plan.crops)
    cy, cx = plan.crops[:, 0], plan.crops[:, 1]
    assert (cy >= 0).all() and (cx >= 0).all() and (cy + 16 <= h).all() and (cx + 16 <= w).all()
    yy, xx = np.mgrid[0:h, 0:w]
    oy, ox = cy[plan.owner], cx[plan.owner]
    assert ((yy >= oy) & (yy < oy + 16) & (xx >= ox) & (xx < ox + 16)).all()
    if planner.context:  # every owned pixel sees ≥ m px of context wherever the canvas allows it
        m = planner.context
        inside = (yy >= m) & (yy < h - m) & (xx >= m) & (xx < w - m)
        ok = (yy - oy >= m) & (oy + 16 - 1 - yy >= m) & (xx - ox >= m) & (ox + 16 - 1 - xx >= m)
        assert ok[inside].all()


def test_plans_do_not_depend_on_the_window():
    for planner in PLANNERS:
        canvas = (128, 128)
        whole = plan_window(planner, canvas, (0, 128, 0, 128), seed=1, step=2)
        crop_of = whole.crops[whole.owner]
        for window in [(0, 64, 0, 64), (64, 128, 0, 64), (0, 64, 64, 128), (64, 128, 64, 128)]:
            part = plan_window(planner, canvas, window, seed=1, step=2)
            y0, y1, x0, x1 = window
            assert np.array_equal(part.crops[part.owner], crop_of[y0:y1, x0:x1]), planner


def test_crop_counts_relative_to_the_minimum():
    d, canvas = 64, (2048, 2048)
    n0 = minimum_crops(canvas, d)
    shifted = crops_per_step(PlannerConfig("shifted-grid", d, 0), canvas)
    assert n0 <= shifted <= (1 + d / canvas[0]) * (1 + d / canvas[1]) * n0
    assert crops_per_step(PlannerConfig("fixed-grid", d, 0), canvas) == n0
    assert 1.6 < crops_per_step(PlannerConfig("shifted-grid", d, 8), canvas) / n0 < 2.0
    assert (
        1.8 < crops_per_step(PlannerConfig("random-patch", d, 0), (1024, 1024)) / minimum_crops((1024, 1024), d) < 2.6
    )


def _gaussian_stats(planner: PlannerConfig, seeds=range(3), size=128, length=2.0):
    oracle = GaussianFieldDenoiser(16, length, ABAR)
    samples = [
        sample(oracle, (1, size, size), ABAR, SamplerConfig(planner, steps=50, batch_size=64, seed=s, solver="ddim"))[0]
        for s in seeds
    ]
    f = field_statistics(np.stack(samples), 16)  # across = pairs (15|16), (31|32), … straddling the fixed grid's edges
    return f["variance"], f["lag1"], f["across_edges"], f["inside"], oracle


def test_gaussian_field_fidelity_and_seams():
    """Tolerances: 3 canvases of 128² at ℓ = 2 px give ~3·128²/(2πℓ²)/… ≈ 2,000 effectively independent
    values, so the sample variance is known to ±0.05 and correlations to ±0.02; the bounds below are the
    physics (what each planner can reach) widened by that noise."""
    var, lag1, across, within, oracle = _gaussian_stats(PlannerConfig("shifted-grid", 16, 4))
    target = oracle.target_correlation(1)
    assert 0.8 < var < 1.1 and abs(lag1 - target) < 0.05
    assert abs(across - within) < 0.04  # no seam: the boundaries move every step
    var_fixed, _, across_fixed, within_fixed, _ = _gaussian_stats(PlannerConfig("fixed-grid", 16, 0))
    assert across_fixed < within_fixed - 0.3  # fixed crops never see each other: correlation drops at their edges
    var_plain, _, across_plain, within_plain, _ = _gaussian_stats(PlannerConfig("shifted-grid", 16, 0))
    assert var_plain < var - 0.05  # plain shifted windows wash out contrast; context restores it
    assert abs(across_plain - within_plain) < 0.04
    var_rp, _, across_rp, within_rp, _ = _gaussian_stats(PlannerConfig("random-patch", 16, 0, region=64))
    assert abs(across_rp - within_rp) < 0.04 and var_rp < var


def test_same_seed_same_canvas_for_any_window_and_batch_size():
    oracle = GaussianFieldDenoiser(16, 2.0, ABAR)
    for planner in (PlannerConfig("shifted-grid", 16, 2), PlannerConfig("random-patch", 16, 0, region=64)):
        runs = [
            sample(
                oracle,
                (2, 128, 96),
                ABAR,
                SamplerConfig(planner, steps=8, eta=0.5, batch_size=b, window=win, seed=4, solver="ddim"),
            )
            for b, win in [(1, 0), (64, 64), (7, 128)]
        ]
        assert all(np.array_equal(runs[0], r) for r in runs[1:])
        other = sample(oracle, (2, 128, 96), ABAR, SamplerConfig(planner, steps=8, eta=0.5, seed=5, solver="ddim"))
        assert not np.array_equal(runs[0], other)


def _class_id_denoiser(calls: list):
    """ε = the class id of each crop's condition, everywhere; records the conditions of every call."""

    def constant(z, t, labels, masks):
        calls.append(labels.tolist())
        return labels.float().view(-1, 1, 1, 1).expand_as(z).clone()

    return constant


def _three_class_map() -> np.ndarray:
    """32² with 16² crops: top-left crop {0, 1}, the right ones {2}, bottom-left {0}."""
    labels = np.zeros((32, 32), np.uint8)
    labels[:, 16:] = 2
    labels[:8, :8] = 1
    return labels


def _guided_eps(denoiser, config: SamplerConfig, labels: np.ndarray, stats: SampleStats) -> np.ndarray:
    """The (H, W) guided ε the sampler composites for one step of a one-channel canvas (caught on its way to the
    solver)."""
    from wsi_synth.sampling import sampler as sampler_module

    captured = {}
    real = sampler_module.owned_eps

    def spy(*args, **kwargs):
        captured["eps"] = real(*args, **kwargs)
        return captured["eps"]

    sampler_module.owned_eps = spy
    try:
        sample(denoiser, (1, *labels.shape), ABAR, config, labels=labels, stats=stats)
    finally:
        sampler_module.owned_eps = real
    return captured["eps"][0]


def test_per_class_conditioning_is_composited_by_the_label_map_with_guidance():
    stats = SampleStats()
    config = SamplerConfig(PlannerConfig("fixed-grid", 16, 0), steps=1, omega=3.0)
    eps = _guided_eps(_class_id_denoiser([]), config, _three_class_map(), stats)
    assert (eps[:8, :8] == 4.0).all()  # class 1 with ω = 3: (1+3)·1 − 3·0
    assert (eps[:, 16:] == 8.0).all()  # class 2: (1+3)·2
    assert (eps[8:, :16] == 0.0).all()  # unknown pixels: the null condition
    # 4 crops: top-left has classes {0, 1}, the right ones {2}, bottom-left {0}; each also needs the null pass
    assert stats.evaluations == 2 + 2 + 2 + 1


def test_without_guidance_no_null_pass_is_made():
    calls: list = []
    stats = SampleStats()
    config = SamplerConfig(PlannerConfig("fixed-grid", 16, 0), steps=1, omega=0.0)
    sample(_class_id_denoiser(calls), (1, 32, 32), ABAR, config, labels=_three_class_map(), stats=stats)
    conditions = sorted(c for call in calls for c in call)
    # ω = 0: one pass per class present (the unknown class is the null condition itself): {0, 1}, {2}, {2}, {0}
    assert stats.evaluations == 2 + 1 + 1 + 1 and conditions == [0, 0, 1, 2, 2]


def _map_denoiser(calls: list):
    """Spatial conditioning: ε = the class map its one-hot channels encode (Σ c·onehot_c), plus 10 for the null pass."""

    def value(z, t, labels, masks):
        calls.append((labels.tolist(), masks.shape[1]))
        classes = torch.arange(1, masks.shape[1] + 1, dtype=torch.float32).view(1, -1, 1, 1)
        out = (masks * classes).sum(1, keepdim=True) + 10 * (labels == 0).float().view(-1, 1, 1, 1)
        return out.expand_as(z).clone()

    return value


@pytest.mark.parametrize("omega", [0.0, 3.0])
@pytest.mark.parametrize("empty_map", ["map", "null"])
def test_spatial_conditioning_renders_every_class_of_a_crop_in_one_pass(omega, empty_map):
    calls: list = []
    stats = SampleStats()
    config = SamplerConfig(
        PlannerConfig("fixed-grid", 16, 0), steps=1, omega=omega, conditioning=Conditioning("spatial", 3, empty_map)
    )
    eps = _guided_eps(_map_denoiser(calls), config, _three_class_map(), stats)
    assert all(channels == 2 for _, channels in calls)  # K − 1 one-hot channels
    # top-left crop: one map pass for its classes {0, 1}: class-1 pixels read 1, its unknown pixels 0 (the map's zeros)
    assert (
        (eps[:8, :8] == (1 + omega) * 1 - omega * 10).all()
        and (eps[8:16, :16] == 0.0).all()
        and (eps[:8, 8:16] == 0.0).all()
    )
    assert (eps[:, 16:] == (1 + omega) * 2 - omega * 10).all()
    # the bottom-left crop holds no class: one pass of its all-zero map with the map embedding (0), or, for bundles
    # that learnt an empty map as null, the null pass (10); guidance acts on class pixels, so it needs no null pass
    assert (eps[16:, :16] == (0.0 if empty_map == "map" else 10.0)).all()
    assert stats.evaluations == 4 + (3 if omega > 0 else 0)


def test_an_unknown_empty_map_setting_is_refused():
    with pytest.raises(BadArgumentError, match="empty_map"):
        sample(
            _map_denoiser([]),
            (1, 32, 32),
            ABAR,
            SamplerConfig(conditioning=Conditioning("spatial", 3, "blank")),
            labels=_three_class_map(),
        )


def test_bad_sampler_arguments():
    oracle = GaussianFieldDenoiser(16, 2.0, ABAR)
    with pytest.raises(BadArgumentError, match="context"):
        sample(oracle, (1, 64, 64), ABAR, SamplerConfig(PlannerConfig("shifted-grid", 16, 8)))
    with pytest.raises(BadArgumentError, match="smaller than the crop"):
        sample(oracle, (1, 8, 64), ABAR, SamplerConfig(PlannerConfig("shifted-grid", 16, 2)))
    with pytest.raises(BadArgumentError, match="planner"):
        sample(oracle, (1, 64, 64), ABAR, SamplerConfig(PlannerConfig("spiral", 16, 0)))


def _batch_sensitive(z, t, labels, masks):
    """A nonlinear ε whose value depends on the whole batch (z.mean()): equal canvases need equal batches."""
    import torch

    m = masks if masks is not None else torch.zeros(z.shape[0], 1, *z.shape[2:])
    return torch.tanh(z * 0.7 + labels.view(-1, 1, 1, 1) * 0.1 + m * 0.3 + z.mean() * 0.01) * (
        t.view(-1, 1, 1, 1).float() / 1000
    )


@pytest.mark.parametrize("planner", PLANNERS[:2] + PLANNERS[3:], ids=lambda p: f"{p.name}-m{p.context}")
def test_vectorised_sampler_is_bit_identical_to_v0_1_for_the_same_batches(planner):
    from benchmarks.perf import legacy_sampler

    labels = np.zeros((100, 130), np.uint8)
    labels[10:60, 20:90], labels[40:100, 70:130], labels[70:90, 5:40] = 1, 2, 3
    oracle = GaussianFieldDenoiser(16, 2.0, ABAR)
    cases = [(labels, 0, 2.0, 0.5), (labels, 0, 0.0, 0.0), (None, 2, 1.5, 0.0), (None, 0, 0.0, 0.3)]
    # crops clamped at the canvas edge repeat; their copies share one evaluation, so the batches differ from
    # v0.1's there
    plan = plan_window(planner, (100, 130), (0, 64, 0, 64), seed=3, step=0)
    repeats = len(np.unique(plan.crops, axis=0)) < len(plan.crops)
    for denoiser in (oracle,) if repeats else (oracle, _batch_sensitive):
        for lab, condition, omega, eta in cases:
            config = SamplerConfig(
                planner, steps=3, eta=eta, omega=omega, batch_size=7, window=64, seed=3, solver="ddim"
            )
            now = sample(denoiser, (2, 100, 130), ABAR, config, labels=lab, condition=condition)
            before = legacy_sampler.sample(denoiser, (2, 100, 130), ABAR, config, labels=lab, condition=condition)
            assert np.array_equal(now, before), (denoiser, lab is not None, omega)


def test_a_canvas_of_one_crop_is_evaluated_once_per_step_and_sharing_copies_changes_nothing():
    from benchmarks.perf import legacy_sampler

    oracle = GaussianFieldDenoiser(16, 2.0, ABAR)
    labels = np.zeros((16, 16), np.uint8)
    labels[:, 8:] = 1
    config = SamplerConfig(PlannerConfig("shifted-grid", 16, 2), steps=4, omega=1.0, seed=5, solver="ddim")
    # the planner repeats the crop
    assert len(plan_window(config.planner, (16, 16), (0, 16, 0, 16), seed=5, step=0).crops) > 1
    stats = SampleStats()
    now = sample(oracle, (2, 16, 16), ABAR, config, labels=labels, stats=stats)
    assert stats.crops == 4 and stats.evaluations == 4 * 2  # per step: class 1 (and unknown = null), the null pass once
    assert np.array_equal(now, legacy_sampler.sample(oracle, (2, 16, 16), ABAR, config, labels=labels))


@pytest.mark.parametrize("d, region, canvas", [(16, 64, (300, 260)), (16, 256, (256, 256)), (8, 40, (97, 131))])
def test_random_patch_plans_are_those_of_the_pixel_by_pixel_walk(d, region, canvas):
    from benchmarks.perf import legacy_sampler

    planner = PlannerConfig("random-patch", d, 0, region=region)
    for seed in range(3):
        now = plan_window(planner, canvas, (0, canvas[0], 0, canvas[1]), seed=seed, step=7)
        before = legacy_sampler.plan_window(planner, canvas, (0, canvas[0], 0, canvas[1]), seed=seed, step=7)
        assert np.array_equal(now.crops, before.crops) and np.array_equal(now.owner, before.owner)


def test_estimated_random_patch_crops_are_within_two_percent_and_grids_are_exact():
    from wsi_synth.sampling.planners import estimate_crops_per_step

    canvas = (700, 650)  # 22 × 21 regions of 32 px: more than the estimate plans
    planner = PlannerConfig("random-patch", 8, 0, region=32)
    estimate, exact = estimate_crops_per_step(planner, canvas, seed=2, step=1)
    assert not exact and abs(estimate / crops_per_step(planner, canvas, seed=2, step=1) - 1) < 0.02
    grid = PlannerConfig("shifted-grid", 8, 1)
    assert estimate_crops_per_step(grid, canvas, seed=2, step=1) == (crops_per_step(grid, canvas, seed=2, step=1), True)


def test_batches_gathered_ahead_for_a_gpu_denoiser_give_the_same_canvas():
    """A denoiser that asks for pinned memory (a GPU one) gets its batches from a background thread; same result."""

    class Overlapped:
        pin_memory = True  # pinning itself happens only where CUDA exists; the thread runs either way

        def __call__(self, z, t, labels, masks):
            return _batch_sensitive(z, t, labels, masks)

    labels = np.zeros((96, 96), np.uint8)
    labels[20:70, 10:80] = 2
    config = SamplerConfig(PlannerConfig("shifted-grid", 16, 2), steps=3, omega=1.0, batch_size=5, seed=1)
    assert np.array_equal(
        sample(Overlapped(), (2, 96, 96), ABAR, config, labels=labels),
        sample(_batch_sensitive, (2, 96, 96), ABAR, config, labels=labels),
    )
