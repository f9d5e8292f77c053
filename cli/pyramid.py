"""`wsi-synth pyramid`: an existing image (and label map) → viewer-ready pyramid, label pyramid and GeoJSON."""

from __future__ import annotations

import json

import click

from cli.options import output_format_options, overwrite_option, quiet_option


@click.command(
    "pyramid",
    epilog="""\b
Examples:
  wsi-synth pyramid big.tif --mpp 0.5 --out s.tiff
  wsi-synth pyramid big.tif --labels labels.png --legend legend.yaml --mpp 0.25 --out s.tiff
  wsi-synth pyramid big.tif --labels labels.png --legend legend.yaml --mpp 0.25 --out s.ome.zarr --annotations geojson,asap
Writes s.tiff (JPEG pyramid), and with --labels also s.mask.tiff (LZW label pyramid) and s.geojson (QuPath);
with --format ome-tiff s.ome.tiff and s.mask.ome.tiff; with --format ome-zarr one s.ome.zarr folder holding
the image and its labels; with --annotations asap s.xml (ASAP).""",
)
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
    from wsi_synth.api import pyramid

    result = pyramid(
        image, out, mpp=mpp, labels=labels, legend=legend, tile=int(tile), quality=quality, format=fmt, annotations=annotations, overwrite=overwrite, progress=not quiet
    )
    click.echo(json.dumps(result, indent=2))
