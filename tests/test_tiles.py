"""`generate --count`: many tiles with masks in one run, read back by `import` and by `TileDataset`."""

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from wsi_synth_cli.main import cli

from wsi_synth.generation.tiles import tile_seed


@pytest.fixture(scope="module")
def bundle(tiny_model):
    return tiny_model


def _count(runner, model, out, n, *extra):
    return runner.invoke(
        cli,
        [
            "generate",
            "--model",
            str(model),
            "--count",
            str(n),
            "--size",
            "96",
            "--height",
            "80",
            "--steps",
            "3",
            "--out",
            str(out),
            "-q",
            *extra,
        ],
    )


def _slide(runner, model, out, *extra):
    """`generate` of one slide of a tile's size (96 × 80 px, 3 steps)."""
    args = ["generate", "--model", str(model), "--size", "96", "--height", "80", "--steps", "3", "-q"]
    return runner.invoke(cli, [*args, "--out", str(out), *extra])


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tiles_masks_legend_and_manifest_agree(bundle, tmp_path, runner):
    result = _count(runner, bundle, tmp_path / "t", 5)
    assert result.exit_code == 0, result.output
    rows = _manifest(tmp_path / "t")
    assert [int(r["index"]) for r in rows] == list(range(5))
    classes = json.loads((tmp_path / "t" / "tiles.json").read_text())["classes"]
    for row in rows:
        image = np.asarray(Image.open(tmp_path / "t" / row["image"]))
        mask = np.asarray(Image.open(tmp_path / "t" / row["mask"]))
        assert image.shape == (80, 96, 3) and mask.shape == (80, 96) and mask.dtype == np.uint8
        fractions = [float(row[f"fraction_{c['name']}"]) for c in classes]
        assert np.allclose(
            fractions, np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)] / mask.size, atol=1e-4
        )
        assert int(row["seed"]) == tile_seed(0, int(row["index"]))
    assert len({np.asarray(Image.open(tmp_path / "t" / r["image"])).tobytes() for r in rows}) == 5  # independent tiles


def test_a_tile_is_the_slide_generate_makes_with_its_seed(bundle, tmp_path, runner):
    assert _count(runner, bundle, tmp_path / "t", 3, "--subtype", "adenocarcinoma", "--batch-size", "5").exit_code == 0
    row = _manifest(tmp_path / "t")[2]
    result = _slide(runner, bundle, tmp_path / "s.tiff", "--subtype", "adenocarcinoma", "--seed", row["seed"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "t" / row["mask"])), tifffile.imread(tmp_path / "s.mask.tiff")
    )
    tile = np.asarray(Image.open(tmp_path / "t" / row["image"])).astype(float)
    slide = tifffile.imread(tmp_path / "s.tiff").astype(float)
    assert 10 * np.log10(255**2 / np.mean((tile - slide) ** 2)) > 30  # the slide's JPEG, and batched kernels' rounding


def test_interrupted_count_run_resumes_to_the_same_tiles(bundle, tmp_path, runner, monkeypatch):
    import wsi_synth.generation.tiles as tiles

    assert _count(runner, bundle, tmp_path / "full", 5).exit_code == 0
    real = tiles._write_group
    calls = []

    def fail_on_second_group(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tiles, "_write_group", fail_on_second_group)
    monkeypatch.setattr(tiles, "GROUP", 2)
    interrupted = _count(runner, bundle, tmp_path / "part", 5)
    assert interrupted.exit_code == 130 and len(_manifest(tmp_path / "part")) == 2
    refused = _count(runner, bundle, tmp_path / "part", 5)
    assert refused.exit_code == 2 and "--resume" in refused.output
    monkeypatch.setattr(tiles, "_write_group", real)
    changed = _count(runner, bundle, tmp_path / "part", 5, "--resume", "--seed", "9")
    assert changed.exit_code == 2 and "seed" in changed.output
    for setting in (("--layout-strength", "0.5"), ("--boundary-roughness", "0.3")):  # every setting that changes tiles
        changed = _count(runner, bundle, tmp_path / "part", 5, "--resume", *setting)
        assert changed.exit_code == 2 and setting[0][2:].replace("-", "_") in changed.output, changed.output
    resumed = _count(runner, bundle, tmp_path / "part", 5, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output)["resumed_at"] == 2
    assert [r["seed"] for r in _manifest(tmp_path / "part")] == [r["seed"] for r in _manifest(tmp_path / "full")]
    for row in _manifest(tmp_path / "full"):
        a = np.asarray(Image.open(tmp_path / "full" / row["image"])).astype(int)
        b = np.asarray(Image.open(tmp_path / "part" / row["image"])).astype(int)
        assert np.abs(a - b).max() <= 2  # groups of 2 vs 32: only the batched kernels' rounding differs
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "full" / row["mask"])),
            np.asarray(Image.open(tmp_path / "part" / row["mask"])),
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "ome-zarr"], "applies to one slide"),
        (["--size", "5000"], "at most 4096"),
        (["--subtype", "nope"], "not one the model knows"),
    ],
)
def test_count_refuses_what_it_cannot_do_in_one_line(bundle, tmp_path, runner, extra, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    extra = [str(tmp_path / e) if e == "m.png" else e for e in extra]
    result = _count(runner, bundle, tmp_path / "t", 2, *extra)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "t" / "manifest.csv").exists()


def _masks(bundle, folder, n=3, shape=(80, 96)):
    """n label PNGs of the model's classes: a vertical band of one class over another, each a different width."""
    from wsi_synth.models.bundle import open_bundle

    ids = [c["id"] for c in open_bundle(bundle).classes][1:3]
    folder.mkdir()
    for i in range(n):
        mask = np.full(shape, ids[0], np.uint8)
        mask[:, : 24 * (i + 1)] = ids[1]
        Image.fromarray(mask).save(folder / f"m{i}.png")
    (folder / "notes.txt").write_text("not a mask")  # skipped: not a mask file
    return ids


def test_tiles_drawn_for_a_folder_of_masks_take_them_in_order_and_match_the_slide(bundle, tmp_path, runner):
    ids = _masks(bundle, tmp_path / "m")
    result = _count(runner, bundle, tmp_path / "t", 4, "--mask", str(tmp_path / "m"), "--boundary-roughness", "0")
    assert result.exit_code == 0, result.output
    rows = _manifest(tmp_path / "t")
    assert [r["mask_source"] for r in rows] == ["m0.png", "m1.png", "m2.png", "m0.png"]  # name order, cycling
    assert {r["subtype"] for r in rows} == {""}  # the mask stage does not run: no subtype is drawn
    record = json.loads((tmp_path / "t" / "tiles.json").read_text())
    assert set(record["solvers"]) == {"image"} and record["evaluations"]["mask"]["evaluations"] == 0
    for row, width in zip(rows, (24, 48, 72, 24), strict=True):
        mask = np.asarray(Image.open(tmp_path / "t" / row["mask"]))
        assert set(np.unique(mask)) <= set(ids)
        share = (mask == ids[1]).mean()
        assert abs(share - width / 96) <= 8 / 96, (row, share)  # the given band, to a mask-canvas pixel
    images = [np.asarray(Image.open(tmp_path / "t" / r["image"])).tobytes() for r in rows]
    assert images[0] != images[3]  # the same mask, another seed: other tissue
    mask = str(tmp_path / "m" / "m1.png")
    slide = _slide(
        runner, bundle, tmp_path / "s.tiff", "--mask", mask, "--boundary-roughness", "0", "--seed", rows[1]["seed"]
    )
    assert slide.exit_code == 0, slide.output
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "t" / rows[1]["mask"])), tifffile.imread(tmp_path / "s.mask.tiff")
    )
    tile = np.asarray(Image.open(tmp_path / "t" / rows[1]["image"])).astype(float)
    assert 10 * np.log10(255**2 / np.mean((tile - tifffile.imread(tmp_path / "s.tiff").astype(float)) ** 2)) > 30


def test_one_mask_file_serves_every_tile_through_the_api(bundle, tmp_path):
    import wsi_synth

    _masks(bundle, tmp_path / "m")
    out = tmp_path / "t"
    wsi_synth.generate(bundle, out, size=96, height=80, steps=3, count=3, mask=tmp_path / "m" / "m1.png")
    rows = _manifest(out)
    assert [r["mask_source"] for r in rows] == ["m1.png"] * 3
    masks = [np.asarray(Image.open(out / r["mask"])) for r in rows]
    images = {np.asarray(Image.open(out / r["image"])).tobytes() for r in rows}
    assert len(images) == 3 and all(r["seed"] != rows[0]["seed"] for r in rows[1:])  # one mask, three tissues
    assert all(abs((m == masks[0]).mean() - 1) < 0.05 for m in masks)  # the contours' wander is seeded per tile


def test_a_changed_mask_folder_refuses_to_resume(bundle, tmp_path, runner):
    _masks(bundle, tmp_path / "m")
    assert _count(runner, bundle, tmp_path / "t", 2, "--mask", str(tmp_path / "m")).exit_code == 0
    Image.fromarray(np.zeros((80, 96), np.uint8)).save(tmp_path / "m" / "m1.png")
    result = _count(runner, bundle, tmp_path / "t", 4, "--mask", str(tmp_path / "m"), "--resume")
    assert result.exit_code == 2 and "mask_sha256" in result.output, result.output


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no masks", "holds no masks"),
        ("unknown class", "are not classes of the model"),
        ("other aspect", "another aspect ratio"),
        ("not an image", "m1.png"),
        ("annotations outside", "b.geojson: annotation 0 (stroma) lies entirely outside"),
    ],
)
def test_a_bad_mask_in_the_folder_refuses_the_run_before_any_tile(bundle, tmp_path, runner, damage, message):
    _masks(bundle, tmp_path / "m")
    if damage == "no masks":
        for path in (tmp_path / "m").glob("*.png"):
            path.unlink()
    elif damage == "unknown class":
        Image.fromarray(np.full((80, 96), 77, np.uint8)).save(tmp_path / "m" / "m2.png")
    elif damage == "other aspect":
        Image.fromarray(np.zeros((96, 40), np.uint8)).save(tmp_path / "m" / "m2.png")
    elif damage == "not an image":
        (tmp_path / "m" / "m1.png").write_bytes(b"not a png")
    else:  # QuPath GeoJSON exported for another slide: beyond the 96 × 80 px tile
        square = [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 6000], [5000, 5000]]]
        feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square}}
        feature["properties"] = {"classification": {"name": "stroma"}}
        (tmp_path / "m" / "b.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    result = _count(runner, bundle, tmp_path / "t", 4, "--mask", str(tmp_path / "m"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "t" / "manifest.csv").exists()


def test_a_mask_folder_inside_the_out_folder_is_refused_and_kept(bundle, tmp_path, runner):
    (tmp_path / "t").mkdir()
    _masks(bundle, tmp_path / "t" / "masks")  # e.g. an earlier tile set's masks, redrawn with --overwrite
    result = _count(runner, bundle, tmp_path / "t", 2, "--mask", str(tmp_path / "t" / "masks"), "--overwrite")
    assert result.exit_code == 2 and "holds the input" in result.output
    assert sorted(p.name for p in (tmp_path / "t" / "masks").iterdir()) == ["m0.png", "m1.png", "m2.png", "notes.txt"]


def test_a_slide_refuses_a_folder_of_masks(bundle, tmp_path, runner):
    _masks(bundle, tmp_path / "m")
    result = _slide(runner, bundle, tmp_path / "s.tiff", "--mask", str(tmp_path / "m"))
    assert result.exit_code == 2 and "is a folder" in result.output and not (tmp_path / "s.tiff").exists()


def test_an_out_that_is_a_file_is_refused_and_kept(bundle, tmp_path, runner):
    (tmp_path / "t").write_text("keep")
    result = _count(runner, bundle, tmp_path / "t", 2, "--overwrite")
    assert result.exit_code == 2 and "is a file" in result.output and (tmp_path / "t").read_text() == "keep"


def test_a_folder_of_other_files_is_refused_and_kept(bundle, tmp_path, runner):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("keep")
    result = _count(runner, bundle, tmp_path / "t", 2, "--overwrite")
    assert result.exit_code == 2 and "other files" in result.output
    assert (tmp_path / "t" / "notes.txt").read_text() == "keep"


def test_import_reads_the_tiles_back_and_tile_dataset_serves_them(tmp_path, runner):
    import torch
    from torch.utils.data import DataLoader

    from wsi_synth.data import TileDataset
    from wsi_synth.models.bundle import default_model

    # The bundled model: its mask stage draws labelled regions (the tiny test bundle's draws only "unknown").
    result = _count(runner, default_model(), tmp_path / "t", 6, "--size", "128", "--height", "128", "--seed", "3")
    assert result.exit_code == 0, result.output
    t = tmp_path / "t"
    result = runner.invoke(
        cli,
        [
            "import",
            str(t / "images"),
            "--masks",
            str(t / "masks"),
            "--legend",
            str(t / "legend.yaml"),
            "--subtype",
            "adenocarcinoma",
            "--tile",
            "128",
            "--mpp",
            "0.5",
            "--region",
            "128",
            "--region-mask",
            "16",
            "--min-annotated",
            "0.01",
            "--test-fraction",
            "0",
            "--out",
            str(tmp_path / "data"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = _manifest(t)
    labelled = [r for r in rows if float(r["fraction_unknown"]) < 0.99]
    dataset = TileDataset(tmp_path / "data")
    assert len(dataset) == len(labelled) > 0
    tiles = [
        (np.asarray(Image.open(t / r["image"])).astype(float), np.asarray(Image.open(t / r["mask"]))) for r in rows
    ]
    legend = [c["name"] for c in json.loads((t / "tiles.json").read_text())["classes"]]
    seen = 0
    for image, mask in DataLoader(dataset, batch_size=2, num_workers=2):
        assert (
            image.dtype == torch.uint8
            and image.shape[1:] == (3, 128, 128)
            and mask.dtype == torch.int64
            and mask.shape[1:] == (128, 128)
        )
        for i in range(len(image)):
            pixels = image[i].permute(1, 2, 0).numpy().astype(float)
            errors = [np.mean((pixels - tile) ** 2) for tile, _ in tiles]
            source = tiles[int(np.argmin(errors))]
            assert 10 * np.log10(255**2 / max(min(errors), 1e-9)) > 35  # the dataset stores tiles as JPEG Q95
            # the same classes, by name
            assert np.array_equal(np.array(dataset.classes)[mask[i].numpy()], np.array(legend)[source[1]])
            seen += 1
    assert seen == len(dataset)
