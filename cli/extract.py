"""`wsi-synth extract`: annotated slides → training dataset."""

from __future__ import annotations

import click

from .options import dataset_options, out_option, overwrite_option, quiet_option, seed_option, tile_options


@click.command(
    "extract",
    epilog="""\b
Examples:
  wsi-synth extract slide.svs slide.geojson --out data/
  wsi-synth extract slides/ annotations/ --classes paper5 --subtypes subtypes.csv --out data/ --workers 2
  wsi-synth extract slides/ all.geojson --out data/          # features carry a 'slide' property
Re-running the same command resumes: finished slides (by sha256) are skipped.""",
)
@click.argument("slides", type=click.Path(exists=True))
@click.argument("annotations", type=click.Path(exists=True))
@out_option("Dataset folder to create (or resume).")
@tile_options
@click.option(
    "--min-tissue",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Least tissue fraction of an unlabelled tile.",
)
@click.option(
    "--unlabelled-per-slide",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Most unlabelled (tissue, not annotated) tiles per slide.",
)
@click.option(
    "--subtype", default=None, help="Subtype of every slide (else --subtypes, else each slide's folder name)."
)
@click.option(
    "--subtypes",
    "subtypes_csv",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV with columns slide,subtype.",
)
@click.option(
    "--slide-mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Level-0 µm/px for slides whose metadata lacks it.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Tile reader processes (each opens the slide).",
)
@seed_option
@overwrite_option
@quiet_option
@click.pass_context
def command(
    ctx,
    slides,
    annotations,
    out,
    tile_size,
    mpp,
    classes,
    unmapped,
    region_size,
    region_mask_size,
    min_annotated,
    test_fraction,
    min_tissue,
    unlabelled_per_slide,
    subtype,
    subtypes_csv,
    slide_mpp,
    workers,
    seed,
    overwrite,
    quiet,
):
    """Cut labelled tiles, unlabelled tiles and region masks from annotated SLIDES.

    SLIDES is a slide file or a folder of slides. ANNOTATIONS is one file (QuPath GeoJSON, Aperio or ASAP
    XML) or a folder of per-slide files matched by name. Into an existing dataset, --tile, --mpp, --region,
    --region-mask and --classes default to the dataset's own.
    """
    from wsi_synth.api import extract

    tile, mpp, region, region_mask, classes = dataset_options(ctx)
    summary = extract(
        slides,
        annotations,
        out,
        tile=tile,
        mpp=mpp,
        classes=classes,
        unmapped=unmapped,
        min_annotated=min_annotated,
        region=region,
        region_mask=region_mask,
        test_fraction=test_fraction,
        min_tissue=min_tissue,
        unlabelled_per_slide=unlabelled_per_slide,
        subtype=subtype,
        subtypes=subtypes_csv,
        slide_mpp=slide_mpp,
        workers=workers,
        seed=seed,
        overwrite=overwrite,
        progress=not quiet,
    )
    for rec in summary.slides_done:
        c = rec["counts"]
        click.echo(
            f"{rec['name']}: {c['labelled']} labelled, {c['unlabelled']} unlabelled, {c['regions']} regions "
            f"({rec['split']}, subtype {rec['subtype']})"
        )
    for name in summary.slides_skipped:
        click.echo(f"{name}: already in the dataset, skipped")
    notes = {
        "unclassified annotations ignored": summary.unclassified_ignored,
        "unmapped annotations ignored": summary.unmapped_ignored,
        "invalid polygons repaired": summary.repaired,
    }
    click.echo("; ".join(f"{k}: {v}" for k, v in notes.items() if v) or "all annotations used")
    click.echo(f"dataset: {summary.dataset}  (wsi-synth info {summary.dataset})")
