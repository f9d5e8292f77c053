"""`wsi-synth distill MODEL DATA`: a few-step student of a bundle's stage, trained into the bundle beside it."""

from __future__ import annotations

import json

import click

from wsi_synth.options import DISTILL

from .options import quiet_option, spec_options


@click.command(
    "distill",
    epilog="""\b
Examples:
  wsi-synth distill model/ data/ --steps 4                 # the image stage, for 1-4 steps
  wsi-synth distill model/ data/ --resume                  # continue an interrupted run
  wsi-synth distill model/ data/ --device cuda --batch-size 256 --max-steps 20000
  wsi-synth generate -m model/ --steps 4 --size 8192 --subtype adenocarcinoma --out s.tiff
DATA is the dataset the stage was trained on (or one with the same classes and tile size). generate, inpaint
and --count use the student when --steps is at most what it was distilled for (--solver auto, the default);
--solver dpm-solver++ keeps the teacher.""",
)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@spec_options(DISTILL)
@quiet_option
def command(model: str, data: str, quiet: bool, **options):
    """Distil a stage of MODEL into a student for a few steps (the teacher stays), on the dataset DATA."""
    from wsi_synth.api import distill

    click.echo(json.dumps(distill(model, data, **options, progress=not quiet), indent=2))
