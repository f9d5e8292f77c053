"""`wsi-synth evaluate`: fidelity (precision/recall, FID) and anti-copying (authenticity, C_T) report."""

from __future__ import annotations

import json

import click

from .options import overwrite_option, quiet_option, seed_option


@click.command(
    "evaluate",
    epilog="""\b
Examples:
  wsi-synth evaluate data/ synthetic/ --train data/ --split test --out report/          # offline features
  wsi-synth evaluate real/ s.tiff --features inception-2015-12-05.pt --out report/       # comparable FID
  wsi-synth evaluate real/ slides/ --mode resized --size 512 --out report/
REAL, SYNTHETIC and TRAIN are each a folder of tiles, a wsi-synth dataset, or pyramidal TIFFs.
With a dataset, --split picks REAL's split (TRAIN always uses its 'train' split).
When SYNTHETIC carries classes (a --count folder, a dataset, slides beside their s.mask.tiff and s.json) and
REAL is a dataset, the report adds per-class figures: which class each class's tiles look like.""",
)
@click.argument("real", type=click.Path(exists=True))
@click.argument("synthetic", type=click.Path(exists=True))
@click.option(
    "--train",
    type=click.Path(exists=True),
    default=None,
    help="Training tiles: enables authenticity, C_T and the gallery.",
)
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False), help="Report folder (report.json, report.html)."
)
@click.option(
    "--features",
    default="offline",
    show_default=True,
    help="'offline' or a TorchScript file (inception-2015-12-05.pt, vgg16.pt).",
)
@click.option(
    "--feature-input",
    type=click.Choice(["uint8", "unit"]),
    default="uint8",
    show_default=True,
    help="What the TorchScript network takes: uint8 0-255 (NVIDIA's) or float 0-1.",
)
@click.option(
    "--k", type=click.IntRange(1), default=3, show_default=True, help="Neighbours for the precision/recall manifolds."
)
@click.option(
    "--size",
    type=click.IntRange(16),
    default=256,
    show_default=True,
    help="Tiles are resized to this before feature extraction.",
)
@click.option(
    "--mode",
    type=click.Choice(["tiled", "resized"]),
    default="tiled",
    show_default=True,
    help="How slides become tiles.",
)
@click.option("--tile", type=click.IntRange(16), default=512, show_default=True, help="Tile size for --mode tiled.")
@click.option("--split", default=None, help="Split of REAL when it is a dataset (e.g. test).")
@click.option(
    "--source",
    default=None,
    help="Of REAL and TRAIN datasets, only the sources whose id starts with this (e.g. wsss4luad).",
)
@click.option(
    "--max-tiles",
    type=click.IntRange(1),
    default=None,
    help="At most this many tiles per input: a sample drawn by --seed over all of it.",
)
@click.option(
    "--cells",
    type=click.IntRange(1),
    default=None,
    help="k-means cells for C_T (default: from the sample size, at most 20).",
)
@click.option(
    "--min-per-cell",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Cells with fewer samples are left out of C_T.",
)
@click.option(
    "--gallery",
    type=click.IntRange(0),
    default=16,
    show_default=True,
    help="Synthetic tiles shown beside their nearest training tile.",
)
@click.option(
    "--seam-period",
    type=click.IntRange(2),
    default=None,
    help="Crop period in px for the seam score of synthetic slides.",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, …")
@seed_option
@overwrite_option
@quiet_option
def command(
    real,
    synthetic,
    train,
    out,
    features,
    feature_input,
    k,
    size,
    mode,
    tile,
    split,
    source,
    max_tiles,
    cells,
    min_per_cell,
    gallery,
    seam_period,
    batch_size,
    device,
    seed,
    overwrite,
    quiet,
):
    """Measure how close SYNTHETIC tiles are to REAL ones, and whether they copy TRAIN."""
    from wsi_synth.api import evaluate

    report = evaluate(
        real,
        synthetic,
        out,
        train=train,
        features=features,
        feature_input=feature_input,
        k=k,
        size=size,
        mode=mode,
        tile=tile,
        split=split,
        source=source,
        max_tiles=max_tiles,
        cells=cells,
        min_per_cell=min_per_cell,
        gallery=gallery,
        seam_period=seam_period,
        batch_size=batch_size,
        device=device,
        seed=seed,
        overwrite=overwrite,
        progress=not quiet,
    )
    click.echo(json.dumps(report["metrics"], indent=2))
    for note in report["notes"]:
        click.echo(f"note: {note}", err=True)
    click.echo(f"report: {out}/report.html")
