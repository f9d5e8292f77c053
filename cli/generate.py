"""`wsi-synth generate`: a synthetic slide and its mask, at any size, from a model bundle."""

from __future__ import annotations

import json

import click

from wsi_synth.options import GENERATE, TIFF_TILE

from .options import quiet_option, renamed_option, spec_options, take_renamed
from .progress import ProgressBars


@click.command(
    "generate",
    epilog="""\b
Examples:
  wsi-synth generate --model model/ --size 4096 --subtype squamous --out s.tiff
  wsi-synth generate --model model/ --size 100000 --subtype squamous --out s.tiff --device cuda --batch-size 64
  wsi-synth generate --model model/ --size 8192 --height 6000 --mask regions.geojson --out s.tiff
  wsi-synth generate --model model/ --size 100000 --subtype squamous --out s.tiff --dry-run --device cuda
  wsi-synth generate --model model/ --size 4096 --subtype squamous --solver ddim --steps 50 --out s.tiff
  wsi-synth generate --model model/ --size 16384 --subtype squamous --out s.ome.zarr --annotations geojson,asap
  wsi-synth generate --model model/ --count 1000 --size 256 --out tiles/   # images/, masks/, legend, manifest
  wsi-synth generate --model model/ --count 1000 --size 256 --mask my_masks/ --out tiles/   # new tissue for your masks
Writes s.tiff (image pyramid), s.mask.tiff (labels), s.geojson (QuPath annotations), s.json (run record);
--format ome-tiff writes s.ome.tiff and s.mask.ome.tiff, --format ome-zarr one s.ome.zarr folder with the
labels inside; --annotations asap adds s.xml (ASAP).
An interrupted run continues with --resume (same output as an uninterrupted one); a second run on the
same --out is refused while the first runs.""",
)
@spec_options(GENERATE)
@renamed_option("--tile", TIFF_TILE)
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@quiet_option
def command(as_json: bool, quiet: bool, **options):
    """Generate a synthetic whole-slide image and its tissue mask."""
    from wsi_synth.api import generate

    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    options = take_renamed(options, "--tile", TIFF_TILE)
    with ProgressBars() as bars:
        result = generate(**options, progress=not quiet, log=log, on_progress=None if quiet else bars)
    click.echo(
        _plan_text(result)
        if options["dry_run"] and options["count"] is None and not as_json
        else json.dumps(result, indent=2)
    )


def _plan_text(doc: dict) -> str:
    from wsi_synth.generation.plan import Plan

    plan = Plan.from_json(doc)
    width, height = plan.output_px
    planner = f"planner {plan.planner['name']} (context {plan.planner['context']} latent px)"
    lines = [f"output {width}×{height} px, {plan.steps} steps, {planner}"]
    for name, s in plan.stages.items():
        crops = f"{'' if s.crops_exact else '~'}{s.crops_per_step:,} crops/step ({s.crops_per_step / s.n0:.2f}× N0)"
        evaluations = f"{'' if s.evaluations_exact else '~'}{s.evaluations:,} denoiser evaluations"
        canvas = f"canvas {s.canvas[1]}×{s.canvas[0]}, crop {s.crop}"
        steps = f"{s.steps} {s.solver or plan.solver} steps" + (" (student)" if s.solver == "distilled" else "")
        lines.append(f"  {name}: {canvas}, {steps}, {crops}, {evaluations}, {s.windows} window(s)")
    lines.append(f"  memory (canvases): {plan.memory_bytes / 1e9:.2f} GB")
    lines += [f"  note: {note}" for note in plan.notes]
    p = plan.projection
    if p:
        lines.append(f"projected on {p['device']}: {_duration(p['total_s'])} in all")
        for name in plan.stages:
            s = p[name]
            lines.append(
                f"  {name}: denoiser {_duration(s['denoiser_s'])} ({s['denoiser_crops_per_s']:,.0f} crops/s), "
                f"host {_duration(s['host_s'])} ({s['host_us_per_crop']:.0f} µs/crop)"
            )
        lines.append(f"  decode {_duration(p['decode_s'])}, write {_duration(p['write_s'])}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )
