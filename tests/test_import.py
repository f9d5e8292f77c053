import numpy as np
import pytest

from cli.main import cli
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
