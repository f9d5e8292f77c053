"""Benchmarks, run from the repository root as modules: `python -m benchmarks.perf.bench_pyramid`,
`python -m benchmarks.quality.bench_layout`. Each prints JSON; docs/benchmarks.md holds the figures.

- `benchmarks.perf`: how fast and how lean (pyramid and OME writing, extraction, sampling host time, generate at
  scale, training throughput).
- `benchmarks.quality`: model studies (held-out fidelity of tiles and slides, layout and class boundaries, downstream
  segmentation, training and sampling choices); the held-out measuring itself is library code
  (`wsi_synth.evaluation.heldout`), which the model release calls too.
- `benchmarks.common`: the one setup module (realistic H&E content, timing, peak memory, the recipe's data).
"""
