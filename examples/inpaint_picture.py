"""The README's inpainting picture: a round region of CMU-1-Small-Region regenerated as stroma by a model.

    python examples/inpaint_picture.py [--model MODEL] [--slide SLIDE] [--out docs/images/inpaint_before_after.jpg]

Writes the region as QuPath GeoJSON, inpaints it (`wsi_synth.inpaint`, what `wsi-synth inpaint SLIDE regions.geojson
--class stroma` runs), and puts the
slide's crop around the region (the region outlined in green) beside the same crop of the edited slide.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def region_geojson(cx: int, cy: int, radius: int, path: Path) -> None:
    from shapely.geometry import Point, mapping

    feature = {
        "type": "Feature",
        "geometry": mapping(Point(cx, cy).buffer(radius, 64)),
        "properties": {"classification": {"name": "stroma"}},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def main() -> None:
    import openslide
    import tifffile
    from PIL import Image, ImageDraw

    import wsi_synth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model bundle (default: the bundled one).")
    parser.add_argument(
        "--slide", type=Path, default=ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "inpaint_before_after.jpg")
    parser.add_argument("--center", type=int, nargs=2, default=(1200, 1300), help="The region's centre, level-0 x y.")
    parser.add_argument("--radius", type=int, default=150)
    args = parser.parse_args()
    cx, cy = args.center
    side = 4 * args.radius
    box = (cx - side // 2, cy - side // 2)
    with tempfile.TemporaryDirectory() as tmp:
        regions, edited = Path(tmp) / "regions.geojson", Path(tmp) / "edited.tiff"
        region_geojson(cx, cy, args.radius, regions)
        wsi_synth.inpaint(args.slide, regions, edited, model=args.model, class_="stroma", progress=False)
        after = Image.fromarray(tifffile.imread(edited, level=0)[box[1] : box[1] + side, box[0] : box[0] + side, :3])
    with openslide.OpenSlide(str(args.slide)) as slide:
        before = slide.read_region(box, 0, (side, side)).convert("RGB")
    r, c = args.radius, side // 2
    ImageDraw.Draw(before).ellipse((c - r, c - r, c + r, c + r), outline=(40, 200, 60), width=3)
    sheet = Image.new("RGB", (2 * side + 12, side), "white")
    sheet.paste(before, (0, 0))
    sheet.paste(after, (side + 12, 0))
    sheet.save(args.out, quality=90)
    print(json.dumps({"out": str(args.out), "slide": str(args.slide), "center": [cx, cy], "radius": args.radius}))


if __name__ == "__main__":
    main()
