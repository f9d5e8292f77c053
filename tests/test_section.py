"""The section outline: a seeded tissue section on glass, shaped like a real one."""

import numpy as np
import pytest

from wsi_synth.generation.section import COVER, SOLIDITY, on_glass, section_field, wants_section


def _solidity(inside: np.ndarray) -> float:
    from skimage.measure import label, regionprops

    return max(regionprops(label(inside)), key=lambda r: r.area).solidity


def test_a_section_covers_its_share_in_one_piece_with_glass_along_the_whole_border():
    from scipy import ndimage

    for seed in range(4):
        field = section_field((200, 300), (200.0, 300.0), seed)
        inside = field > 0.5
        assert field.dtype == np.float32 and 0 <= field.min() and field.max() <= 1
        assert abs(inside.mean() - COVER) < 0.03
        assert ndimage.label(inside)[1] == 1 and np.array_equal(ndimage.binary_fill_holes(inside), inside)
        border = np.concatenate([field[0], field[-1], field[:, 0], field[:, -1]])
        assert border.max() < 1e-3  # glass all around, as on a real slide
    first = section_field((64, 64), (64.0, 64.0), 7)
    section_field.cache_clear()  # computed again, not the cached array
    assert np.array_equal(first, section_field((64, 64), (64.0, 64.0), 7))
    assert not np.array_equal(section_field((64, 64), (64.0, 64.0), 7), section_field((64, 64), (64.0, 64.0), 8))


def test_outlines_are_as_irregular_as_a_real_section_and_stay_on_the_slide():
    """Solidity (area over its convex hull's) of the real section in ../shared/data is 0.887; an ellipse's is 1."""
    solidities = [_solidity(section_field((256, 256), (256.0, 256.0), seed) > 0.5) for seed in range(8)]
    assert abs(np.mean(solidities) - SOLIDITY) < 0.04 and max(solidities) < 0.97
    # a canvas that overhangs the slide (the layout canvas covers at least a crop): glass beyond the slide's extent
    field = section_field((80, 80), (50.0, 64.0), 3)
    assert field[51:].max() < 1e-3 and field[:, 65:].max() < 1e-3 and (field[:50, :64] > 0.5).mean() > 0.5


def test_the_layout_is_kept_inside_and_glass_outside():
    layout = np.random.default_rng(0).uniform(-1, 1, (5, 40, 40)).astype(np.float32)
    inside = section_field((40, 40), (40.0, 40.0), 1)
    out = on_glass(layout, inside, background=4)
    full, empty = inside == 1, inside == 0
    assert np.array_equal(out[:, full], layout[:, full])
    assert (out[4][empty] == 1).all() and (out[:4][:, empty] == -1).all()


@pytest.mark.parametrize(
    "choice, canvas, crop, wanted",
    [
        ("auto", (64, 64), 16, True),
        ("auto", (63, 200), 16, False),
        ("on", (16, 16), 16, True),
        ("off", (99, 99), 16, False),
    ],
)
def test_auto_draws_a_section_on_slides_of_four_layout_crops_or_more(choice, canvas, crop, wanted):
    assert wants_section(choice, canvas, crop) is wanted


def test_outside_the_section_background_pixels_are_clean_glass_and_tissue_is_never_touched():
    from wsi_synth.generation.section import GLASS, OnGlass

    image = np.zeros((64, 64, 3), np.uint8) + np.array([200, 100, 150], np.uint8)  # a pinkish "background" drawing
    labels = np.full((64, 64), 4, np.uint8)
    labels[:, 32:] = 1  # tumour on the right
    field = np.zeros((8, 8), np.float32)
    field[:4] = 1  # the section covers the top half (8 px per field px)
    out = np.concatenate([OnGlass(image, labels, field, 8.0, background=4)[y : y + 16] for y in range(0, 64, 16)])
    assert (out[40:, :32] == GLASS).all()  # outside the section, background is glass
    assert (out[:24, :32] == image[:24, :32]).all()  # inside, the drawn background stays
    assert (out[:, 32:] == image[:, 32:]).all()  # tissue is never changed
    assert len(np.unique(out[24:40, 0, 1])) > 4  # and the change is a fade, not a step
