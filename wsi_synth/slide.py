"""Open whole-slide images and read pixels at a target resolution (µm per pixel).

Owns: the one place that talks to openslide. Every location is in the level-0 frame (`l0_` prefix);
sizes are `(width, height)` as in openslide. Pixels come back as `(height, width, 3)` uint8 RGB arrays.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from wsi_synth.errors import BadArgumentError, BadSlideError

#: File suffixes treated as slides when a folder is given (what openslide and PIL open).
SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".svslide",
        ".bif",
        ".dcm",
        ".png",
        ".jpg",
        ".jpeg",
    }
)

#: Two MPPs within this relative tolerance are the same scale: reading 0.499 µm/px slides at 0.5 µm/px
#: should not resample every tile by 0.2% (a blur for nothing).
MPP_TOLERANCE = 0.02


@dataclass
class Slide:
    """An open slide with a known level-0 resolution. Use as a context manager."""

    path: Path
    handle: object  # openslide.AbstractSlide
    mpp: float

    @property
    def name(self) -> str:
        """The slide's file name."""
        return self.path.stem

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 `(width, height)` in pixels."""
        return tuple(self.handle.dimensions)  # type: ignore[attr-defined,return-value]

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the slide file."""
        self.handle.close()  # type: ignore[attr-defined]

    def scale_for(self, mpp: float) -> float:
        """Level-0 pixels per pixel at `mpp` (1.0 when the MPPs agree within `MPP_TOLERANCE`)."""
        scale = mpp / self.mpp
        return 1.0 if abs(scale - 1.0) <= MPP_TOLERANCE else scale

    def read_level0(self, l0_xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """A level-0 region, RGB with white outside the scanned area; a damaged file is a `BadSlideError`."""
        try:
            region = self.handle.read_region(l0_xy, 0, size)  # type: ignore[attr-defined]
        except Exception as exc:  # openslide raises OpenSlideError, or OSError from PIL, for damaged tiles
            raise BadSlideError(
                f"cannot read slide {self.path} at {l0_xy}: {_first_line(exc)} (truncated or damaged?)"
            ) from exc
        return pil_to_rgb(region)

    def read(self, l0_xy: tuple[int, int], size: tuple[int, int], mpp: float) -> np.ndarray:
        """Read a `size` = (width, height) region at `mpp` whose top-left is `l0_xy`; RGB, white outside."""
        scale = self.scale_for(mpp)
        level = self.handle.get_best_level_for_downsample(scale)  # type: ignore[attr-defined]
        level_ds = self.handle.level_downsamples[level]  # type: ignore[attr-defined]
        l_size = tuple(max(1, math.ceil(s * scale / level_ds - 1e-6)) for s in size)
        try:
            region = self.handle.read_region(l0_xy, level, l_size)  # type: ignore[attr-defined]
        except Exception as exc:  # openslide raises OpenSlideError, PIL raises OSError on truncation
            raise BadSlideError(f"cannot read slide {self.path} at {l0_xy}: {exc}") from exc
        if region.size != size:
            region = region.resize(size, Image.Resampling.BOX if scale / level_ds > 1 else Image.Resampling.BILINEAR)
        return pil_to_rgb(region)

    def thumbnail_rgb(self, side: int) -> np.ndarray:
        """The whole slide with its longer side about `side` px (works without a known MPP)."""
        base = self.mpp if math.isfinite(self.mpp) else 1.0
        return replace(self, mpp=base).thumbnail(base * max(self.dimensions) / side)

    def thumbnail(self, mpp: float, *, band_bytes: int = 64 << 20) -> np.ndarray:
        """The whole slide at (about) `mpp` µm/px, RGB; read in row bands so memory stays bounded even
        for a single-level gigapixel TIFF (openslide's own thumbnail would read the whole level at once)."""
        w, h = self.dimensions
        scale = max(mpp / self.mpp, 1.0)
        out_w, out_h = max(1, round(w / scale)), max(1, round(h / scale))
        level = self.handle.get_best_level_for_downsample(scale)  # type: ignore[attr-defined]
        level_ds = self.handle.level_downsamples[level]  # type: ignore[attr-defined]
        l_w, l_h = self.handle.level_dimensions[level]  # type: ignore[attr-defined]
        band = max(1, min(l_h, band_bytes // (4 * l_w)))
        rows = []
        for l_y in range(0, l_h, band):
            l_bh = min(band, l_h - l_y)
            o_y0, o_y1 = round(l_y * out_h / l_h), round((l_y + l_bh) * out_h / l_h)
            if o_y1 == o_y0:
                continue
            try:
                region = self.handle.read_region((0, round(l_y * level_ds)), level, (l_w, l_bh))  # type: ignore[attr-defined]
            except Exception as exc:
                raise BadSlideError(f"cannot read slide {self.path}: {_first_line(exc)}") from exc
            rows.append(rgba_to_rgb(np.asarray(region.resize((out_w, o_y1 - o_y0), Image.Resampling.BOX))))
        return np.concatenate(rows, axis=0)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """RGB array of an openslide RGBA region; PIL's C conversion when fully opaque (the common case)."""
    if image.mode == "RGBA" and cast(tuple[int, int], image.getchannel("A").getextrema())[0] < 255:
        return rgba_to_rgb(np.asarray(image))
    return np.asarray(image.convert("RGB"))


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite premultiplied RGBA (openslide's output) on white: transparent = outside the scanned area."""
    if rgba.shape[-1] == 3:
        return rgba
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    return (rgb.astype(np.uint16) + (255 - alpha.astype(np.uint16))).clip(0, 255).astype(np.uint8)


def open_slide(path: str | Path, *, mpp: float | None = None, need_mpp: bool = True) -> Slide:
    """Open `path` with openslide (PIL for plain images). `mpp` overrides or supplies the level-0 MPP.

    Raises `BadSlideError` for a missing, unreadable or truncated file, or a slide without MPP metadata
    when `mpp` is not given.
    """
    import openslide

    path = Path(path)
    if not path.exists():
        raise BadSlideError(f"slide not found: {path}")
    if path.is_dir() and path.suffix.lower() != ".mrxs":
        raise BadSlideError(f"expected a slide file, got a folder: {path}")
    try:
        with warnings.catch_warnings():  # PIL warns before it fails on a broken file; the error says enough
            warnings.simplefilter("ignore")
            handle = openslide.open_slide(str(path))
        # Opening only reads the header; touch the pixels once so a truncated file fails here, not mid-run.
        handle.get_thumbnail((64, 64))
    except Exception as exc:
        raise BadSlideError(
            f"cannot open slide {path}: {_first_line(exc)} (not a whole-slide image, or truncated?)"
        ) from exc
    if mpp is not None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise BadArgumentError(f"--slide-mpp must be positive and finite, got {mpp}")
        return Slide(path, handle, float(mpp))
    found = _metadata_mpp(handle)
    if found is None and not need_mpp:
        return Slide(path, handle, math.nan)
    if found is None:
        handle.close()
        raise BadSlideError(
            f"slide {path} has no pixel size (MPP) in its metadata: pass its level-0 µm/px with --slide-mpp (e.g. 0.25 "
            "at 40×, 0.5 at 20×)"
        )
    return Slide(path, handle, found)


def _metadata_mpp(handle: object) -> float | None:
    props = getattr(handle, "properties", {})
    try:
        mpp_x, mpp_y = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    return (mpp_x + mpp_y) / 2 if mpp_x > 0 and mpp_y > 0 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def find_slides(path: str | Path) -> list[Path]:
    """A slide file, or the slide files directly inside a folder (sorted). Raises if there are none."""
    path = Path(path)
    if not path.exists():
        raise BadSlideError(f"slide path not found: {path}")
    if path.is_file():
        return [path]
    slides = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    if not slides:
        raise BadSlideError(f"no slides in {path} (looked for {', '.join(sorted(SLIDE_SUFFIXES))})")
    return slides
