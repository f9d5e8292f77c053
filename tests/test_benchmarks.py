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


def test_real_image_windows_are_whole_windows_of_one_image():
    from benchmarks.quality.bench_slide_fidelity import image_windows

    def row(source: str, index: int, col: int, line: int, kind: str = "labelled") -> dict:
        return {"kind": kind, "source": source, "index": str(index), "x": str(64 * col), "y": str(64 * line)}

    # wsss-a holds two images: 3×2 tiles (all kept), then 2×2 with its (1, 1) tile dropped by import's minimum;
    # wsss-b one 2×2 image whose (0, 1) tile is in the other split; ocdc is another view's source.
    cells_a1 = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    manifest = [row("wsss-a", i, c, r) for i, (c, r) in enumerate(cells_a1)]
    manifest += [row("wsss-a", 6 + i, c, r) for i, (c, r) in enumerate([(0, 0), (1, 0), (0, 1)])]
    manifest += [row("wsss-b", i, c, r) for i, (c, r) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])]
    manifest += [row("ocdc", i, c, r) for i, (c, r) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])]
    in_split = [r for r in manifest if (r["source"], r["index"]) != ("wsss-b", "2")]
    items = [("labelled", r["source"], int(r["index"])) for r in in_split]
    position = {(r["source"], int(r["index"])): n for n, r in enumerate(in_split)}
    # a region (mask-stage crop) numbers its rows from 0 too: its index must not be read as a tile's
    manifest.insert(2, row("wsss-a", 4, 0, 0, kind="regions"))

    windows = image_windows(items, manifest, "wsss", 2)

    assert len(windows) == 3  # three images of the view's sources: a's two and b's one
    assert windows[0] == [[position[("wsss-a", i)] for i in (0, 1, 3, 4)]]  # the one whole 2² window, row by row
    assert windows[1] == [] and windows[2] == []  # a tile missing: no window


def test_a_slide_window_is_one_contiguous_region_of_level_0(tmp_path):
    from PIL import Image

    from benchmarks.quality.bench_slide_fidelity import slide_window

    picture = np.random.default_rng(0).integers(0, 256, (320, 384, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "slide.png")

    tiles = slide_window(tmp_path / "slide.png", 2, np.random.default_rng(3))

    assert len(tiles) == 4 and all(t.shape == (64, 64, 3) for t in tiles)
    region = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    origins = [
        (x, y)
        for y in range(0, 320 - 127, 64)
        for x in range(0, 384 - 127, 64)
        if np.array_equal(picture[y : y + 128, x : x + 128], region)
    ]
    assert len(origins) == 1


def test_the_windows_picture_puts_each_window_back_together_real_above_generated(tmp_path):
    from PIL import Image

    from benchmarks.quality.bench_slide_fidelity import save_tiles, windows_picture

    rng = np.random.default_rng(1)
    windows = {name: rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8) for name in ("real", "made")}
    folders = {
        name: save_tiles((w[r : r + 64, c : c + 64] for w in stack for r in (0, 64) for c in (0, 64)), tmp_path / name)
        for name, stack in windows.items()
    }

    windows_picture(folders["real"], folders["made"], 2, tmp_path / "p.png")

    picture = np.asarray(Image.open(tmp_path / "p.png"))
    assert picture.shape == (2 * 128 + 8, 2 * 128 + 8, 3)
    for row, name in enumerate(("real", "made")):
        for column in range(2):
            y, x = row * 136, column * 136
            assert np.array_equal(picture[y : y + 128, x : x + 128], windows[name][column])
