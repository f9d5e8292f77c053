"""Inpainting patches: where a slide is regenerated, how a patch is sampled and blended, and the edited slide as
row bands for the writers.

Coordinates: `l0` is the slide's level 0; model px are pixels at the model's MPP (`scale` level-0 px each), on a
grid anchored at the slide's origin; latent px are `factor` model px. Boxes are `(x0, y0, x1, y1)`.

A patch is the box of one or more regions at the model's MPP, grown by one crop of context and the blending margin
and snapped to the latent grid, so every crop that owns a region pixel sees real tissue around it. Patches whose
boxes overlap are merged: each pixel belongs to at most one patch, so blending never has to combine two.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_synth.errors import BadArgumentError
from wsi_synth.extraction.raster import ClassGeometries

#: Model px per encoder call (and the context on each side that is encoded but not kept).
ENCODE_TILE = 512
ENCODE_CONTEXT = 64


@dataclass(frozen=True)
class Region:
    """One area to regenerate: its polygon (level-0 px), the model class it gets, and its name in the file."""

    geometry: Any  # shapely Polygon or MultiPolygon (shapely has no type hints)
    class_id: int
    name: str


@dataclass(frozen=True)
class Patch:
    """A box at the model's MPP (model px, multiples of the latent factor) and the regions inside it."""

    box: tuple[int, int, int, int]
    regions: tuple[int, ...]  # indices into the run's region list

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in model px."""
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0


def plan_patches(
    regions: list[Region], l0_size: tuple[int, int], scale: float, *, factor: int, crop_px: int, margin_l0: int
) -> list[Patch]:
    """The patches that cover `regions`: each region's model-px box grown by one crop (`crop_px`) and the margin,
    snapped to the latent grid and clamped into the slide; overlapping boxes merged, in reading order."""
    limit = (math.floor(l0_size[0] / scale) // factor * factor, math.floor(l0_size[1] / scale) // factor * factor)
    if min(limit) < crop_px:
        raise BadArgumentError(
            f"the slide is {limit[0]}×{limit[1]} px at the model's resolution, smaller than one crop of the model "
            f"({crop_px} px): nothing to give context"
        )
    grow = crop_px + math.ceil(margin_l0 / scale)
    boxes: list[tuple[tuple[int, int, int, int], tuple[int, ...]]] = []
    for i, region in enumerate(regions):
        bx0, by0, bx1, by1 = region.geometry.bounds
        box = (
            math.floor(bx0 / scale) - grow,
            math.floor(by0 / scale) - grow,
            math.ceil(bx1 / scale) + grow,
            math.ceil(by1 / scale) + grow,
        )
        boxes.append((_fit(box, limit, factor, crop_px), (i,)))
    merged = _merge(boxes)
    # unions of fitted boxes fit
    return [Patch(box, members) for box, members in sorted(merged, key=lambda b: (b[0][1], b[0][0]))]


def _fit(
    box: tuple[int, int, int, int], limit: tuple[int, int], factor: int, crop_px: int
) -> tuple[int, int, int, int]:
    """Snap a box outwards to the latent grid, make it at least one crop on each side, and clamp it into the slide."""
    out = []
    for lo, hi, top in ((box[0], box[2], limit[0]), (box[1], box[3], limit[1])):
        lo, hi = max(0, lo // factor * factor), min(top, -(-hi // factor) * factor)
        if hi - lo < crop_px:
            lo = max(0, min(lo, top - crop_px))
            hi = lo + crop_px
        out.append((lo, hi))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _int_box(bounds: tuple[float, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in bounds)
    return x0, y0, x1, y1


def _merge(
    boxes: list[tuple[tuple[int, int, int, int], tuple[int, ...]]],
) -> list[tuple[tuple[int, int, int, int], tuple[int, ...]]]:
    """Boxes that overlap (or touch) become their bounding box, until none do: the union's parts' bounds, repeated,
    since a merged box may reach a box neither part reached (shapely's union keeps thousands of regions fast)."""
    import shapely

    merged = [b for b, _ in boxes]
    while True:
        union = shapely.union_all([shapely.box(*b) for b in merged])
        parts = [_int_box(g.bounds) for g in getattr(union, "geoms", [union])]
        if len(parts) == len(merged):
            break
        merged = parts
    inside, holder = shapely.STRtree([shapely.box(*m) for m in merged]).query(
        [shapely.box(*b) for b, _ in boxes], predicate="within"
    )
    owner = np.empty(len(boxes), np.int64)
    owner[inside] = holder  # every box lies within exactly one merged box (they are disjoint)
    return [(m, tuple(i for k in np.nonzero(owner == j)[0] for i in boxes[k][1])) for j, m in enumerate(merged)]


def patch_seed(seed: int, patch: Patch) -> int:
    """The sampler seed of a patch: the run's seed and the patch's place, so patches never share noise."""
    digest = hashlib.sha256(f"{seed}:{patch.box[0]}:{patch.box[1]}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


# --- one patch: class map, encode, blend weights ----------------------------------------------------------------


def region_codes(regions: list[Region], patch: Patch, scale: float) -> np.ndarray:
    """(h, w) uint8 at model px: 1 + the class of the region covering each pixel, 0 outside every region (so a
    region given the null class 0 is still told apart from the real tissue around it)."""
    geometries = ClassGeometries.build([(regions[i].class_id + 1, regions[i].geometry) for i in patch.regions])
    x0, y0, _, _ = patch.box
    return geometries.rasterize((x0 * scale, y0 * scale), scale, patch.size)


def latent_labels(codes: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(class map, known mask) of the latent canvas: a latent pixel is regenerated when any of its model px lies in a
    region, grown by one latent px so the decoder's footprint at the border is regenerated too; its class is the
    highest region code around it, less one. Known pixels get class 0 (they are never sampled)."""
    from scipy import ndimage

    h, w = codes.shape
    blocks = codes.reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))
    unknown = ndimage.binary_dilation(blocks > 0, structure=np.ones((3, 3), bool))
    classes = ndimage.grey_dilation(blocks, size=(3, 3))
    labels = np.where(unknown, np.maximum(classes.astype(np.int16) - 1, 0), 0).astype(np.uint8)
    return labels, ~unknown


def encode_rgb(codec, rgb: np.ndarray, scale: float, factor: int, device: str) -> np.ndarray:
    """(C, h/f, w/f) float32 latents of an RGB image (codec mode, times the latent `scale`), encoded in tiles of
    `ENCODE_TILE` px with `ENCODE_CONTEXT` px of context on each side, so memory does not grow with the patch."""
    import torch

    h, w = rgb.shape[:2]
    out = None
    for ty in range(0, h, ENCODE_TILE):
        for tx in range(0, w, ENCODE_TILE):
            y0, x0 = max(0, ty - ENCODE_CONTEXT), max(0, tx - ENCODE_CONTEXT)
            y1, x1 = min(h, ty + ENCODE_TILE + ENCODE_CONTEXT), min(w, tx + ENCODE_TILE + ENCODE_CONTEXT)
            x = torch.from_numpy(np.array(rgb[y0:y1, x0:x1])).permute(2, 0, 1)[None].float().div(127.5).sub(1)
            with torch.no_grad():
                z = codec.encode(x.to(device)).latent_dist.mode()[0].float().cpu().numpy() * scale
            if out is None:
                out = np.empty((z.shape[0], h // factor, w // factor), np.float32)
            ky, kx = (ty - y0) // factor, (tx - x0) // factor
            th, tw = min(ENCODE_TILE, h - ty) // factor, min(ENCODE_TILE, w - tx) // factor
            out[:, ty // factor : ty // factor + th, tx // factor : tx // factor + tw] = z[
                :, ky : ky + th, kx : kx + tw
            ]
    assert out is not None, "an empty image has no latents"
    return out


def blend_weight(codes: np.ndarray, margin_model: float) -> np.ndarray:
    """(h, w) float32: 1 in the regions, falling linearly to 0 over `margin_model` px outside them (feathering)."""
    from scipy import ndimage

    inside = codes > 0
    if margin_model <= 0:
        return inside.astype(np.float32)
    distance = ndimage.distance_transform_edt(~inside)
    return np.clip(1.0 - distance / margin_model, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class PatchResult:
    """A finished patch at level 0: its top-left, the new RGB pixels and their blend weight (0–255) there."""

    l0_xy: tuple[int, int]
    rgb: np.ndarray  # (h, w, 3) uint8
    weight: np.ndarray  # (h, w) uint8

    @property
    def l0_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in level-0 px."""
        h, w = self.weight.shape
        return self.l0_xy[0], self.l0_xy[1], self.l0_xy[0] + w, self.l0_xy[1] + h


def to_level0(rgb: np.ndarray, weight: np.ndarray, patch: Patch, scale: float, l0_size: tuple[int, int]) -> PatchResult:
    """The part of a decoded patch with weight > 0, at level 0 (resampled when the model's MPP is not level 0's)."""
    from PIL import Image

    rows, cols = np.nonzero(weight.any(1))[0], np.nonzero(weight.any(0))[0]
    if len(rows) == 0:
        return PatchResult((0, 0), np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    rgb, weight = rgb[r0:r1, c0:c1], weight[r0:r1, c0:c1]
    x0, y0 = patch.box[0] + c0, patch.box[1] + r0
    if scale == 1.0:
        return PatchResult((int(x0), int(y0)), np.ascontiguousarray(rgb), _weight_u8(weight))
    lx0, ly0 = round(x0 * scale), round(y0 * scale)
    lx1, ly1 = (
        min(l0_size[0], round((x0 + weight.shape[1]) * scale)),
        min(l0_size[1], round((y0 + weight.shape[0]) * scale)),
    )
    size = (lx1 - lx0, ly1 - ly0)
    big_rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
    big_weight = np.asarray(Image.fromarray(weight, mode="F").resize(size, Image.Resampling.BILINEAR))
    return PatchResult((lx0, ly0), big_rgb, _weight_u8(big_weight))


def _weight_u8(weight: np.ndarray) -> np.ndarray:
    return (np.clip(weight, 0, 1) * 255).round().astype(np.uint8)


# --- finished patches in the work folder ------------------------------------------------------------------------


def save_patch(work: Path, index: int, result: PatchResult, info: dict) -> None:
    """Keep a finished patch: its arrays, then (last, atomically) the JSON that marks it done."""
    from wsi_synth.jsonfile import write_atomic

    for name, array in (("rgb", result.rgb), ("weight", result.weight)):
        tmp = work / f".patch-{index:04d}.{name}.npy.partial"
        with open(tmp, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, work / f"patch-{index:04d}.{name}.npy")
    write_atomic(work / f"patch-{index:04d}.json", {**info, "l0_xy": list(result.l0_xy)})


def load_patch(work: Path, index: int) -> tuple[PatchResult, dict] | None:
    """A patch finished by an earlier run (memory-mapped), with its info; None when it is not complete."""
    marker = work / f"patch-{index:04d}.json"
    try:
        info = json.loads(marker.read_text())
        rgb = np.load(work / f"patch-{index:04d}.rgb.npy", mmap_mode="r")
        weight = np.load(work / f"patch-{index:04d}.weight.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if rgb.shape[:2] != weight.shape or not isinstance(info, dict) or "l0_xy" not in info:
        return None
    return PatchResult(tuple(info["l0_xy"]), rgb, weight), info


# --- the edited slide as row bands --------------------------------------------------------------------------------


class EditedSlide:
    """(H, W, 3) uint8 level 0 of a slide with the patches blended in, read in row bands for the pyramid writers:
    the slide is read band by band (in column chunks, so a 100,000 px wide band never passes through one PIL image),
    and only the patches a band meets are blended."""

    COLUMNS = 8192

    def __init__(self, slide, patches: list[PatchResult]) -> None:
        width, height = slide.dimensions
        self.slide, self.patches = slide, [p for p in patches if p.weight.size]
        self.shape, self.dtype = (height, width, 3), np.dtype(np.uint8)

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        width = self.shape[1]
        band = np.empty((y1 - y0, width, 3), np.uint8)
        for x0 in range(0, width, self.COLUMNS):
            x1 = min(width, x0 + self.COLUMNS)
            band[:, x0:x1] = self.slide.read_level0((x0, y0), (x1 - x0, y1 - y0))
        for patch in self.patches:
            px0, py0, px1, py1 = patch.l0_box
            top, bottom = max(y0, py0), min(y1, py1)
            if top >= bottom:
                continue
            weight = np.asarray(patch.weight[top - py0 : bottom - py0]).astype(np.float32)[..., None] / 255.0
            new = np.asarray(patch.rgb[top - py0 : bottom - py0]).astype(np.float32)
            old = band[top - y0 : bottom - y0, px0:px1].astype(np.float32)
            band[top - y0 : bottom - y0, px0:px1] = (old + weight * (new - old)).round().clip(0, 255).astype(np.uint8)
        return band


class RegionLabels:
    """(H, W) uint8 label map of the edited slide: each region's class, 0 elsewhere, rasterized band by band."""

    def __init__(self, regions: list[Region], l0_size: tuple[int, int]) -> None:
        self.geometries = ClassGeometries.build([(r.class_id, r.geometry) for r in regions])
        self.shape, self.dtype = (l0_size[1], l0_size[0]), np.dtype(np.uint8)

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        return self.geometries.rasterize((0.0, float(y0)), 1.0, (self.shape[1], y1 - y0))
