"""OME outputs (OME-TIFF, OME-Zarr) and ASAP annotations, read back by independent readers: tifffile's OME parser,
Bio-Formats, the `ome-zarr` reader, and our own ASAP reader (`wsi_synth.annotations`)."""

import json
import subprocess

import numpy as np
import pytest
import shapely
import tifffile
from PIL import Image
from shapely.geometry import Polygon, box
from wsi_synth_cli.main import cli

from tests.conftest import bioformats_tool
from tests.test_io_pyramid import psnr, tissue_like
from wsi_synth.annotations import load_annotations
from wsi_synth.io.asap import hole_free_rings, mask_to_asap
from wsi_synth.io.geojson import geojson_to_mask
from wsi_synth.io.outputs import output_format, write_slide_outputs
from wsi_synth.io.pyramid import halve_rgb, level_sizes

CLASSES = [
    {"id": 0, "name": "unknown", "color": [0, 0, 0]},
    {"id": 1, "name": "tumour", "color": [200, 0, 0]},
    {"id": 2, "name": "stroma", "color": [0, 200, 0]},
    {"id": 3, "name": "normal", "color": [0, 0, 200]},
]


def holey_labels(height, width, seed=0):
    """Regions with holes, islands in holes and specks: what a cleaned mask stage gives, and harder."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint8)
    labels[height // 10 : height * 9 // 10, width // 10 : width * 9 // 10] = 1
    for _ in range(60):
        y, x = rng.integers(height // 10, height * 8 // 10), rng.integers(width // 10, width * 8 // 10)
        labels[y : y + rng.integers(1, height // 12), x : x + rng.integers(1, width // 12)] = rng.integers(0, 3)
    labels[height // 3 : height // 2, width // 3 : width // 2] = 0
    labels[height * 2 // 5 : height * 9 // 20, width * 2 // 5 : width * 9 // 20] = 2
    return labels


def read_ngff(path, version="0.4"):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path), fmt=FormatV05() if version == "0.5" else FormatV04()))())
    image = nodes[0]
    labels = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    return image, labels


def test_ome_zarr_levels_scales_pixels_and_labels_read_back_by_ome_zarr(tmp_path):
    img, labels = tissue_like(1000, 1300), holey_labels(1000, 1300)
    result = write_slide_outputs(img, labels, tmp_path / "s.ome.zarr", mpp=0.25, classes=CLASSES, tile=256)
    assert result["format"] == "ome-zarr" and not (tmp_path / "s.mask.tiff").exists()
    image, found = read_ngff(tmp_path / "s.ome.zarr")
    sizes = level_sizes(1300, 1000, 256)
    assert [tuple(d.shape) for d in image.data] == [(3, h, w) for w, h in sizes]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    for (w, h), transforms in zip(sizes, image.metadata["coordinateTransformations"], strict=True):
        assert transforms[0]["scale"] == pytest.approx([1.0, 0.25 * 1000 / h, 0.25 * 1300 / w])
    level0 = np.moveaxis(np.asarray(image.data[0]), 0, 2)
    assert np.array_equal(level0, img)  # lossless
    # the TIFF pyramid's downsampling
    assert np.array_equal(np.moveaxis(np.asarray(image.data[1]), 0, 2), halve_rgb(img))
    assert len(found) == 1
    label = found[0]
    assert np.array_equal(np.asarray(label.data[0]), labels)
    assert {int(k): v["class"] for k, v in label.metadata["properties"].items()} == {
        c["id"]: c["name"] for c in CLASSES
    }
    assert label.metadata["color"][1][:3] == pytest.approx([200 / 255, 0, 0])
    attrs = json.loads((tmp_path / "s.ome.zarr" / "labels" / "tissue" / ".zattrs").read_text())
    assert attrs["image-label"]["source"] == {"image": "../../"} and attrs["multiscales"][0]["version"] == "0.4"


def test_ome_zarr_label_levels_match_the_label_tiff_levels(tmp_path):
    labels = holey_labels(700, 900, seed=3)
    img = tissue_like(700, 900)
    write_slide_outputs(img, labels, tmp_path / "a.ome.zarr", mpp=0.5, classes=CLASSES, tile=256)
    write_slide_outputs(img, labels, tmp_path / "b.tiff", mpp=0.5, classes=CLASSES, tile=256)
    _, found = read_ngff(tmp_path / "a.ome.zarr")
    with tifffile.TiffFile(tmp_path / "b.mask.tiff") as tf:
        assert len(tf.pages) == len(found[0].data)
        for page, level in zip(tf.pages, found[0].data, strict=True):
            assert np.array_equal(page.asarray(), np.asarray(level))


def test_ome_tiff_levels_in_subifds_with_physical_size_and_class_names(tmp_path):
    img, labels = tissue_like(1000, 1300), holey_labels(1000, 1300)
    write_slide_outputs(img, labels, tmp_path / "s.ome.tiff", mpp=0.25, classes=CLASSES, tile=256)
    with tifffile.TiffFile(tmp_path / "s.ome.tiff") as tf:
        # the smaller levels are SubIFDs, not more images
        assert tf.is_ome and len(tf.pages) == 1 and len(tf.series) == 1
        assert [lv.shape for lv in tf.series[0].levels] == [(h, w, 3) for w, h in level_sizes(1300, 1000, 256)]
        assert 'PhysicalSizeX="0.25"' in tf.ome_metadata and 'PhysicalSizeXUnit="µm"' in tf.ome_metadata
        assert psnr(tf.series[0].levels[0].asarray(), img) > 35
    with tifffile.TiffFile(tmp_path / "s.mask.ome.tiff") as tf:
        assert tf.is_ome and np.array_equal(tf.series[0].levels[0].asarray(), labels)
        assert '<M K="1">tumour</M>' in tf.ome_metadata


def test_bio_formats_reads_every_resolution_of_the_ome_tiffs(tmp_path):
    command = bioformats_tool()
    write_slide_outputs(
        tissue_like(1200, 1500), holey_labels(1200, 1500), tmp_path / "s.ome.tiff", mpp=0.5, classes=CLASSES, tile=256
    )
    for name in ("s.ome.tiff", "s.mask.ome.tiff"):
        out = subprocess.run(
            [*command, "-nopix", "-noflat", "-omexml", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        assert "Series count = 1" in out and "Resolutions = 4" in out and 'PhysicalSizeX="0.5"' in out, out[-2000:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asap_xml_round_trips_through_our_reader_holes_included(tmp_path, seed):
    labels = holey_labels(300, 400, seed)
    (tmp_path / "s.xml").write_text(mask_to_asap(labels, downsample=4.0, classes=CLASSES))
    loaded = load_annotations(tmp_path / "s.xml")
    assert loaded.repaired == 0 and loaded.unclassified == 0
    assert all(not a.geometry.interiors for a in loaded.annotations)  # ASAP has no holes
    ids = {c["name"]: c["id"] for c in CLASSES}
    by_class: dict = {}
    for a in loaded.annotations:
        by_class.setdefault(a.name, []).append(a.geometry)
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    back = rasterize(
        [(shapely.union_all(g), ids[n]) for n, g in by_class.items()],
        out_shape=labels.shape,
        transform=Affine(4.0, 0, 0, 0, 4.0, 0),
        dtype="uint8",
    )
    assert np.array_equal(back, labels)


def test_asap_xml_declares_every_group_with_the_model_colours(tmp_path):
    import xml.etree.ElementTree as ET

    labels = np.zeros((50, 60), np.uint8)
    labels[10:20, 10:30] = 2  # only stroma present
    root = ET.fromstring(mask_to_asap(labels, downsample=1.0, classes=CLASSES))
    groups = {g.get("Name"): g.get("Color") for g in root.iter("Group")}
    assert groups == {"tumour": "#C80000", "stroma": "#00C800", "normal": "#0000C8"}
    assert {a.get("PartOfGroup") for a in root.iter("Annotation")} <= set(groups)


def test_hole_free_rings_cover_the_polygon_exactly():
    rng = np.random.default_rng(5)
    outer = box(0, 0, 100, 80)
    holes = [box(x, y, x + rng.integers(1, 6), y + rng.integers(1, 6)) for x, y in rng.integers(2, 70, size=(40, 2))]
    region = outer.difference(shapely.union_all(holes))
    for polygon in getattr(region, "geoms", [region]):
        rings = hole_free_rings(polygon)
        pieces = [Polygon(r) for r in rings]
        assert all(p.is_valid and not p.interiors for p in pieces)
        assert shapely.union_all(pieces).symmetric_difference(polygon).area < 1e-9
        assert sum(p.area for p in pieces) == pytest.approx(polygon.area)  # no overlaps


def test_format_from_the_name_and_a_mismatch_refused():
    from wsi_synth.errors import BadArgumentError

    assert (
        output_format("s.ome.zarr") == "ome-zarr"
        and output_format("s.OME.TIF") == "ome-tiff"
        and output_format("s.tiff") == "tiff"
    )
    assert output_format("s.tiff", "ome-tiff") == "ome-tiff"  # an OME-TIFF may be named .tiff
    with pytest.raises(BadArgumentError, match="names a tiff output but format is ome-zarr"):
        output_format("s.tiff", "ome-zarr")
    with pytest.raises(BadArgumentError, match="names a ome-zarr output"):
        output_format("s.ome.zarr", "tiff")


def _pyramid_inputs(tmp_path):
    img, labels = tissue_like(600, 1000), holey_labels(600, 1000)
    tifffile.imwrite(tmp_path / "img.tif", img, tile=(256, 256))
    Image.fromarray(labels).save(tmp_path / "labels.png")
    (tmp_path / "legend.yaml").write_text("0: unknown\n1: tumour\n2: stroma\n")
    return (
        [
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
            "-q",
        ],
        img,
        labels,
    )


def test_cli_pyramid_ome_zarr_with_both_annotation_formats(tmp_path, runner):
    args, img, labels = _pyramid_inputs(tmp_path)
    out = tmp_path / "s.ome.zarr"
    result = runner.invoke(cli, [*args, "--out", str(out), "--annotations", "geojson,asap"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith("s.")} == {
        "s.ome.zarr",
        "s.geojson",
        "s.xml",
        "s.json",
    }
    info = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).output)
    assert info["kind"] == "ome-zarr" and info["mpp"] == 0.5 and info["levels"][0] == [3, 600, 1000]
    assert info["labels"]["tissue"]["classes"] == {"0": "unknown", "1": "tumour", "2": "stroma"}
    doc = json.loads((tmp_path / "s.geojson").read_text())
    classes = [{"id": 0, "name": "unknown"}, {"id": 1, "name": "tumour"}, {"id": 2, "name": "stroma"}]
    assert np.array_equal(geojson_to_mask(doc, labels.shape, downsample=1.0, classes=classes), labels)
    assert {a.name for a in load_annotations(tmp_path / "s.xml").annotations} == {"tumour", "stroma"}
    again = runner.invoke(cli, [*args, "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    replaced = runner.invoke(cli, [*args, "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".set-" in p.name]


def test_cli_refuses_to_overwrite_a_folder_that_is_not_a_zarr_store(tmp_path, runner):
    args, _, _ = _pyramid_inputs(tmp_path)
    folder = tmp_path / "mine.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = runner.invoke(cli, [*args, "--out", str(folder), "--overwrite"])
    assert (
        result.exit_code == 2 and "not a Zarr store" in result.output and len(result.output.strip().splitlines()) == 1
    )
    assert (folder / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "s.tiff", "--format", "ome-zarr"], "names a tiff output"),
        (["--out", "s.tiff", "--annotations", "kml"], "annotations must be"),
    ],
)
def test_cli_bad_format_requests_are_one_line(tmp_path, runner, extra, message):
    args, _, _ = _pyramid_inputs(tmp_path)
    extra = [str(tmp_path / e) if e.startswith("s.") else e for e in extra]
    result = runner.invoke(cli, [*args, *extra])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("s.", ".s."))]


def test_ngff_0_5_is_zarr_v3_sharded_and_read_by_the_0_5_reader_without_a_warning(tmp_path, caplog, recwarn):
    import zarr

    img, labels = tissue_like(1000, 1300), holey_labels(1000, 1300)
    out = tmp_path / "s.ome.zarr"
    with caplog.at_level("WARNING"):
        write_slide_outputs(img, labels, out, mpp=0.25, classes=CLASSES, tile=256, ngff="0.5")
        image, found = read_ngff(out, "0.5")
    assert not [r for r in caplog.records if r.name.startswith("ome_zarr")]  # no "version mismatch"
    # the reader's and writer's own warnings; not what the garbage collector happens to report of earlier tests
    ours = [w for w in recwarn.list if "zarr" in w.filename or "wsi_synth" in w.filename]
    assert not [w for w in ours if not issubclass(w.category, DeprecationWarning)], [
        (w.category.__name__, str(w.message)[:200], w.filename) for w in ours
    ]
    write_slide_outputs(img, labels, tmp_path / "v04.ome.zarr", mpp=0.25, classes=CLASSES, tile=256)
    with caplog.at_level("WARNING"):
        read_ngff(tmp_path / "v04.ome.zarr", "0.5")  # the warning this test would see: a 0.4 folder
    assert any("version mismatch" in r.getMessage() for r in caplog.records)
    assert np.array_equal(np.moveaxis(np.asarray(image.data[0]), 0, 2), img)  # lossless, as 0.4
    assert len(found) == 1 and np.array_equal(np.asarray(found[0].data[0]), labels)
    assert {int(k): v["class"] for k, v in found[0].metadata["properties"].items()}[1] == "tumour"
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
    level0 = zarr.open_group(str(out), mode="r")["0"]
    assert level0.shards == (3, 256, 1536) and level0.chunks == (3, 256, 256)  # a row of 6 chunks: one shard
    files = [p for p in (out / "0").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 4  # one file per row of tiles, not one per chunk (24)


def test_cli_writes_ngff_0_5_and_refuses_it_for_a_tiff(tmp_path, runner):
    tifffile.imwrite(tmp_path / "img.tif", tissue_like(300, 400))
    args = ["pyramid", str(tmp_path / "img.tif"), "--mpp", "0.5", "--ngff", "0.5", "-q"]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "s.ome.zarr")])
    assert result.exit_code == 0, result.output
    described = json.loads(runner.invoke(cli, ["info", str(tmp_path / "s.ome.zarr"), "--json"]).output)
    assert described["ngff"] == "0.5" and described["levels"][0] == [3, 300, 400]
    refused = runner.invoke(cli, [*args, "--out", str(tmp_path / "t.tiff")])
    assert refused.exit_code == 2 and "--ngff 0.5 applies to an OME-Zarr output" in refused.output
    assert not (tmp_path / "t.tiff").exists()
