"""`wsi-synth info PATH`."""

from __future__ import annotations

import json

import click

from .options import json_option


@click.command(
    "info",
    epilog="""\b
Examples:
  wsi-synth info data/            # dataset: counts per class, subtype and split
  wsi-synth info s.tiff --json    # output pyramid: levels, tiles, compression, MPP, openslide check
  wsi-synth info slide.svs        # any slide openslide opens""",
)
@click.argument("path", type=click.Path(exists=True))
@json_option
def command(path, as_json):
    """Show what PATH holds: a dataset, a generated slide, or any slide."""
    from wsi_synth import describe
    from wsi_synth.info import render_text

    info = describe(path)
    click.echo(json.dumps(info, indent=2) if as_json else render_text(info))
