"""Tissue on glass? What a slide's thumbnail shows, measured the same way on real and generated slides.

    python -m benchmarks.quality.bench_section SLIDE [SLIDE ...] [--real ../shared/data/slides/*.svs]

Each slide's thumbnail (1,024 px) goes through the tissue detector `extract` uses (`extraction.tissue.tissue_mask`:
saturation, Otsu, small objects removed), then, with its holes filled (lumens and alveoli are tissue's own):
- `tissue`: the share of the slide the section covers;
- `border_glass`: the share of the thumbnail's outermost ring that is glass (a section on a slide: 1);
- `pieces`: tissue parts larger than 1 % of the slide;
- `solidity`: the largest part's area over its convex hull's (a convex blob: 1; a real section's edge: below).
Real slides default to the two in ../shared/data (TCGA-CR-7395, a whole frozen section; CMU-1-Small-Region, a
crop). Prints JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED, emit, machine


def thumbnail_stats(path: Path, size: int = 1024) -> dict:
    import openslide
    from scipy import ndimage
    from skimage.measure import label, regionprops

    from wsi_synth.extraction.tissue import tissue_mask

    with openslide.OpenSlide(str(path)) as slide:
        rgb = np.asarray(slide.get_thumbnail((size, size)).convert("RGB"))
        dimensions = slide.dimensions
    # closing with the edge repeated (scipy's would erode the border to glass), then holes filled
    closed = ndimage.binary_closing(np.pad(tissue_mask(rgb), 4, mode="edge"), iterations=3)[4:-4, 4:-4]
    tissue = ndimage.binary_fill_holes(closed)
    parts = label(tissue)
    regions = sorted(regionprops(parts), key=lambda r: r.area, reverse=True)
    ring = np.concatenate([tissue[0], tissue[-1], tissue[:, 0], tissue[:, -1]])
    return {
        "slide": path.name,
        "px": [int(v) for v in dimensions],
        "tissue": round(float(tissue.mean()), 3),
        "border_glass": round(float(1 - ring.mean()), 3),
        "pieces": int(sum(r.area > 0.01 * tissue.size for r in regions)),
        "solidity": round(float(regions[0].solidity), 3) if regions else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", type=Path, nargs="+", help="generated slides (TIFF, OME-TIFF)")
    parser.add_argument("--real", type=Path, nargs="*", default=sorted((SHARED / "slides").glob("*.svs")))
    args = parser.parse_args()
    emit(
        {
            "benchmark": "section",
            "machine": machine(),
            "real": [thumbnail_stats(p) for p in args.real],
            "generated": [thumbnail_stats(p) for p in args.slides],
        }
    )


if __name__ == "__main__":
    main()
