"""Does the decode's tile grid show in flat glass? Seams of the tiled decode at several tile overlaps.

    python -m benchmarks.quality.bench_decode_seams [--model M] [--size 2048] [--seed 0] [--steps 4]
        [--overlaps 2 4 8]

One slide's latents and class map (`generate`, default settings but `--steps`), decoded again with decode tiles of
2d latent px overlapping by each of `--overlaps` latent px. The measure, in glass (class `background`, eroded 6 px
from any other class, where a seam shows most): the column (row) mean of the absolute step between neighbouring
pixels of the 5 px box-filtered grey image, folded at the decode tiles' period; the largest phase over the median
phase. A tile seam stands out at its phase; ~1.1 is this measure's floor on this model's glass texture (what a
period with no seam gives). Also the decode's seconds and work against one plain decode. Prints JSON.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.common import ROOT, emit, machine


def slide_latents(model: str, size: int, seed: int, steps: int, work: Path):
    """(latents, class map at output px, decoded image object) of one generated slide."""
    import wsi_synth.io.outputs as outputs
    from wsi_synth.api import generate

    captured = {}
    write = outputs.write_slide_outputs

    def capture(image, labels, out, **settings):
        captured["image"], captured["labels"] = image, labels
        return write(image, labels, out, **settings)

    with mock.patch.object(outputs, "write_slide_outputs", capture):
        generate(model, work / "s.tiff", size=size, subtype="adenocarcinoma", seed=seed, steps=steps, overwrite=True)
    image = getattr(captured["image"], "image", captured["image"])  # under the section's glass, if any
    return np.asarray(image.latents[:]), np.asarray(captured["labels"][0:size]), image


def seam_ratio(image: np.ndarray, glass: np.ndarray, period: int) -> list[float]:
    from scipy import ndimage

    low = ndimage.uniform_filter(image.astype(np.float32).mean(-1), 5)
    ratios = []
    for axis in (0, 1):
        step = np.abs(np.diff(low, axis=axis))
        both = glass[1:] & glass[:-1] if axis == 0 else glass[:, 1:] & glass[:, :-1]
        if axis == 0:
            step, both = step.T, both.T
        counts = both.sum(0)
        column = np.where(counts > 100, (step * both).sum(0) / np.maximum(counts, 1), np.nan)
        phases = np.array([np.nanmean(column[k::period]) for k in range(period)])
        ratios.append(round(float(np.nanmax(phases) / np.nanmedian(phases)), 3))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    from scipy import ndimage

    from wsi_synth.generation.decode import DecodedImage
    from wsi_synth.models.bundle import open_bundle

    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    bundle = open_bundle(model)
    work = Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    latents, labels, made = slide_latents(model, args.size, args.seed, args.steps, work)
    background = [c["name"] for c in bundle.classes].index("background")
    glass = ndimage.binary_erosion(labels == background, iterations=6)
    codec = bundle.load_codec(device="cpu")
    doc: dict = {"benchmark": "decode_seams", "machine": machine(), "model": model, "size": args.size, "runs": []}
    doc["glass_share"] = round(float(glass.mean()), 3)
    for overlap in args.overlaps:
        crop = made.tile // 2
        image = DecodedImage(
            codec, latents, bundle.latent.scale, made.factor, crop, (args.size,) * 2, "cpu", overlap=overlap
        )
        started = time.perf_counter()
        pixels = image[0 : args.size]
        doc["runs"].append(
            {
                "tile": image.tile,
                "overlap": overlap,
                "seconds": round(time.perf_counter() - started, 1),
                "work_vs_plain_decode": round(image.decoded_latent_px / (latents.shape[1] * latents.shape[2]), 2),
                "seam_ratio_rows_cols": seam_ratio(pixels, glass, (image.tile - overlap) * made.factor),
                "no_seam_period_rows_cols": seam_ratio(pixels, glass, 100),
            }
        )
    emit(doc)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
