"""Each training source's real magnification, measured from its nuclei (issue 13: one µm/px for every source).

    python examples/default_model/source_scale.py [--data ../shared/data] [--images 30]

Tile collections rarely state their µm/px, and the bundled model's sources do not agree: LC25000's 224 px tiles are
a downscaled 40× photograph, WSSS4LUAD's are cut near 10×. Nuclei are the ruler. A fixed-pixel detector
(haematoxylin channel by `skimage.color.rgb2hed`, Otsu threshold, compact components) reports the median nucleus
diameter in pixels; its bias depends on how many pixels a nucleus spans, so a source is compared with references of
known µm/px *at the same pixel scale*:

1. References: MoNuSeg's two lung tiles (0.2527 µm/px, their XML) and CMU-1-Small-Region (0.499 µm/px, its SVS
   metadata), resampled to 0.8–2 µm/px, where the detector's diameter falls steadily with µm/px.
2. A source is resampled by factors s; where its diameter d(s) lies on the reference curve, the curve gives the µm/px
   m it corresponds to, and the source's own µm/px is m·s. The median over s is the estimate; the spread is the
   range over s and over the two references.
3. A source whose diameter barely changes when it is halved (d(1) / d(0.5) < 1.3) is not measured: the detector is
   seeing chromatin or nuclear rims there, not nuclei (OCDC's pale, vesicular nuclei), and its stated µm/px stands.

Prints JSON: per source, the estimated µm/px and its range, and the `--scale` that brings it to `--target` µm/px.
Nuclei differ between tissues (lymphocytes ~7 µm, carcinoma nuclei 10 µm and more), so read the figures to ±30%:
they separate 0.5 from 1 µm/px, not 0.9 from 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = {
    "wsss4luad_test": "tiles_masks/wsss4luad_test/img/*.png",
    "wsss4luad_val": "tiles_masks/wsss4luad_val/img/*.png",
    "ocdc_oscc": "tiles_masks/ocdc_oscc/images/*.jpg",
    "lc25000_lung_aca": "tiles/lc25000_224/lung_aca/*.jpeg",
    "lc25000_lung_scc": "tiles/lc25000_224/lung_scc/*.jpeg",
}
# µm/px where the detector's diameter falls strictly (both references; it levels off past 1.6)
REFERENCE_RANGE = (0.8, 1.6)
SHRINK = 1.3  # least d(1) / d(0.5) of a source whose nuclei the detector actually sees


def nucleus_diameters(rgb: np.ndarray) -> list[float]:
    """Equivalent diameters (px) of compact haematoxylin-dense components."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    h = rgb2hed(rgb)[..., 0]
    return [
        r.equivalent_diameter_area
        for r in regionprops(label(h > threshold_otsu(h)))
        if r.area >= 4 and r.solidity >= 0.85
    ]


def resized(rgb: np.ndarray, s: float) -> np.ndarray:
    image = Image.fromarray(rgb)
    return np.asarray(
        image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.Resampling.LANCZOS)
    )


def median_diameter(images: list[np.ndarray], s: float) -> float:
    return float(np.median([d for rgb in images for d in nucleus_diameters(resized(rgb, s))]))


def reference_curve(images: list[np.ndarray], mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """(µm/px, median diameter px) over the monotonic range, µm/px ascending."""
    targets = np.geomspace(*REFERENCE_RANGE, 9)
    return targets, np.array([median_diameter(images, mpp / m) for m in targets])


def estimate(images: list[np.ndarray], curve: tuple[np.ndarray, np.ndarray]) -> list[float]:
    """The source's µm/px implied at each resampling factor whose diameter lies on the reference curve."""
    mpps, diameters = curve
    found = []
    for s in np.geomspace(1, 0.25, 9):
        d = median_diameter(images, s)
        if diameters.min() <= d <= diameters.max():
            found.append(float(np.interp(d, diameters[::-1], mpps[::-1]) * s))  # diameters fall as µm/px rises
    return found


def load(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    parser.add_argument("--images", type=int, default=30, help="Images per source (sorted by name).")
    parser.add_argument("--target", type=float, default=1.0, help="Common µm/px the recipe resamples to.")
    args = parser.parse_args()
    import openslide

    data = Path(args.data)
    with openslide.OpenSlide(str(data / "slides" / "CMU-1-Small-Region.svs")) as slide:
        cmu1 = np.asarray(slide.read_region((200, 200), 0, (1800, 2600)).convert("RGB"))
    references = {
        "monuseg_lung (0.2527 µm/px)": reference_curve(
            load(sorted((data / "annotations" / "monuseg_lung").glob("*.tif"))), 0.2527
        ),
        "CMU-1-Small-Region (0.499 µm/px)": reference_curve([cmu1], 0.499),
    }
    report = {
        "target_mpp": args.target,
        "references": {
            k: dict(zip(np.round(m, 3).tolist(), np.round(d, 2).tolist(), strict=True))
            for k, (m, d) in references.items()
        },
    }
    for name, pattern in SOURCES.items():
        images = load(sorted(data.glob(pattern))[: args.images])
        if median_diameter(images, 1) < SHRINK * median_diameter(images, 0.5):
            report[name] = {
                "mpp": None,
                "why": "the detector's diameter does not shrink with the tiles: it is not seeing nuclei",
            }
            continue
        found = [m for curve in references.values() for m in estimate(images, curve)]
        if not found:
            report[name] = {"mpp": None, "why": "its nuclei never fall on the reference curve"}
            continue
        mpp = float(np.median(found))
        report[name] = {
            "mpp": round(mpp, 2),
            "range": [round(min(found), 2), round(max(found), 2)],
            "scale_to_target": round(mpp / args.target, 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
