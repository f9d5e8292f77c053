"""The benchmarks are a package run as modules (`python -m benchmarks.perf.bench_pyramid`): each imports, imports no
tests, and changes no `sys.path` (the figures in docs/benchmarks.md must be reproducible from a clean checkout)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

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
