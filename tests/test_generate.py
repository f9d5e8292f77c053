import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import tifffile
from shapely.geometry import shape
from wsi_synth_cli.main import cli

from tests.conftest import shared, tiny_bundle
from wsi_synth.io.geojson import geojson_to_mask


@pytest.fixture(scope="module")
def bundle(tiny_model):
    """The session's tiny bundle (tests/conftest.py): enough to exercise every stage of generate."""
    return tiny_model


def _run(runner, model, out, *extra):
    return runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(model),
            "--size",
            "300",
            "--height",
            "200",
            "--subtype",
            "adenocarcinoma",
            "--steps",
            "4",
            "--out",
            str(out),
            "-q",
            *extra,
        ],
    )


@pytest.mark.slow
def test_end_to_end_outputs_open_and_agree(bundle, tmp_path, runner):
    out = tmp_path / "s.tiff"
    result = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(bundle),
            "--size",
            "1024",
            "--height",
            "512",
            "--subtype",
            "adenocarcinoma",
            "--steps",
            "3",
            "--tiff-tile",
            "256",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    with openslide.OpenSlide(str(out)) as s:
        assert s.dimensions == (1024, 512) and s.level_count == 3 and float(s.properties["openslide.mpp-x"]) == 0.5
    with openslide.OpenSlide(str(tmp_path / "s.mask.tiff")) as m:
        assert m.dimensions == (1024, 512) and m.level_count == 3
    doc = json.loads((tmp_path / "s.geojson").read_text())
    for feature in doc["features"]:
        assert shape(feature["geometry"]).is_valid
    record = json.loads((tmp_path / "s.json").read_text())
    classes = record["classes"]
    mask = tifffile.imread(tmp_path / "s.mask.tiff")
    assert np.array_equal(
        geojson_to_mask(doc, mask.shape, downsample=record["outputs"]["annotations_downsample"], classes=classes), mask
    )
    assert record["evaluations"]["image"]["steps"] == 3 and record["evaluations"]["mask"]["crops"] > 0
    assert record["decode"]["relative_to_one_plain_decode"] <= 1.5  # small canvas: the clamped last tiles overlap more
    assert not (tmp_path / ".s.tiff.work").exists()


def test_same_seed_same_slide_for_any_batch_size(bundle, tmp_path, runner):
    assert _run(runner, bundle, tmp_path / "a.tiff", "--batch-size", "3").exit_code == 0
    assert _run(runner, bundle, tmp_path / "b.tiff", "--batch-size", "64").exit_code == 0
    assert _run(runner, bundle, tmp_path / "c.tiff", "--seed", "1").exit_code == 0
    a, b, c = (tifffile.imread(tmp_path / f"{n}.tiff").astype(int) for n in "abc")
    assert np.array_equal(tifffile.imread(tmp_path / "a.mask.tiff"), tifffile.imread(tmp_path / "b.mask.tiff"))
    # A UNet's batched CPU kernels (oneDNN convolutions, GroupNorm) round differently for different batch
    # sizes (~1e-6 in ε); after DDIM and JPEG that moves a few pixels by a few grey levels. Plans and noise do
    # not depend on the batch (the Gaussian-oracle tests check bit-identity); the image agrees to rounding.
    assert (a == b).mean() > 0.99 and np.abs(a - b).max() <= 16
    assert (a != c).mean() > 0.5


def test_a_spatial_global_bundle_generates_slides_and_tiles_batch_independently(bundle, tmp_path, runner):
    """The image stage with the crop's class fractions as its embedding: every path of generate takes it."""
    from wsi_synth import training
    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.models.config import load_config

    model = tmp_path / "m"
    shutil.copytree(bundle, model)
    data = bundle.parent / "data"
    config = load_config("tiny", max_steps=4, batch_size=4, checkpoint_every=4, sample_every=100)
    training.train(
        "image", data, model, replace(config, image_conditioning="spatial-global"), progress=False, overwrite=True
    )
    assert open_bundle(model).image_conditioning == "spatial-global"
    assert _run(runner, model, tmp_path / "a.tiff", "--batch-size", "3").exit_code == 0
    assert _run(runner, model, tmp_path / "b.tiff", "--batch-size", "64").exit_code == 0
    a, b = (tifffile.imread(tmp_path / f"{n}.tiff").astype(int) for n in "ab")
    assert (a == b).mean() > 0.99 and np.abs(a - b).max() <= 16
    distill = ["distill", str(model), str(data), "--steps", "2", "--max-steps", "2", "--batch-size", "4", "-q"]
    assert runner.invoke(cli, distill).exit_code == 0  # the student takes the fractions as its teacher does
    count = ["--size", "64", "--count", "3", "--steps", "2", "--out", str(tmp_path / "t")]
    tiles = runner.invoke(cli, ["generate", "--model", str(model), *count, "-q"])
    assert tiles.exit_code == 0, tiles.output
    record = json.loads((tmp_path / "t" / "tiles.json").read_text())
    assert record["solvers"]["image"] == "distilled" and record["count"] == 3


def test_user_mask_skips_the_mask_stage_and_unknown_classes_are_refused(bundle, tmp_path, runner):
    labels = np.zeros((200, 300), np.uint8)
    labels[20:180, 30:150] = 3
    labels[50:150, 170:280] = 2
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    result = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(bundle),
            "--size",
            "300",
            "--height",
            "200",
            "--mask",
            str(tmp_path / "labels.tif"),
            "--steps",
            "3",
            "--out",
            str(tmp_path / "s.tiff"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["evaluations"]["mask"]["crops"] == 0
    out_mask = tifffile.imread(tmp_path / "s.mask.tiff")
    assert (out_mask[100, 90] == 3) and (out_mask[100, 220] == 2) and out_mask[5, 5] == 0
    labels[0, 0] = 9
    tifffile.imwrite(tmp_path / "bad.tif", labels)
    result = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(bundle),
            "--size",
            "300",
            "--mask",
            str(tmp_path / "bad.tif"),
            "--out",
            str(tmp_path / "t.tiff"),
            "-q",
        ],
    )
    assert result.exit_code == 2 and "values [9] are not classes" in result.output


def _interrupt_image_stage_at(monkeypatch, step_to_stop: int):
    """Make the next run's image stage raise KeyboardInterrupt after `step_to_stop` steps; returns the undo."""
    import wsi_synth.generation.run as gen

    real = gen.sample_canvas

    def interrupt_image_stage(denoiser, shape, **kwargs):
        if kwargs.get("labels") is not None and not kwargs.get("resume"):

            def stop(step, total):
                if step == step_to_stop:
                    raise KeyboardInterrupt

            kwargs = {**kwargs, "progress": stop}
        return real(denoiser, shape, **kwargs)

    monkeypatch.setattr(gen, "sample_canvas", interrupt_image_stage)
    return lambda: monkeypatch.setattr(gen, "sample_canvas", real)


def test_interrupted_run_resumes_to_the_same_output(bundle, tmp_path, runner, monkeypatch):
    assert _run(runner, bundle, tmp_path / "full.tiff").exit_code == 0
    restore = _interrupt_image_stage_at(monkeypatch, 2)
    result = _run(runner, bundle, tmp_path / "cut.tiff", "--save-every", "1")
    assert result.exit_code == 130 and not (tmp_path / "cut.tiff").exists()
    assert (tmp_path / ".cut.tiff.work" / "image" / "state.json").exists()
    restore()
    result = _run(runner, bundle, tmp_path / "cut.tiff", "--resume", "--save-every", "1")
    assert result.exit_code == 0, result.output
    assert np.array_equal(tifffile.imread(tmp_path / "full.tiff"), tifffile.imread(tmp_path / "cut.tiff"))


def test_dry_run_needs_no_weights_and_reports_costs(bundle, tmp_path, runner):
    light = tmp_path / "light"
    light.mkdir()
    shutil.copy(bundle / "model.json", light / "model.json")  # the plan reads model.json only
    result = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(light),
            "--size",
            "100000",
            "--subtype",
            "adenocarcinoma",
            "--out",
            str(tmp_path / "x.tiff"),
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    image = plan["stages"]["image"]
    assert image["canvas"] == [25000, 25000] and 1.7 < image["crops_per_step"] / image["n0"] < 1.85
    assert plan["stages"]["mask"]["n0"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--subtype", "lung"], "not one the model knows"),
        (["--size", "0"], "Invalid value for '--size'"),
        (["--planner", "fixed-grid", "--context", "4"], None),
        (["--eta", "0.5"], "needs --solver ddim"),
        (["--solver", "ddim", "--eta", "0.5", "--decode-batch", "3"], None),
        (["--solver", "euler"], "Invalid value for '--solver'"),
    ],
)
def test_bad_generate_arguments(bundle, tmp_path, runner, args, message):
    base = ["generate", "--model", str(bundle), "--out", str(tmp_path / "s.tiff"), "--steps", "2", "-q"]
    if "--size" not in args:
        base += ["--size", "64"]
    if "--subtype" not in args:
        base += ["--subtype", "adenocarcinoma"]
    result = runner.invoke(cli, [*base, *args])
    if message is None:
        assert result.exit_code == 0, result.output  # context is ignored by non-shifted planners
    else:
        assert result.exit_code == 2 and message in result.output


def test_existing_output_and_missing_stage_are_refused(bundle, tmp_path, runner):
    (tmp_path / "s.tiff").write_bytes(b"keep")
    result = _run(runner, bundle, tmp_path / "s.tiff")
    assert result.exit_code == 2 and "--overwrite" in result.output and (tmp_path / "s.tiff").read_bytes() == b"keep"
    partial = tmp_path / "partial"
    shutil.copytree(bundle, partial)
    meta = json.loads((partial / "model.json").read_text())
    del meta["stages"]["mask"]
    (partial / "model.json").write_text(json.dumps(meta))
    result = _run(runner, partial, tmp_path / "t.tiff")
    assert result.exit_code == 2 and "no mask stage" in result.output


def test_tiled_decode_blends_exactly_and_costs_little():
    """A linear 'codec' (nearest upsampling ×4): blending must reproduce its output exactly (weights sum to 1)."""
    import torch

    from wsi_synth.generation.decode import DecodedImage

    class Upsample:
        def decode(self, z):
            out = torch.repeat_interleave(torch.repeat_interleave(z[:, :3], 4, dim=2), 4, dim=3)
            return type("Out", (), {"sample": out})()

    rng = np.random.default_rng(0)
    latents = rng.uniform(-0.9, 0.9, (4, 200, 260)).astype(np.float32)
    image = DecodedImage(Upsample(), latents, scale=1.0, factor=4, crop=16, shape=(790, 1030), device="cpu")
    bands = np.concatenate([image[y : min(y + 128, 790)] for y in range(0, 790, 128)])
    expected = (
        ((np.repeat(np.repeat(latents[:3], 4, 1), 4, 2).transpose(1, 2, 0)[:790, :1030] + 1) * 127.5)
        .round()
        .clip(0, 255)
    )
    assert np.abs(bands.astype(int) - expected.astype(int)).max() <= 1
    assert image.decoded_latent_px / (200 * 260) < 1.5  # (2d / (2d − d/4))² = 1.31 plus the clamped last tiles


@pytest.mark.slow
def test_out_of_core_and_a_local_cluster_give_the_same_slide(bundle, tmp_path, runner):
    assert _run(runner, bundle, tmp_path / "mem.tiff").exit_code == 0
    result = _run(runner, bundle, tmp_path / "disk.tiff", "--max-memory", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "disk.json").read_text())["out_of_core"] is True
    result = _run(runner, bundle, tmp_path / "cluster.tiff", "--workers", "2")
    assert result.exit_code == 0, result.output
    mem = tifffile.imread(tmp_path / "mem.tiff")
    assert np.array_equal(mem, tifffile.imread(tmp_path / "disk.tiff"))  # same windows, same batches: bit for bit
    # Cluster workers run torch with one intra-op thread (this process: two), so oneDNN picks other kernels and
    # rounds differently (~1e-6); plans, noise and the mask are the same, the image agrees to rounding.
    cluster = tifffile.imread(tmp_path / "cluster.tiff").astype(int)
    assert np.array_equal(tifffile.imread(tmp_path / "mem.mask.tiff"), tifffile.imread(tmp_path / "cluster.mask.tiff"))
    assert (mem == cluster).mean() > 0.99 and np.abs(mem.astype(int) - cluster).max() <= 16


def _bundled_model():
    from importlib.resources import files

    bundled = files("wsi_synth") / "default_model"
    if not (bundled / "model.json").is_file():
        pytest.skip(
            "this checkout has no bundled default model (wsi_synth/default_model); build it with "
            "examples/train_default_model.sh"
        )
    return bundled


def test_without_model_generate_uses_the_bundled_model(tmp_path, runner):
    bundled = _bundled_model()
    out = tmp_path / "s.tiff"
    result = runner.invoke(
        cli, ["generate", "--size", "256", "--subtype", "squamous", "--steps", "2", "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert Path(record["model"]) == Path(str(bundled)).resolve()
    meta = json.loads((bundled / "model.json").read_text())
    assert set(np.unique(tifffile.imread(out.with_name("s.mask.tiff")))) <= {c["id"] for c in meta["classes"]}
    with openslide.OpenSlide(str(out)) as s:
        assert s.dimensions == (256, 256)


def test_bundled_model_is_small_documented_and_its_codec_reconstructs_real_tiles():
    """The issue's limits on what ships: ≤ 30 MB, a model card, and a codec that beats bicubic ×4 on real H&E."""
    import torch
    from PIL import Image

    from wsi_synth.models.bundle import open_bundle

    bundled = _bundled_model()
    files = [p for p in bundled.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert "demonstration model" in (bundled / "MODEL_CARD.md").read_text()
    bundle = open_bundle(bundled)
    assert bundle.subtypes == ["adenocarcinoma", "squamous"]
    # slide-scale layout and glass: a layout stage on larger regions than the mask stage's, and background a class
    assert bundle.layout_geometry is not None and bundle.layout_geometry[0] > bundle.region_size
    assert "background" in [c["name"] for c in bundle.classes]
    wsss = shared("tiles_masks", "wsss4luad_test", "img")
    tiles = np.stack([np.asarray(Image.open(p).convert("RGB"))[:64, :64] for p in sorted(wsss.glob("*.png"))[:16]])
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
    codec = bundle.load_codec()
    with torch.no_grad():
        recon = codec.decode(codec.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    psnr = 10 * np.log10(4 / ((recon - x) ** 2).mean().item())
    small = [
        Image.fromarray(t).resize((16, 16), Image.Resampling.BICUBIC).resize((64, 64), Image.Resampling.BICUBIC)
        for t in tiles
    ]
    bicubic = 10 * np.log10(255**2 / np.mean((np.stack([np.asarray(s) for s in small]).astype(float) - tiles) ** 2))
    assert psnr > bicubic + 1.0


def test_without_model_and_without_a_bundled_one_says_to_pass_one(tmp_path, runner, monkeypatch):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    result = runner.invoke(
        cli, ["generate", "--size", "2048", "--subtype", "squamous", "--out", str(tmp_path / "s.tiff"), "--dry-run"]
    )
    assert result.exit_code == 2 and "pass --model" in result.output


def test_decode_batch_and_row_streaming_give_the_blended_image(bundle):
    """A real (tiny) codec: 1 or 5 tiles per call, bands of any height — the same pixels, to codec rounding."""
    from wsi_synth.generation.decode import DecodedImage
    from wsi_synth.models.bundle import open_bundle

    b = open_bundle(bundle)
    codec = b.load_codec()
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((b.meta["latent"]["channels"], 70, 90)).astype(np.float32)
    f, crop = b.meta["latent"]["factor"], b.meta["tile_size"] // b.meta["latent"]["factor"]
    shape = (70 * f - 5, 90 * f - 3)
    one = DecodedImage(codec, latents, 1.0, f, crop, shape, "cpu", batch=1)
    many = DecodedImage(codec, latents, 1.0, f, crop, shape, "cpu", batch=5)
    a = np.concatenate([one[y : min(y + 64, shape[0])] for y in range(0, shape[0], 64)]).astype(int)
    b_ = np.concatenate([many[y : min(y + 100, shape[0])] for y in range(0, shape[0], 100)]).astype(int)
    assert a.shape == (*shape, 3) and np.abs(a - b_).max() <= 1 and (a == b_).mean() > 0.99


def test_resume_of_a_run_with_other_settings_is_refused_and_counts_cover_every_step(
    bundle, tmp_path, runner, monkeypatch
):
    restore = _interrupt_image_stage_at(monkeypatch, 2)
    assert _run(runner, bundle, tmp_path / "cut.tiff", "--save-every", "1").exit_code == 130
    restore()
    result = _run(runner, bundle, tmp_path / "cut.tiff", "--resume", "--seed", "5")
    assert result.exit_code == 2 and "cannot --resume" in result.output and "seed 0 → 5" in result.output
    assert (tmp_path / ".cut.tiff.work" / "image" / "state.json").exists()  # the refused resume kept the state
    result = _run(runner, bundle, tmp_path / "cut.tiff", "--resume", "--batch-size", "3")  # how it runs may change
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "cut.json").read_text())
    assert (
        record["resumed"] is True
        and record["evaluations"]["image"]["steps"] == 4
        and record["evaluations"]["mask"]["steps"] == 4
    )


def test_dry_run_with_weights_projects_the_time_of_each_stage(bundle, tmp_path, runner):
    args = ["generate", "--model", str(bundle), "--size", "4096", "--subtype", "adenocarcinoma"]
    args += ["--out", str(tmp_path / "x.tiff"), "--dry-run"]
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    projection = json.loads(result.output)["projection"]
    assert projection["device"] == "cpu" and projection["image"]["denoiser_crops_per_s"] > 0
    assert projection["total_s"] >= projection["image"]["denoiser_s"] + projection["decode_s"] > 0
    text = runner.invoke(cli, args).output
    assert "projected on cpu" in text and "dpm-solver++" in text


def test_masks_are_upsampled_smoothly_the_same_in_any_band_and_chunk():
    from wsi_synth.generation.masks import smooth

    # a disk and a diagonal drawn on a 16² map, seen at 16× (the mask canvas → output step of a real run)
    yy, xx = np.mgrid[0:256, 0:256] + 0.5
    truth = np.where((yy - 128) ** 2 + (xx - 120) ** 2 < 70**2, 1, np.where(xx > yy + 40, 2, 0)).astype(np.uint8)
    small = truth[8::16, 8::16]
    fine = smooth(small, 16.0, (256, 256), 1.0)
    centres = ((np.arange(256) + 0.5) / 16).astype(int)
    blocky = small[centres][:, centres]  # nearest neighbour: what v0.1 did
    assert (fine != truth).mean() < 0.75 * (blocky != truth).mean()  # contours, not 16 px blocks
    assert set(np.unique(fine)) == {0, 1, 2}
    assert np.array_equal(smooth(small, 1.0, small.shape, 1.0), small)  # same resolution: unchanged
    bands = np.concatenate(
        [smooth(small, 16.0, (256, 256), 1.0, rows=(y, min(y + 37, 256)), chunk=29) for y in range(0, 256, 37)]
    )
    assert np.array_equal(bands, fine)
    coarse = smooth(small, 16.0, (128, 128), 2.0)  # the latent canvas: the same field sampled at its own centres
    assert (coarse != fine[::2, ::2]).mean() < 0.02


def test_mask_stage_speckle_is_smoothed_away_and_spatial_maps_keep_no_unknown_seams():
    from wsi_synth.generation.masks import mask_classes

    # a sampled one-hot: two half planes (tumour left, stroma right) with noise and single-pixel islands of normal
    rng = np.random.default_rng(0)
    truth = np.where(np.arange(48)[None, :] < 24, 1, 2).repeat(48, 0)
    one_hot = np.where(np.arange(4)[:, None, None] == truth, 1.0, -1.0) + rng.normal(0, 0.6, (4, 48, 48))
    islands = (rng.random((48, 48)) < 0.03) & (np.arange(48)[None, :] % 24 > 2)
    one_hot[3][islands] = 3.0
    raw = one_hot.argmax(0)
    assert (raw == 3).sum() >= 40  # the speckle is there before cleaning

    spatial = mask_classes(one_hot, min_region=3, sigma=1.0, boundaries=False)
    assert not (spatial == 3).any() and not (spatial == 0).any()  # islands absorbed; no unknown seam or holes
    assert (spatial != truth).mean() < 0.01
    paper = mask_classes(one_hot, min_region=3, sigma=1.0, boundaries=True)  # per-class: the paper's unknown seam stays
    assert (paper[:, 23:25] == 0).all(axis=1).mean() > 0.9 and not (paper == 3).any()
    unsmoothed = mask_classes(one_hot, min_region=3, sigma=0, boundaries=False)
    assert (unsmoothed != truth).mean() > (spatial != truth).mean()


def test_the_package_exposes_the_bundled_model_and_readers_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys, wsi_synth; assert 'torch' not in sys.modules; "
        "assert wsi_synth.open_bundle(wsi_synth.default_model()).subtypes; "
        "print('torch' in sys.modules, callable(wsi_synth.open_dataset), issubclass(wsi_synth.BadModelError, "
        "wsi_synth.WsiSynthError))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "no bundled default model" in out.stderr:
        pytest.skip("this checkout has no bundled default model")
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["False", "True", "True"]


def test_ome_zarr_and_asap_outputs_hold_the_same_slide_as_the_tiff(bundle, tmp_path, runner):
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from PIL import Image

    from wsi_synth.annotations import load_annotations

    regions = np.zeros((200, 300), np.uint8)
    # a tumour region with a hole, stroma
    regions[20:180, 30:200], regions[60:120, 80:140], regions[100:190, 220:290] = 1, 0, 2
    Image.fromarray(regions).save(tmp_path / "regions.png")
    assert _run(runner, bundle, tmp_path / "a.tiff", "--mask", str(tmp_path / "regions.png")).exit_code == 0
    result = _run(
        runner,
        bundle,
        tmp_path / "b.ome.zarr",
        "--annotations",
        "geojson,asap",
        "--mask",
        str(tmp_path / "regions.png"),
    )
    assert result.exit_code == 0, result.output
    nodes = list(Reader(parse_url(str(tmp_path / "b.ome.zarr"), fmt=FormatV04()))())
    zarr_image = np.moveaxis(np.asarray(nodes[0].data[0]), 0, 2).astype(float)
    tiff_image = tifffile.imread(tmp_path / "a.tiff").astype(float)
    assert zarr_image.shape == tiff_image.shape == (200, 300, 3)
    # the same pixels, up to the TIFF's JPEG
    assert 10 * np.log10(255**2 / np.mean((zarr_image - tiff_image) ** 2)) > 30
    labels = [n for n in nodes if "properties" in n.metadata]
    assert np.array_equal(np.asarray(labels[0].data[0]), tifffile.imread(tmp_path / "a.mask.tiff"))
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["outputs"]["format"] == "ome-zarr" and record["config"]["annotations"] == ["geojson", "asap"]
    names = {c["id"]: c["name"] for c in record["classes"]}
    asap = load_annotations(tmp_path / "b.xml").annotations
    assert {a.name for a in asap} == {names[1], names[2]}
    tumour = shapely.union_all([a.geometry for a in asap if a.name == names[1]])
    assert tumour.area == pytest.approx(170 * 160 - 60 * 60, rel=0.05)  # the hole stays a hole


@pytest.mark.slow
def test_a_spatially_conditioned_bundle_generates_with_one_pass_per_crop(tmp_path_factory, tmp_path, runner):
    from wsi_synth.models.bundle import open_bundle

    data, model, _ = tiny_bundle(tmp_path_factory.mktemp("spatial"), steps=10, batch_size=4)
    result = runner.invoke(
        cli,
        [
            "train",
            "image",
            str(data),
            "--out",
            str(model),
            "--max-steps",
            "10",
            "--batch-size",
            "4",
            "--conditioning",
            "spatial",
            "--overwrite",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    bundle = open_bundle(model)
    assert bundle.image_conditioning == "spatial" and bundle.empty_map == "map"
    assert bundle.load_unet("image").config.in_channels == bundle.latent.channels + len(bundle.classes) - 1
    regions = np.zeros((200, 400), np.uint8)  # columns 290-400: no class
    regions[20:180, 30:200], regions[100:190, 220:290] = 1, 2
    from PIL import Image

    Image.fromarray(regions).save(tmp_path / "regions.png")
    args = ["--mask", str(tmp_path / "regions.png"), "--omega", "1", "--size", "400"]
    assert _run(runner, model, tmp_path / "s.tiff", *args).exit_code == 0
    record = json.loads((tmp_path / "s.json").read_text())["evaluations"]["image"]
    # one map pass per crop, and its null pass where ω guides a crop that holds a class: at most two per crop
    assert record["crops"] < record["evaluations"] <= 2 * record["crops"]
    assert np.array_equal(tifffile.imread(tmp_path / "s.mask.tiff")[100, 100], 1)
    assert _run(runner, model, tmp_path / "t.tiff", *args).exit_code == 0
    assert np.array_equal(tifffile.imread(tmp_path / "s.tiff"), tifffile.imread(tmp_path / "t.tiff"))  # deterministic
    # a spatial bundle from before `empty_map` (model.json version 1) learnt an all-unknown map as null: the
    # migration to version 2 says so, and it samples with the same passes, another image
    meta = json.loads((model / "model.json").read_text())
    assert meta["version"] == 2 and meta["empty_map"] == "map"
    del meta["empty_map"]
    (model / "model.json").write_text(json.dumps({**meta, "version": 1}))
    from wsi_synth.models.bundle import open_bundle

    assert open_bundle(model).meta["empty_map"] == "null"
    assert _run(runner, model, tmp_path / "u.tiff", *args).exit_code == 0
    assert json.loads((tmp_path / "u.json").read_text())["evaluations"]["image"] == record
    assert not np.array_equal(
        tifffile.imread(tmp_path / "u.tiff")[:, 300:], tifffile.imread(tmp_path / "s.tiff")[:, 300:]
    )


def test_progress_reports_every_step_of_each_stage_with_evaluations_and_an_eta(bundle, tmp_path, capsys, caplog):
    import logging

    import wsi_synth

    reports: list = []
    with caplog.at_level(logging.INFO, logger="wsi_synth"):
        record = wsi_synth.generate(
            bundle, tmp_path / "p.tiff", size=200, subtype="adenocarcinoma", steps=4, on_progress=reports.append
        )
    assert capsys.readouterr().out == "", "the library never prints"
    assert any(r.name.startswith("wsi_synth.") and r.getMessage().startswith("plan: ") for r in caplog.records), (
        "it logs"
    )
    by_task: dict = {}
    for r in reports:
        by_task.setdefault(r.task, []).append(r)
    assert list(by_task) == ["mask stage", "image stage"]
    for task, stage in (("mask stage", "mask"), ("image stage", "image")):
        got = by_task[task]
        assert (
            [r.done for r in got] == [1, 2, 3, 4]
            and {r.total for r in got} == {4}
            and {r.unit for r in got} == {"step"}
        )
        evaluations = [r.evaluations for r in got]
        assert evaluations == sorted(evaluations) and evaluations[-1] == record["evaluations"][stage]["evaluations"] > 0
        assert got[-1].eta_s == 0 and all(r.eta_s is not None and r.eta_s >= 0 for r in got)


def test_a_resumed_run_reports_progress_from_where_it_resumed(bundle, tmp_path, monkeypatch):
    import wsi_synth

    out = tmp_path / "r.tiff"
    with monkeypatch.context() as m:
        _interrupt_image_stage_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            wsi_synth.generate(bundle, out, size=200, subtype="adenocarcinoma", steps=6, save_every=2)
    reports: list = []
    wsi_synth.generate(
        bundle, out, size=200, subtype="adenocarcinoma", steps=6, save_every=2, resume=True, on_progress=reports.append
    )
    image = [r.done for r in reports if r.task == "image stage"]
    assert image[0] > 1 and image[-1] == 6  # continues from the saved state, reported as such


def test_cli_shows_a_bar_per_stage_and_names_the_output_not_its_temporary(bundle, tmp_path, runner):
    result = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(bundle),
            "--size",
            "200",
            "--subtype",
            "adenocarcinoma",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "b.tiff"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mask stage: 100%" in result.output and "image stage: 100%" in result.output and "3/3" in result.output
    assert ".set-" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("omega", [0.0, 1.0])
def test_the_plan_estimates_the_evaluations_a_run_makes(bundle, tmp_path, omega):
    import wsi_synth

    kwargs = {"size": 512, "subtype": "adenocarcinoma", "steps": 3, "omega": omega}
    plan = wsi_synth.generate(bundle, tmp_path / "e.tiff", dry_run=True, **kwargs)
    record = wsi_synth.generate(bundle, tmp_path / "e.tiff", **kwargs)
    made = record["evaluations"]["image"]["evaluations"]
    assert 0.8 < plan["stages"]["image"]["evaluations_estimate"] / made < 1.25  # was 2× for spatial bundles


@pytest.fixture
def one_torch_thread():
    """This process's torch on one thread, like the workers dask's nanny starts (OMP_NUM_THREADS=1): torch's float
    sums depend on the thread count, so a reference made here compares like with like with a cluster's slide."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_generate_on_a_local_cluster_survives_a_killed_worker_and_records_where_its_state_lived(
    bundle, tmp_path, one_torch_thread
):
    import os
    import signal

    psutil = pytest.importorskip("psutil")
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')")
    import wsi_synth

    kwargs = {"size": 512, "subtype": "adenocarcinoma", "steps": 4}
    reference = wsi_synth.generate(bundle, tmp_path / "one.tiff", **kwargs)
    killed = []

    def kill_a_worker(report):
        if report.task == "image stage" and report.done == 2 and not killed:
            # the run's dask workers
            workers = [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
            victim = workers[-1]
            killed.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)

    record = wsi_synth.generate(bundle, tmp_path / "two.tiff", workers=2, on_progress=kill_a_worker, **kwargs)
    assert killed and (not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE)
    # the cluster's state lived in the work store
    assert json.loads((tmp_path / "two.json").read_text())["out_of_core"] is True
    assert record["evaluations"]["image"]["steps"] == reference["evaluations"]["image"]["steps"]
    assert np.array_equal(tifffile.imread(tmp_path / "one.tiff"), tifffile.imread(tmp_path / "two.tiff"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cluster(port: int, log_dir: Path):
    """A real `dask scheduler` and one `dask worker` on loopback, as separate processes."""
    import subprocess
    import sys
    import time

    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=open(log_dir / "s.log", "w"),
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            f"tcp://127.0.0.1:{port}",
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log_dir / "w.log", "w"),
    )
    from distributed import Client

    for _ in range(120):  # until the worker has joined (bounded: 60 s)
        try:
            with Client(f"tcp://127.0.0.1:{port}", timeout="2s") as c:
                if c.scheduler_info()["workers"]:
                    return scheduler, worker
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the test cluster did not start")


@pytest.mark.slow
def test_losing_the_scheduler_is_one_line_and_resume_continues_on_a_new_one(bundle, tmp_path, runner, one_torch_thread):
    import signal

    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')")
    import wsi_synth

    kwargs = {"size": 256, "subtype": "adenocarcinoma", "steps": 4}
    reference = wsi_synth.generate(bundle, tmp_path / "ref.tiff", **kwargs)
    port = _free_port()
    scheduler, worker = _start_cluster(port, tmp_path)
    out = tmp_path / "c.tiff"

    def kill_the_scheduler(report):
        if report.task == "image stage" and report.done == 2:
            scheduler.send_signal(signal.SIGKILL)

    try:
        with pytest.raises(wsi_synth.WsiSynthError) as lost:
            wsi_synth.generate(
                bundle, out, scheduler=f"tcp://127.0.0.1:{port}", on_progress=kill_the_scheduler, **kwargs
            )
    finally:
        scheduler.kill()
        worker.kill()
        worker.wait()
    assert (
        type(lost.value).__name__ == "ClusterLostError"
        and "resume=True" in str(lost.value)
        and "\n" not in str(lost.value)
    )
    assert (tmp_path / ".c.tiff.work").is_dir() and not out.exists()
    scheduler, worker = _start_cluster(port, tmp_path)
    try:
        result = runner.invoke(
            cli,
            [
                "generate",
                "--model",
                str(bundle),
                "--size",
                "256",
                "--subtype",
                "adenocarcinoma",
                "--steps",
                "4",
                "--out",
                str(out),
                "-q",
            ]
            + ["--scheduler", f"tcp://127.0.0.1:{port}", "--resume"],
        )
    finally:
        scheduler.kill()
        worker.kill()
    assert result.exit_code == 0, result.output
    assert np.array_equal(tifffile.imread(out), tifffile.imread(tmp_path / "ref.tiff"))
    assert reference["evaluations"]["image"]["steps"] == 4


def test_a_scheduler_address_where_nothing_listens_is_refused_at_once(bundle, tmp_path, runner):
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install -e '.[distributed]')")
    port = _free_port()
    for address, fragment in (
        (f"tcp://127.0.0.1:{port}", "nothing listens there"),
        ("127.0.0.1", "not a scheduler address"),
    ):
        result = runner.invoke(
            cli,
            [
                "generate",
                "--model",
                str(bundle),
                "--size",
                "64",
                "--subtype",
                "adenocarcinoma",
                "--out",
                str(tmp_path / "x.tiff"),
                "--scheduler",
                address,
            ],
        )
        assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.tiff").exists()


def test_evaluate_reads_what_generate_writes_a_count_folder_and_an_ome_zarr(bundle, tmp_path, runner):
    common = ["--model", str(bundle), "--subtype", "adenocarcinoma", "--steps", "2", "-q"]
    assert (
        runner.invoke(
            cli, ["generate", *common, "--size", "64", "--count", "12", "--out", str(tmp_path / "tiles")]
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            cli, ["generate", *common, "--size", "512", "--ngff", "0.5", "--out", str(tmp_path / "s.ome.zarr")]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "tiles"),
            str(tmp_path / "s.ome.zarr"),
            "--out",
            str(tmp_path / "r"),
            "--tile",
            "128",
            "--size",
            "64",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    # 4 × 4 tiles of 128 px
    assert report["inputs"]["real"]["tiles"] == 12 and report["inputs"]["synthetic"]["tiles"] == 16
    refused = runner.invoke(
        cli, ["evaluate", str(tmp_path / "tiles"), str(tmp_path / "s.ome.zarr"), "--out", str(tmp_path / "tiles"), "-q"]
    )
    assert refused.exit_code == 2 and "inside the input folder" in refused.output


def test_threads_sets_torchs_threads_for_the_run(bundle, tmp_path, runner):
    import torch

    import wsi_synth

    before = torch.get_num_threads()
    try:
        wsi_synth.generate(bundle, tmp_path / "t.tiff", size=64, subtype="adenocarcinoma", steps=2, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    refused = runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(bundle),
            "--size",
            "64",
            "--subtype",
            "adenocarcinoma",
            "--threads",
            "-1",
            "--out",
            str(tmp_path / "u.tiff"),
        ],
    )
    assert refused.exit_code == 2 and "--threads" in refused.output


def test_two_threads_can_generate_at_once_in_a_fresh_process(bundle, tmp_path):
    import subprocess
    import sys

    script = f"""
import threading, wsi_synth
errors = []
def run(name):
    try:
        out = {str(tmp_path)!r} + "/" + name + ".tiff"
        wsi_synth.generate({str(bundle)!r}, out, size=64, subtype="adenocarcinoma", steps=2)
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
    assert (tmp_path / "a.tiff").is_file() and (tmp_path / "b.tiff").is_file()


def test_the_plan_says_when_workers_outnumber_the_windows(bundle, tmp_path, runner):
    args = [
        "generate",
        "--model",
        str(bundle),
        "--subtype",
        "adenocarcinoma",
        "--out",
        str(tmp_path / "w.tiff"),
        "--dry-run",
        "--workers",
        "4",
    ]
    small = runner.invoke(cli, [*args, "--size", "256"])
    assert (
        small.exit_code == 0
        and "1 window(s)" in small.output
        and "at most 1 of the 4 workers have work" in small.output
    )
    large = runner.invoke(cli, [*args, "--size", "4096"])
    assert large.exit_code == 0 and "note:" not in large.output


@pytest.fixture(scope="module")
def layout_bundle(bundle, tmp_path_factory):
    """The module's bundle with a layout stage trained a few steps on synthetic 700 px layouts (256 px regions)."""
    from tests.test_train import layout_dataset
    from wsi_synth import training
    from wsi_synth.models.config import load_config

    tmp = tmp_path_factory.mktemp("layout")
    shutil.copytree(bundle, tmp / "model")
    config = load_config("tiny", max_steps=6, batch_size=2, checkpoint_every=6, sample_every=6)
    training.train("layout", layout_dataset(tmp), tmp / "model", config, progress=False)
    return tmp / "model"


def _halves_layout(monkeypatch):
    """The layout stage draws tumour (1) on the left half and stroma (2) on the right: a layout whose every pixel is
    known."""
    import wsi_synth.generation.run as run

    sample_stage = run._sample_stage

    def stage(model, bundle, config, g, abar, name, *args, **kwargs):
        out = sample_stage(model, bundle, config, g, abar, name, *args, **kwargs)
        if name == "layout":
            out = np.full_like(out, -1.0)
            out[1, :, : out.shape[2] // 2] = out[2, :, out.shape[2] // 2 :] = 1.0
        return out

    monkeypatch.setattr(run, "_sample_stage", stage)


def test_the_layout_stage_places_the_classes_and_the_mask_stage_refines_them(layout_bundle, tmp_path, monkeypatch):
    from wsi_synth.api import generate

    _halves_layout(monkeypatch)
    size = 256  # the layout canvas (16 px of 16 output px) is one crop: the halves split the output in the middle
    agreement, records = {}, {}
    for i, strength in enumerate((0.0, 0.25, 1.0)):
        records[strength] = generate(
            layout_bundle,
            tmp_path / f"s{i}.tiff",
            size=size,
            subtype="adenocarcinoma",
            steps=4,
            layout_strength=strength,
        )
        mask = tifffile.imread(tmp_path / f"s{i}.mask.tiff")
        agreement[strength] = float((mask == np.where(np.arange(size) < size // 2, 1, 2)[None]).mean())
    assert agreement[0.0] > 0.99  # the layout as drawn, its one boundary a contour
    assert agreement[0.25] > 0.8 and agreement[1.0] < 0.6  # refined from the layout / the layout ignored
    evaluations = {s: r["evaluations"] for s, r in records.items()}
    assert (
        evaluations[0.0]["mask"]["steps"] == 0
        and evaluations[0.25]["mask"]["steps"] == 1
        and "layout" not in evaluations[1.0]
    )
    assert evaluations[0.25]["layout"]["steps"] == 4 and records[0.25]["timings"]["layout_s"] > 0


def test_a_slide_with_a_layout_stage_is_the_same_for_any_batch_and_resumes(
    layout_bundle, tmp_path, runner, monkeypatch
):
    first = _run(runner, layout_bundle, tmp_path / "a.tiff", "--layout-strength", "0.5")
    second = _run(runner, layout_bundle, tmp_path / "b.tiff", "--layout-strength", "0.5", "--batch-size", "3")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = (tifffile.imread(tmp_path / f"{n}.tiff").astype(int) for n in "ab")
    assert (a == b).mean() > 0.99 and np.abs(a - b).max() <= 16  # batched kernels' rounding, as without a layout
    assert np.array_equal(tifffile.imread(tmp_path / "a.mask.tiff"), tifffile.imread(tmp_path / "b.mask.tiff"))
    _interrupt_image_stage_at(monkeypatch, 2)
    assert _run(runner, layout_bundle, tmp_path / "c.tiff", "--layout-strength", "0.5").exit_code != 0
    monkeypatch.undo()
    resumed = _run(runner, layout_bundle, tmp_path / "c.tiff", "--layout-strength", "0.5", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert np.array_equal(tifffile.imread(tmp_path / "a.tiff"), tifffile.imread(tmp_path / "c.tiff"))
    plan = json.loads(
        _run(runner, layout_bundle, tmp_path / "d.tiff", "--layout-strength", "0.5", "--dry-run", "--json").output
    )
    assert (
        plan["stages"]["layout"]["crop"] == 16
        and plan["stages"]["mask"]["steps"] == 2
        and plan["stages"]["image"]["crop"] == 16
    )
    bad = _run(runner, layout_bundle, tmp_path / "e.tiff", "--layout-strength", "1.5")
    assert bad.exit_code == 2 and "--layout-strength" in bad.output


def test_section_draws_the_layout_as_tissue_on_glass_and_auto_leaves_small_slides_alone(
    layout_bundle, tmp_path, runner
):
    """`--section on`: glass (class background) along the whole border and around the tissue; `auto` on a slide
    smaller than four layout crops a side is `off`; a model without a background class is refused in one line."""
    refused = _run(runner, layout_bundle, tmp_path / "r.tiff", "--section", "on", "--layout-strength", "0.5")
    assert refused.exit_code == 2 and "background class" in refused.output and "Traceback" not in refused.output
    model = tmp_path / "glass-model"
    shutil.copytree(layout_bundle, model)
    meta = json.loads((model / "model.json").read_text())
    meta["classes"][3]["name"] = "background"  # the tiny bundle's fourth class, renamed: its networks are unchanged
    (model / "model.json").write_text(json.dumps(meta))
    masks = {}
    for choice in ("on", "off", "auto"):
        # strength 0: the class map is the layout as drawn (the tiny mask stage, barely trained, would redraw it)
        size = ("--size", "1024", "--height", "768") if choice == "on" else ()  # a section of 64 × 48 layout px
        result = _run(runner, model, tmp_path / f"{choice}.tiff", "--section", choice, "--layout-strength", "0", *size)
        assert result.exit_code == 0, result.output
        masks[choice] = tifffile.imread(tmp_path / f"{choice}.mask.tiff")
    on = masks["on"]
    border = np.concatenate([on[:8].ravel(), on[-8:].ravel(), on[:, :8].ravel(), on[:, -8:].ravel()])
    assert (border == 3).mean() > 0.95 and 0.3 < (on == 3).mean() < 0.8  # tissue in the middle, glass around it
    assert (masks["off"] == 3).mean() < 0.3
    assert np.array_equal(masks["auto"], masks["off"])  # 256 px is one layout crop: auto draws no section
    assert json.loads((tmp_path / "on.json").read_text())["config"]["section"] == "on"
    from wsi_synth.generation.section import GLASS

    def off_glass(path) -> int:  # the corner's largest distance from clean glass, after the TIFF's JPEG
        return int(np.abs(tifffile.imread(path)[:8, :8].astype(int) - np.array(GLASS)).max())

    assert off_glass(tmp_path / "on.tiff") <= 4 and off_glass(tmp_path / "off.tiff") > 20


def test_the_plan_is_a_typed_record_that_reads_back_what_it_writes(bundle):
    from wsi_synth.generation import GenerateConfig, make_plan
    from wsi_synth.generation.plan import Plan

    plan = make_plan(bundle, GenerateConfig(width=700, height=300, subtype="adenocarcinoma", steps=4, workers=4))
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    assert list(plan.stages) == ["mask", "image"] and plan.stages["mask"].evaluations_exact
    assert not plan.stages["image"].evaluations_exact and "evaluations_estimate" in plan.to_json()["stages"]["image"]
    assert plan.notes and "workers" in plan.notes[0]  # one window at this size: the note says the cluster idles


def test_the_run_record_reads_back_as_a_typed_record(bundle, tmp_path):
    import wsi_synth
    from wsi_synth.generation.run import RunRecord

    wsi_synth.generate(bundle, tmp_path / "r.tiff", size=96, subtype="adenocarcinoma", steps=2)
    doc = json.loads((tmp_path / "r.json").read_text())
    record = RunRecord.from_json(doc)
    assert record.to_json() == doc and record.outputs and record.outputs["format"] == "tiff"
    assert record.evaluations["image"].evaluations > 0 and record.plan.stages["image"].steps == 2


def test_generate_writes_a_dicom_folder_with_its_segmentation(bundle, tmp_path, runner):
    import pydicom

    result = _run(runner, bundle, tmp_path / "s.dcm")
    assert result.exit_code == 0, result.output
    modalities = sorted(
        pydicom.dcmread(str(p), stop_before_pixels=True).Modality for p in (tmp_path / "s.dcm").iterdir()
    )
    assert modalities.count("SEG") == 1 and modalities.count("SM") >= 1
    assert json.loads((tmp_path / "s.json").read_text())["outputs"]["format"] == "dicom"
