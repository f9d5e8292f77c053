"""Option factories shared by several commands, so a flag means the same everywhere."""

from __future__ import annotations

import click


def out_option(help_text: str):
    return click.option("--out", "-o", required=True, type=click.Path(file_okay=True, dir_okay=True, writable=True), help=help_text)


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output instead of refusing.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
SEED = click.IntRange(0, 2**32 - 1)  # what numpy and torch generators accept
seed_option = click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (split, tile sampling).")


def tile_options(f):
    """Options shared by `extract` and `import` (listed in --help in this order)."""
    options = [
        click.option("--tile", "tile_size", type=click.IntRange(16), default=512, show_default=True, help="Tile size in pixels at --mpp."),
        click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True, help="Target resolution, µm per pixel."),
        click.option("--classes", default=None, help="Class map: a built-in name (paper5) or a YAML/JSON file. Default: one class per annotation name."),
        click.option(
            "--unmapped",
            type=click.Choice(["error", "others", "ignore"]),
            default="error",
            show_default=True,
            help="What to do with annotation classes the map does not know.",
        ),
        click.option("--min-annotated", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True, help="Least annotated fraction of a labelled tile."),
        click.option("--region", "region_size", type=click.IntRange(1), default=2048, show_default=True, help="Region size (px at --mpp) for the mask model."),
        click.option("--region-mask", "region_mask_size", type=click.IntRange(1), default=128, show_default=True, help="Region masks are downsampled to this size."),
        click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True, help="Share of slides (images) held out."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


#: Options of `extract`/`import` that a dataset fixes; adding to an existing dataset takes them from it.
DATASET_OPTIONS = ("tile_size", "mpp", "region_size", "region_mask_size", "classes")


def dataset_options(ctx: click.Context) -> tuple:
    """The values of `DATASET_OPTIONS`, in that order: as given, or None when not given, so that the API takes an
    existing dataset's own (a second import adds to the first without repeating them), else the defaults."""
    from click.core import ParameterSource

    defaulted = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    return tuple(None if ctx.get_parameter_source(k) in defaulted else ctx.params[k] for k in DATASET_OPTIONS)


def output_format_options(f):
    """`--format` and `--annotations`: what `generate` and `pyramid` write beside the image."""
    from wsi_synth.io.outputs import FORMATS

    f = click.option(
        "--annotations", default="geojson", show_default=True, help="Annotation files beside the image: geojson (QuPath), asap (ASAP XML), or both: geojson,asap."
    )(f)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="tiff: Aperio-style (OpenSlide, QuPath, ASAP); ome-tiff: OME-XML, levels in SubIFDs (Bio-Formats, OMERO); "
        "ome-zarr: NGFF v0.4 folder with labels (napari, vizarr, QuPath). Default: from the --out name "
        "(.ome.zarr, .ome.tiff), else tiff.",
    )(f)
