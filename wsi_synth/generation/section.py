"""A slide's section outline: where the tissue lies on the glass.

A real slide holds one section of tissue surrounded by glass; nothing the model learns from is that large (the layout
stage sees 2.3 mm, a section is 10–20 mm), so a large generated slide was tissue from edge to edge. `--section`
draws the outline instead, procedurally: an ellipse of random aspect and orientation, its edge displaced by
fractal value noise, thresholded to cover `COVER` of the slide, one piece with glass along the whole border. The
layout stage's class channels are kept inside and replaced by `background` outside, smoothly over about a layout
pixel, before the mask stage starts from them; the mask stage then draws the tissue's edge at its own resolution.

Outside the section the slide is empty glass: there, the image's `background` pixels fade to `GLASS` (`OnGlass`).
The image stage's background class is what WSSS4LUAD annotates as background, alveolar space and glass with its
debris; drawn over a whole slide's margin it looked like dirty glass. Pixels of a tissue class are never changed.

The outline is computed at the layout canvas's resolution (64 output px per pixel for the bundled model: 1,563² at
100,000 px), whole, from the seed alone, so it does not depend on chunking, workers or batch size.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Clean glass, RGB: the median of CMU-1-Small-Region.svs's non-tissue pixels (../shared/data).
GLASS = (246, 243, 243)
#: Share of the slide the section covers: a real whole section's, TCGA-CR-7395 in ../shared/data (0.62 of its scan).
COVER = 0.6
#: `--section auto` draws a section on slides at least this many layout crops a side (the bundled model: 4 × 2.3 mm
#: ≈ 9 mm); a smaller slide is a field inside the tissue, as a crop of a section would be.
AUTO_CROPS = 4
#: Amplitude of the outline's noise against the ellipse's depth, set so that the outlines' mean solidity is the real
#: section's (`SOLIDITY`): 0.892 ± 0.033 over 16 seeds.
NOISE = 5.0
#: The border kept as glass, and the band over which the outline bends away from it, as shares of the shorter side.
MARGIN, BAND = 0.04, 0.2
#: Solidity (area over its convex hull's) of the real section's outline, TCGA-CR-7395's tissue at 1,024 px: how far
#: an outline departs from a convex blob (tests/test_section.py measures generated outlines against it).
SOLIDITY = 0.887


def background_id(classes: list[dict]) -> int | None:
    """The id of the class named `background` (glass) in a bundle's classes, or None."""
    return next((c["id"] for c in classes if c["name"] == "background"), None)


def wants_section(choice: str, layout_canvas: tuple[int, int], layout_crop: int) -> bool:
    """Whether a run draws a section: `on`, or `auto` on a layout canvas of at least `AUTO_CROPS` crops a side."""
    if choice == "on":
        return True
    return choice == "auto" and min(layout_canvas) >= AUTO_CROPS * layout_crop


@functools.lru_cache(maxsize=4)
def section_field(
    canvas: tuple[int, int], extent: tuple[float, float], seed: int, *, cover: float = COVER
) -> np.ndarray:
    """(h, w) float32 in [0, 1] on a canvas of `canvas` pixels: 1 inside the section, 0 on the glass, a smooth step
    of about a pixel between. `extent` is the slide's size in canvas pixels (the canvas may overhang it: glass).
    Computed once per arguments (a run asks for it for the layout and again for the glass), and read-only."""
    from scipy import ndimage

    h, w = canvas
    eh, ew = extent
    rng = np.random.default_rng([seed, 0x5EC7])
    angle, aspect = rng.uniform(0, math.pi), rng.uniform(0.65, 1.0)
    cy, cx = rng.uniform(-0.04, 0.04, 2)
    # normalised coordinates of pixel centres, the slide's shorter side spanning 1
    scale = min(eh, ew)
    y = ((np.arange(h) + 0.5) - eh / 2)[:, None] / scale - cy
    x = ((np.arange(w) + 0.5) - ew / 2)[None, :] / scale - cx
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    shape = 1 - (u / (ew / scale / 2)) ** 2 - (v / aspect / (eh / scale / 2)) ** 2
    field = shape + NOISE * _fractal_noise(seed, y, x)
    # glass along the whole border (and beyond the slide, where the canvas overhangs it)
    half_h, half_w = eh / scale / 2, ew / scale / 2
    edge = np.minimum(np.minimum(y + cy + half_h, half_h - cy - y), np.minimum(x + cx + half_w, half_w - cx - x))
    # the outline bends away from the border over a band (no straight edge along it) and never reaches it
    field = field - 4 * np.clip((BAND - edge) / BAND, 0, 1) ** 2
    field = np.where(edge < MARGIN, -np.inf, field)
    inside = field > np.quantile(field[np.isfinite(field)], 1 - cover * eh * ew / max(np.isfinite(field).sum(), 1))
    inside = _one_piece(inside)
    field = np.clip(ndimage.gaussian_filter(inside.astype(np.float32), 0.75, mode="constant"), 0, 1)
    field.flags.writeable = False
    return field


def on_glass(layout: np.ndarray, inside: np.ndarray, background: int) -> np.ndarray:
    """The layout stage's class channels (classes, h, w) inside the section, pure `background` outside."""
    glass = -np.ones(layout.shape[0], np.float32)
    glass[background] = 1
    return (inside[None] * np.asarray(layout, np.float32) + (1 - inside[None]) * glass[:, None, None]).astype(
        np.float32
    )


def _fractal_noise(seed: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Value noise over four octaves (3, 6, 12 and 24 lattice cells per unit, amplitudes halving), in about [−1, 1]."""
    from wsi_synth.generation.masks import _value_noise

    gy, gx = np.broadcast_arrays(y, x)
    total = np.zeros(gy.shape, np.float32)
    for octave in range(4):
        cells = 3 * 2**octave
        total += 0.5**octave * _value_noise(seed, np.array([0x5EC7]), octave, gy * cells, gx * cells)[0]
    return total / 1.875


def _one_piece(inside: np.ndarray) -> np.ndarray:
    """The largest connected part, its holes filled (holes in tissue are the layout's to draw)."""
    from scipy import ndimage

    labels, n = ndimage.label(inside)
    if n > 1:
        inside = labels == (np.bincount(labels.ravel())[1:].argmax() + 1)
    return ndimage.binary_fill_holes(inside)


class OnGlass:
    """An image read in row bands (`image[y0:y1]`, (rows, W, 3) uint8) whose `background` pixels fade to `GLASS`
    outside the section: by 1 − the section's field, bilinearly upsampled from its canvas (`px_per_field` output px
    per pixel). Row bands are read in order, as the pyramid writers read a decoded image."""

    def __init__(self, image, labels, field: np.ndarray, px_per_field: float, background: int) -> None:
        self.image, self.labels, self.field = image, labels, field
        self.px_per_field, self.background = px_per_field, background
        self.shape, self.dtype = image.shape, image.dtype

    def __getitem__(self, rows: slice) -> np.ndarray:
        from wsi_synth.generation.masks import bilinear_rows

        y0, y1, _ = rows.indices(self.shape[0])
        pixels = np.asarray(self.image[y0:y1])
        labels = np.asarray(self.labels[y0:y1])
        inside = bilinear_rows(self.field, y0, y1, pixels.shape[1], 1.0, self.px_per_field)
        glass = np.where(labels == self.background, 1 - inside, 0).astype(np.float32)[..., None]
        if not glass.any():
            return pixels
        out = pixels * (1 - glass) + np.asarray(GLASS, np.float32) * glass
        return np.round(out).astype(np.uint8)
