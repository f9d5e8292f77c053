"""Evaluation cost on CPU: feature throughput, and metric time for 10,000 vs 10,000 tiles.

    python -m benchmarks.perf.bench_evaluate [--n 10000] [--dim 512] [--feature-tiles 512] [--size 256]

Features: the offline extractor on real H&E tiles (LC25000 from ../shared/data, resized to --size).
Metrics: on random feature matrices of the offline extractor's width (512-d), so only the metric code is
timed: improved precision/recall (k = 3), FID, authenticity, C_T (20 cells), all in bounded memory
(distance blocks of 1,024 rows). Prints JSON.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import SHARED, Timer, emit, machine, peak_rss_mb


def feature_rate(n_tiles: int, size: int) -> dict:
    from PIL import Image

    from wsi_synth.evaluation.features import RandomFeatures

    files = sorted((SHARED / "tiles" / "lc25000_224" / "lung_aca").glob("*.jpeg"))[:n_tiles]
    if files:
        tiles = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files])
    else:
        tiles = np.random.default_rng(0).integers(0, 255, (n_tiles, size, size, 3), dtype=np.uint8)
    extractor = RandomFeatures()
    extractor(tiles[:8])  # warm-up
    with Timer() as t:
        for i in range(0, len(tiles), 64):
            extractor(tiles[i : i + 64])
    return {
        "extractor": extractor.name,
        "tiles": len(tiles),
        "size": size,
        "tiles_per_s": round(len(tiles) / t.seconds, 1),
    }


def metric_times(n: int, dim: int) -> dict:
    from wsi_synth.evaluation import metrics

    rng = np.random.default_rng(0)
    real, fake, train = (rng.normal(size=(n, dim)).astype(np.float32) for _ in range(3))
    out = {}
    for name, fn in [
        ("precision_recall_s", lambda: metrics.precision_recall(real, fake, k=3)),
        ("fid_s", lambda: metrics.frechet_distance(real, fake)),
        ("authenticity_s", lambda: metrics.authenticity(train, fake)),
        ("c_t_s", lambda: metrics.data_copying(train, real, fake, cells=20)),
    ]:
        with Timer() as t:
            fn()
        out[name] = round(t.seconds, 2)
    out["total_s"] = round(sum(out.values()), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--feature-tiles", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    features = feature_rate(args.feature_tiles, args.size)
    times = metric_times(args.n, args.dim)
    emit(
        {
            "benchmark": "evaluate",
            "machine": machine(),
            "features": features,
            "metrics": {"n_real": args.n, "n_synthetic": args.n, "n_train": args.n, "dim": args.dim, **times},
            "peak_rss_mb": round(peak_rss_mb()),
        }
    )


if __name__ == "__main__":
    main()
