"""Hostile and careless input, command by command: each case ends in one line on stderr with exit code 2 and
nothing lost, or in a correct result. Inputs are small files written here from the real shared data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from wsi_synth_cli.main import cli

from tests.conftest import eight_tiles, shared
from wsi_synth.training import loop as training_loop


def _invoke(runner, *args):
    result = runner.invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}") from result.exception
    return result


def _refused(result, *fragments: str) -> str:
    """The run ended with exit 2 and one `error:` line (ours, or click's `Error:` for a value outside an option's
    range) that holds every fragment."""
    lines = [ln for ln in result.output.splitlines() if ln.lower().startswith("error:")]
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output[-600:]}"
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-600:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture
def slide_dir(tmp_path, cmu_slide, cmu_geojson):
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu_slide, folder / cmu_slide.name)
    shutil.copy(cmu_geojson, folder / "CMU-1-Small-Region.geojson")
    return folder


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


# --- nothing lost -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_extract_never_writes_over_or_beside_its_inputs(slide_dir, runner, where):
    before = _files(slide_dir.parent)
    out = {"same": slide_dir, "inside": slide_dir / "data", "around": slide_dir.parent}[where]
    result = _invoke(
        runner, "extract", slide_dir, slide_dir / "CMU-1-Small-Region.geojson", "--out", out, "--overwrite", "-q"
    )
    _refused(result, "--out", "input")
    assert _files(slide_dir.parent) == before


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_import_never_writes_over_or_beside_its_inputs(tmp_path, runner, where):
    images = tmp_path / "img"
    images.mkdir()
    for path in sorted(shared("tiles", "lc25000_224", "lung_scc").glob("*"))[:3]:
        shutil.copy(path, images / path.name)
    before = _files(tmp_path)
    out = {"same": images, "inside": images / "data", "around": tmp_path}[where]
    result = _invoke(runner, "import", images, "--tile", 64, "--out", out, "--overwrite", "-q")
    _refused(result, "--out", "input")
    assert _files(tmp_path) == before


def test_overwrite_replaces_only_the_dataset_not_other_files(tmp_path, runner):
    images = tmp_path / "img"
    images.mkdir()
    for path in sorted(shared("tiles", "lc25000_224", "lung_scc").glob("*"))[:3]:
        shutil.copy(path, images / path.name)
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _invoke(runner, "import", images, "--tile", 64, "--out", out, "-q")
    _refused(result, "not a wsi-synth dataset")
    result = _invoke(runner, "import", images, "--tile", 64, "--out", out, "--overwrite", "-q")
    _refused(result, "not a wsi-synth dataset")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert _invoke(runner, "import", images, "--tile", 64, "--out", out, "-q").exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = _invoke(runner, "import", images, "--tile", 112, "--out", out, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "dataset.json").read_text())[
        "tile_size"
    ] == 112


def test_a_full_disk_during_import_is_one_line_and_leaves_no_dataset(tmp_path, runner, monkeypatch):
    import errno

    from wsi_synth.data.store import TileStore

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "tile")

    monkeypatch.setattr(TileStore, "write", full)
    images = _one_tile_folder(tmp_path)
    _refused(
        _invoke(runner, "import", images, "--tile", 64, "--out", tmp_path / "data", "-q"),
        "disk full",
        "free some space",
    )
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data*"))


def test_import_into_an_existing_dataset_takes_its_settings(tmp_path, runner):
    wsss = shared("tiles_masks", "wsss4luad_val")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    out = tmp_path / "d"
    first = _invoke(
        runner,
        "import",
        wsss / "img",
        "--masks",
        wsss / "mask",
        "--legend",
        legend,
        "--subtype",
        "adenocarcinoma",
        "--tile",
        128,
        "--region",
        256,
        "--region-mask",
        32,
        "--out",
        out,
        "-q",
    )
    assert first.exit_code == 0, first.output
    lc = shared("tiles", "lc25000_224", "lung_scc")
    second = _invoke(runner, "import", lc, "--subtype", "squamous", "--out", out, "-q")
    assert second.exit_code == 0, second.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["tile_size"] == 128 and meta["subtypes"] == ["adenocarcinoma", "squamous"]
    conflict = _invoke(runner, "import", lc, "--subtype", "squamous", "--tile", 64, "--out", out, "-q")
    _refused(conflict, "tile_size", "128", "64")


# --- generate: one run per output set, no stale state ----------------------------------------------------------


def _generate(runner, model, out, *extra):
    return _invoke(
        runner,
        "generate",
        "--model",
        model,
        "--size",
        96,
        "--subtype",
        "adenocarcinoma",
        "--steps",
        2,
        "--out",
        out,
        "-q",
        *extra,
    )


def test_a_second_run_on_the_same_output_is_refused_at_once(model, tmp_path, runner):
    from wsi_synth.io.outputs import claim_outputs

    out = tmp_path / "s.tiff"
    with claim_outputs(out):
        result = _generate(runner, model, out)
        _refused(result, "another run", str(out))
    assert not any(tmp_path.iterdir())
    assert _generate(runner, model, out).exit_code == 0
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {
        "s.tiff",
        "s.mask.tiff",
        "s.geojson",
        "s.json",
    }


def test_an_output_is_never_one_of_the_inputs(model, tmp_path, runner):
    first = _generate(runner, model, tmp_path / "s.tiff")
    assert first.exit_code == 0, first.output
    before = _files(tmp_path)
    _refused(
        _generate(runner, model, tmp_path / "s.tiff", "--mask", tmp_path / "s.mask.tiff", "--overwrite"), "is the input"
    )
    _refused(
        _invoke(
            runner, "pyramid", tmp_path / "s.tiff", "--mpp", 0.5, "--out", tmp_path / "s.tiff", "--overwrite", "-q"
        ),
        "is the input",
    )
    _refused(
        _invoke(
            runner,
            "pyramid",
            tmp_path / "s.tiff",
            "--labels",
            tmp_path / "s.mask.tiff",
            "--mpp",
            0.5,
            "--out",
            tmp_path / "s.tif",
            "--overwrite",
            "-q",
        ),
        "is the input",
    )
    assert _files(tmp_path) == before


@pytest.mark.parametrize("command", ["generate", "count", "inpaint"])
def test_no_output_lands_inside_the_model_bundle_even_with_overwrite(model, tmp_path, runner, cmu_slide, command):
    bundle = tmp_path / "m"
    shutil.copytree(model, bundle)
    before = _files(bundle)
    # its record would be m/model.json, the bundle's own
    out = bundle / ("tiles" if command == "count" else "model.tiff")
    if command == "generate":
        result = _generate(runner, bundle, out, "--overwrite")
    elif command == "count":
        result = _generate(runner, bundle, out, "--count", 2, "--overwrite")
    else:
        region = tmp_path / "r.geojson"
        region.write_text(
            json.dumps(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [300, 100], [300, 300], [100, 100]]]},
                }
            )
        )
        result = _invoke(
            runner,
            "inpaint",
            cmu_slide,
            region,
            "--model",
            bundle,
            "--class",
            "stroma",
            "--steps",
            2,
            "--out",
            out,
            "--overwrite",
            "-q",
        )
    _refused(result, "inside", str(bundle))
    assert _files(bundle) == before


def test_a_second_training_of_the_same_stage_is_refused_at_once(model, tmp_path, runner):
    from wsi_synth.io.atomic import claim

    data = eight_tiles(tmp_path)
    with claim(model / "mask_unet"):
        result = _invoke(runner, "train", "mask", data, "--out", model, "--overwrite", "--max-steps", 2, "-q")
        _refused(result, "another run", "mask stage")
    assert (model / "mask_unet" / "config.json").is_file()


def test_a_failed_run_leaves_no_work_folder(model, tmp_path, runner):
    bad_mask = tmp_path / "mask.png"
    bad_mask.write_text("not an image")
    result = _generate(runner, model, tmp_path / "s.tiff", "--mask", bad_mask)
    _refused(result, "--mask")
    assert not (tmp_path / ".s.tiff.work").exists() and not (tmp_path / "s.tiff").exists()


def _fail_in_decode(monkeypatch, error: BaseException) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("wsi_synth.io.outputs.write_slide_outputs", fail)


def test_saved_state_is_kept_for_resume_but_never_after_a_full_disk(model, tmp_path, runner, monkeypatch):
    import errno

    out = tmp_path / "s.tiff"
    _fail_in_decode(monkeypatch, OSError(errno.EIO, "input/output error"))
    result = _generate(runner, model, out, "--save-every", 1)
    assert result.exit_code == 1 and (tmp_path / ".s.tiff.work" / "image" / "state.json").exists()
    monkeypatch.undo()
    # the state is never discarded by a run that forgot --resume
    _refused(_generate(runner, model, out), "--resume", "--overwrite")
    assert (tmp_path / ".s.tiff.work" / "image" / "state.json").exists()
    _fail_in_decode(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    result = _generate(runner, model, out, "--resume", "--save-every", 1)
    _refused(result, "disk full", "free some space")
    assert not (tmp_path / ".s.tiff.work").exists() and not out.exists()
    monkeypatch.undo()
    assert _generate(runner, model, out).exit_code == 0


def test_a_run_that_cannot_fit_in_memory_or_on_disk_is_refused_before_it_starts(model, tmp_path, runner, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    import wsi_synth.generation.run as gen

    monkeypatch.setattr(gen, "available_memory", lambda: 1000)
    _refused(_generate(runner, model, tmp_path / "s.tiff"), "of memory and 1 kB is available", "--max-memory")
    # out of core: the canvases go to disk instead
    result = _generate(runner, model, tmp_path / "s.tiff", "--max-memory", 0)
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    monkeypatch.setattr(
        shutil_module, "disk_usage", lambda path: namedtuple("usage", "total used free")(10**9, 10**9, 1000)
    )
    _refused(_generate(runner, model, tmp_path / "t.tiff"), "of disk in", str(tmp_path), "1 kB is free")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.geojson", "s.json", "s.mask.tiff", "s.tiff"]


def test_a_damaged_saved_state_is_refused_not_trusted(model, tmp_path, runner, monkeypatch):
    import errno

    out = tmp_path / "s.tiff"
    _fail_in_decode(monkeypatch, OSError(errno.EIO, "input/output error"))
    assert _generate(runner, model, out, "--save-every", 1).exit_code == 1
    monkeypatch.undo()
    saved = next((tmp_path / ".s.tiff.work" / "image").glob("state-*.npz"))
    saved.write_bytes(saved.read_bytes()[:200])
    _refused(_generate(runner, model, out, "--resume"), "saved state is damaged", "--overwrite")
    assert _generate(runner, model, out, "--overwrite").exit_code == 0 and out.exists()


def test_trained_weights_are_as_readable_as_every_other_file(model):
    modes = {p.name: p.stat().st_mode & 0o777 for p in model.rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--size", "1000000000000", "--dry-run"], ["--size"]),
        (["--steps", "5000", "--dry-run"], ["--steps 5000", "1000"]),
        (["--omega", "inf"], ["--omega"]),
        (["--mask-omega", "nan"], ["--mask-omega"]),
        (["--max-memory", "inf"], ["--max-memory"]),
        (["--device", "banana"], ["--device", "banana"]),
        (["--device", "cuda:7"], ["--device", "cuda"]),
    ],
)
def test_generate_numbers_and_devices_are_checked_where_they_enter(model, tmp_path, runner, args, fragments):
    result = _generate(runner, model, tmp_path / "s.tiff", *args)
    _refused(result, *fragments)
    assert not any(tmp_path.iterdir())


def test_seeds_are_what_the_generators_accept(model, tmp_path, runner):
    from wsi_synth.errors import BadArgumentError
    from wsi_synth.generation import GenerateConfig

    with pytest.raises(BadArgumentError, match="seed"):
        GenerateConfig(width=96, height=96, seed=-5).validate()
    result = _generate(runner, model, tmp_path / "s.tiff", "--seed", -5)
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_generate_without_subtype_says_it_is_required_and_lists_the_choices(model, tmp_path, runner):
    result = _invoke(runner, "generate", "--model", model, "--size", 96, "--out", tmp_path / "s.tiff", "-q")
    _refused(result, "--subtype is required", "adenocarcinoma")


def _label_png(path: Path, shape: tuple[int, int], value: int = 1) -> Path:
    labels = np.zeros(shape, np.uint8)
    labels[: shape[0] // 2] = value
    Image.fromarray(labels).save(path)
    return path


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("text", ["--mask", "not an image"]),
        ("aspect", ["--mask", "aspect", "--stretch"]),
        ("rgb", ["--mask", "single-channel"]),
        ("empty-geojson", ["--mask", "no polygons"]),
        ("outside-geojson", ["--mask", "outside"]),
        ("nan-geojson", ["--mask"]),
    ],
)
def test_generate_refuses_a_mask_it_cannot_use_as_given(model, tmp_path, runner, case, fragments):
    mask = (
        tmp_path
        / "in"
        / {"empty-geojson": "m.geojson", "outside-geojson": "m.geojson", "nan-geojson": "m.geojson"}.get(case, "m.png")
    )
    mask.parent.mkdir()
    square = [[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]
    feature = {
        "type": "Feature",
        "properties": {"classification": {"name": "stroma"}},
        "geometry": {"type": "Polygon", "coordinates": [square]},
    }
    if case == "text":
        mask.write_text("hello")
    elif case == "aspect":
        _label_png(mask, (96, 40))
    elif case == "rgb":
        colour = np.zeros((96, 96, 3), np.uint8)
        colour[..., 0] = 1  # a colour picture (channels differ), not ids saved as grey RGB
        Image.fromarray(colour).save(mask)
    elif case == "empty-geojson":
        mask.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    elif case == "outside-geojson":
        far = [[x + 5000, y + 5000] for x, y in square]
        mask.write_text(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [{**feature, "geometry": {"type": "Polygon", "coordinates": [far]}}],
                }
            )
        )
    else:
        bad = [[0, 0], [float("nan"), 0], [50, 50], [0, 0]]
        mask.write_text(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [{**feature, "geometry": {"type": "Polygon", "coordinates": [bad]}}],
                }
            ).replace("NaN", "NaN")
        )
    result = _generate(runner, model, tmp_path / "s.tiff", "--mask", mask)
    _refused(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_mask_of_the_same_aspect_is_resampled_and_stretch_is_explicit(model, tmp_path, runner):
    half = _label_png(tmp_path / "half.png", (48, 48))
    assert _generate(runner, model, tmp_path / "a.tiff", "--mask", half).exit_code == 0
    wide = _label_png(tmp_path / "wide.png", (96, 40))
    result = _generate(runner, model, tmp_path / "b.tiff", "--mask", wide, "--stretch")
    assert result.exit_code == 0, result.output
    labels = tifffile.imread(tmp_path / "b.mask.tiff", level=0)
    assert labels.shape == (96, 96) and (labels[:40] == 1).mean() > 0.9 and (labels[56:] == 1).mean() < 0.1


@pytest.mark.parametrize(
    "key, value", [("latent", "eight"), ("stages", ["codec"]), ("classes", [{"name": "x"}]), ("tile_size", -64)]
)
def test_a_damaged_model_json_is_one_line(model, tmp_path, runner, key, value):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    meta = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**meta, key: value}))
    _refused(_generate(runner, broken, tmp_path / "s.tiff"), "model.json", repr(key))
    _refused(_invoke(runner, "info", broken), "model.json", repr(key))


def test_a_model_folder_missing_a_network_names_the_folder(model, tmp_path, runner):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    shutil.rmtree(broken / "image_unet")
    result = _generate(runner, broken, tmp_path / "s.tiff")
    message = _refused(result, "image")
    assert "hub" not in message.lower() and "connect" not in message.lower()


@pytest.mark.parametrize(
    "damage, fragments",
    [
        ("one more class in model.json", ("image_unet/config.json has in_channels", "different trainings")),
        ("another latent factor in model.json", ("codec/config.json has downsampling factor", "different trainings")),
        ("one more subtype in model.json", ("mask_unet/config.json has num_class_embeds", "different trainings")),
        ("truncated image weights", ("image network's weights are unreadable", "truncated")),
    ],
)
def test_a_bundle_whose_files_disagree_is_refused_when_opened_not_after_sampling(
    model, tmp_path, runner, damage, fragments
):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    meta = json.loads((broken / "model.json").read_text())
    if damage.startswith("one more class"):
        meta["classes"].append({"id": len(meta["classes"]), "name": "necrosis", "color": [0, 0, 0]})
    elif damage.startswith("another latent"):
        meta["latent"]["factor"] *= 2
    elif damage.startswith("one more subtype"):
        meta["subtypes"] = [*meta["subtypes"], "mesothelioma"]
    else:
        weights = next((broken / "image_unet").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (broken / "model.json").write_text(json.dumps(meta))
    result = _generate(runner, broken, tmp_path / "s.tiff")
    _refused(result, *fragments)
    assert not (tmp_path / ".s.tiff.work").exists() and not (tmp_path / "s.tiff").exists()


# --- train ------------------------------------------------------------------------------------------------------


def test_an_interrupted_first_stage_resumes_and_overwrite_replaces_one_stage(tmp_path, runner, monkeypatch):
    data = eight_tiles(tmp_path)
    out = tmp_path / "model"
    calls = {"n": 0}
    real_step = training_loop.save_checkpoint

    def interrupt_after_first_checkpoint(*args, **kwargs):
        real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_loop, "save_checkpoint", interrupt_after_first_checkpoint)
    args = [
        "train",
        "codec",
        data,
        "--out",
        out,
        "--max-steps",
        4,
        "--batch-size",
        2,
        "--checkpoint-every",
        2,
        "--sample-every",
        4,
        "-q",
    ]
    assert _invoke(runner, *args).exit_code == 130
    resumed = _invoke(runner, *args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "model.json").read_text())["stages"]["codec"]["steps"] == 4
    _refused(_invoke(runner, *args), "already has its codec stage", "--overwrite")
    (out / "notes.txt").write_text("mine")
    again = _invoke(runner, *args, "--overwrite")
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "mine"


def test_training_out_of_memory_suggests_a_smaller_batch(tmp_path, runner, monkeypatch):
    import torch

    data = eight_tiles(tmp_path)

    def exhausted(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
            "52428800000 bytes"
        )

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", exhausted)
    result = _invoke(runner, "train", "codec", data, "--out", tmp_path / "m", "--batch-size", 8, "--max-steps", 2, "-q")
    _refused(result, "out of memory at batch size 8", "--batch-size 2")
    assert not (tmp_path / "m").exists()


def test_a_bad_training_config_is_one_line(tmp_path, runner):
    data = eight_tiles(tmp_path)
    bad = tmp_path / "bad.yaml"
    for text in ("[1, 2", "- a list\n- of things\n", "batch_size: many\n", "max_steps: -3\n", "no_such_key: 1\n"):
        bad.write_text(text)
        _refused(_invoke(runner, "train", "codec", data, "--out", tmp_path / "m", "--config", bad, "-q"), str(bad))
    bad.write_text("codec:\n  block_out_channels: [8, 8]\n  norm_num_groups: 16\n")  # valid types, but no such network
    _refused(
        _invoke(runner, "train", "codec", data, "--out", tmp_path / "m", "--config", bad, "-q"),
        "codec network cannot be built",
        "divisible",
    )
    assert not (tmp_path / "m").exists()  # a failed first run leaves no bundle skeleton


# --- extract: annotations, CSVs and numbers ---------------------------------------------------------------------


def _geojson(path: Path, features: list) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _tumour(coords, **props) -> dict:
    return {
        "type": "Feature",
        "properties": {"classification": {"name": "tumour"}, **props},
        "geometry": {"type": "Polygon", "coordinates": [coords]},
    }


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("nan", ["feature 0"]),
        ("strings", ["feature 0"]),
        ("mixed-slide", ["'slide'"]),
        ("deep", ["nested"]),
        ("aperio-text", ["X"]),
        ("asap-no-y", ["Y"]),
        ("binary-csv", ["--subtypes"]),
        ("bad-colour", ["color", "0–255"]),
    ],
)
def test_extract_refuses_malformed_annotations_and_tables(slide_dir, tmp_path, runner, case, fragments):
    ann = tmp_path / "ann"
    ann.mkdir()
    square = [[100, 100], [900, 100], [900, 900], [100, 900], [100, 100]]
    extra: list = []
    if case == "nan":
        target = _geojson(ann / "a.geojson", [_tumour([[100, 100], [float("nan"), 100], [900, 900], [100, 100]])])
    elif case == "strings":
        target = _geojson(ann / "a.geojson", [_tumour([["a", "b"], [900, 100], [900, 900], [100, 100]])])
    elif case == "mixed-slide":
        target = _geojson(ann / "a.geojson", [_tumour(square, slide="CMU-1-Small-Region"), _tumour(square)])
    elif case == "deep":
        target = ann / "a.geojson"
        target.write_text('{"type": "FeatureCollection", "features": ' + "[" * 100000 + "]" * 100000 + "}")
    elif case == "aperio-text":
        target = ann / "a.xml"
        target.write_text(
            '<Annotations><Annotation Name="tumour"><Regions><Region><Vertices>'
            '<Vertex X="abc" Y="1"/><Vertex X="900" Y="100"/><Vertex X="900" Y="900"/></Vertices></Region></Regions>'
            "</Annotation></Annotations>"
        )
    elif case == "asap-no-y":
        target = ann / "a.xml"
        target.write_text(
            '<ASAP_Annotations><Annotations><Annotation Name="a" PartOfGroup="tumour" Type="Polygon"><Coordinates>'
            '<Coordinate Order="0" X="100"/><Coordinate Order="1" X="900" Y="100"/><Coordinate Order="2" X="900" '
            'Y="900"/>'
            "</Coordinates></Annotation></Annotations></ASAP_Annotations>"
        )
    elif case == "bad-colour":
        target = _geojson(ann / "a.geojson", [_tumour(square)])
        classes = tmp_path / "classes.yaml"
        classes.write_text("classes: [{name: tumour, color: [a, b, c]}]\n")
        extra = ["--classes", classes]
    else:
        target = _geojson(ann / "a.geojson", [_tumour(square)])
        csv = tmp_path / "subtypes.csv"
        csv.write_bytes(bytes(range(256)) * 8)
        extra = ["--subtypes", csv]
    slide = slide_dir / "CMU-1-Small-Region.svs"
    result = _invoke(runner, "extract", slide, target, "--out", tmp_path / "data", "--tile", 256, "-q", *extra)
    _refused(result, *fragments)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--mpp", "1e-9"], ["--mpp", "upsampl"]),
        (["--mpp", "inf"], ["--mpp"]),
        (["--tile", "100000"], ["--tile", "larger than"]),
    ],
)
def test_extract_refuses_numbers_that_cannot_give_a_dataset(slide_dir, tmp_path, runner, args, fragments):
    slide = slide_dir / "CMU-1-Small-Region.svs"
    result = _invoke(
        runner, "extract", slide, slide_dir / "CMU-1-Small-Region.geojson", "--out", tmp_path / "data", "-q", *args
    )
    _refused(result, *fragments)
    assert not (tmp_path / "data").exists()


# --- import, pyramid, evaluate, info: images --------------------------------------------------------------------


def _truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bomb(path: Path) -> Path:
    """A PNG that claims 40,000 × 40,000 px (1.6 Gpx, past PIL's bomb limit) in a few hundred bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    return path


def _one_tile_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    for path in sorted(shared("tiles", "lc25000_224", "lung_scc").glob("*"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("case, fragments", [("truncated", ["truncated"]), ("bomb", ["pixels"])])
def test_import_refuses_broken_images_and_leaves_no_dataset(tmp_path, runner, case, fragments):
    folder = _one_tile_folder(tmp_path)
    source = next(folder.iterdir())
    bad = _truncated(folder / "zz.jpg", source) if case == "truncated" else _bomb(folder / "zz.png")
    result = _invoke(runner, "import", folder, "--tile", 64, "--out", tmp_path / "data", "-q")
    _refused(result, bad.name, *fragments)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--tile", "100000"], ["--tile 100000", "smaller"]),
        (["--mpp", "inf"], ["--mpp"]),
        (["--tile", "64", "--region", "64", "--region-mask", "128"], ["--region", "--region-mask"]),
        (["--tile", "64", "--masks", "IMAGES", "--legend", "LEGEND"], ["not values of --legend"]),
        (["--tile", "64", "--masks", "BLANK", "--legend", "LEGEND"], ["nothing to import", "--min-annotated"]),
    ],
)
def test_import_refuses_settings_that_give_an_empty_or_meaningless_dataset(tmp_path, runner, args, fragments):
    folder = _one_tile_folder(tmp_path)
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: unknown\n1: tumour\n")
    blank = tmp_path / "blank"
    blank.mkdir()
    for image in folder.iterdir():
        Image.fromarray(np.zeros(Image.open(image).size[::-1], np.uint8)).save(blank / f"{image.stem}.png")
    args = [{"IMAGES": folder, "LEGEND": legend, "BLANK": blank}.get(a, a) for a in args]
    _refused(_invoke(runner, "import", folder, "--out", tmp_path / "data", "-q", *args), *fragments)
    assert not (tmp_path / "data").exists()


def test_import_refuses_masks_of_another_size(tmp_path, runner):
    wsss = shared("tiles_masks", "wsss4luad_val")
    img, msk = tmp_path / "img", tmp_path / "mask"
    img.mkdir()
    msk.mkdir()
    path = sorted((wsss / "img").glob("*.png"))[0]
    shutil.copy(path, img / path.name)
    Image.open(wsss / "mask" / path.name).resize((50, 30), Image.NEAREST).save(msk / path.name)
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    result = _invoke(
        runner, "import", img, "--masks", msk, "--legend", legend, "--tile", 64, "--out", tmp_path / "data", "-q"
    )
    _refused(result, path.name, "50×30")


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path, runner):
    from wsi_synth.io.images import read_rgb

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "r.png"
    Image.fromarray(ramp).save(path)
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert abs(int(rgb[32, 32, 0]) - 128) <= 2 and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("legend-list", ["--legend", "mapping"]),
        ("truncated", ["truncated"]),
        ("bomb", ["pixels"]),
        ("mpp-inf", ["--mpp"]),
        ("under-a-file", ["not a folder"]),
    ],
)
def test_pyramid_refuses_what_it_cannot_write_faithfully(tmp_path, runner, case, fragments):
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.full((600, 700, 3), 200, np.uint8), tile=(256, 256), compression="zlib")
    labels = tmp_path / "labels.png"
    _label_png(labels, (600, 700))
    out = tmp_path / "out" / "s.tiff"
    out.parent.mkdir()
    args = [image, "--mpp", 0.5, "--out", out, "-q"]
    if case == "legend-list":
        legend = tmp_path / "legend.yaml"
        legend.write_text("- tumour\n- stroma\n")
        args += ["--labels", labels, "--legend", legend]
    elif case == "truncated":
        args[0] = _truncated(tmp_path / "t.tif", image)
    elif case == "bomb":
        args[0] = _bomb(tmp_path / "b.png")
    elif case == "mpp-inf":
        args[2] = "inf"
    else:
        (tmp_path / "afile").write_text("x")
        args[4] = tmp_path / "afile" / "s.tiff"
    _refused(_invoke(runner, "pyramid", *args), *fragments)
    assert not any(out.parent.iterdir())


def test_pyramid_on_an_output_another_run_holds_is_refused(tmp_path, runner):
    from wsi_synth.io.outputs import claim_outputs

    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.full((300, 300, 3), 200, np.uint8))
    with claim_outputs(tmp_path / "s.tiff"):
        _refused(_invoke(runner, "pyramid", image, "--mpp", 0.5, "--out", tmp_path / "s.tiff", "-q"), "another run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_info_of_a_dataset_with_a_broken_manifest(tmp_path, runner):
    folder = _one_tile_folder(tmp_path)
    data = tmp_path / "data"
    assert _invoke(runner, "import", folder, "--tile", 64, "--out", data, "-q").exit_code == 0
    (data / "manifest.csv").write_bytes(b"\x00\xff garbage\nkind\n1,2,3,4,5,6,7,8,9,10,11\n")
    _refused(_invoke(runner, "info", data), "manifest.csv")


@pytest.mark.parametrize("damage", ["manifest points past the arrays", "source store gone"])
def test_a_damaged_dataset_is_named_by_info_train_and_tile_dataset(tmp_path, runner, damage):
    from wsi_synth import BadDatasetError
    from wsi_synth.data import TileDataset

    wsss = shared("tiles_masks", "wsss4luad_val")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour\n1: stroma\n2: normal\n3: unknown\n")
    data = tmp_path / "data"
    args = (
        "import",
        wsss / "img",
        "--masks",
        wsss / "mask",
        "--legend",
        legend,
        "--tile",
        64,
        "--region",
        128,
        "--region-mask",
        16,
    )
    assert _invoke(runner, *args, "--out", data, "-q").exit_code == 0
    source = json.loads((data / "dataset.json").read_text())["sources"][0]["id"]
    if damage == "source store gone":
        shutil.rmtree(data / "sources" / f"{source}.zarr")
        fragment = "store"
    else:
        lines = (data / "manifest.csv").read_text().splitlines()
        head = lines[0].split(",")
        row = lines[1].split(",")
        row[head.index("index")] = "99999"
        (data / "manifest.csv").write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
        fragment = "99999"
    _refused(_invoke(runner, "info", data), source, fragment)
    _refused(_invoke(runner, "train", "codec", data, "--out", tmp_path / "m", "--max-steps", 1, "-q"), source, fragment)
    with pytest.raises(BadDatasetError, match=fragment):
        TileDataset(data)


def test_tile_datasets_of_different_tile_sizes_do_not_concatenate(tmp_path, runner):
    from wsi_synth.data import TileDataset

    folder = _one_tile_folder(tmp_path)
    for tile in (64, 32):
        assert _invoke(runner, "import", folder, "--tile", tile, "--out", tmp_path / f"d{tile}", "-q").exit_code == 0
    import wsi_synth

    same = TileDataset(tmp_path / "d64", kinds=("unlabelled",)) + TileDataset(tmp_path / "d64", kinds=("unlabelled",))
    assert len(same) == 2 * len(TileDataset(tmp_path / "d64", kinds=("unlabelled",)))
    with pytest.raises(wsi_synth.BadArgumentError, match="64 px tiles .* and 32 px"):
        TileDataset(tmp_path / "d64", kinds=("unlabelled",)) + TileDataset(tmp_path / "d32", kinds=("unlabelled",))


@pytest.mark.parametrize("case, fragments", [("truncated", ["truncated"]), ("bomb", ["pixels"])])
def test_evaluate_refuses_broken_inputs(tmp_path, runner, case, fragments):
    real = _one_tile_folder(tmp_path)
    synthetic = tmp_path / "syn"
    synthetic.mkdir()
    if case == "truncated":
        whole = synthetic / "w.tiff"
        tifffile.imwrite(whole, np.full((1024, 1024, 3), 180, np.uint8), tile=(256, 256), compression="jpeg")
        _truncated(synthetic / "s.tiff", whole)
        whole.unlink()
    else:
        _bomb(synthetic / "s.png")
        for tile in real.iterdir():
            shutil.copy(tile, synthetic / tile.name)
    result = _invoke(
        runner, "evaluate", real, synthetic, "--k", 1, "--out", tmp_path / "report", "--tile", 256, "--size", 32, "-q"
    )
    _refused(result, "s.", *fragments)
    assert not (tmp_path / "report").exists()


def test_evaluate_warns_when_k_is_as_large_as_the_sample(tmp_path, runner):
    real = _one_tile_folder(tmp_path)
    result = _invoke(runner, "evaluate", real, real, "--out", tmp_path / "report", "--size", 32, "--k", 20, "-q")
    _refused(result, "--k 20", "2 tiles")


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def test_output_sets_of_one_stem_never_mix_their_sidecars(model, tmp_path, runner):
    assert _generate(runner, model, tmp_path / "a.tiff", "--annotations", "geojson,asap").exit_code == 0
    (tmp_path / "a.txt").write_text("the user's own notes")  # same stem, not named by the record: never touched
    before = _files(tmp_path)
    # another format of the same stem shares a.json and a.geojson: refused at the start, nothing changed
    _refused(_generate(runner, model, tmp_path / "a.ome.zarr"), "a.geojson exists", "--overwrite")
    assert _files(tmp_path) == before
    # replacing the set removes what the old record names and the new set does not write again
    result = _generate(runner, model, tmp_path / "a.ome.zarr", "--overwrite")
    assert result.exit_code == 0, result.output
    assert _names(tmp_path) == {"a.ome.zarr", "a.geojson", "a.json", "a.txt"}
    assert json.loads((tmp_path / "a.json").read_text())["outputs"]["format"] == "ome-zarr"
    # the same format with fewer annotations: the old ASAP file goes too
    assert _generate(runner, model, tmp_path / "b.tiff", "--annotations", "geojson,asap").exit_code == 0
    assert _generate(runner, model, tmp_path / "b.tiff", "--overwrite").exit_code == 0
    assert {n for n in _names(tmp_path) if n.startswith("b.")} == {"b.tiff", "b.mask.tiff", "b.geojson", "b.json"}


def test_pyramid_sets_are_replaced_whole_and_never_remove_their_input(tmp_path, runner):
    import tifffile

    rgb = np.full((300, 400, 3), 180, np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", rgb)
    assert (
        _invoke(runner, "pyramid", tmp_path / "in.tif", "--mpp", 0.5, "--out", tmp_path / "p.tiff", "-q").exit_code == 0
    )
    assert json.loads((tmp_path / "p.json").read_text())["command"] == "pyramid"
    result = _invoke(
        runner, "pyramid", tmp_path / "in.tif", "--mpp", 0.5, "--out", tmp_path / "p.ome.tiff", "--overwrite", "-q"
    )
    assert result.exit_code == 0, result.output
    assert {n for n in _names(tmp_path) if n.startswith("p.")} == {"p.ome.tiff", "p.json"}
    # a set whose record names the input as its image: replacing that set would delete the input, so it is refused
    assert (
        _invoke(runner, "pyramid", tmp_path / "p.ome.tiff", "--mpp", 0.5, "--out", tmp_path / "q.tiff", "-q").exit_code
        == 0
    )
    _refused(
        _invoke(
            runner, "pyramid", tmp_path / "q.tiff", "--mpp", 0.5, "--out", tmp_path / "q.ome.tiff", "--overwrite", "-q"
        ),
        "is the input",
    )
    assert (tmp_path / "q.tiff").is_file()


def test_runs_on_two_formats_of_one_stem_exclude_each_other(model, tmp_path, runner):
    from wsi_synth.io.outputs import claim_outputs

    with claim_outputs(tmp_path / "c.tiff"):
        _refused(_generate(runner, model, tmp_path / "c.ome.zarr"), "another run")
    assert not _names(tmp_path)


@pytest.mark.parametrize(
    "setting, fragment",
    [({"quality": 0}, "--quality must be 1–100"), ({"tiff_tile": 300}, "--tiff-tile must be a multiple of 16")],
)
def test_write_settings_are_refused_before_any_sampling(model, tmp_path, setting, fragment):
    import wsi_synth

    with pytest.raises(wsi_synth.BadArgumentError) as refused:
        wsi_synth.generate(model, tmp_path / "s.tiff", size=64, subtype="adenocarcinoma", **setting)
    assert fragment in refused.value.cli_message() and fragment.replace("--", "").replace("-", "_") in str(
        refused.value
    )
    assert not any(tmp_path.iterdir())  # refused before the work folder, not after the sampling


def test_an_ome_tiff_named_like_a_tiff_gets_a_mask_named_like_it(model, tmp_path, runner):
    assert _generate(runner, model, tmp_path / "o.tiff", "--format", "ome-tiff").exit_code == 0
    assert _names(tmp_path) == {"o.tiff", "o.mask.tiff", "o.geojson", "o.json"}


def test_a_new_run_removes_the_temporaries_a_killed_run_of_the_same_set_left(model, tmp_path, runner):
    stale_files = [".s.tiff.set-99999", ".s.mask.tiff.partial-12", ".s.geojson.set-7"]
    stale_folders = [".s.tiff.levels-k3j_x", ".s.ome.zarr.set-5"]
    others = [".s.v2.tiff.set-1", ".sx.tiff.partial-3", "notes.txt"]  # other sets' and the user's: never touched
    for name in stale_files + others:
        (tmp_path / name).write_text("left by a killed run")
    for name in stale_folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "level-1.raw").write_bytes(b"\0" * 64)
    assert _generate(runner, model, tmp_path / "s.tiff").exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"s.tiff", "s.mask.tiff", "s.geojson", "s.json", *others}
