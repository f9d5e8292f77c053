"""Fidelity where users look: tiles cut from generated *slides* (both subtypes) against held-out real tiles, beside
the model's own `--count` tiles, measured alike.

    python -m benchmarks.quality.bench_slide_fidelity [--model M] [--size 2048] [--seeds 0 1] [--tiles 1500]
        [--work DIR] [--window 6] [--draws 10] [--picture JPG]

1. The recipe's data (examples/default_model/import.sh: WSSS4LUAD, OCDC, LC25000 at 64 px, 1.1 µm/px). Held out:
   every tile of its test split, labelled and unlabelled, never trained on: of every source (`all`), and of each
   source alone (`wsss4luad`, `ocdc`, `lc25000`). The views say which real tissue the slides cover: a slide's every
   pixel has a class, and LC25000's tiles have none (the image stage learns them as unconditioned tiles).
2. The yardstick of each view: a seeded sample of `--tiles` real training tiles of its sources against its held-out
   tiles, in the same feature space (`wsi-synth evaluate`, offline features, 64 px).
3. One `--size`² slide per subtype and seed from `--model` (default: the bundled model; default settings), cut into
   64 px tiles at level 0 (the model's own tile): a seeded sample of `--tiles` of all of them against each view, and
   of each subtype's against `all`.
4. The model's `--count` tiles (64 px, from the mask stage's own class maps, half per subtype), `--tiles` of them,
   against the same views: the tiles the model card's tile table measures, here beside the slides.
Every set has the yardstick's count: recall falls as a synthetic set grows (the same slides' tiles: 0.40 at 546,
0.33 at 1,500, 0.21 at 8,192), so figures are compared at one count.
5. Real slides as the yardstick of slides (`regions`): the yardstick of step 2 samples tiles from every training
   image at once, so it holds the stains and tissues of dozens of slides; a few slides, real or not, hold a few.
   Each of `--draws` draws takes as many real WSSS4LUAD training images as there are generated slides (each image a
   contiguous region of a real slide of the tissue the slides are drawn for), one random `--window`² tile window
   from each, and one window of the same size from each generated slide. Both sets are measured against the
   WSSS4LUAD and the all-sources held-out tiles at one count (mean and SD over the draws), beside that many tiles
   sampled over every training image of the view's sources.
Prints JSON: precision, recall, FID and FID over the view's yardstick, with the counts. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, heldout_yardstick, machine
from wsi_synth.evaluation import heldout

#: Held-out views: every source, then each source alone (source ids start with these).
VIEWS = {"all": None, "wsss4luad": "wsss4luad", "ocdc": "ocdc", "lc25000": "lung_"}
#: The sources whose images are regions of real slides large enough for windows: the labelled lung adenocarcinoma.
REGION_SOURCES = "wsss4luad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the bundled model)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tiles", type=int, default=1500, help="tiles per set: yardstick, slides, --count tiles")
    parser.add_argument("--work", type=Path, default=None, help="keep the data, slides and reports here")
    parser.add_argument("--window", type=int, default=6, help="real and generated windows: tiles a side")
    parser.add_argument("--draws", type=int, default=10, help="draws of real images and slide windows")
    parser.add_argument("--picture", type=Path, default=None, help="the first draw's windows, real above generated")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(dir=ROOT / "bench-out" if (ROOT / "bench-out").is_dir() else None))
    model = args.model or str(ROOT / "wsi_synth" / "default_model")
    doc: dict = {
        "benchmark": "slide_fidelity",
        "machine": machine(),
        "model": model,
        "size": args.size,
        "seeds": args.seeds,
        "tiles": args.tiles,
    }
    made = heldout.make_slides(model, args.size, args.seeds, work)
    slides = [p for paths in made.values() for p in paths]
    counted = count_tiles(model, list(made), args.tiles, work)
    doc["views"] = {}
    held_outs = {}
    for view, prefix in VIEWS.items():
        held_out, split = heldout_yardstick(work, args.tiles, source_prefix=prefix)
        held_outs[view] = held_out
        yardstick = split["yardstick"]
        row = {**split, "slides": heldout.paths_quality(slides, held_out, yardstick, work, view, tiles=args.tiles)}
        if prefix is None:
            row["subtypes"] = {
                subtype: heldout.paths_quality(paths, held_out, yardstick, work, subtype, tiles=args.tiles)
                for subtype, paths in made.items()
            }
        count = heldout.measure(held_out, counted, work / f"report-count-{view}", tiles=args.tiles)
        row["count_tiles"] = heldout.over_yardstick(count, yardstick)
        doc["views"][view] = row
    views = {view: (held_outs[view], doc["views"][view]["yardstick"]) for view in ("wsss4luad", "all")}
    doc["regions"] = regions_row(work, slides, views, args.window, args.draws, picture=args.picture)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def count_tiles(model: str, subtypes: list[str], tiles: int, work: Path) -> Path:
    """`tiles` `generate --count` tiles of the model's size, split evenly over `subtypes`, in one folder."""
    folder = work / "count-tiles"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, subtype in enumerate(subtypes):
        share = tiles // len(subtypes) + (i < tiles % len(subtypes))
        out = heldout.make_tiles(model, share, work / f"count-{subtype}", subtype=subtype)
        for path in sorted((out / "images").glob("*.png")):
            shutil.copy(path, folder / f"{subtype}-{path.name}")
    return folder


def regions_row(
    work: Path,
    slides: Sequence[Path],
    views: dict[str, tuple[Path, dict]],
    side: int,
    draws: int,
    *,
    picture: Path | None = None,
) -> dict:
    """Step 5: per draw, one `side`² window from each of len(slides) real training images of WSSS4LUAD and from each
    generated slide; both against the held-out tiles of each of `views` ({view: (held-out folder, yardstick)}), beside
    as many tiles sampled over every training image of the view's sources. The first draw's windows go to
    `picture` when given."""
    from wsi_synth.data import TileDataset

    dataset = TileDataset(work / "data", split="train", kinds=("labelled",))
    every_image = image_windows(dataset.items, dataset.dataset.manifest(), REGION_SOURCES, side)
    images = [windows for windows in every_image if windows]
    if len(images) < len(slides):
        raise SystemExit(f"only {len(images)} training images hold a {side}² tile window; choose a smaller --window")
    count = len(slides) * side * side
    runs: dict[str, dict[str, list[dict]]] = {view: {"real_windows": [], "slide_windows": []} for view in views}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        picked = [images[i][rng.integers(len(images[i]))] for i in rng.choice(len(images), len(slides), replace=False)]
        real = save_tiles((dataset[i][0].permute(1, 2, 0).numpy() for w in picked for i in w), work / "regions-real")
        made = save_tiles((t for s in slides for t in slide_window(s, side, rng)), work / "regions-slides")
        if picture is not None and draw == 0:
            windows_picture(real, made, side, picture)
        for view, (held_out, yardstick) in views.items():
            for name, folder in (("real_windows", real), ("slide_windows", made)):
                metrics = heldout.measure(held_out, folder, work / f"report-regions-{view}-{name}")
                runs[view][name].append(heldout.over_yardstick(metrics, yardstick))
    measured = {}
    for view, (held_out, yardstick) in views.items():
        spread = work / f"regions-every-image-{view}"
        heldout.export_split(
            work / "data", "train", spread, kinds=("labelled", "unlabelled"), source_prefix=VIEWS[view], limit=count
        )
        every = heldout.measure(held_out, spread, work / f"report-regions-{view}-every")
        measured[view] = {
            **{name: summary(rows) for name, rows in runs[view].items()},
            "every_training_image": heldout.over_yardstick(every, yardstick),
        }
    return {
        "window_px": side * heldout.TILE,
        "windows_per_set": len(slides),
        "tiles_per_set": count,
        "draws": draws,
        "training_images": len(every_image),
        "images_holding_a_window": len(images),
        "views": measured,
    }


def image_windows(items: Sequence[tuple], manifest: Sequence[dict], prefix: str, side: int) -> list[list[list[int]]]:
    """The complete `side`² tile windows (lists of `items` positions, row by row) of each imported image of the
    sources whose id starts with `prefix`, one list per image. `import` writes an image's tiles in raster order, so a
    tile at or before the previous tile's position (or of another source) starts the next image."""
    position = {item: n for n, item in enumerate(items)}  # (kind, source, index): a region's index is not a tile's
    images: list[dict[tuple[int, int], int]] = []
    last = None
    for row in manifest:
        key = (row["kind"], row["source"], int(row["index"]))
        if key not in position or not row["source"].startswith(prefix):
            continue
        x, y = int(row["x"]) // heldout.TILE, int(row["y"]) // heldout.TILE
        if last is None or last[0] != row["source"] or (y, x) <= (last[2], last[1]):
            images.append({})
        images[-1][(x, y)] = position[key]
        last = (row["source"], x, y)
    return [_complete_windows(cells, side) for cells in images]


def _complete_windows(cells: dict[tuple[int, int], int], side: int) -> list[list[int]]:
    """Every side² window whose tiles are all in `cells` ({(column, row): position}), on a grid of `side` steps."""
    columns = max(x for x, _ in cells) + 1
    rows = max(y for _, y in cells) + 1
    windows = []
    for y0 in range(0, rows - side + 1, side):
        for x0 in range(0, columns - side + 1, side):
            window = [cells.get((x0 + dx, y0 + dy)) for dy in range(side) for dx in range(side)]
            if all(p is not None for p in window):
                windows.append([int(p) for p in window if p is not None])
    return windows


def slide_window(slide: Path, side: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One random `side`² window of the model's tiles from a slide's level 0, as tiles row by row."""
    from wsi_synth.slide import open_slide

    tile = heldout.TILE
    with open_slide(slide, need_mpp=False) as s:
        width, height = s.dimensions
        x = int(rng.integers(width // tile - side + 1)) * tile
        y = int(rng.integers(height // tile - side + 1)) * tile
        region = s.read_level0((x, y), (side * tile, side * tile))
    return [
        region[r : r + tile, c : c + tile] for r in range(0, side * tile, tile) for c in range(0, side * tile, tile)
    ]


def windows_picture(real: Path, made: Path, side: int, dest: Path) -> None:
    """The windows of one draw as a JPEG: the real slides' in the top row, the generated slides' below, 8 px apart."""
    from PIL import Image

    rows = [_windows(folder, side) for folder in (real, made)]
    px, gap = side * heldout.TILE, 8
    width = max(len(r) for r in rows) * (px + gap) - gap
    canvas = Image.new("RGB", (width, 2 * px + gap), "white")
    for r, windows in enumerate(rows):
        for c, window in enumerate(windows):
            canvas.paste(Image.fromarray(window), (c * (px + gap), r * (px + gap)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(dest, quality=90)


def _windows(folder: Path, side: int) -> list[np.ndarray]:
    """The tiles save_tiles wrote, window by window and row by row, put back together as windows."""
    from PIL import Image

    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    per = side * side
    return [
        np.concatenate([np.concatenate(tiles[w + r * side : w + (r + 1) * side], axis=1) for r in range(side)], axis=0)
        for w in range(0, len(tiles) - per + 1, per)
    ]


def save_tiles(tiles, folder: Path) -> Path:
    """`tiles` (RGB arrays) as numbered PNGs in `folder` (replaced)."""
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for n, tile in enumerate(tiles):
        Image.fromarray(np.ascontiguousarray(tile)).save(folder / f"{n:05d}.png")
    return folder


def summary(rows: Sequence[dict]) -> dict:
    """Mean and SD over draws of each metric."""
    keys = ("precision", "recall", "fid_over_yardstick")
    return {
        **{k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys},
        **{f"{k}_sd": round(float(np.std([r[k] for r in rows])), 3) for k in keys},
    }


if __name__ == "__main__":
    main()
