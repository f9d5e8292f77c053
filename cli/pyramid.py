"""`wsi-synth pyramid`: an existing image (and label map) → viewer-ready pyramid, label pyramid and GeoJSON."""

from __future__ import annotations

import json

import click

from wsi_synth.options import PYRAMID, TIFF_TILE

from .options import quiet_option, renamed_option, spec_options, take_renamed


@click.command(
    "pyramid",
    epilog="""\b
Examples:
  wsi-synth pyramid big.tif --mpp 0.5 --out s.tiff
  wsi-synth pyramid big.tif --labels labels.png --legend legend.yaml --mpp 0.25 --out s.tiff
  wsi-synth pyramid big.tif --labels l.png --legend legend.yaml --mpp 0.25 --out s.ome.zarr --annotations geojson,asap
Writes s.tiff (JPEG pyramid), and with --labels also s.mask.tiff (LZW label pyramid) and s.geojson (QuPath);
with --format ome-tiff s.ome.tiff and s.mask.ome.tiff; with --format ome-zarr one s.ome.zarr folder holding
the image and its labels; with --annotations asap s.xml (ASAP).""",
)
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@spec_options(PYRAMID)
@renamed_option("--tile", TIFF_TILE)
@quiet_option
def command(image: str, quiet: bool, **options):
    """Write IMAGE as a pyramid that OpenSlide, QuPath, ASAP and Bio-Formats (or, as OME-Zarr, napari) open."""
    from wsi_synth.api import pyramid

    result = pyramid(image, **take_renamed(options, "--tile", TIFF_TILE), progress=not quiet)
    click.echo(json.dumps(result, indent=2))
