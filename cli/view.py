"""`wsi-synth view PATH [PATH2]`: a local web viewer of a slide and its mask (two slides side by side, in step)."""

from __future__ import annotations

import click


@click.command(
    "view",
    epilog="""\b
Examples:
  wsi-synth view s.tiff                         # the slide, its mask (s.mask.tiff) and outlines (s.geojson)
  wsi-synth view real.svs s.ome.zarr            # a real slide beside a synthetic one, in step (same µm)
  wsi-synth view s.dcm --port 9000              # a DICOM folder; on a server: ssh -L 9000:127.0.0.1:9000 …
Opens nothing itself: open the printed URL in a browser. Ctrl-C stops it.""",
)
@click.argument("path", type=click.Path(exists=True))
@click.argument("path2", type=click.Path(exists=True), required=False)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 shows the slide to the network).",
)
def command(path: str, path2: str | None, port: int, host: str) -> None:
    """Show PATH (any output of ours, or a slide OpenSlide reads) in a browser: deep zoom, the mask as an overlay with
    its opacity and class legend, GeoJSON outlines, a scale bar; with PATH2, both side by side, in step."""
    from wsi_synth.api import view

    viewer = view(path, path2, port=port, host=host, block=False)
    click.echo(f"wsi-synth view: {viewer.url}  (Ctrl-C stops it)", err=True)
    try:
        viewer.thread.join() if viewer.thread else None
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
