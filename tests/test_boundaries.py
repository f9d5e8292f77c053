"""Class boundaries: the straight-run measure, and contours (not stair steps) from the mask canvas's grid."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared
from wsi_synth.evaluation.boundaries import boundary_stats
from wsi_synth.generation.masks import Roughness, smooth


def _disk(size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2).astype(np.uint8)


def test_straight_share_counts_long_axis_runs_and_not_diagonals_or_the_border():
    half = np.zeros((64, 64), np.uint8)
    half[:, 32:] = 1
    assert boundary_stats(half).straight_share == 1.0 and boundary_stats(half).length == 64
    diagonal = (np.add.outer(np.arange(64), -np.arange(64)) > 0).astype(np.uint8)  # runs of 1 px only
    assert boundary_stats(diagonal).straight_share == 0.0 and boundary_stats(diagonal).length > 100
    steps = np.kron((np.add.outer(np.arange(8), -np.arange(8)) > 0).astype(np.uint8), np.ones((16, 16), np.uint8))
    assert boundary_stats(steps).straight_share == 1.0  # a 16 px staircase is all straight runs
    assert boundary_stats(steps, min_run=17).straight_share == 0.0
    assert boundary_stats(np.ones((40, 40), np.uint8)).length == 0  # the slide's border is no boundary
    with pytest.raises(ValueError, match="2-D"):
        boundary_stats(np.zeros((2, 3, 4)))


def test_upsampled_masks_are_contours_not_the_grid_and_real_layouts_keep_their_look():
    truth = _disk(512, 150)
    small = truth[4::8, 4::8]  # the 8 px mask canvas
    blocks = np.kron(small, np.ones((8, 8), np.uint8))
    fine = smooth(small, 8.0, (512, 512), 1.0)
    assert boundary_stats(blocks).straight_share > 0.5
    assert boundary_stats(fine).straight_share < 0.5 * boundary_stats(blocks).straight_share
    assert (fine != truth).mean() < (blocks != truth).mean()
    drawn, refined, plain = [], [], []
    for name in ("val_31", "test_67"):
        layout = np.array(Image.open(shared("tiles_masks", "wsss4luad_layout_masks", f"{name}.png")))[:1024, :1024]
        drawn.append(layout)
        refined.append(smooth(layout[4::8, 4::8], 8.0, layout.shape, 1.0, roughness=Roughness(0.1, 0)))
        plain.append(smooth(layout[4::8, 4::8], 8.0, layout.shape, 1.0))
    share = {
        k: sum((boundary_stats(m) for m in v[1:]), boundary_stats(v[0])).straight_share
        for k, v in (("drawn", drawn), ("refined", refined), ("plain", plain))
    }
    # through the 8 px grid and refined, real layouts' boundaries are about as irregular as drawn; smooth, they are not
    assert share["refined"] < 1.5 * share["drawn"] < share["plain"]
    for r, p, d in zip(refined, plain, drawn, strict=True):
        assert (r == d).mean() > (p == d).mean() - 0.01  # the wander costs (almost) no agreement with the drawing


def test_refined_contours_are_the_same_in_any_band_chunk_and_canvas_and_follow_the_seed():
    rng = np.random.default_rng(3)
    small = np.kron(rng.integers(0, 3, (6, 6)), np.ones((4, 4), int)).astype(np.uint8)  # 24² mask px, 3 classes
    rough = Roughness(0.3, 7)
    fine = smooth(small, 8.0, (192, 192), 1.0, roughness=rough)
    bands = np.concatenate(
        [
            smooth(small, 8.0, (192, 192), 1.0, rows=(y, min(y + 23, 192)), chunk=19, roughness=rough)
            for y in range(0, 192, 23)
        ]
    )
    assert np.array_equal(bands, fine)
    latent = smooth(small, 8.0, (48, 48), 4.0, roughness=rough)  # the image stage's canvas samples the same field
    assert (latent != fine[2::4, 2::4]).mean() < 0.02
    other = smooth(small, 8.0, (192, 192), 1.0, roughness=Roughness(0.3, 8))
    assert 0 < (other != fine).mean() < 0.1  # another seed moves the contours, not the regions
    assert np.array_equal(smooth(small, 8.0, small.shape, 8.0, roughness=rough), small)  # no upsampling: unchanged


def test_an_output_map_kept_whole_is_the_one_computed_band_by_band(monkeypatch):
    """Small maps are computed once and kept (the writers read them twice); the rows are those of the band path."""
    from wsi_synth.generation import masks

    labels = np.random.default_rng(3).integers(0, 4, (40, 56)).astype(np.uint8)
    made = masks.PixelLabels(labels, 8.0, (300, 430), masks.Roughness(0.1, 7))
    kept = [made[slice(y, y + 77)] for y in range(0, 300, 77)]
    assert made._kept is not None
    monkeypatch.setattr(masks, "KEEP_PIXELS", 0)
    banded = masks.PixelLabels(labels, 8.0, (300, 430), masks.Roughness(0.1, 7))
    assert all(np.array_equal(k, banded[slice(y, y + 77)]) for k, y in zip(kept, range(0, 300, 77), strict=True))
    assert banded._kept is None


def test_the_layout_as_drawn_keeps_regions_thinner_than_the_mask_stages_opening():
    """--layout-strength 0 cleans the layout at its own px: an opening of the mask canvas's 3 px, applied to 64 px
    layout pixels, erased every region thinner than 0.2 mm (normal lung along an edge, a band of stroma)."""
    from types import SimpleNamespace

    from wsi_synth.generation.config import GenerateConfig
    from wsi_synth.generation.masks import mask_classes, mask_cleaning

    bundle = SimpleNamespace(conditioning=SimpleNamespace(draws_class_seams=False))
    one_hot = -np.ones((5, 16, 16), np.float32)
    one_hot[1] = 1  # tumour everywhere …
    one_hot[1, :, 7:9], one_hot[3, :, 7:9] = -1, 1  # … but a band of normal lung two layout px wide
    config = GenerateConfig(width=1024, height=1024)
    at_layout = mask_classes(one_hot, **mask_cleaning(config, bundle, coarser=8))
    at_mask = mask_classes(one_hot, **mask_cleaning(config, bundle))
    assert (at_layout[:, 7:9] == 3).all() and (at_layout[:, :7] == 1).all()
    assert not (at_mask == 3).any()  # the mask canvas's opening, where it belongs, removes such a band
