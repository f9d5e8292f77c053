"""`wsi-synth import`: tile folders (with or without masks) → training dataset."""

from __future__ import annotations

import click

from .options import dataset_options, out_option, overwrite_option, quiet_option, seed_option, tile_options


@click.command(
    "import",
    epilog="""\b
Examples:
  wsi-synth import wsss/img --masks wsss/mask --legend wsss.yaml --subtype adenocarcinoma --tile 224 --out data/
  wsi-synth import lc25000/lung_scc --subtype squamous --tile 224 --out data/     # unlabelled tiles
  wsi-synth import --layouts wsss/layout_masks --legend wsss.yaml --subtype adenocarcinoma --out data/
                                          # label masks without images: region masks for the mask (layout) stage
legend.yaml maps mask values to class names, e.g. {0: tumour, 1: stroma, 3: unknown}.
Importing into an existing dataset adds a source; importing the same files twice is a no-op.""",
)
@click.argument("images", type=click.Path(exists=True, file_okay=False), required=False)
@out_option("Dataset folder to create or add to.")
@click.option(
    "--layouts",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Instead of IMAGES: a folder of label masks without images (tissue layouts), imported as region masks "
    "for the mask stage.",
)
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of label masks, matched to images by file stem.",
)
@click.option(
    "--legend", type=click.Path(exists=True, dir_okay=False), default=None, help="YAML/JSON: mask value -> class name."
)
@click.option("--subtype", default=None, help="Subtype of these tiles (the mask model's prompt).")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True, max=16),
    default=1.0,
    show_default=True,
    help="Resize images by this factor first (e.g. 0.5: 40x -> 20x).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="With --layouts: px between windows (default: half of --region). Smaller gives more, overlapping, windows.",
)
@click.option("--stretch", is_flag=True, help="Resize masks of another size than their image to fit (else refused).")
@tile_options
@seed_option
@overwrite_option
@quiet_option
@click.pass_context
def command(
    ctx,
    images,
    out,
    layouts,
    masks,
    legend,
    subtype,
    scale,
    stride,
    stretch,
    tile_size,
    mpp,
    classes,
    unmapped,
    region_size,
    region_mask_size,
    min_annotated,
    test_fraction,
    seed,
    overwrite,
    quiet,
):
    """Import a folder of tile IMAGES (optionally with masks) into a dataset, or with --layouts a folder of label
    masks without images (region masks for the mask stage: windows of --region px every --stride px, the last
    ones flush with each layout's far edges).

    Into an existing dataset, --tile, --mpp, --region, --region-mask and --classes default to the dataset's own.
    """
    from wsi_synth.api import import_tiles

    tile, mpp, region, region_mask, classes = dataset_options(ctx)
    s = import_tiles(
        images,
        out,
        layouts=layouts,
        masks=masks,
        legend=legend,
        subtype=subtype,
        scale=scale,
        stretch=stretch,
        stride=stride,
        tile=tile,
        mpp=mpp,
        classes=classes,
        unmapped=unmapped,
        min_annotated=min_annotated,
        region=region,
        region_mask=region_mask,
        test_fraction=test_fraction,
        seed=seed,
        overwrite=overwrite,
        progress=not quiet,
    )
    if s.skipped_existing:
        click.echo(f"{s.source}: already in {s.dataset}, nothing to do")
        return
    c = s.counts
    click.echo(
        f"{s.source}: {s.images} {'layouts' if layouts else 'images'} -> {c['labelled']} labelled, {c['unlabelled']} "
        f"unlabelled tiles, {c['regions']} regions"
        + (
            f"; {s.too_small} {'layouts smaller than a region' if layouts else 'images smaller than a tile'} skipped"
            if s.too_small
            else ""
        )
    )
    click.echo(f"dataset: {s.dataset}  (wsi-synth info {s.dataset})")
