"""DICOM WSI outputs, read back by independent readers: wsidicom, OpenSlide (≥ 4 reads DICOM) and highdicom."""

import json

import numpy as np
import pydicom
import pytest
import tifffile
from wsi_synth_cli.main import cli

from tests.test_io_pyramid import tissue_like
from tests.test_ome_outputs import CLASSES, holey_labels
from wsi_synth.io import dicom
from wsi_synth.io.outputs import write_slide_outputs
from wsi_synth.io.pyramid import halve_labels, level_sizes, rarity_priority


def _instances(folder):
    return {p: pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))}


def _written(tmp_path, name="s.dcm", **kwargs):
    img, labels = tissue_like(900, 1300), holey_labels(900, 1300)
    result = write_slide_outputs(img, labels, tmp_path / name, mpp=0.25, classes=CLASSES, tile=256, **kwargs)
    return img, labels, result


def test_dicom_levels_mpp_and_a_label_map_segmentation_of_the_same_frame(tmp_path):
    import highdicom as hd
    import openslide
    from wsidicom import WsiDicom

    img, labels, result = _written(tmp_path, record={"seed": 1})
    folder = tmp_path / "s.dcm"
    assert result["format"] == "dicom" and folder.is_dir() and not (tmp_path / "s.mask.tiff").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.dcm", "s.geojson", "s.json"]
    instances = _instances(folder)
    assert all(p.suffix == ".dcm" for p in folder.iterdir())  # the TIFF it was converted from is gone
    images = {p: ds for p, ds in instances.items() if ds.Modality == "SM"}
    (seg_path,) = [p for p, ds in instances.items() if ds.Modality == "SEG"]
    sizes = level_sizes(1300, 900, 256)
    assert sorted((ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) for ds in images.values()) == sorted(sizes)
    with WsiDicom.open(str(folder)) as slide:
        assert [(lv.size.width, lv.size.height) for lv in slide.levels] == sizes
        assert slide.mpp.width == pytest.approx(0.25)
        region = np.asarray(slide.read_region((0, 0), 0, (1300, 900)))[..., :3].astype(float)
    assert 10 * np.log10(255**2 / np.mean((region - img) ** 2)) > 30  # JPEG
    level0 = max(images, key=lambda p: images[p].TotalPixelMatrixColumns)
    with openslide.OpenSlide(str(level0)) as slide:
        assert slide.level_dimensions == tuple(sizes)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert slide.properties["openslide.vendor"] == "dicom"
    segmentation = hd.seg.segread(str(seg_path))
    assert np.array_equal(segmentation.get_total_pixel_matrix(combine_segments=True), labels)
    assert {s.SegmentNumber: s.SegmentLabel for s in segmentation.SegmentSequence} == {
        1: "tumour",
        2: "stroma",
        3: "normal",
    }
    frames = {ds.FrameOfReferenceUID for ds in instances.values()}
    assert len(frames) == 1  # the mask is a segmentation of the slide's frame of reference
    for ds in instances.values():
        assert str(ds.PatientName) == dicom.PATIENT_NAME and "synthetic" in ds.StudyDescription.lower()
    again = tmp_path / "again"
    again.mkdir()
    _written(again)
    uids = lambda folder: {ds.StudyInstanceUID for ds in _instances(folder).values()}  # noqa: E731
    assert uids(again / "s.dcm").isdisjoint(uids(folder))  # new UIDs for every run


def test_a_label_map_larger_than_the_segmentation_limit_is_stored_at_a_coarser_level(tmp_path, monkeypatch):
    import highdicom as hd

    monkeypatch.setattr(dicom, "SEGMENTATION_MAX_SIDE", 700)
    _, labels, _ = _written(tmp_path)
    (seg_path,) = [p for p, ds in _instances(tmp_path / "s.dcm").items() if ds.Modality == "SEG"]
    stored = hd.seg.segread(str(seg_path)).get_total_pixel_matrix(combine_segments=True)
    assert np.array_equal(stored, halve_labels(labels, rarity_priority(labels)))  # 1300 → 650 px
    spacing = pydicom.dcmread(str(seg_path)).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([0.0005, 0.0005])  # 2 × 0.25 µm, in mm


def test_cli_writes_dicom_by_name_refuses_a_foreign_folder_and_replaces_its_own(tmp_path, runner):
    tifffile.imwrite(tmp_path / "img.tif", tissue_like(300, 400))
    args = ["pyramid", str(tmp_path / "img.tif"), "--mpp", "0.5", "-q", "--out"]
    assert runner.invoke(cli, [*args, str(tmp_path / "s.dcm")]).exit_code == 0
    described = json.loads(runner.invoke(cli, ["info", str(tmp_path / "s.dcm"), "--json"]).output)
    assert described["format"] == "dicom" and described["levels"][0] == [400, 300] and described["mpp"] == 0.5
    assert described["openslide"] == {"reads": True, "levels": len(described["levels"])}
    again = runner.invoke(cli, [*args, str(tmp_path / "s.dcm"), "--overwrite"])
    assert again.exit_code == 0, again.output
    foreign = tmp_path / "mine.dcm"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = runner.invoke(cli, [*args, str(foreign), "--overwrite"])
    assert refused.exit_code == 2 and "not a DICOM folder" in refused.output
    assert (foreign / "notes.txt").read_text() == "mine"
    wrong = runner.invoke(cli, [*args, str(tmp_path / "t.tiff"), "--format", "dicom"])
    assert wrong.exit_code == 2 and "s.dcm" in wrong.output


def test_every_instance_passes_the_dicom3tools_validator(tmp_path):
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed: the DICOM files are not validated")
    _written(tmp_path)
    for path, dataset in _instances(tmp_path / "s.dcm").items():
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        said = [
            line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith(("Error", "Warning"))
        ]
        assert not said, (dataset.Modality, said)
