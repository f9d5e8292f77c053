import json
import shutil

import numpy as np
import pytest
import shapely
from wsi_synth_cli.main import cli

from tests.conftest import shared
from wsi_synth.annotations import load_annotations
from wsi_synth.data import open_dataset
from wsi_synth.errors import WsiSynthError
from wsi_synth.extraction.pipeline import ExtractConfig, extract

SMALL = ExtractConfig(tile_size=256, region_size=1024, region_mask_size=64, unlabelled_per_slide=20)


@pytest.fixture(scope="module")
def cmu_dataset(tmp_path_factory):
    slide = shared("slides", "CMU-1-Small-Region.svs")
    ann = shared("annotations", "cmu1_derived", "CMU-1-Small-Region.geojson")
    out = tmp_path_factory.mktemp("ds") / "data"
    summary = extract(slide, ann, out, SMALL, progress=False)
    return out, summary, ann


def test_masks_agree_with_point_in_polygon_at_pixel_centres(cmu_dataset):
    out, summary, ann = cmu_dataset
    ds = open_dataset(out)
    names = ds.class_names
    anns = load_annotations(ann).annotations
    group = ds.source_group(ds.sources[0]["id"])
    rows = [r for r in ds.manifest() if r["kind"] == "labelled"]
    assert len(rows) == summary.slides_done[0]["counts"]["labelled"] > 10
    l0_px = 0.5 / 0.499 if abs(0.5 / 0.499 - 1) > 0.02 else 1.0
    mismatched = boundary_total = 0
    for r in rows[::5]:
        mask = group["labelled/masks"][int(r["index"])]
        x0, y0 = int(r["x"]), int(r["y"])
        ys, xs = np.mgrid[0:256, 0:256]
        cx, cy = x0 + (xs + 0.5) * l0_px, y0 + (ys + 0.5) * l0_px
        expected = np.zeros((256, 256), np.uint8)
        for a in sorted(anns, key=lambda a: -a.geometry.area):
            expected[shapely.contains_xy(a.geometry, cx, cy)] = names.index(a.name)
        bad = mask != expected
        near_edge = np.zeros_like(bad)
        for a in anns:
            near_edge |= shapely.distance(a.geometry.boundary, shapely.points(cx, cy)) < 1.0
        assert not (bad & ~near_edge).any(), f"tile {r['index']}: mismatches away from polygon boundaries"
        mismatched += bad.sum()
        boundary_total += near_edge.sum()
    assert mismatched <= 0.05 * max(boundary_total, 1)


def test_dataset_records_classes_tiles_regions_and_split(cmu_dataset):
    out, summary, _ = cmu_dataset
    ds = open_dataset(out)
    assert ds.class_names == ["unknown", "Squamous epithelium", "Stroma"]
    group = ds.source_group(ds.sources[0]["id"])
    assert group["labelled/images"].shape[1:] == (256, 256, 3)
    assert group["regions/masks"].shape[1:] == (64, 64) and group["regions/masks"].shape[0] >= 1
    assert set(np.unique(group["labelled/masks"][:])) <= {0, 1, 2}
    assert summary.unclassified_ignored == 1
    assert {r["split"] for r in ds.manifest()} == {"train"}  # one slide: nothing to hold out
    info = ds.summary()
    assert info["counts"]["labelled/train"] == ds.sources[0]["counts"]["labelled"]


def test_rerun_resumes_without_duplicating_tiles(cmu_dataset):
    out, summary, ann = cmu_dataset
    before = open_dataset(out).manifest()
    again = extract(shared("slides", "CMU-1-Small-Region.svs"), ann, out, SMALL, progress=False)
    assert again.slides_skipped == ["CMU-1-Small-Region"] and not again.slides_done
    assert open_dataset(out).manifest() == before


def test_interrupted_slide_leaves_no_source_and_is_redone(tmp_path, cmu_slide, cmu_geojson, monkeypatch):
    from wsi_synth.data.store import TileStore

    calls = {"n": 0}
    real = TileStore.write

    def failing_write(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(TileStore, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        extract(cmu_slide, cmu_geojson, tmp_path / "d", SMALL, progress=False)
    assert not (tmp_path / "d").exists()  # the run made the dataset and finished no source: no empty skeleton stays
    assert not list(tmp_path.glob(".d.lock"))
    monkeypatch.undo()
    summary = extract(cmu_slide, cmu_geojson, tmp_path / "d", SMALL, progress=False)
    assert len(summary.slides_done) == 1


def test_two_slides_split_by_slide_and_slide_without_mpp_needs_slide_mpp(tmp_path, runner):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(shared("slides", "TCGA-CR-7395-01A-01-TS1.svs"), slides)
    result = runner.invoke(cli, ["extract", str(slides), str(tmp_path / "a.geojson"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2  # annotation path does not exist (click)
    ann = tmp_path / "TCGA-CR-7395-01A-01-TS1.geojson"
    ann.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[500, 500], [3000, 500], [3000, 3000], [500, 3000], [500, 500]]],
                        },
                        "properties": {"classification": {"name": "Tumor"}},
                    }
                ],
            }
        )
    )
    result = runner.invoke(cli, ["extract", str(slides), str(ann), "--out", str(tmp_path / "o"), "--tile", "128", "-q"])
    assert result.exit_code == 2 and "--slide-mpp" in result.output and not (tmp_path / "o").exists()
    result = runner.invoke(
        cli,
        [
            "extract",
            str(slides),
            str(ann),
            "--out",
            str(tmp_path / "o"),
            "--tile",
            "128",
            "--slide-mpp",
            "1.0",
            "--region",
            "512",
            "--region-mask",
            "32",
            "--classes",
            "paper5",
            "--subtype",
            "squamous",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    ds = open_dataset(tmp_path / "o")
    assert ds.meta["subtypes"] == ["squamous"] and ds.class_names[1] == "carcinoma"
    assert ds.sources[0]["counts"]["labelled"] > 0 and ds.sources[0]["counts"]["unlabelled"] > 0


def _bad_cases(tmp_path, slide, geojson):
    text = tmp_path / "notaslide.svs"
    text.write_text("hello")
    truncated = tmp_path / "trunc.svs"
    truncated.write_bytes(slide.read_bytes()[:200_000])
    malformed = tmp_path / "malformed.geojson"
    malformed.write_text('{"type": "FeatureCollection", "features": [')
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    outside = tmp_path / "outside.geojson"
    outside.write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "properties": {"classification": {"name": "Tumor"}},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[9000, 9000], [9500, 9000], [9500, 9500], [9000, 9000]]],
                    },
                }
            ]
        )
    )
    unknown = tmp_path / "unknown.geojson"
    unknown.write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "properties": {"classification": {"name": "Fat"}},
                    "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [900, 0], [900, 900], [0, 0]]]},
                }
            ]
        )
    )
    return {
        "missing slide": ([str(tmp_path / "nope.svs"), str(geojson)], "does not exist"),
        "not a slide": ([str(text), str(geojson)], "cannot open slide"),
        "truncated slide": ([str(truncated), str(geojson)], "slide"),
        "malformed json": ([str(slide), str(malformed)], "not valid JSON"),
        "empty annotations": ([str(slide), str(empty)], "is empty"),
        "polygon outside": ([str(slide), str(outside)], "entirely outside"),
        "unknown class": ([str(slide), str(unknown), "--classes", "paper5"], "'Fat' is not in the class map"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing slide",
        "not a slide",
        "truncated slide",
        "malformed json",
        "empty annotations",
        "polygon outside",
        "unknown class",
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_dataset(tmp_path, runner, cmu_slide, cmu_geojson, case):
    args, message = _bad_cases(tmp_path, cmu_slide, cmu_geojson)[case]
    out = tmp_path / "out"
    result = runner.invoke(cli, ["extract", *args, "--out", str(out), "--tile", "256", "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_self_intersecting_polygon_is_repaired_not_fatal(tmp_path, runner, cmu_slide):
    ann = tmp_path / "bowtie.geojson"
    ann.write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "properties": {"classification": {"name": "Tumor"}},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[0, 0], [1500, 1500], [1500, 0], [0, 1500], [0, 0]]],
                    },
                }
            ]
        )
    )
    result = runner.invoke(
        cli, ["extract", str(cmu_slide), str(ann), "--out", str(tmp_path / "o"), "--tile", "256", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "repaired invalid Tumor polygon" in result.output and "invalid polygons repaired: 1" in result.output


def test_existing_output_that_is_not_a_dataset_is_refused(tmp_path, runner, cmu_slide, cmu_geojson):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = ["extract", str(cmu_slide), str(cmu_geojson), "--out", str(out), "--tile", "256", "--region", "1024", "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and "not a wsi-synth dataset" in result.output
    result = runner.invoke(cli, [*args, "--overwrite"])  # --overwrite replaces a dataset, never other files
    assert result.exit_code == 2 and "never other files" in result.output
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    assert runner.invoke(cli, args).exit_code == 0
    (out / "precious.txt").write_text("keep me")
    result = runner.invoke(cli, [*args[:6], "128", "--region", "1024", "-q"])  # same folder, other tile size
    assert result.exit_code == 2 and "tile_size" in result.output
    assert runner.invoke(cli, [*args[:6], "128", "--region", "1024", "-q", "--overwrite"]).exit_code == 0
    assert (out / "precious.txt").read_text() == "keep me" and json.loads((out / "dataset.json").read_text())[
        "tile_size"
    ] == 128


def test_debug_shows_traceback(tmp_path, runner, cmu_geojson):
    args = ["extract", str(cmu_geojson), str(cmu_geojson), "--out", str(tmp_path / "o")]
    result = runner.invoke(cli, ["--debug", *args])
    assert isinstance(result.exception, WsiSynthError)  # the library's error itself, with its traceback
    plain = runner.invoke(cli, args)
    assert isinstance(plain.exception, SystemExit) and plain.exit_code == 2 and "Traceback" not in plain.output


def test_two_worker_processes_give_the_same_dataset_as_one(tmp_path, cmu_slide, cmu_geojson):
    from dataclasses import replace

    one = extract(cmu_slide, cmu_geojson, tmp_path / "one", SMALL, progress=False)
    two = extract(cmu_slide, cmu_geojson, tmp_path / "two", replace(SMALL, workers=2), progress=False)
    assert one.slides_done == [{**two.slides_done[0]}]
    a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "two")
    assert a.manifest() == b.manifest()
    source = a.sources[0]["id"]
    for name in ("labelled/images", "labelled/masks", "regions/masks"):
        assert np.array_equal(a.source_group(source)[name][:], b.source_group(source)[name][:])
