"""Ordinary image files (tiles, masks, label maps, small slides as PNG/JPEG/TIFF): the one reading path, with
the checks every command needs.

- A file that is not an image, is truncated or corrupt, or claims more pixels than PIL's decompression-bomb
  limit, is refused with a `BadArgumentError` naming the file (PIL's `LOAD_TRUNCATED_IMAGES` stays off, so a
  truncated file is never padded with grey).
- 16-bit and 32-bit greyscale images are scaled from their type's range to 0–255, not clipped.
- A label map must be one channel of integer class ids; a colour image is refused, never averaged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_synth.errors import BadArgumentError

TIFF_SUFFIXES = (".tif", ".tiff")


def read_rgb(path: str | Path, *, scale: float = 1.0, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 of an image file, optionally resized by `scale` (Lanczos)."""
    from PIL import Image

    path = Path(path)
    with _opened(path, what) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            grey = _to_uint8(np.asarray(im), im.mode)
            im = Image.fromarray(grey).convert("RGB")
        else:
            im = _loaded(im, path, what).convert("RGB")
        if scale != 1.0:
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
            )
        return np.asarray(im)


def read_labels(path: str | Path, *, what: str = "label map") -> np.ndarray:
    """(H, W) integer class ids of a label image (PNG, TIFF's level 0, …); values are kept, never scaled."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        labels = _read_tiff_level0(path, what)
    else:
        with _opened(path, what) as im:
            labels = np.asarray(_loaded(im, path, what))
    if (
        labels.ndim == 3
        and labels.shape[2] in (3, 4)
        and all((labels[..., c] == labels[..., 0]).all() for c in range(1, 3))
    ):
        labels = labels[..., 0]  # grey saved as RGB: the same ids in every channel
    if labels.ndim != 2:
        raise BadArgumentError(
            f"{what} {path}: expected a single-channel label image of class ids, got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise BadArgumentError(f"{what} {path}: class ids must be integers, got {labels.dtype}")
    return labels


def read_mask_values(path: str | Path, *, what: str = "mask") -> np.ndarray:
    """(H, W) values of a mask image to match against a legend: palette indices, grey levels, or the grey of
    an RGB mask (masks saved as colour JPEGs are grey with compression noise)."""
    path = Path(path)
    with _opened(path, what) as im:
        im = _loaded(im, path, what)
        values = np.asarray(im if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L") else im.convert("L"))
    return values[..., 0] if values.ndim == 3 else values


def image_size(path: str | Path, *, what: str = "image") -> tuple[int, int]:
    """(width, height) from the header, with the same refusals as reading (bombs, non-images)."""
    with _opened(Path(path), what) as im:
        return im.width, im.height


def _opened(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadArgumentError(f"{what} {path}: file not found")
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BadArgumentError(f"{what} {path}: {_bomb_reason(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise BadArgumentError(f"{what} {path}: not an image this reader knows (PNG, JPEG, TIFF, …)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadArgumentError(f"{what} {path}: cannot read the image ({_first_line(exc)})") from exc


def _loaded(im, path: Path, what: str):
    from PIL import Image

    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise BadArgumentError(f"{what} {path}: {_bomb_reason(exc)}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = _first_line(exc)
        kind = (
            "truncated or corrupt"
            if "truncat" in reason.lower() or isinstance(exc, EOFError) or "broken" in reason.lower()
            else "unreadable"
        )
        raise BadArgumentError(f"{what} {path}: the file is {kind} ({reason})") from exc
    return im


def _bomb_reason(exc: Exception) -> str:
    from PIL import Image

    return (
        f"the image claims more pixels than the {(Image.MAX_IMAGE_PIXELS or 0) * 2:,} pixels PIL opens safely "
        f"({_first_line(exc)}); convert a real image this large to a tiled TIFF"
    )


def _read_tiff_level0(path: Path, what: str) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise BadArgumentError(f"{what} {path}: file not found")
    try:
        with tifffile.TiffFile(path) as tf:
            check_tiff_complete(tf, path, what)
            return tf.series[0].levels[0].asarray() if tf.series else tf.pages[0].asarray()
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        raise BadArgumentError(f"{what} {path}: not a readable TIFF, or truncated ({_first_line(exc)})") from exc


def check_tiff_complete(tf, path: Path, what: str) -> None:
    """Refuse a TIFF whose level-0 tiles or strips run past the end of the file (truncated): readers would
    return them as blank."""
    size = path.stat().st_size
    page = tf.series[0].levels[0].keyframe if tf.series else tf.pages[0]
    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
    if len(ends) < len(page.dataoffsets) or (ends and max(ends) > size):
        raise BadArgumentError(
            f"{what} {path}: the file is truncated ({size:,} bytes; its level 0 needs {max(ends, default=0):,} and "
            f"{len(page.dataoffsets) - len(ends)} of its tiles are missing)"
        )


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale of more than 8 bits to 0–255: by the type's range (16-bit), or the data's own for 32-bit/float."""
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "I" and values.min() >= 0 and values.max() <= 65535:
        top = 65535.0 if values.max() > 255 else 255.0
    else:
        low, top = float(np.nanmin(values)), float(np.nanmax(values))
        values = values - low
        top = top - low or 1.0
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
