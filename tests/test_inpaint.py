"""`wsi-synth inpaint` on a real slide: the rest of the slide kept, the regions regenerated without a seam, the
mask and record, determinism, resume, resampling, and one-line refusals; and the sampler's known-pixel machinery."""

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import torch
from shapely.geometry import Point, box, mapping
from wsi_synth_cli.main import cli

import wsi_synth
from tests.conftest import shared
from tests.test_generate import _bundled_model
from wsi_synth.evaluation.metrics import boundary_gradient_energy
from wsi_synth.generation import inpaint as inpaint_module
from wsi_synth.models.conditioning import Conditioning

#: Two round regions in tissue of CMU-1-Small-Region (2220 × 2967 px, 0.499 µm/px), far enough apart for two patches.
CENTRES = ((1100, 1500), (700, 2500))
RADIUS = 80


def _regions(path: Path, names=("Tumor", "Stroma"), centres=CENTRES, radius=RADIUS) -> Path:
    features = [
        {
            "type": "Feature",
            "geometry": mapping(Point(c).buffer(radius)),
            "properties": {"objectType": "annotation", "classification": {"name": n}},
        }
        for n, c in zip(names, centres, strict=True)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _level0(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as s:
        return np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))


def _inside(shape, centres=CENTRES, radius: float = RADIUS) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.any([np.hypot(xx - x, yy - y) <= radius for x, y in centres], axis=0)


def _run(runner, *args) -> None:
    result = runner.invoke(cli, ["inpaint", *map(str, args), "-q"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """One run of the bundled model on two regions of CMU-1-Small-Region, their classes mapped by a class map."""
    from click.testing import CliRunner

    _bundled_model()
    cmu_slide = shared("slides", "CMU-1-Small-Region.svs")
    tmp = tmp_path_factory.mktemp("inpaint")
    classes = tmp / "map.yaml"
    classes.write_text("classes: [tumour, stroma, normal]\nmap: {Tumor: tumour, Stroma: stroma}\n")
    out = tmp / "edited.tiff"
    _run(CliRunner(), cmu_slide, _regions(tmp / "r.geojson"), "--classes", classes, "--steps", "3", "--out", out)
    return out


def test_outside_the_regions_the_slide_is_kept_and_inside_it_is_new(edited, cmu_slide):
    before, after = _level0(cmu_slide).astype(np.float64), _level0(edited).astype(np.float64)
    outside = ~_inside(before.shape[:2], radius=RADIUS + 32)  # the regions and the default --margin
    psnr = 10 * np.log10(255**2 / ((before - after) ** 2)[outside].mean())
    assert psnr >= 40, psnr
    inside = _inside(before.shape[:2], radius=RADIUS - 4)
    jpeg_noise = np.abs(before - after)[outside].mean()
    assert np.abs(before - after)[inside].mean() > 10 * max(jpeg_noise, 1.0)


def test_the_region_boundary_shows_no_seam(edited, cmu_slide):
    before, after = _level0(cmu_slide), _level0(edited)
    for x, y in CENTRES:
        window = (slice(y - 2 * RADIUS, y + 2 * RADIUS), slice(x - 2 * RADIUS, x + 2 * RADIUS))
        inside = _inside(before.shape[:2])[window]
        ratio = boundary_gradient_energy(after[window], inside) / boundary_gradient_energy(before[window], inside)
        assert ratio <= 1.5, ratio


def test_the_output_has_the_slides_geometry_and_a_mask_of_the_regions(edited, cmu_slide):
    with openslide.OpenSlide(str(cmu_slide)) as a, openslide.OpenSlide(str(edited)) as b:
        assert b.dimensions == a.dimensions and b.level_count > 1
        assert float(b.properties["openslide.mpp-x"]) == pytest.approx(float(a.properties["openslide.mpp-x"]))
    mask = tifffile.imread(edited.with_name("edited.mask.tiff"))
    record = json.loads(edited.with_suffix(".json").read_text())
    ids = {c["name"]: c["id"] for c in record["classes"]}
    for (x, y), name in zip(CENTRES, ("tumour", "stroma"), strict=True):
        assert mask[y, x] == ids[name] and mask[y, x + RADIUS + 3] == 0
    assert (mask > 0).sum() == pytest.approx(2 * np.pi * RADIUS**2, rel=0.02)
    assert len(record["patches"]) == 2 and record["evaluations"] > 0
    names = {
        f["properties"]["classification"]["name"]
        for f in json.loads(edited.with_name("edited.geojson").read_text())["features"]
    }
    assert names == {"tumour", "stroma"}


def test_only_crops_that_own_region_pixels_are_evaluated(edited):
    """A patch is one crop of context around the region: the crops there are planned but never evaluated."""
    record = json.loads(edited.with_suffix(".json").read_text())
    for patch in record["patches"]:
        x0, y0, x1, y1 = patch["box_model_px"]
        all_crops_per_step = -(-(x1 - x0) // 12 // 4) * -(-(y1 - y0) // 12 // 4)  # 16-px latent crops own 12 px cells
        assert patch["crops"] / patch["steps"] < 0.6 * all_crops_per_step


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


@pytest.mark.slow
def test_same_seed_same_output_whatever_the_batch_and_an_interrupted_run_resumes_to_it(
    tiny, cmu_slide, tmp_path, runner, monkeypatch
):
    regions = _regions(tmp_path / "r.geojson")
    common = ["--model", tiny, "--class", "stroma", "--steps", "2", "--seed", "7"]
    _run(runner, cmu_slide, regions, *common, "--out", tmp_path / "a.tiff")
    real = inpaint_module.inpaint_patch
    calls, interrupt = [], [True]

    def fail_on_the_second_patch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and interrupt[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inpaint_module, "inpaint_patch", fail_on_the_second_patch)
    interrupted = runner.invoke(
        cli,
        [
            "inpaint",
            str(cmu_slide),
            str(regions),
            *map(str, common),
            "--batch-size",
            "3",
            "--out",
            str(tmp_path / "b.tiff"),
            "-q",
        ],
    )
    assert interrupted.exit_code == 130 and not (tmp_path / "b.tiff").exists()
    assert len(list((tmp_path / ".b.tiff.work").glob("patch-*.json"))) == 1
    refused = runner.invoke(
        cli, ["inpaint", str(cmu_slide), str(regions), *map(str, common), "--out", str(tmp_path / "b.tiff"), "-q"]
    )
    # an interrupted run's patches are never dropped silently
    assert refused.exit_code == 2 and "--resume" in refused.output
    stale = runner.invoke(
        cli,
        [
            "inpaint",
            str(cmu_slide),
            str(regions),
            *map(str, common[:-1]),
            "8",
            "--resume",
            "--out",
            str(tmp_path / "b.tiff"),
            "-q",
        ],
    )
    assert stale.exit_code == 2 and "seed 7 → 8" in stale.output  # a state made with other settings is not trusted
    calls.clear()
    interrupt[0] = False
    _run(runner, cmu_slide, regions, *common, "--batch-size", "3", "--resume", "--out", tmp_path / "b.tiff")
    assert len(calls) == 1  # only the unfinished patch was sampled
    a, b = _level0(tmp_path / "a.tiff").astype(int), _level0(tmp_path / "b.tiff").astype(int)
    # As in generate: batched CPU kernels round ε differently per batch size (~1e-6); plans and noise do not depend
    # on the batch, so the images agree to rounding (a few grey levels on a few pixels after JPEG).
    assert (a == b).mean() > 0.999 and np.abs(a - b).max() <= 16
    assert not (tmp_path / ".b.tiff.work").exists()


def test_a_model_at_another_resolution_is_resampled_to_level_0(tiny, cmu_slide, tmp_path, runner):
    """--slide-mpp 0.25 makes the 0.5 µm/px model's pixels 2 level-0 px: the patch is encoded from a downsampled read
    and the regenerated pixels are upsampled back into the slide's own geometry."""
    regions = _regions(tmp_path / "r.geojson", names=("x",), centres=((1100, 1500),), radius=120)
    out = tmp_path / "e.ome.tiff"
    _run(
        runner,
        cmu_slide,
        regions,
        "--model",
        tiny,
        "--class",
        "unknown",
        "--steps",
        "2",
        "--slide-mpp",
        "0.25",
        "--out",
        out,
    )
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and tf.pages[0].shape[:2] == (2967, 2220)
        assert 'PhysicalSizeX="0.25"' in tf.ome_metadata
        after = tf.pages[0].asarray().astype(float)
    before = _level0(cmu_slide).astype(float)
    ring = _inside(before.shape[:2], ((1100, 1500),), 120 + 32) & ~_inside(before.shape[:2], ((1100, 1500),), 120)
    assert np.abs(after - before)[_inside(before.shape[:2], ((1100, 1500),), 110)].mean() > 10
    assert np.abs(after - before)[~_inside(before.shape[:2], ((1100, 1500),), 120 + 32)].max() <= 40  # JPEG only
    assert ring.sum() > 0


@pytest.mark.parametrize(
    "case, expected",
    [
        ("outside", "lies entirely outside"),
        ("unknown class", "not a class of the model"),
        ("unmapped name", "(or map it with --classes"),
        ("too large", "--max-area"),
        ("too large for a small limit", "megapixels with context), more than --max-area 0.01"),
        ("margin wider than the slide", "--margin 100000 level-0 px is more than half"),
        ("unclassified", "pass --class"),
        ("no mpp", "--slide-mpp"),
        ("output is the slide", "is the input"),
        ("class and classes", "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, expected, tiny, cmu_slide, tmp_path, runner):
    slide, regions, extra = (
        cmu_slide,
        _regions(tmp_path / "r.geojson", names=("stroma",), centres=((1100, 1500),)),
        ["--class", "stroma"],
    )
    out = tmp_path / "e.tiff"
    if case == "outside":
        regions.write_text(
            json.dumps(
                {
                    "type": "Feature",
                    "geometry": mapping(box(5000, 5000, 5100, 5100)),
                    "properties": {"classification": {"name": "stroma"}},
                }
            )
        )
    elif case == "unknown class":
        extra = ["--class", "bone"]
    elif case == "unmapped name":
        regions, extra = _regions(tmp_path / "r.geojson", names=("Lymphocytes",), centres=((1100, 1500),)), []
    elif case == "too large":
        extra += ["--max-area", "0.1"]
    elif case == "too large for a small limit":
        extra += ["--max-area", "0.01"]
    elif case == "margin wider than the slide":
        extra += ["--margin", "100000"]
    elif case == "unclassified":
        regions.write_text(
            json.dumps({"type": "Feature", "geometry": mapping(box(100, 100, 200, 200)), "properties": {}})
        )
        extra = []
    elif case == "no mpp":
        slide = shared_slide = cmu_slide.with_name("TCGA-CR-7395-01A-01-TS1.svs")
        assert shared_slide.exists()
    elif case == "class and classes":
        extra += ["--classes", "paper5"]
    elif case == "output is the slide":
        out = tmp_path / "slide.tiff"
        tifffile.imwrite(
            out,
            np.zeros((600, 600, 3), np.uint8),
            photometric="rgb",
            resolution=(2e4, 2e4),
            resolutionunit="CENTIMETER",
        )
        slide, extra = out, ["--class", "stroma", "--slide-mpp", "0.5", "--overwrite"]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(
        cli,
        ["inpaint", str(slide), str(regions), "--model", str(tiny), *extra, "--steps", "1", "--out", str(out), "-q"],
    )
    assert result.exit_code == 2, result.output
    assert (
        result.output.startswith("error: ")
        and expected in result.output
        and len(result.output.strip().splitlines()) == 1
    )
    assert "(0 megapixels" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing lost


def test_known_pixels_end_exactly_on_the_real_latents_and_unneeded_crops_are_skipped():
    from wsi_synth.diffusion.schedule import alphas_cumprod
    from wsi_synth.sampling.canvas import KnownLatents, sample_canvas
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import SamplerConfig, SampleStats

    abar = alphas_cumprod(1000, "scaled_linear")
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((4, 96, 96)).astype(np.float32)
    known = np.ones((96, 96), bool)
    known[40:56, 40:56] = False
    seen = []

    def denoiser(z, t, labels, masks):
        seen.append(len(z))
        return torch.zeros_like(z)

    config = SamplerConfig(PlannerConfig("shifted-grid", 16, 2), steps=4, batch_size=64, solver="ddim")
    stats = SampleStats()
    out = sample_canvas(denoiser, latents.shape, abar, config, known=KnownLatents(latents, known, 3), stats=stats)
    assert np.array_equal(out[:, known], latents[:, known])
    assert not np.allclose(out[:, ~known], latents[:, ~known])
    # a 16² hole touches at most 3×3 cells of 12 px
    assert stats.evaluations <= 4 * 9 and sum(seen) == stats.evaluations
    free = SampleStats()
    sample_canvas(denoiser, latents.shape, abar, config, stats=free)
    assert free.evaluations >= 4 * 64  # the whole 96² canvas: ≥ 8×8 cells per step


@pytest.mark.parametrize("conditioning", ["per-class", "spatial"])
def test_skipping_crops_leaves_the_update_of_active_pixels_unchanged(conditioning):
    """The pruned step gives every active pixel the update of the full step, bit for bit, under either conditioning."""
    from wsi_synth.diffusion.schedule import alphas_cumprod
    from wsi_synth.diffusion.solvers import make_solver
    from wsi_synth.sampling.planners import PlannerConfig
    from wsi_synth.sampling.sampler import Buffers, SamplerConfig, step_window

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 80, 80)).astype(np.float32)
    labels = np.zeros((80, 80), np.uint8)
    labels[30:50, 20:60] = 2
    labels[40:50, 20:30] = 1
    active = labels > 0

    def denoiser(z, t, cls, masks):  # depends on the crop's content, its class and its mask: any mix-up shows
        extra = masks.sum(1, keepdim=True) if masks is not None else 0
        return torch.tanh(z.roll(1, 2)) + cls[:, None, None, None].float() * 0.1 + 0.05 * extra

    config = SamplerConfig(
        PlannerConfig("shifted-grid", 16, 2),
        steps=5,
        omega=1.0,
        conditioning=Conditioning(conditioning, 3),
    )
    solver = make_solver("ddim", alphas_cumprod(), 5)
    full, pruned = Buffers(np.zeros_like(x)), Buffers(np.zeros_like(x))
    counts = [
        step_window(denoiser, Buffers(x), target, (0, 80, 0, 80), 2, solver, config, labels=labels, active=a)
        for target, a in ((full, None), (pruned, active))
    ]
    assert np.array_equal(full.x[:, active], pruned.x[:, active])
    assert counts[1]["evaluations"] < counts[0]["evaluations"] and counts[1]["crops"] < counts[0]["crops"]


def test_region_class_names_match_the_models_by_name_case_and_spelling():
    from wsi_synth.generation.inpaint import _model_class

    classes = [{"id": 0, "name": "unknown"}, {"id": 1, "name": "tumour"}, {"id": 2, "name": "Stroma"}]
    by_name = {c["name"].lower(): c["id"] for c in classes}
    assert [_model_class(n, by_name, classes, "x") for n in ("Tumor", "TUMOUR", "stroma ", "unknown")] == [1, 1, 2, 0]
    with pytest.raises(wsi_synth.BadArgumentError, match="one of unknown, tumour, Stroma"):
        _model_class("necrosis", by_name, classes, "x")


def test_patches_merge_regions_whose_contexts_overlap_and_keep_every_region_once():
    from wsi_synth.generation.patches import Region, plan_patches

    near = [
        Region(Point(500, 500).buffer(20), 1, "a"),
        Region(Point(700, 500).buffer(20), 2, "b"),
        Region(Point(3000, 3000).buffer(20), 2, "c"),
    ]
    patches = plan_patches(near, (5000, 5000), 1.0, factor=4, crop_px=64, margin_l0=32)
    assert [p.regions for p in patches] == [(0, 1), (2,)]
    x0, y0, x1, y1 = patches[0].box
    assert x0 <= 480 - 96 and x1 >= 720 + 96 and all(v % 4 == 0 for v in patches[0].box)  # one crop + the margin around
    rng = np.random.default_rng(0)
    many = [Region(Point(x, y).buffer(10), 1, "n") for x, y in rng.uniform(0, 40000, (2000, 2))]
    patches = plan_patches(many, (40000, 40000), 2.0, factor=4, crop_px=64, margin_l0=32)
    assert sorted(i for p in patches for i in p.regions) == list(range(2000))
    boxes = [p.box for p in patches]
    assert not any(
        a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for i, a in enumerate(boxes) for b in boxes[i + 1 :]
    )
