"""`wsi-synth pyramid`: an existing image (and label map) → viewer-ready pyramid, label pyramid and GeoJSON."""

from __future__ import annotations

import json

import click

from cli.options import output_format_options, overwrite_option, quiet_option


@click.command("pyramid", epilog="""\b
Examples:
  wsi-synth pyramid big.tif --mpp 0.5 --out s.tiff
  wsi-synth pyramid big.tif --labels labels.png --legend legend.yaml --mpp 0.25 --out s.tiff
  wsi-synth pyramid big.tif --labels labels.png --legend legend.yaml --mpp 0.25 --out s.ome.zarr --annotations geojson,asap
Writes s.tiff (JPEG pyramid), and with --labels also s.mask.tiff (LZW label pyramid) and s.geojson (QuPath);
with --format ome-tiff s.ome.tiff and s.mask.ome.tiff; with --format ome-zarr one s.ome.zarr folder holding
the image and its labels; with --annotations asap s.xml (ASAP).""")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(writable=True), help="Output: s.tiff, s.ome.tiff or s.ome.zarr.")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), required=True, help="Level-0 µm per pixel of IMAGE.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None, help="uint8 class map of the same size (TIFF/PNG).")
@click.option("--legend", type=click.Path(exists=True, dir_okay=False), default=None, help="YAML/JSON: class value -> name (for the mask and GeoJSON).")
@click.option("--tile", type=click.Choice(["256", "512"]), default="512", show_default=True, help="Tile size.")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@output_format_options
@overwrite_option
@quiet_option
def command(image, out, mpp, labels, legend, tile, quality, fmt, annotations, overwrite, quiet):
    """Write IMAGE as a pyramid that OpenSlide, QuPath, ASAP and Bio-Formats (or, as OME-Zarr, napari) open."""
    from wsi_synth.io.atomic import check_not_inputs
    from wsi_synth.io.outputs import OutputPaths, annotation_formats, claim_outputs, open_image_lazily, write_slide_outputs

    kinds = annotation_formats(annotations)
    check_not_inputs(OutputPaths.beside(out, fmt, kinds).all(), [image, labels, legend])

    classes = _legend(legend) if legend else [{"id": i, "name": f"class {i}", "color": [0, 0, 0]} for i in range(256)]
    pixels = open_image_lazily(image)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.dtype == "uint16":  # 16-bit scans: scaled to 8 bits, not clipped
        pixels = (pixels.astype("float32") / 257.0).round().astype("uint8")
    label_map = open_image_lazily(labels, labels=True) if labels else None
    with claim_outputs(out):  # one run per output set
        result = write_slide_outputs(pixels, label_map, out, mpp=mpp, classes=classes, tile=int(tile), quality=quality,
                                     overwrite=overwrite, progress=not quiet, fmt=fmt, annotations=kinds)
    click.echo(json.dumps(result, indent=2))


def _legend(path: str) -> list[dict]:
    from wsi_synth.classes import read_legend, scheme

    names = read_legend(path)
    palette = {c.name: c.color for c in scheme([names[k] for k in sorted(names) if k])}
    return [{"id": k, "name": v, "color": list(palette.get(v, (0, 0, 0)))} for k, v in sorted(names.items())]
