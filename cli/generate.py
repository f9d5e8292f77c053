"""`wsi-synth generate`: a synthetic slide and its mask, at any size, from a model bundle."""

from __future__ import annotations

import json

import click

from cli.options import SEED, output_format_options, overwrite_option, quiet_option
from cli.progress import ProgressBars
from wsi_synth.defaults import BOUNDARY_ROUGHNESS, LAYOUT_STRENGTH


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
  wsi-synth generate --model model/ --count 1000 --size 256 --out tiles/      # tiles/images, masks, legend.yaml, manifest.csv
Writes s.tiff (image pyramid), s.mask.tiff (labels), s.geojson (QuPath annotations), s.json (run record);
--format ome-tiff writes s.ome.tiff and s.mask.ome.tiff, --format ome-zarr one s.ome.zarr folder with the
labels inside; --annotations asap adds s.xml (ASAP).
An interrupted run continues with --resume (same output as an uninterrupted one); a second run on the
same --out is refused while the first runs.""",
)
@click.option(
    "--model", "-m", "model", type=click.Path(exists=True, file_okay=False), default=None, help="Model bundle folder (default: the bundled demonstration model)."
)
@click.option("--size", type=click.IntRange(min=0), required=True, help="Width in px (square unless --height).")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Write N independent tiles of --size with masks into the folder --out (images/, masks/, legend.yaml, manifest.csv); without --subtype each tile draws one.",
)
@click.option("--height", type=click.IntRange(min=0), default=None, help="Height in px (default: --size).")
@click.option("--subtype", default=None, help="Subtype prompt for the mask stage (one of the model's subtypes).")
@click.option("--mask", "mask_file", type=click.Path(dir_okay=False), default=None, help="Skip the mask stage: a label TIFF/PNG or QuPath GeoJSON.")
@click.option("--stretch", is_flag=True, help="Resize a --mask image of another aspect ratio to fit (else refused).")
@click.option("--out", "-o", required=True, type=click.Path(writable=True), help="Output: s.tiff, s.ome.tiff or s.ome.zarr.")
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="Solver steps per stage.")
@click.option(
    "--solver",
    type=click.Choice(["dpm-solver++", "ddim"]),
    default="dpm-solver++",
    show_default=True,
    help="DPM-Solver++(2M) (20 steps match 50 DDIM steps) or the paper's DDIM.",
)
@click.option("--eta", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="DDIM η (0 = deterministic; needs --solver ddim).")
@click.option("--omega", type=click.FloatRange(0), default=0.0, show_default=True, help="Classifier-free guidance of the image stage.")
@click.option("--mask-omega", type=click.FloatRange(0), default=0.0, show_default=True, help="Guidance of the mask stage.")
@click.option(
    "--boundary-roughness",
    type=click.FloatRange(0, 1),
    default=BOUNDARY_ROUGHNESS,
    show_default=True,
    help="Wander of class contours, calibrated on real annotations (0: smooth contours).",
)
@click.option(
    "--layout-strength",
    type=click.FloatRange(0, 1),
    default=LAYOUT_STRENGTH,
    show_default=True,
    help="Models with a layout stage: how far the mask stage departs from the slide-scale layout (0: the layout as drawn, 1: ignore it).",
)
@click.option("--planner", type=click.Choice(["shifted-grid", "random-patch", "fixed-grid"]), default="shifted-grid", show_default=True)
@click.option("--context", type=click.IntRange(0), default=None, help="shifted-grid context margin, latent px (default d/8).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True, help="Crops per denoiser call.")
@click.option("--decode-batch", type=click.IntRange(0, 1024), default=0, show_default=True, help="Tiles per codec call (0: 4 on CPU, 16 on GPU).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, …")
@click.option("--tile", type=click.Choice(["256", "512"]), default="512", show_default=True, help="TIFF tile size.")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@click.option("--dry-run", is_flag=True, help="Print the plan (canvases, crops per step, evaluations, memory, projected time) and stop.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its work folder.")
@click.option("--save-every", type=click.IntRange(1), default=5, show_default=True, help="Steps between saved states (for --resume).")
@click.option(
    "--max-memory",
    type=click.FloatRange(0),
    default=8.0,
    show_default=True,
    help="GB of canvases to hold in memory; beyond it they live in a zarr work store beside the output.",
)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="N > 1: start a local dask cluster of N worker processes.")
@click.option(
    "--threads",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="torch threads (0: one per core; with --workers, cores / N per worker). On a busy machine, fewer is often much faster.",
)
@click.option("--scheduler", default=None, help="tcp://HOST:PORT of a dask.distributed scheduler (one model per worker; shared filesystem).")
@output_format_options
@overwrite_option
@quiet_option
def command(
    model,
    size,
    count,
    height,
    subtype,
    mask_file,
    stretch,
    out,
    steps,
    solver,
    eta,
    omega,
    mask_omega,
    boundary_roughness,
    layout_strength,
    planner,
    context,
    batch_size,
    decode_batch,
    seed,
    device,
    tile,
    quality,
    dry_run,
    as_json,
    resume,
    save_every,
    max_memory,
    workers,
    threads,
    scheduler,
    fmt,
    annotations,
    overwrite,
    quiet,
):
    """Generate a synthetic whole-slide image and its tissue mask."""
    from wsi_synth.api import generate

    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    with ProgressBars() as bars:
        result = generate(
            model,
            out,
            size=size,
            height=height,
            count=count,
            subtype=subtype,
            mask=mask_file,
            stretch=stretch,
            steps=steps,
            solver=solver,
            eta=eta,
            omega=omega,
            mask_omega=mask_omega,
            boundary_roughness=boundary_roughness,
            layout_strength=layout_strength,
            planner=planner,
            context=context,
            batch_size=batch_size,
            decode_batch=decode_batch,
            seed=seed,
            device=device,
            tile=int(tile),
            quality=quality,
            dry_run=dry_run,
            resume=resume,
            save_every=save_every,
            max_memory=max_memory,
            workers=workers,
            threads=threads,
            scheduler=scheduler,
            format=fmt,
            annotations=annotations,
            overwrite=overwrite,
            progress=not quiet,
            log=log,
            on_progress=None if quiet else bars,
        )
    click.echo(_plan_text(result) if dry_run and count is None and not as_json else json.dumps(result, indent=2))


def _plan_text(plan: dict) -> str:
    lines = [
        f"output {plan['output_px'][0]}×{plan['output_px'][1]} px, {plan['steps']} {plan['solver']} steps, planner {plan['planner']['name']} "
        f"(context {plan['planner']['context']} latent px)"
    ]
    for name, s in plan["stages"].items():
        evals = s.get("evaluations", s.get("evaluations_estimate"))
        about = "" if s.get("crops_exact", True) else "~"
        lines.append(
            f"  {name}: canvas {s['canvas'][1]}×{s['canvas'][0]}, crop {s['crop']}, {about}{s['crops_per_step']:,} crops/step "
            f"({s['crops_per_step'] / s['n0']:.2f}× N0), ~{evals:,} denoiser evaluations, {s['windows']} window(s)"
        )
    lines.append(f"  memory (canvases): {plan['memory_bytes'] / 1e9:.2f} GB")
    lines += [f"  note: {note}" for note in plan.get("notes", [])]
    p = plan.get("projection")
    if p:
        lines.append(f"projected on {p['device']}: {_duration(p['total_s'])} in all")
        for name in ("mask", "image"):
            if name in p:
                s = p[name]
                lines.append(
                    f"  {name}: denoiser {_duration(s['denoiser_s'])} ({s['denoiser_crops_per_s']:,.0f} crops/s), "
                    f"host {_duration(s['host_s'])} ({s['host_us_per_crop']:.0f} µs/crop)"
                )
        lines.append(f"  decode {_duration(p['decode_s'])}, write {_duration(p['write_s'])}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
