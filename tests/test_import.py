import numpy as np
import pytest
from wsi_synth_cli.main import cli

from tests.conftest import shared
from wsi_synth.data import open_dataset


def test_import_wsss_with_legend_and_unlabelled_lc25000_into_one_dataset(tmp_path, runner):
    wsss = shared("tiles_masks", "wsss4luad_val")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    out = str(tmp_path / "d")
    args = [
        "import",
        str(wsss / "img"),
        "--masks",
        str(wsss / "mask"),
        "--legend",
        str(legend),
        "--subtype",
        "adenocarcinoma",
        "--tile",
        "128",
        "--region",
        "256",
        "--region-mask",
        "32",
        "--out",
        out,
        "-q",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    ds = open_dataset(out)
    assert ds.class_names == ["unknown", "normal", "stroma", "tumour epithelium"]
    group = ds.source_group(ds.sources[0]["id"])
    masks = group["labelled/masks"][:]
    assert set(np.unique(masks)) <= {0, 1, 2, 3} and (masks > 0).mean() > 0.3
    rows = ds.manifest()
    assert {r["split"] for r in rows} == {"train", "test"}
    # the same import again is a no-op
    again = runner.invoke(cli, args)
    assert "nothing to do" in again.output and open_dataset(out).manifest() == rows
    # unlabelled tiles join the same dataset (same tile size and classes)
    lc = shared("tiles", "lc25000_224", "lung_scc")
    result = runner.invoke(
        cli,
        [
            "import",
            str(lc),
            "--subtype",
            "squamous",
            "--tile",
            "128",
            "--region",
            "256",
            "--region-mask",
            "32",
            "--classes",
            str(_same_classes(tmp_path)),
            "--out",
            out,
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    info = open_dataset(out).summary()
    assert info["by_subtype"]["squamous"]["unlabelled"] == 400
    assert open_dataset(out).meta["subtypes"] == ["adenocarcinoma", "squamous"]


def _same_classes(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("classes: [normal, stroma, tumour epithelium]\n")
    return path


def test_jpeg_masks_take_the_nearest_legend_value(tmp_path, runner):
    ocdc = shared("tiles_masks", "ocdc_oscc")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: unknown\n255: tumour\n")
    out = tmp_path / "d"
    result = runner.invoke(
        cli,
        [
            "import",
            str(ocdc / "images"),
            "--masks",
            str(ocdc / "masks"),
            "--legend",
            str(legend),
            "--tile",
            "320",
            "--region",
            "640",
            "--region-mask",
            "64",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    masks = open_dataset(out).source_group(open_dataset(out).sources[0]["id"])["labelled/masks"][:]
    assert set(np.unique(masks)) == {0, 1}


@pytest.mark.parametrize("extra, message", [(["--masks", "MASKS"], "--masks needs --legend"), (["--tile", "8"], "8")])
def test_import_errors(tmp_path, runner, extra, message):
    wsss = shared("tiles_masks", "wsss4luad_val")
    extra = [str(wsss / "mask") if e == "MASKS" else e for e in extra]
    result = runner.invoke(cli, ["import", str(wsss / "img"), *extra, "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "d").exists()


def _layouts(folder, shapes):
    """Palette-free label PNGs: 0 tumour epithelium (left half), 1 stroma (right), 3 background (a square)."""
    from PIL import Image

    folder.mkdir()
    for i, (h, w) in enumerate(shapes):
        m = np.zeros((h, w), np.uint8)
        m[:, w // 2 :] = 1
        m[: h // 4, : w // 4] = 3
        Image.fromarray(m).save(folder / f"layout_{i}.png")
    return folder


def test_layouts_without_images_become_region_masks_beside_imported_tiles(tmp_path, runner):
    wsss = shared("tiles_masks", "wsss4luad_val")
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: background\n")
    common = [
        "--legend",
        str(legend),
        "--subtype",
        "adenocarcinoma",
        "--tile",
        "64",
        "--region",
        "256",
        "--region-mask",
        "32",
        "--out",
        str(tmp_path / "d"),
        "-q",
    ]
    assert runner.invoke(cli, ["import", str(wsss / "img"), "--masks", str(wsss / "mask"), *common]).exit_code == 0
    layouts = _layouts(tmp_path / "layouts", [(512, 768), (300, 300), (100, 900)])
    # the dataset's legend-free settings
    result = runner.invoke(cli, ["import", "--layouts", str(layouts), *common[2:]])
    assert result.exit_code == 2 and "--legend" in result.output
    result = runner.invoke(cli, ["import", "--layouts", str(layouts), *common])
    assert result.exit_code == 0, result.output
    # windows overlap by half, the last ones flush with the far edges: 512×768 px gives 3 × 5 of 256 px, 300² gives
    # 2 × 2 (at 0 and 44), 100×900 none
    assert (
        "3 layouts -> 0 labelled, 0 unlabelled tiles, 19 regions; 1 layouts smaller than a region skipped"
        in result.output
    )
    ds = open_dataset(tmp_path / "d")
    layout_source = next(s for s in ds.sources if s["kind"] == "layouts")
    regions = ds.source_group(layout_source["id"])["regions/masks"][:]
    assert regions.shape == (19, 32, 32)
    names = ds.class_names
    tumour, stroma, background = names.index("tumour epithelium"), names.index("stroma"), names.index("background")
    # layout_0's window at (0, 0): a 128 × 192 px background corner = 16 × 24 mask px, tumour around it
    first = regions[0]
    assert (
        (first[:16, :24] == background).all() and (first[16:, :] == tumour).all() and (first[:16, 24:] == tumour).all()
    )
    last_of_first = regions[14]  # window (512, 256): stroma from x = 384, i.e. all of it
    assert (last_of_first == stroma).all()
    rows = sorted((r for r in ds.manifest() if r["source"] == layout_source["id"]), key=lambda r: int(r["index"]))
    assert {r["kind"] for r in rows} == {"regions"} and len(rows) == 19
    assert len({r["split"] for r in rows[:15]}) == 1  # one layout's windows never straddle train and test
    # the flush windows of the 300² layout: its far edges (x, y ≥ 256) are inside a window
    assert {(int(r["x"]), int(r["y"])) for r in rows[15:]} == {(0, 0), (44, 0), (0, 44), (44, 44)}
    again = runner.invoke(cli, ["import", "--layouts", str(layouts), *common])
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_layout_stride_spaces_the_windows_and_the_last_ones_reach_the_far_edges(tmp_path, runner):
    from wsi_synth.data.importer import layout_windows

    assert layout_windows((512, 300), 256, 128) == [(0, 0), (128, 0), (256, 0), (0, 44), (128, 44), (256, 44)]
    assert layout_windows((256, 256), 256, 64) == [(0, 0)]
    assert layout_windows((255, 900), 256, 64) == []
    layouts = _layouts(tmp_path / "layouts", [(512, 768)])
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour\n1: stroma\n3: background\n")
    common = ["--legend", str(legend), "--tile", "64", "--region", "256", "--region-mask", "32", "-q"]
    result = runner.invoke(
        cli, ["import", "--layouts", str(layouts), *common, "--stride", "64", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    assert "45 regions" in result.output  # x 0, 64, …, 512 (9) × y 0, 64, …, 256 (5) of a 768 × 512 px layout
    ds = open_dataset(tmp_path / "d")
    regions = ds.source_group(ds.sources[0]["id"])["regions/masks"][:]
    background = ds.class_names.index("background")
    # the background corner is 192 px wide: 24 mask px in the window at x = 0, 16 in the next one, 64 px on
    assert [int((regions[i][0] == background).sum()) for i in (0, 1, 2, 3)] == [24, 16, 8, 0]
    refused = runner.invoke(cli, ["import", str(layouts), "--stride", "64", "--out", str(tmp_path / "e")])
    assert refused.exit_code == 2 and "--stride spaces the windows of --layouts" in refused.output
    assert not (tmp_path / "e").exists()


def test_block_majority_keeps_the_dominant_class_where_centre_sampling_aliases():
    from wsi_synth.data.importer import _block_majority, _centre_samples

    window = np.ones((64, 64), np.uint8)
    window[4::8, :] = 2  # thin lines through every block's centre row: an eighth of the pixels
    assert (_block_majority(window, 8, 3) == 1).all()
    assert (_centre_samples(window, 8) == 2).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["IMAGES", "--layouts", "LAYOUTS", "--legend", "LEGEND"], "not both"),
        (["--legend", "LEGEND"], "not neither"),
        (["--layouts", "LAYOUTS", "--masks", "LAYOUTS", "--legend", "LEGEND"], "no --masks"),
        (["--layouts", "LAYOUTS", "--legend", "LEGEND", "--region", "4096"], "choose a smaller --region"),
    ],
)
def test_layout_import_refusals_are_one_line_and_leave_nothing(tmp_path, runner, args, message):
    layouts = _layouts(tmp_path / "layouts", [(300, 300)])
    legend = tmp_path / "legend.yaml"
    legend.write_text("0: tumour\n1: stroma\n3: background\n")
    subst = {"IMAGES": str(layouts), "LAYOUTS": str(layouts), "LEGEND": str(legend)}
    result = runner.invoke(cli, ["import", *[subst.get(a, a) for a in args], "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()
