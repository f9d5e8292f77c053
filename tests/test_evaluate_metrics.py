import numpy as np
import pytest

from wsi_synth.evaluation import metrics


def test_identical_sets_give_precision_recall_one_and_far_sets_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16)).astype(np.float32)
    assert metrics.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    far = real + 100.0
    assert metrics.precision_recall(real, far, k=3) == (0.0, 0.0)


def test_precision_recall_see_mode_dropping():
    rng = np.random.default_rng(1)
    two_modes = np.concatenate([rng.normal(-5, 1, (500, 8)), rng.normal(5, 1, (500, 8))]).astype(np.float32)
    one_mode = rng.normal(-5, 1, (500, 8)).astype(np.float32)
    precision, recall = metrics.precision_recall(two_modes, one_mode, k=3)
    # k=3 balls in 8-D undercover a little; the dropped mode halves recall
    assert precision > 0.8 and 0.35 < recall < 0.6


def test_fid_matches_closed_form_for_two_gaussians():
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -2.0, 0.5, 0.0])
    s1, s2 = np.diag([1.0, 2.0, 0.5, 1.0]), np.diag([2.0, 1.0, 0.5, 3.0])
    closed = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.sqrt(s1 @ s2))  # diagonal: sqrt is elementwise
    assert metrics.gaussian_frechet(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-9)
    x = rng.multivariate_normal(mu1, s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    assert metrics.frechet_distance(x, y) == pytest.approx(closed, rel=0.02)


def _train_test_fake(copying: bool, seed: int = 3):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(3000, 6)).astype(np.float32)
    test = rng.normal(size=(1500, 6)).astype(np.float32)
    if copying:
        fake = train[rng.integers(0, len(train), 1500)] + rng.normal(scale=0.01, size=(1500, 6)).astype(np.float32)
    else:
        fake = rng.normal(size=(1500, 6)).astype(np.float32)
    return train, test, fake


def test_near_copies_are_caught_and_independent_draws_are_not():
    train, test, copies = _train_test_fake(copying=True)
    ct_copy = metrics.data_copying(train, test, copies, cells=10)["c_t"]
    assert ct_copy < -5
    assert metrics.authenticity(train, copies) < 0.1
    train, test, fresh = _train_test_fake(copying=False)
    ct_fresh = metrics.data_copying(train, test, fresh, cells=10)["c_t"]
    assert abs(ct_fresh) < 2
    assert metrics.authenticity(train, fresh) > 0.4


def test_blocked_distances_equal_brute_force(monkeypatch):
    monkeypatch.setattr(metrics, "BLOCK", 7)
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 5)).astype(np.float32)
    b = rng.normal(size=(30, 5)).astype(np.float32)
    full = np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.fill_diagonal(full, np.inf)
    assert np.allclose(metrics.kth_neighbour_radii(a, 3), np.sort(full, axis=1)[:, 2], atol=1e-4)
    idx, dist = metrics.nearest(a, b)
    brute = np.linalg.norm(a[:, None] - b[None], axis=-1)
    assert (idx == brute.argmin(1)).all() and np.allclose(dist, brute.min(1), atol=1e-4)


def test_seam_score_sees_injected_seams():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    # Smooth but aperiodic (an upsampled image would repeat its interpolation kernel, itself a period)
    smooth = 128 + 40 * gaussian_filter(rng.normal(size=(1024, 1024, 3)), sigma=(6, 6, 0)) / 0.047
    clean = metrics.seam_score(smooth, 64)
    tiled = smooth.copy()
    for y in range(0, 1024, 64):  # each 64 px tile gets its own brightness: visible tile boundaries
        for x in range(0, 1024, 64):
            tiled[y : y + 64, x : x + 64] += rng.normal(0, 8)
    seamed = metrics.seam_score(tiled, 64)
    assert 0.8 < clean["boundary_energy_ratio"] < 1.25 and clean["spectral_peak_ratio"] < 3
    assert seamed["boundary_energy_ratio"] > 2 and seamed["spectral_peak_ratio"] > 5


def test_c_t_cells_follow_the_sample_size_so_small_sets_get_a_score():
    rng = np.random.default_rng(0)
    train, test, fake = rng.normal(size=(400, 8)), rng.normal(size=(90, 8)), rng.normal(size=(90, 8))
    result = metrics.data_copying(train, test, fake)
    assert (
        result["cells"] == metrics.cells_for(90, 90) == 1
        and result["c_t"] is not None
        and result["cells_chosen"] == "from the sample size"
    )
    assert abs(result["c_t"]) < 3  # the same distribution: no copying
    copied = train[:90] + rng.normal(scale=1e-3, size=(90, 8))
    assert metrics.data_copying(train, test, copied)["c_t"] < -3
    assert metrics.cells_for(2000, 5000) == 20 and metrics.cells_for(300, 300) == 5
    tiny = metrics.data_copying(train, test[:10], fake)
    assert tiny["c_t"] is None and "at least 20" in tiny["note"]


def test_neighbour_vote_is_a_k_nn_classifier_that_never_counts_a_sample_as_its_own_neighbour():
    from wsi_synth.evaluation.metrics import neighbour_vote

    # a cluster of "a" at 0 with one stray "b" inside it, and a cluster of "b" at 10
    refs = np.array([[0.0], [0.1], [0.2], [0.3], [0.15], [10.0], [10.1], [10.2]], np.float32)
    labels = np.array(["a", "a", "a", "a", "b", "b", "b", "b"], dtype=object)
    assert neighbour_vote(refs, refs, labels, k=1).tolist() == labels.tolist()  # each its own nearest
    alone = neighbour_vote(refs, refs, labels, k=3, same_set=True)
    assert alone[4] == "a" and alone.tolist()[:4] == ["a"] * 4 and alone.tolist()[5:] == ["b"] * 3
    # a tie (one "a", one "b" among two neighbours) goes to the nearer one
    assert neighbour_vote(np.array([[0.16]], np.float32), refs, labels, k=2).tolist() == ["b"]
