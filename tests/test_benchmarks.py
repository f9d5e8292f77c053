"""The benchmarks are a package run as modules (`python -m benchmarks.perf.bench_pyramid`): each imports, imports no
tests, and changes no `sys.path` (the figures in docs/benchmarks.md must be reproducible from a clean checkout)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "benchmarks").rglob("*.py")
    if p.name != "__init__.py"
)


def test_benchmarks_are_split_into_performance_and_model_studies():
    groups = {m.split(".")[1] for m in MODULES if m.count(".") == 2}
    assert groups == {"perf", "quality"}
    assert "benchmarks.perf.bench_pyramid" in MODULES and "benchmarks.quality.bench_layout" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_imports_as_a_module_without_tests_or_path_changes(module):
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m == "tests" or m.startswith("tests.")], "benchmarks import no tests"
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "sys.path.insert" not in calls, "benchmarks are a package: no sys.path edits"
    importlib.import_module(module)


def test_a_benchmark_runs_with_python_dash_m_from_the_repository():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality.bench_layout", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage" in result.stdout, result.stderr


def test_class_structure_tells_one_drawing_in_two_tints_from_two_drawings():
    """bench_class_structure's measure: the same detail in another colour correlates fully, other detail does not,
    and the tint distance is what the colours differ by."""
    from benchmarks.quality.bench_class_structure import correlations

    rng = np.random.default_rng(0)
    detail = rng.normal(0, 30, (4, 64, 64, 1))  # four seeds' drawings
    pink, purple = np.array([220, 150, 190]), np.array([150, 90, 180])
    one_drawing = np.stack([np.clip(detail + pink, 0, 255), np.clip(detail + purple, 0, 255)]).astype(np.uint8)
    assert one_drawing.shape == (2, 4, 64, 64, 3)
    shared = correlations(one_drawing)
    assert shared["same_noise"] > 0.95 and abs(shared["other_noise"]) < 0.1
    assert abs(shared["tint_distance"] - np.linalg.norm(pink - purple)) < 2
    own = np.stack([one_drawing[0], np.clip(rng.normal(0, 30, (4, 64, 64, 1)) + purple, 0, 255).astype(np.uint8)])
    assert abs(correlations(own)["same_noise"]) < 0.1


def test_the_gaussian_reference_denoises_toward_each_class_mean(tiny_model):
    """bench_class_structure's linear reference: a crop at its class's mean with no noise needs no correction, and at
    full noise the denoiser's x̂₀ is that class's mean whatever the crop's map says of other classes."""
    import torch

    from benchmarks.quality.bench_class_structure import GaussianDenoiser
    from wsi_synth.models.bundle import open_bundle

    reference = GaussianDenoiser(str(tiny_model), tiny_model.parent / "data")
    bundle = open_bundle(tiny_model)
    shape = (bundle.latent.channels, 16, 16)
    k = len(bundle.classes)
    for c, mean in reference.means.items():
        masks = torch.zeros(1, k - 1, 16, 16)
        masks[0, c - 1] = 1
        t = torch.tensor([10])
        a = float(reference.abar[10])
        eps = reference(torch.from_numpy((a**0.5 * mean).numpy()).float().reshape(1, *shape), t, torch.ones(1), masks)
        assert float(eps.abs().max()) < 1e-3
        noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(c))
        a = float(reference.abar[999])
        eps = reference(noise, torch.tensor([999]), torch.ones(1), masks)
        x0 = (noise.double().flatten() - (1 - a) ** 0.5 * eps.double().flatten()) / a**0.5
        assert float((x0 - mean).norm() / (noise.double().flatten() / a**0.5 - mean).norm()) < 0.2
    assert len(reference.means) >= 2
