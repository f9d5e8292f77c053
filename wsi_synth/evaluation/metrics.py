"""The measures of DiffInfinite's Section 5 / Appendix C, on feature matrices (rows = samples).

Distances are computed in row blocks (`BLOCK` rows against a whole set), so 10,000 × 10,000 comparisons
never hold a 10,000² matrix: memory is `BLOCK × N` floats.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 1024


def _blocked_min(
    queries: np.ndarray,
    refs: np.ndarray,
    fn: Callable[[np.ndarray, int], np.ndarray],
    *,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Apply `fn(d, start)` to each block of the query × reference distance matrix; concatenate results."""
    import torch

    q, r = (
        torch.from_numpy(np.ascontiguousarray(queries, np.float32)),
        torch.from_numpy(np.ascontiguousarray(refs, np.float32)),
    )
    out = []
    for start in range(0, len(q), BLOCK):
        d = torch.cdist(q[start : start + BLOCK], r).numpy()
        out.append(fn(d, start))
        if progress:
            progress(min(BLOCK, len(q) - start))
    return np.concatenate(out) if out else np.zeros(0)


def kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample to its k-th nearest other sample in the same set."""
    if len(features) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(features)}")

    def kth(d: np.ndarray, start: int) -> np.ndarray:
        rows = np.arange(len(d))
        d[rows, start + rows] = np.inf  # a sample is not its own neighbour
        return np.partition(d, k - 1, axis=1)[:, k - 1]

    return _blocked_min(features, features, kth)


def coverage_of(queries: np.ndarray, refs: np.ndarray, ref_radii: np.ndarray) -> np.ndarray:
    """For each query: does it fall inside any reference sample's k-NN ball (the manifold of `refs`)?"""
    return _blocked_min(queries, refs, lambda d, _: np.asarray((d <= ref_radii[None, :]).any(axis=1)))


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): share of fake inside the real manifold,
    and share of real inside the fake manifold, manifolds as unions of k-NN balls."""
    precision = coverage_of(fake, real, kth_neighbour_radii(real, k)).mean()
    recall = coverage_of(real, fake, kth_neighbour_radii(fake, k)).mean()
    return float(precision), float(recall)


def neighbour_vote(
    queries: np.ndarray, refs: np.ndarray, ref_labels: np.ndarray, *, k: int, same_set: bool = False
) -> np.ndarray:
    """The label most of each query's `k` nearest references carry (ties: the nearest of the tied labels), as a
    k-NN classifier of the references' labels; `same_set` when the queries are the references (a sample is not its
    own neighbour)."""
    k = min(k, len(refs) - (1 if same_set else 0))
    if k < 1:
        raise ValueError("need at least one reference besides the query")

    def vote(d: np.ndarray, start: int) -> np.ndarray:
        if same_set:
            rows = np.arange(len(d))
            d[rows, start + rows] = np.inf
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(nearest, np.argsort(np.take_along_axis(d, nearest, 1), axis=1), 1)
        out = np.empty(len(d), dtype=ref_labels.dtype)
        for row, nearest_k in enumerate(order):
            labels = ref_labels[nearest_k]
            values, counts = np.unique(labels, return_counts=True)
            tied = set(values[counts == counts.max()].tolist())
            out[row] = next(label for label in labels if label in tied)  # nearest first
        return out

    return _blocked_min(queries, refs, vote)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between Gaussians fitted to the two feature sets: |μ₁−μ₂|² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    return gaussian_frechet(mu1, s1, mu2, s2)


def gaussian_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (the FID formula), from their means and covariances."""
    import warnings

    from scipy import linalg

    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    with warnings.catch_warnings():  # singular with fewer samples than dimensions: handled below
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise as the reference implementation does
        offset = np.eye(len(s1)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = covmean.real
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return max(distance, 0.0)  # a distance: rounding of the matrix square root can leave -1e-10 for identical sets


def authenticity(train: np.ndarray, fake: np.ndarray) -> float:
    """Authenticity A (Alaa et al. 2022): share of synthetic samples that are *not* closer to their nearest
    training sample than that training sample is to its own nearest training neighbour."""
    train_radii = kth_neighbour_radii(train, 1)

    def authentic(d: np.ndarray, _: int) -> np.ndarray:
        nearest = d.argmin(axis=1)
        return d[np.arange(len(d)), nearest] > train_radii[nearest]

    return float(_blocked_min(fake, train, authentic).mean())


def nearest(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and distance to, each query's nearest reference."""
    both = _blocked_min(queries, refs, lambda d, _: np.stack([d.argmin(1), d.min(1)], axis=1))
    both = both.reshape(-1, 2)
    return both[:, 0].astype(int), both[:, 1]


def cells_for(n_test: int, n_fake: int, *, min_per_cell: int = 20, most: int = 20) -> int:
    """How many k-means cells C_T can use: Meehan et al. ask for enough samples of each set in every cell, so
    one cell per 3 × `min_per_cell` samples of the smaller set (k-means cells are uneven), at most `most`."""
    return max(1, min(most, min(n_test, n_fake) // (3 * min_per_cell)))


def data_copying(
    train: np.ndarray,
    test: np.ndarray,
    fake: np.ndarray,
    *,
    cells: int | None = None,
    min_per_cell: int = 20,
    seed: int = 0,
) -> dict:
    """C_T (Meehan et al. 2020): per k-means cell of the training features, a Mann-Whitney U z-score of the
    distances to the nearest training sample, synthetic vs held-out real; averaged over cells with at least
    `min_per_cell` samples of each, weighted by the cell's share of held-out samples.

    Strongly negative: synthetic samples sit closer to training samples than new real data does (copying).
    Near 0: no copying. Positive: underfitting (synthetic further than real).
    """
    from scipy.cluster.vq import kmeans2

    chosen = "given"
    if cells is None:
        cells, chosen = cells_for(len(test), len(fake), min_per_cell=min_per_cell), "from the sample size"
    if min(len(test), len(fake)) < min_per_cell:
        return {
            "c_t": None,
            "cells_used": 0,
            "cells": 0,
            "cells_chosen": chosen,
            "note": f"C_T needs at least {min_per_cell} held-out and {min_per_cell} synthetic tiles (--min-per-cell), "
            f"got {len(test)} and {len(fake)}",
        }
    centroids, _ = kmeans2(train.astype(np.float64), min(cells, len(train)), minit="++", seed=seed)
    cell_of = lambda x: nearest(x, centroids.astype(np.float32))[0]  # noqa: E731
    d_test, d_fake = nearest(test, train)[1], nearest(fake, train)[1]
    c_test, c_fake = cell_of(test), cell_of(fake)
    z_scores, weights, used = [], [], 0
    for c in range(len(centroids)):
        p, q = d_test[c_test == c], d_fake[c_fake == c]
        if len(p) < min_per_cell or len(q) < min_per_cell:
            continue
        z_scores.append(_mann_whitney_z(q, p))
        weights.append(len(p) / len(test))
        used += 1
    if not z_scores:
        return {
            "c_t": None,
            "cells_used": 0,
            "cells": len(centroids),
            "cells_chosen": chosen,
            "note": f"no cell had {min_per_cell}+ samples of each set: pass fewer --cells",
        }
    w = np.array(weights)
    return {
        "c_t": float(np.dot(w / w.sum(), z_scores)),
        "cells_used": used,
        "cells": len(centroids),
        "cells_chosen": chosen,
    }


def _mann_whitney_z(q: np.ndarray, p: np.ndarray) -> float:
    """z of U = #{(q, p): q > p} (ties ½) under the null, normal approximation with tie correction."""
    from scipy.stats import mannwhitneyu

    m, n = len(q), len(p)
    u = mannwhitneyu(q, p, alternative="two-sided", method="asymptotic").statistic
    ranks = np.concatenate([q, p])
    _, counts = np.unique(ranks, return_counts=True)
    tie = (counts**3 - counts).sum() / ((m + n) * (m + n - 1))
    sigma = np.sqrt(m * n / 12 * ((m + n + 1) - tie))
    return float((u - m * n / 2) / sigma) if sigma > 0 else 0.0


def seam_score(image: np.ndarray, period: int, *, offset: int = 0) -> dict:
    """How much a tiling with `period` px shows: gradient energy on the tile boundaries vs elsewhere
    (≈1 without seams, >1 with), and the spectral peak of the column/row gradient profile at 1/period
    relative to its neighbouring frequencies (≈1 without, ≫1 with)."""
    gray = np.asarray(image, np.float32)
    gray = gray.mean(axis=-1) if gray.ndim == 3 else gray
    gx = np.abs(np.diff(gray, axis=1)).mean(axis=0)  # energy between column j and j+1
    gy = np.abs(np.diff(gray, axis=0)).mean(axis=1)
    ratios, peaks = [], []
    for profile in (gx, gy):
        boundary = (np.arange(len(profile)) + 1 - offset) % period == 0
        if boundary.sum() == 0 or (~boundary).sum() == 0:
            continue
        ratios.append(profile[boundary].mean() / max(profile[~boundary].mean(), 1e-9))
        peaks.append(_spectral_peak(profile, period))
    return {
        "period": period,
        "boundary_energy_ratio": float(np.mean(ratios)) if ratios else None,
        "spectral_peak_ratio": float(np.mean(peaks)) if peaks else None,
    }


def boundary_gradient_energy(image: np.ndarray, inside: np.ndarray, *, ring: int = 8) -> float:
    """Mean gradient magnitude (grey levels per px) in the ring of pixels within `ring` px of the boundary of
    `inside` (an (H, W) bool region): a pasted or badly blended region adds a step there. Compare an edited image's
    value with the original's on the same ring (≈1 without a seam)."""
    from scipy import ndimage

    gray = np.asarray(image, np.float32)
    gray = gray.mean(axis=-1) if gray.ndim == 3 else gray
    distance = np.where(inside, ndimage.distance_transform_edt(inside), ndimage.distance_transform_edt(~inside))
    band = distance <= ring
    gy, gx = np.gradient(gray)
    return float(np.hypot(gx, gy)[band].mean())


def _spectral_peak(profile: np.ndarray, period: int) -> float:
    """How much the gradient profile's spectrum stands out at the harmonics of 1/period.

    Seams are sharp steps every `period` px, so they put equal energy on every harmonic; tissue structure
    is smooth and spread over neighbouring bins. Each harmonic is compared with the median of its
    non-harmonic neighbours (±6 bins), and the ratios averaged: ≈1 without seams, ≫1 with.
    """
    profile = profile[: (len(profile) // period) * period]  # whole periods: harmonics fall exactly on bins
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    k = len(profile) // period
    if k < 2:
        return 1.0
    ratios = []
    for h in range(k, len(spectrum) - 7, k):
        neighbours = [spectrum[i] for i in range(h - 6, h + 7) if i > 0 and i % k]
        ratios.append(spectrum[h] / max(float(np.median(neighbours)), 1e-9))
    return float(np.mean(ratios)) if ratios else 1.0
