"""OME-Zarr output: the slide as a multiscale image and its class map as an NGFF label image, in NGFF 0.4 (Zarr v2,
the default: what today's viewers read) or NGFF 0.5 (Zarr v3, sharded: one file per shard of 16 chunks in a row,
not one per chunk).

Layout (`s.ome.zarr/`):
- `0 … n`: the image levels, axes (c, y, x), uint8, chunks (3, tile, tile), Blosc-zstd; the same levels and the
  same 2× box downsampling as the TIFF pyramid, scale transforms in µm from the MPP, and `omero` rendering
  metadata that shows the three channels as RGB (napari, vizarr, QuPath).
- `labels/tissue/0 … n`: the class map, axes (y, x), mode-downsampled like the label TIFF, with `image-label`
  colours and class names (`properties`: label-value → class).

Pixels stream from the same band producer as the TIFF writer (`io.pyramid.LevelStream`): a level is written band by
band into its Zarr array, never held whole. The metadata is written by `ome-zarr` (the NGFF reference library), so
it follows the specification rather than our reading of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsi_synth.io.atomic import output_name
from wsi_synth.io.pyramid import LevelInfo, LevelStream, halve_labels, halve_rgb, rarity_priority

#: The label image's name under `labels/` (NGFF allows several; ours is the tissue class map).
LABEL_NAME = "tissue"
#: NGFF 0.5: chunks per shard along x. Shards are one chunk tall, so every band of one tile row fills whole shards
#: (no shard is read back and rewritten) and a 100,000² level is 3,700 files instead of 38,000.
SHARD_CHUNKS = 16


def _format(version: str):
    from ome_zarr.format import FormatV04, FormatV05

    return {"0.4": FormatV04, "0.5": FormatV05}[version]()


def write_ngff(
    image,
    labels,
    path: str | Path,
    *,
    mpp: float,
    classes: Sequence[dict],
    tile: int = 512,
    capture_max: int = 0,
    progress: bool = False,
    version: str = "0.4",
) -> tuple[list[LevelInfo], np.ndarray | None, float]:
    """Write an (H, W, 3) uint8 image and, if given, its (H, W) uint8 class map as a new OME-Zarr folder `path`, in
    NGFF `version` (0.4 or 0.5).

    `path` must not exist (callers write to a temporary name and rename; see `io.outputs`). With `capture_max`,
    also returns the first label level whose sides are ≤ it and its downsample (for the GeoJSON), like
    `write_label_pyramid`.
    """
    import zarr

    from wsi_synth.io.pyramid import check_pyramid_args

    fmt = _format(version)

    check_pyramid_args(image, 3, mpp, tile)
    if labels is not None:
        check_pyramid_args(labels, 2, mpp, tile)
    path = Path(path)
    root = zarr.open_group(str(path), mode="w-", zarr_format=fmt.zarr_format)
    name = output_name(path).split(".")[0]
    levels, _ = _write_levels(
        root, image, tile=tile, halve=halve_rgb, spool_dir=path.parent, progress=progress, name=output_name(path)
    )
    channels = [
        {
            "label": c,
            "color": color,
            "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            "active": True,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
        }
        for c, color in zip("RGB", ("FF0000", "00FF00", "0000FF"), strict=True)
    ]
    _write_multiscales(
        root,
        levels,
        fmt,
        mpp=mpp,
        channel_axis=True,
        name=name,
        metadata={
            "method": "2x2 box mean (PIL Image.reduce)",
            "omero": {
                "name": name,
                "version": fmt.version,
                "channels": channels,
                "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0},
            },
        },
    )
    if labels is None:
        return levels, None, 1.0
    group = root.require_group("labels")
    group.attrs["labels"] = [LABEL_NAME]
    label_group = group.require_group(LABEL_NAME)
    priority = rarity_priority(labels)
    label_levels, captured = _write_levels(
        label_group,
        labels,
        tile=tile,
        halve=lambda band: halve_labels(band, priority),
        spool_dir=path.parent,
        progress=False,
        name=f"{output_name(path)} labels",
        capture_max=capture_max,
    )
    _write_multiscales(
        label_group,
        label_levels,
        fmt,
        mpp=mpp,
        channel_axis=False,
        name=LABEL_NAME,
        metadata={"method": "2x2 mode, ties to the rarer class"},
    )
    _write_label_colours(group, classes, fmt)
    if captured is None:
        return levels, None, 1.0
    return levels, captured, labels.shape[1] / captured.shape[1]


def _write_levels(
    group, source, *, tile: int, halve, spool_dir: Path, progress: bool, name: str, capture_max: int = 0
) -> tuple[list[LevelInfo], np.ndarray | None]:
    """One Zarr array per level (`0`, `1`, …), filled band by band from the shared level producer; also the first
    level whose sides are ≤ `capture_max` (when asked)."""
    rgb = len(source.shape) == 3
    v3 = group.metadata.zarr_format == 3
    with LevelStream(
        source, tile, halve, spool_dir=spool_dir, capture_max=capture_max, progress=progress, name=name
    ) as stream:
        for k, (w, h), bands in stream:
            shape, chunks = ((3, h, w), (3, tile, tile)) if rgb else ((h, w), (tile, tile))
            array = group.create_array(
                str(k), shape=shape, chunks=chunks, dtype="uint8", fill_value=0, **_storage(rgb, v3, tile, w)
            )
            y0 = 0
            for band in bands:
                if rgb:
                    array[:, y0 : y0 + band.shape[0], :] = np.moveaxis(band, 2, 0)
                else:
                    array[y0 : y0 + band.shape[0], :] = band
                y0 += band.shape[0]
    return stream.levels, stream.captured


def _storage(rgb: bool, v3: bool, tile: int, width: int) -> dict:
    """Blosc-zstd (byte shuffle for RGB, bit shuffle for labels); Zarr v2 keys nested by `/` as NGFF 0.4 asks, or
    Zarr v3 shards of one tile row (`SHARD_CHUNKS` chunks wide)."""
    if not v3:
        from numcodecs import Blosc

        compressor = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE if rgb else Blosc.BITSHUFFLE)
        return {"compressors": compressor, "chunk_key_encoding": {"name": "v2", "separator": "/"}}
    from zarr.codecs import BloscCodec

    codec = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle" if rgb else "bitshuffle", typesize=1)
    wide = tile * min(SHARD_CHUNKS, -(-width // tile))
    return {"compressors": codec, "shards": (3, tile, wide) if rgb else (tile, wide)}


def _write_multiscales(
    group, levels: list[LevelInfo], fmt, *, mpp: float, channel_axis: bool, name: str, metadata: dict
) -> None:
    from ome_zarr.writer import write_multiscales_metadata

    width, height = levels[0].width, levels[0].height
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    datasets = []
    for k, level in enumerate(levels):
        # Levels are rounded up when halved, so the exact pixel size of level k is the extent over its pixel count.
        scale = [mpp * height / level.height, mpp * width / level.width]
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [{"type": "scale", "scale": ([1.0] if channel_axis else []) + scale}],
            }
        )
    if channel_axis:
        axes = [{"name": "c", "type": "channel"}, *axes]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=name, metadata=metadata)


def _write_label_colours(labels_group, classes: Sequence[dict], fmt) -> None:
    from ome_zarr.writer import write_label_metadata

    # Value 0 is "no label" in NGFF viewers: unknown stays transparent, every other class gets its colour.
    colours = [
        {"label-value": int(c["id"]), "rgba": [*map(int, c["color"]), 0 if int(c["id"]) == 0 else 255]} for c in classes
    ]
    properties = [{"label-value": int(c["id"]), "class": str(c["name"])} for c in classes]
    write_label_metadata(
        labels_group, LABEL_NAME, colors=colours, properties=properties, fmt=fmt, source={"image": "../../"}
    )
