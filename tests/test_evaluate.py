import json

import numpy as np
import pytest
from PIL import Image
from wsi_synth_cli.main import cli

from tests.conftest import shared


def _write_tiles(folder, tiles):
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(tiles):
        Image.fromarray(t).save(folder / f"{i:04d}.png")
    return folder


@pytest.mark.slow
def test_real_tiles_against_themselves_and_against_noise(tmp_path, runner):
    lc = shared("tiles", "lc25000_224", "lung_aca")
    files = sorted(lc.glob("*.jpeg"))[:120]
    tiles = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    real = _write_tiles(tmp_path / "real", tiles[:60])
    same = _write_tiles(tmp_path / "same", tiles[:60])
    rng = np.random.default_rng(0)
    noise = _write_tiles(tmp_path / "noise", [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(60)])
    result = runner.invoke(
        cli, ["evaluate", str(real), str(same), "--out", str(tmp_path / "r1"), "--size", "128", "-q"]
    )
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "r1" / "report.json").read_text())["metrics"]
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and 0 <= m["fid"] < 1e-3  # a distance: never below 0
    result = runner.invoke(
        cli, ["evaluate", str(real), str(noise), "--out", str(tmp_path / "r2"), "--size", "128", "-q"]
    )
    m = json.loads((tmp_path / "r2" / "report.json").read_text())["metrics"]
    assert m["precision"] == 0.0 and m["recall"] == 0.0
    other = _write_tiles(tmp_path / "other", tiles[60:120])  # other real tiles of the same class
    result = runner.invoke(
        cli, ["evaluate", str(real), str(other), "--out", str(tmp_path / "r3"), "--size", "128", "-q"]
    )
    m_other = json.loads((tmp_path / "r3" / "report.json").read_text())["metrics"]
    assert m["fid"] > 10 * m_other["fid"] > 0  # FID has no absolute scale across feature extractors; compare


@pytest.mark.slow
def test_copies_of_training_tiles_are_flagged_and_held_out_tiles_are_not(tmp_path, runner):
    scc = sorted(shared("tiles", "lc25000_224", "lung_scc").glob("*.jpeg"))
    tiles = [np.asarray(Image.open(f).convert("RGB")) for f in scc[:300]]
    train = _write_tiles(tmp_path / "train", tiles[:150])
    held_out = _write_tiles(tmp_path / "test", tiles[150:300])
    rng = np.random.default_rng(1)
    copies = _write_tiles(
        tmp_path / "copies",
        [
            np.clip(tiles[i].astype(int) + rng.integers(-2, 3, tiles[i].shape), 0, 255).astype(np.uint8)
            for i in rng.integers(0, 150, 150)
        ],
    )
    args = ["--size", "96", "--cells", "3", "--min-per-cell", "10", "--gallery", "4", "-q"]
    copied = runner.invoke(
        cli, ["evaluate", str(held_out), str(copies), "--train", str(train), "--out", str(tmp_path / "c"), *args]
    )
    assert copied.exit_code == 0, copied.output
    c = json.loads((tmp_path / "c" / "report.json").read_text())["metrics"]
    honest = runner.invoke(
        cli, ["evaluate", str(held_out), str(held_out), "--train", str(train), "--out", str(tmp_path / "h"), *args]
    )
    assert honest.exit_code == 0, honest.output
    h = json.loads((tmp_path / "h" / "report.json").read_text())["metrics"]
    assert c["copying"]["c_t"] < -3 and c["authenticity"] < 0.2
    assert abs(h["copying"]["c_t"]) < 1e-9  # the same held-out set on both sides: every z is 0
    # LC25000 tiles are rotations/flips of 250 originals, so "held-out" tiles partly duplicate training tiles
    # (authenticity ~0.3 here; ~0.5 for truly independent draws): the copies must still stand far below.
    assert h["authenticity"] > 2 * c["authenticity"] + 0.1
    page = (tmp_path / "c" / "report.html").read_text()
    assert page.count("data:image/png;base64") == 8 and "not comparable" in page and "<svg" in page


def test_torchscript_extractor_and_bad_feature_file(tmp_path, runner):
    import torch

    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
            return x.float().mean(dim=(2, 3))

    script = tmp_path / "mean.pt"
    torch.jit.script(Mean()).save(str(script))
    rng = np.random.default_rng(2)
    a = _write_tiles(tmp_path / "a", [np.full((32, 32, 3), rng.integers(0, 255, 3), np.uint8) for _ in range(20)])
    result = runner.invoke(
        cli, ["evaluate", str(a), str(a), "--features", str(script), "--size", "32", "--out", str(tmp_path / "r"), "-q"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["feature_extractor"] == {"name": "mean", "comparable_with_published": True, "dim": 3}
    bad = tmp_path / "bad.pt"
    bad.write_text("not a network")
    result = runner.invoke(cli, ["evaluate", str(a), str(a), "--features", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a TorchScript file" in result.output


def test_dataset_and_slide_inputs_and_seam_score(tmp_path, runner):
    from wsi_synth.io import write_slide_pyramid

    rng = np.random.default_rng(3)
    smooth = np.asarray(
        Image.fromarray((rng.random((30, 30, 3)) * 255).astype(np.uint8)).resize((1024, 1024), Image.Resampling.BICUBIC)
    )
    seamed = smooth.astype(np.int16)
    for y in range(0, 1024, 64):
        for x in range(0, 1024, 64):
            seamed[y : y + 64, x : x + 64] += rng.integers(-12, 13)
    slides = tmp_path / "slides"
    slides.mkdir()
    write_slide_pyramid(np.clip(seamed, 0, 255).astype(np.uint8), slides / "seamed.tiff", mpp=0.5, tile=256, quality=95)
    write_slide_pyramid(smooth, slides / "clean.tiff", mpp=0.5, tile=256, quality=95)
    real = _write_tiles(
        tmp_path / "real", [smooth[y : y + 256, x : x + 256] for y in range(0, 1024, 256) for x in range(0, 1024, 256)]
    )
    result = runner.invoke(
        cli,
        [
            "evaluate",
            str(real),
            str(slides),
            "--tile",
            "256",
            "--size",
            "64",
            "--seam-period",
            "64",
            "--out",
            str(tmp_path / "r"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    listed = [str(slides / "clean.tiff"), str(slides / "seamed.tiff")]
    assert report["inputs"]["synthetic"] == {
        "path": str(slides),
        "kind": "slides",
        "tiles": 32,
        "mode": "tiled",
        "slides": listed,
    }
    page = (tmp_path / "r" / "report.html").read_text()
    assert all(f"wsi-synth view {path}" in page for path in listed)  # each slide, one command from the viewer
    seams = {s["slide"]: s for s in report["metrics"]["seams"]}
    assert seams["seamed.tiff"]["boundary_energy_ratio"] > 1.5 > seams["clean.tiff"]["boundary_energy_ratio"]
    ds = tmp_path / "ds"
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    wsss = shared("tiles_masks", "wsss4luad_val")
    assert (
        runner.invoke(
            cli,
            [
                "import",
                str(wsss / "img"),
                "--masks",
                str(wsss / "mask"),
                "--legend",
                str(legend),
                "--tile",
                "128",
                "--region",
                "256",
                "--region-mask",
                "32",
                "--out",
                str(ds),
                "-q",
            ],
        ).exit_code
        == 0
    )
    result = runner.invoke(
        cli, ["evaluate", str(ds), str(real), "--split", "test", "--size", "64", "--out", str(tmp_path / "d"), "-q"]
    )
    assert result.exit_code == 0, result.output
    inputs = json.loads((tmp_path / "d" / "report.json").read_text())["inputs"]
    assert inputs["real"]["kind"] == "dataset" and 0 < inputs["real"]["tiles"]


@pytest.mark.parametrize(
    "args, message", [(["--mode", "sideways"], "sideways"), (["--features", "/nope.pt"], "file not found")]
)
def test_evaluate_bad_arguments(tmp_path, runner, args, message):
    a = _write_tiles(tmp_path / "a", [np.zeros((16, 16, 3), np.uint8)] * 3)
    result = runner.invoke(cli, ["evaluate", str(a), str(a), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and message in result.output


def _colour_tiles(n, colour):
    return [np.full((32, 32, 3), colour, np.uint8)] * n


def _colours(batches):
    return [tuple(t[0, 0]) for batch in batches for t in batch]


def test_max_tiles_is_a_seeded_sample_over_the_whole_input(tmp_path, runner):
    from wsi_synth.errors import BadArgumentError
    from wsi_synth.evaluation.inputs import iter_batches, open_source
    from wsi_synth.io import write_slide_pyramid

    slides = tmp_path / "slides"
    slides.mkdir()
    for name, colour in (("a.tiff", (200, 40, 40)), ("b.tiff", (40, 40, 200))):  # 64 tiles of 64 px each
        write_slide_pyramid(np.full((512, 512, 3), colour, np.uint8), slides / name, mpp=0.5, tile=256, quality=100)
    images = _write_tiles(tmp_path / "images", _colour_tiles(20, (200, 40, 40)) + _colour_tiles(20, (40, 40, 200)))
    for folder, total in ((slides, 128), (images, 40)):
        source = open_source(folder, size=32, tile=64, max_tiles=10, seed=0)
        drawn = _colours(iter_batches(source, batch=4))
        assert len(source) == len(drawn) == 10 and source.available == total
        assert len({tuple(c) for c in drawn}) == 2  # both halves: not the first ten tiles in reading order
        again = open_source(folder, size=32, tile=64, max_tiles=10, seed=0)
        assert (again.items, again.picks) == (source.items, source.picks)
        other = open_source(folder, size=32, tile=64, max_tiles=10, seed=1)
        assert (other.items, other.picks) != (source.items, source.picks)
    with pytest.raises(BadArgumentError, match="max.tiles must be at least 1, got -5"):
        open_source(images, size=32, max_tiles=-5)  # the API's; the CLI's range refuses it first
    whole = open_source(slides, size=32, tile=64, max_tiles=500)
    assert len(whole) == 128 and whole.available is None and whole.picks is None
    result = runner.invoke(
        cli,
        ["evaluate", str(images), str(slides), "--tile", "64", "--size", "32", "--max-tiles", "12"]
        + ["--out", str(tmp_path / "r"), "-q"],
    )
    assert result.exit_code == 0, result.output
    inputs = json.loads((tmp_path / "r" / "report.json").read_text())["inputs"]
    assert (inputs["synthetic"]["tiles"], inputs["synthetic"]["sampled_from"]) == (12, 128)
    assert (inputs["real"]["tiles"], inputs["real"]["sampled_from"]) == (12, 40)
    assert json.loads((tmp_path / "r" / "report.json").read_text())["notes"] == []  # like counts: nothing to say
    unlike = runner.invoke(
        cli, ["evaluate", str(images), str(slides), "--tile", "64", "--size", "32", "--out", str(tmp_path / "u"), "-q"]
    )
    assert unlike.exit_code == 0, unlike.output
    (note,) = json.loads((tmp_path / "u" / "report.json").read_text())["notes"]
    assert "real has 40 tiles, synthetic 128" in note and "--max-tiles" in note
    assert f"note: {note}" in unlike.output
    assert "Note: real has 40 tiles" in (tmp_path / "u" / "report.html").read_text()
    assert "sampled from 128" in (tmp_path / "r" / "report.html").read_text()


def test_source_keeps_the_named_sources_of_a_dataset(tmp_path, runner):
    import csv
    import shutil

    wsss = shared("tiles_masks", "wsss4luad_val")
    for name, files in (("hospital_a", ("00.png", "01.png")), ("hospital_b", ("02.png", "03.png", "04.png"))):
        for folder in ("img", "mask"):
            (tmp_path / name / folder).mkdir(parents=True)
            for f in files:
                shutil.copy(wsss / folder / f, tmp_path / name / folder / f)
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    ds = tmp_path / "ds"
    for name in ("hospital_a", "hospital_b"):
        args = ["import", str(tmp_path / name / "img"), "--masks", str(tmp_path / name / "mask")]
        args += ["--legend", str(legend), "--tile", "64", "--out", str(ds), "-q"]
        assert runner.invoke(cli, args).exit_code == 0
    with open(ds / "manifest.csv", newline="") as fh:
        labelled = [r for r in csv.DictReader(fh) if r["kind"] == "labelled"]
    from_b = sum(r["source"].startswith("hospital_b") for r in labelled)
    assert 0 < from_b < len(labelled)  # both hospitals hold tiles
    synthetic = _write_tiles(tmp_path / "synthetic", _colour_tiles(8, (200, 40, 40)) + _colour_tiles(8, (40, 40, 200)))
    base = ["evaluate", str(ds), str(synthetic), "--size", "32", "-q"]
    result = runner.invoke(cli, [*base, "--source", "hospital_b", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["inputs"]["real"]["tiles"] == from_b
    unknown = runner.invoke(cli, [*base, "--source", "hospital_c", "--out", str(tmp_path / "c")])
    assert unknown.exit_code == 2 and "--source hospital_c" in unknown.output and "hospital_a-img" in unknown.output
    args = ["evaluate", str(synthetic), str(synthetic), "--source", "x", "--out", str(tmp_path / "f")]
    folder = runner.invoke(cli, args)
    assert folder.exit_code == 2 and "not a wsi-synth dataset" in folder.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()  # refused before anything is written


def _import_drawn(tmp_path, runner, name, drawn):
    """A dataset of 64 px tiles imported from (colour, class id) pairs: each tile that colour with a little noise,
    its mask that class."""
    rng = np.random.default_rng(len(name))
    images, masks = tmp_path / name / "img", tmp_path / name / "mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i, (colour, class_id) in enumerate(drawn):
        noisy = np.clip(np.array(colour) + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(images / f"{i:03d}.png")
        Image.fromarray(np.full((64, 64), class_id, np.uint8)).save(masks / f"{i:03d}.png")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: unknown\n1: tumour\n2: stroma\n")
    out = tmp_path / f"{name}-ds"
    args = ["import", str(images), "--masks", str(masks), "--legend", str(legend), "--tile", "64", "--out", str(out)]
    result = runner.invoke(cli, [*args, "--test-fraction", "0", "-q"])
    assert result.exit_code == 0, result.output
    return out


RED, BLUE = (200, 60, 60), (60, 60, 200)


def test_classes_drawn_as_another_class_look_like_it(tmp_path, runner):
    real = _import_drawn(tmp_path, runner, "real", [(RED, 1)] * 16 + [(BLUE, 2)] * 16)
    # tumour drawn right; stroma drawn in the tumour's colour, as a model that has not learnt stroma draws it
    fake = _import_drawn(tmp_path, runner, "fake", [(RED, 1)] * 12 + [(RED, 2)] * 12)
    result = runner.invoke(cli, ["evaluate", str(real), str(fake), "--size", "32", "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "r" / "report.json").read_text())["metrics"]["classes"]
    assert found["reference"] == "real"
    tumour, stroma = found["per_class"]["tumour"], found["per_class"]["stroma"]
    assert (tumour["synthetic_tiles"], tumour["real_tiles"], stroma["synthetic_tiles"]) == (12, 16, 12)
    assert tumour["looks_like_its_class"] == {"synthetic": 1.0, "real": 1.0}
    assert stroma["looks_like_its_class"] == {"synthetic": 0.0, "real": 1.0}
    assert stroma["synthetic_looks_like"] == {"stroma": 0.0, "tumour": 1.0}
    assert stroma["precision"] == 0.0 and tumour["precision"] == 1.0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h2>Classes</h2>" in page and "tumour 1.00" in page
    # with TRAIN, the vote is against the training tiles; plain tiles carry no classes, so no class table
    args = ["evaluate", str(real), str(fake), "--train", str(real), "--size", "32", "--out", str(tmp_path / "t")]
    with_train = runner.invoke(cli, [*args, "-q"])
    assert with_train.exit_code == 0, with_train.output
    assert json.loads((tmp_path / "t" / "report.json").read_text())["metrics"]["classes"]["reference"] == "train"
    plain = _write_tiles(tmp_path / "plain", _colour_tiles(8, RED) + _colour_tiles(8, BLUE))
    result = runner.invoke(cli, ["evaluate", str(real), str(plain), "--size", "32", "--out", str(tmp_path / "p"), "-q"])
    assert result.exit_code == 0
    assert "classes" not in json.loads((tmp_path / "p" / "report.json").read_text())["metrics"]


def test_generated_tiles_and_slides_carry_the_classes_of_their_masks(tmp_path, runner, tiny_model):
    import csv

    from wsi_synth.evaluation.inputs import main_class, open_source, tile_classes
    from wsi_synth.io.images import read_labels

    common = ["--model", str(tiny_model), "--subtype", "adenocarcinoma", "--steps", "2", "--seed", "3", "-q"]
    result = runner.invoke(cli, ["generate", *common, "--size", "64", "--count", "6", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    names = {c["id"]: c["name"] for c in json.loads((tiny_model / "model.json").read_text())["classes"]}

    def expected(mask):
        ids = np.bincount(mask.ravel())
        return main_class({names[i]: float(n) for i, n in enumerate(ids) if n})

    with open(tmp_path / "t" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tiles = open_source(tmp_path / "t", size=32)
    assert tile_classes(tiles) == [expected(read_labels(tmp_path / "t" / r["mask"])) for r in rows]
    slides = tmp_path / "slides"
    slides.mkdir()
    result = runner.invoke(cli, ["generate", *common, "--size", "256", "--out", str(slides / "s.tiff")])
    assert result.exit_code == 0, result.output
    source = open_source(slides, size=32, tile=64, max_tiles=9, seed=1)
    assert [p.name for p in source.items] == ["s.tiff"]  # the label pyramid beside it is not a slide to evaluate
    mask = read_labels(slides / "s.mask.tiff")
    picked = [(y, x) for y in range(0, 256, 64) for x in range(0, 256, 64)]
    want = [expected(mask[y : y + 64, x : x + 64]) for i, (y, x) in enumerate(picked) if i in source.picks]
    assert tile_classes(source) == want and any(want)
    (slides / "s.json").unlink()  # without its record the ids have no names: no classes, rather than wrong ones
    assert tile_classes(open_source(slides, size=32, tile=64)) is None
