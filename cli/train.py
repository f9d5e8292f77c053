"""`wsi-synth train codec|image|mask|layout`: the diffusion stages (and a small codec) on a dataset."""

from __future__ import annotations

import json

import click

from wsi_synth.models.conditioning import KINDS

from .options import SEED, quiet_option


@click.command(
    "train",
    epilog="""\b
Examples:
  wsi-synth train codec data/ --out model/ --config tiny --max-steps 2000
  wsi-synth train image data/ --out model/ --codec sd2-vae/ --config paper --device cuda
  wsi-synth train mask data/ --out model/ --resume
  wsi-synth train layout layouts/ --out model/     # layouts/: import --layouts … --region 2048
Presets: tiny (tests, CPU demos), paper (the paper's sizes); or a YAML file with the same keys.
Stages accumulate in one bundle; --resume continues exactly where a checkpoint left off.""",
)
@click.argument("stage", type=click.Choice(["codec", "image", "mask", "layout"]))
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False), help="Model bundle folder (created or added to)."
)
@click.option("--config", default="tiny", show_default=True, help="Preset (tiny, paper) or YAML file.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Training steps (overrides the config).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Batch size (overrides the config).")
@click.option(
    "--p-unc",
    type=click.FloatRange(0, 1),
    default=None,
    help="Share of unconditional (unlabelled, null-condition) draws.",
)
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, help="Steps between checkpoints.")
@click.option(
    "--sample-every", type=click.IntRange(1), default=None, help="Steps between preview PNGs (model/previews/)."
)
@click.option("--seed", type=SEED, default=None, help="Random seed (overrides the config).")
@click.option(
    "--conditioning",
    type=click.Choice(KINDS),
    default=None,
    help="Image stage: the paper's per-class masks, the crop's whole class map (one pass for every class), or "
    "spatial-global: the map and its class fractions as the class embedding, which reaches every block. Overrides "
    "the config.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, … (bf16/fp16 autocast on GPU).")
@click.option(
    "--codec",
    default=None,
    help="Use this VAE instead of training one: a local diffusers folder, or a hub id (downloaded).",
)
@click.option("--resume", is_flag=True, help="Continue from the stage's last checkpoint.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Train this stage again from the start (its network, checkpoint and previews are replaced; other stages "
    "are kept).",
)
@quiet_option
def command(
    stage,
    data,
    out,
    config,
    max_steps,
    batch_size,
    p_unc,
    checkpoint_every,
    sample_every,
    seed,
    conditioning,
    device,
    codec,
    resume,
    overwrite,
    quiet,
):
    """Train STAGE (codec, image, mask or layout) on the dataset DATA.

    The layout stage learns tissue layout at slide scale from a dataset of larger regions (for instance `import
    --layouts … --region 2048 --region-mask 32`); generate samples it first and starts the mask stage from it."""
    from wsi_synth.api import train

    result = train(
        stage,
        data,
        out,
        config=config,
        max_steps=max_steps,
        batch_size=batch_size,
        p_unc=p_unc,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every,
        seed=seed,
        conditioning=conditioning,
        device=device,
        codec=codec,
        resume=resume,
        overwrite=overwrite,
        progress=not quiet,
    )
    click.echo(json.dumps(result, indent=2))
