"""The README's and model card's slide picture: a generated slide's thumbnail beside a real section, and level 0 beside
real tissue at the same scale.

    wsi-synth generate --size 16384 --subtype adenocarcinoma --out build/s16k.tiff
    python examples/default_model/slide_picture.py build/s16k.tiff [--dest docs/images/slide_16384.jpg]

Top: the generated slide's thumbnail with its mask in the model's colours; a real whole section for comparison
(`TCGA-CR-7395-01A-01-TS1.svs`: a frozen head and neck section without MPP, so only its layout compares). Bottom:
512 px at level 0 of the generated slide (where its mask is most varied) beside 512 px of a real WSSS4LUAD
adenocarcinoma image (~1.13 µm/px, the model's 1.1 µm/px), both shown 1:1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
THUMB = 760
LEVEL0 = 512


def thumbnail_pair(slide: Path) -> tuple[Image.Image, Image.Image]:
    import openslide

    with openslide.OpenSlide(str(slide)) as s:
        image = s.get_thumbnail((THUMB, THUMB)).convert("RGB")
    record = json.loads(slide.with_suffix(".json").read_text())
    colors = np.zeros((256, 3), np.uint8)
    for c in record["classes"]:
        colors[c["id"]] = c["color"]
    with openslide.OpenSlide(str(slide.with_name(slide.stem + ".mask.tiff"))) as m:
        level = m.get_best_level_for_downsample(m.dimensions[0] / THUMB)
        labels = np.asarray(m.read_region((0, 0), level, m.level_dimensions[level]).convert("L"))
    mask = Image.fromarray(colors[labels]).resize(image.size, Image.Resampling.NEAREST)
    return image, mask


def most_varied_corner(slide: Path) -> tuple[int, int]:
    """The level-0 corner of the 512 px window whose mask holds the most classes (ties: nearest the centre)."""
    import openslide

    with openslide.OpenSlide(str(slide.with_name(slide.stem + ".mask.tiff"))) as m:
        w, h = m.dimensions
        level = m.get_best_level_for_downsample(LEVEL0 / 8)
        scale = m.level_downsamples[level]
        labels = np.asarray(m.read_region((0, 0), level, m.level_dimensions[level]).convert("L"))
    step = max(1, int(LEVEL0 / scale))
    best, corner = (-1, 0.0), (w // 2 - LEVEL0 // 2, h // 2 - LEVEL0 // 2)
    for y in range(0, labels.shape[0] - step, step // 2):
        for x in range(0, labels.shape[1] - step, step // 2):
            window = labels[y : y + step, x : x + step]
            shares = np.bincount(window.ravel(), minlength=256) / window.size
            score = (int((shares > 0.1).sum()), -abs(x * scale - w / 2) - abs(y * scale - h / 2))
            if score > best:
                best, corner = score, (int(x * scale), int(y * scale))
    return corner


def level0(slide: Path) -> Image.Image:
    import openslide

    with openslide.OpenSlide(str(slide)) as s:
        return s.read_region(most_varied_corner(slide), 0, (LEVEL0, LEVEL0)).convert("RGB")


def real_pair() -> tuple[Image.Image, Image.Image]:
    import openslide

    with openslide.OpenSlide(str(SHARED / "slides" / "TCGA-CR-7395-01A-01-TS1.svs")) as s:
        section = s.get_thumbnail((THUMB, THUMB)).convert("RGB")
    tissue = Image.open(SHARED / "tiles_masks" / "wsss4luad_test" / "img" / "68.png").convert("RGB")
    x, y = (tissue.width - LEVEL0) // 2, (tissue.height - LEVEL0) // 2
    return section, tissue.crop((x, y, x + LEVEL0, y + LEVEL0))


def compose(panels: list[list[tuple[Image.Image, str]]], dest: Path) -> None:
    gap, label = 8, 18
    rows = [(max(p.height for p, _ in row), row) for row in panels]
    width = max(sum(p.width for p, _ in row) + gap * (len(row) - 1) for _, row in rows)
    height = sum(h + label for h, _ in rows) + gap * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for h, row in rows:
        x = 0
        for panel, caption in row:
            draw.text((x + 2, y + 2), caption, fill=(0, 0, 0))
            sheet.paste(panel, (x, y + label))
            x += panel.width + gap
        y += h + label + gap
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path, help="a generated slide (its .mask.tiff and .json beside it)")
    parser.add_argument("--dest", type=Path, default=ROOT / "docs" / "images" / "slide_16384.jpg")
    args = parser.parse_args()
    import openslide

    with openslide.OpenSlide(str(args.slide)) as s:
        w, h = s.dimensions
        mpp = float(s.properties.get("openslide.mpp-x", 0) or 0)
    thumb, mask = thumbnail_pair(args.slide)
    section, tissue = real_pair()
    side = f"{w:,} x {h:,} px, {w * mpp / 1000:.0f} mm" if mpp else f"{w:,} x {h:,} px"
    compose(
        [
            [
                (thumb, f"generated slide ({side})"),
                (mask, "its mask"),
                (section, "a real section (TCGA, frozen; scale unknown)"),
            ],
            [
                (level0(args.slide), f"generated, level 0 ({LEVEL0} px, {mpp:.2f} um/px)"),
                (tissue, "real WSSS4LUAD adenocarcinoma, same scale"),
            ],
        ],
        args.dest,
    )
    print(json.dumps({"picture": str(args.dest), "slide": str(args.slide), "size": [w, h]}))


if __name__ == "__main__":
    main()
