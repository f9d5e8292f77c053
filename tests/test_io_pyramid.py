import errno
import json
import math
import os

import numpy as np
import openslide
import pytest
import shapely
import tifffile
from PIL import Image
from shapely.geometry import shape
from wsi_synth_cli.main import cli

from tests.conftest import bioformats_tool
from wsi_synth.errors import OutputExistsError, OutputWriteError
from wsi_synth.io import geojson_to_mask, mask_to_geojson, write_label_pyramid, write_slide_pyramid
from wsi_synth.io.pyramid import halve_labels, level_sizes


def tissue_like(height, width, seed=0):
    """Smooth pink/purple texture (low-frequency), where JPEG Q90 should exceed 35 dB."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 32 + 2, width // 32 + 2, 3))
    big = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize((width + 64, height + 64), Image.Resampling.BICUBIC)
    )
    base = np.array([200, 120, 180], float)
    return np.clip(base * 0.6 + big[:height, :width] * 0.4, 0, 255).astype(np.uint8)


def psnr(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


@pytest.mark.parametrize(
    "width, height, tile",
    [pytest.param(10001, 7003, 512, marks=pytest.mark.slow), (300, 37, 256), (1, 1, 256), (1025, 513, 256)],
)
def test_openslide_reads_every_level_with_mpp_and_pixels_match(tmp_path, width, height, tile):
    img = tissue_like(height, width)
    out = tmp_path / "s.tiff"
    levels = write_slide_pyramid(img, out, mpp=0.25, tile=tile)
    expected = level_sizes(width, height, tile)
    assert [(lv.width, lv.height) for lv in levels] == expected
    assert max(expected[-1]) <= tile and all(
        expected[i + 1] == (math.ceil(w / 2), math.ceil(h / 2)) for i, (w, h) in enumerate(expected[:-1])
    )
    with openslide.OpenSlide(str(out)) as slide:
        assert slide.level_dimensions == tuple(expected)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert slide.properties["openslide.vendor"] == "aperio"
        w0, h0 = min(width, 900), min(height, 700)
        region = np.asarray(slide.read_region((0, 0), 0, (w0, h0)))[..., :3]
        if w0 * h0 > 64:
            assert psnr(region, img[:h0, :w0]) > 35
        if len(expected) > 1:
            lw, lh = expected[1]
            low = np.asarray(slide.read_region((0, 0), 1, (lw, lh)))[..., :3]
            assert psnr(low, np.asarray(Image.fromarray(img).reduce(2))) > 35
    with tifffile.TiffFile(out) as tf:
        assert tf.is_bigtiff and len(tf.pages) == len(expected)
        for k, page in enumerate(tf.pages):
            assert page.is_tiled and page.tilewidth == tile and page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["NewSubfileType"].value == 0
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            x_res = page.tags["XResolution"].value
            assert x_res[0] / x_res[1] == pytest.approx(1e4 / (0.25 * width / expected[k][0]), rel=1e-3)
            assert (
                page.description.startswith("Aperio")
                and "MPP = 0.25" in page.description
                and "AppMag = 40" in page.description
            )


def reference_mode_pyramid(labels, n_levels, priority):
    """Plain-loop 2×2 mode with the same tie rule, as an independent check of the vectorised one."""
    out = [labels]
    for _ in range(n_levels - 1):
        a = out[-1]
        h, w = a.shape
        nxt = np.zeros(((h + 1) // 2, (w + 1) // 2), np.uint8)
        for i in range(nxt.shape[0]):
            for j in range(nxt.shape[1]):
                block = [a[min(2 * i + di, h - 1), min(2 * j + dj, w - 1)] for di in (0, 1) for dj in (0, 1)]
                nxt[i, j] = max(set(block), key=lambda v: (block.count(v), priority[v]))
        out.append(nxt)
    return out


def test_label_pyramid_is_exact_mode_at_every_level_and_keeps_thin_classes(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.zeros((75, 130), np.uint8)
    labels[10:60, 5:70] = 1
    labels[20:40, 80:125] = 2
    labels[:, 100:102] = 3  # thin vertical line, two pixels wide
    labels[rng.random(labels.shape) < 0.05] = 4  # speckle
    out = tmp_path / "m.mask.tiff"
    levels, _, _ = write_label_pyramid(
        labels, out, mpp=0.5, tile=32, classes=[{"id": i, "name": f"c{i}"} for i in range(5)]
    )
    counts = np.bincount(labels.ravel(), minlength=256)
    priority = np.empty(256, int)
    priority[np.argsort(-counts, kind="stable")] = np.arange(256)
    reference = reference_mode_pyramid(labels, len(levels), priority)
    with tifffile.TiffFile(out) as tf:
        assert [p.compression for p in tf.pages] == [tifffile.COMPRESSION.LZW] * len(levels)
        assert "Classes = 0:c0;1:c1" in tf.pages[0].description
        for page, ref in zip(tf.pages, reference, strict=True):
            assert np.array_equal(page.asarray(), ref)
    assert (reference[1][:, 50] == 3).all()  # the 2-px line survives one halving intact
    line = np.zeros((8, 8), np.uint8)
    line[:, 2] = 7  # 1-px line: each 2×2 block is a 2–2 tie, which goes to the rarer class
    assert (
        halve_labels(line, priority=np.argsort(np.argsort(-np.bincount(line.ravel(), minlength=256))))[:, 1] == 7
    ).all()


def test_openslide_reads_the_label_pyramid(tmp_path):
    labels = (np.add.outer(np.arange(700) // 100, np.arange(900) // 150) % 3).astype(np.uint8)
    write_label_pyramid(labels, tmp_path / "m.tiff", mpp=0.5, tile=256)
    with openslide.OpenSlide(str(tmp_path / "m.tiff")) as slide:
        assert slide.level_count == 3
        assert np.array_equal(np.asarray(slide.read_region((0, 0), 0, (900, 700)))[..., 0], labels)


def test_geojson_round_trip_is_exact_with_holes_and_islands_in_holes():
    labels = np.zeros((60, 80), np.uint8)
    labels[5:55, 5:75] = 1
    labels[15:45, 20:60] = 0  # hole
    labels[25:35, 30:50] = 2  # island of another class in the hole
    labels[28:32, 38:42] = 1  # island of class 1 inside the island
    labels[50:58, 60:78] = 3  # touches class 1
    labels[0, 0] = 3  # single pixel, diagonal neighbours only
    labels[1, 1] = 3
    classes = [
        {"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate(["unknown", "tumour", "stroma", "necrosis"])
    ]
    doc = mask_to_geojson(labels, downsample=16.0, classes=classes)
    assert [f["properties"]["classification"]["name"] for f in doc["features"]] == ["tumour", "stroma", "necrosis"]
    assert all(
        f["properties"]["objectType"] == "annotation" and f["geometry"]["type"] == "MultiPolygon"
        for f in doc["features"]
    )
    tumour = shape(doc["features"][0]["geometry"])
    assert tumour.is_valid and any(len(p.interiors) for p in tumour.geoms)
    assert tumour.area == pytest.approx((labels == 1).sum() * 256)
    assert shapely.contains_xy(tumour, 40 * 16, 30 * 16)  # the island inside the island
    back = geojson_to_mask(json.loads(json.dumps(doc)), labels.shape, downsample=16.0, classes=classes)
    assert np.array_equal(back, labels)


def test_existing_output_is_refused_and_overwrite_replaces(tmp_path):
    out = tmp_path / "s.tiff"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_slide_pyramid(tissue_like(64, 64), out, mpp=0.5, tile=256)
    assert out.read_bytes() == b"precious"
    write_slide_pyramid(tissue_like(64, 64), out, mpp=0.5, tile=256, overwrite=True)
    assert tifffile.TiffFile(out).pages[0].shape == (64, 64, 3)


class _FailingSource:
    """An array whose rows past `fail_at` cannot be read: an interrupted generation."""

    def __init__(self, img, fail_at, exc):
        self.img, self.fail_at, self.exc = img, fail_at, exc
        self.shape, self.dtype = img.shape, img.dtype

    def __getitem__(self, key):
        if key.start >= self.fail_at:
            raise self.exc
        return self.img[key]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_interrupted_or_disk_full_write_leaves_nothing_under_the_final_name(tmp_path, exc):
    out = tmp_path / "s.tiff"
    source = _FailingSource(tissue_like(1024, 600), 512, exc)
    with pytest.raises(
        KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else OutputWriteError,
        match=None if isinstance(exc, KeyboardInterrupt) else "disk full",
    ):
        write_slide_pyramid(source, out, mpp=0.5, tile=256)
    assert os.listdir(tmp_path) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(OutputWriteError, match="not enough disk space"):
        write_slide_pyramid(tissue_like(256, 256), tmp_path / "s.tiff", mpp=0.5, tile=256)
    assert os.listdir(tmp_path) == []


def test_missing_or_unwritable_folder(tmp_path):
    with pytest.raises(OutputWriteError, match="does not exist"):
        write_slide_pyramid(tissue_like(32, 32), tmp_path / "nope" / "s.tiff", mpp=0.5, tile=256)
    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root from writing")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputWriteError, match="not writable"):
        write_slide_pyramid(tissue_like(32, 32), ro / "s.tiff", mpp=0.5, tile=256)


def test_dask_input_streams_the_same_pixels(tmp_path):
    import dask.array as da

    img = tissue_like(700, 900)
    write_slide_pyramid(img, tmp_path / "a.tiff", mpp=0.5, tile=256)
    write_slide_pyramid(da.from_array(img, chunks=(100, 333, 3)), tmp_path / "b.tiff", mpp=0.5, tile=256)
    with tifffile.TiffFile(tmp_path / "a.tiff") as a, tifffile.TiffFile(tmp_path / "b.tiff") as b:
        assert all(np.array_equal(pa.asarray(), pb.asarray()) for pa, pb in zip(a.pages, b.pages, strict=True))


def test_cli_pyramid_and_info(tmp_path, runner):
    img = tissue_like(600, 1000)
    labels = np.zeros((600, 1000), np.uint8)
    labels[100:400, 200:700] = 1
    labels[200:300, 300:400] = 0
    tifffile.imwrite(tmp_path / "img.tif", img, tile=(256, 256))
    Image.fromarray(labels).save(tmp_path / "labels.png")
    (tmp_path / "legend.yaml").write_text("0: unknown\n1: tumour\n")
    out = tmp_path / "s.tiff"
    args = [
        "pyramid",
        str(tmp_path / "img.tif"),
        "--labels",
        str(tmp_path / "labels.png"),
        "--legend",
        str(tmp_path / "legend.yaml"),
        "--mpp",
        "0.5",
        "--tiff-tile",
        "256",
        "--out",
        str(out),
        "-q",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "s.geojson").read_text())
    mask = tifffile.imread(tmp_path / "s.mask.tiff")
    assert np.array_equal(
        geojson_to_mask(
            doc, mask.shape, downsample=1.0, classes=[{"id": 0, "name": "unknown"}, {"id": 1, "name": "tumour"}]
        ),
        mask,
    )
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "exists" in again.output
    info = runner.invoke(cli, ["info", str(out), "--json"])
    described = json.loads(info.output)
    assert described["openslide"] == {"reads": True, "vendor": "aperio", "mpp": 0.5, "levels": 3, "pyramid": True}
    assert described["levels"][0]["compression"] == "JPEG" and described["bigtiff"]


def test_bio_formats_sees_one_series_with_all_resolutions(tmp_path):
    import subprocess

    command = bioformats_tool()
    write_slide_pyramid(tissue_like(1200, 1500), tmp_path / "s.tiff", mpp=0.5, tile=256)
    out = subprocess.run(
        [*command, "-nopix", "-noflat", str(tmp_path / "s.tiff")], capture_output=True, text=True, timeout=300
    ).stdout
    assert "Series count = 1" in out and "Resolutions = 4" in out, out[-2000:]


def test_geojson_traced_at_a_lower_level_matches_that_level_of_the_mask_tiff(tmp_path, monkeypatch):
    import wsi_synth.io.outputs as outputs

    monkeypatch.setattr(outputs, "GEOJSON_MAX_SIDE", 256)
    labels = np.zeros((600, 1000), np.uint8)
    labels[50:500, 100:900] = 1
    labels[200:300, 300:600] = 2
    labels[220:280, 400:450] = 0
    classes = [
        {"id": 0, "name": "unknown", "color": [0, 0, 0]},
        {"id": 1, "name": "tumour", "color": [200, 0, 0]},
        {"id": 2, "name": "stroma", "color": [0, 200, 0]},
    ]
    result = outputs.write_slide_outputs(
        tissue_like(600, 1000), labels, tmp_path / "s.tiff", mpp=0.5, classes=classes, tile=256, record={"seed": 1}
    )
    assert result["annotations_downsample"] == 4.0
    with tifffile.TiffFile(tmp_path / "s.mask.tiff") as tf:
        level2 = tf.pages[2].asarray()
    doc = json.loads((tmp_path / "s.geojson").read_text())
    assert np.array_equal(geojson_to_mask(doc, level2.shape, downsample=4.0, classes=classes), level2)
    assert json.loads((tmp_path / "s.json").read_text())["outputs"]["mask"].endswith("s.mask.tiff")
    with pytest.raises(OutputExistsError):  # every output is checked before the first is written
        outputs.write_slide_outputs(
            tissue_like(600, 1000), labels, tmp_path / "s.tiff", mpp=0.5, classes=classes, tile=256
        )
