"""Package a trained bundle as wsi-synth's default model, with a model card holding measured quality.

    python examples/default_model/package.py build/default-model build/default-data [--dest wsi_synth/default_model]

1. copies model.json and the network folders (not checkpoints or previews) into the package;
2. generates a 2048² slide with it and compares the colour statistics of its tiles with real held-out tiles in
   H&E optical-density space (skimage's rgb2hed: per-tile mean haematoxylin and eosin);
3. measures it and the bundle it replaces with `wsi-synth evaluate` against the held-out WSSS4LUAD test tiles
   (precision, recall, FID, and real training tiles against the same held-out tiles as the yardstick), or takes
   those figures from `--heldout`, the JSON of `benchmarks/quality/bench_conditioning.py --shipped` on the same model;
4. writes MODEL_CARD.md (data, licences, classes, subtypes, settings, measured quality) and the README picture
   (docs/images/generated_example.jpg: the slide beside its mask overlay). `--scales` (the JSON of
   source_scale.py), `--choices` (the JSON of benchmarks/quality/bench_training_choices.py), `--slides` (the JSON of
   benchmarks/quality/bench_slide_fidelity.py) and `--layout` (the JSON of benchmarks/quality/bench_layout.py) add their tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def copy_bundle(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(src / "model.json", dest / "model.json")
    for folder in ("codec", "image_unet", "mask_unet", "layout_unet", "image_student"):
        if folder in ("codec", "image_unet", "mask_unet") or (src / folder).is_dir():
            shutil.copytree(src / folder, dest / folder)


def hed_means(tiles: np.ndarray) -> np.ndarray:
    """Per-tile mean haematoxylin and eosin optical density (skimage.color.rgb2hed)."""
    from skimage.color import rgb2hed

    return np.stack([rgb2hed(t)[..., :2].reshape(-1, 2).mean(0) for t in tiles])


def codec_psnr(model: Path, tiles: np.ndarray) -> float:
    """Reconstruction PSNR of the bundle's codec over `tiles` (posterior mean, one MSE over all of them)."""
    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.training.stages import reconstruction_psnr

    return reconstruction_psnr(open_bundle(model).load_codec(), list(tiles), "cpu")


def bicubic_psnr(tiles: np.ndarray, factor: int) -> float:
    """The same PSNR for bicubic down- and up-sampling by `factor`: what a codec must beat to be worth having."""
    size = tiles.shape[1]
    small = [Image.fromarray(t).resize((size // factor,) * 2, Image.Resampling.BICUBIC) for t in tiles]
    back = np.stack([np.asarray(s.resize((size, size), Image.Resampling.BICUBIC)) for s in small]).astype(np.float64)
    return round(float(10 * np.log10(255**2 / np.mean((back - tiles) ** 2))), 2)


def real_tiles(data: Path, n: int = 256) -> np.ndarray:
    from wsi_synth.data import open_dataset

    ds = open_dataset(data)
    rows = [r for r in ds.manifest() if r["split"] == "test" and r["kind"] in ("labelled", "unlabelled")][::4][:n]
    return np.stack([ds.source_group(r["source"])[f"{r['kind']}/images"][int(r["index"])] for r in rows])


def generated(model: Path, out: Path, size: int, subtype: str) -> tuple[dict, np.ndarray, np.ndarray, float]:
    import tifffile

    from wsi_synth.generation import GenerateConfig, generate

    started = time.perf_counter()
    result = generate(
        model, out, GenerateConfig(width=size, height=size, subtype=subtype), progress=False, log=lambda m: None
    )
    seconds = time.perf_counter() - started
    return result, tifffile.imread(out), tifffile.imread(out.with_name(out.stem + ".mask.tiff")), seconds


def picture(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, dest: Path, side: int = 768) -> None:
    overlay = image.astype(np.float32)
    labelled = mask > 0
    overlay[labelled] = 0.55 * overlay[labelled] + 0.45 * colors[mask[labelled]]
    left = Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS)
    right = Image.fromarray(overlay.astype(np.uint8)).resize((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (2 * side + 8, side), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (side + 8, 0))
    dest.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(dest, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--dest", type=Path, default=ROOT / "wsi_synth" / "default_model")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument(
        "--heldout",
        type=Path,
        default=None,
        help="bench_conditioning.py --shipped JSON with this model's figures (else measured here).",
    )
    parser.add_argument("--scheme", default="spatial", help="The key of this model's row in --heldout.")
    parser.add_argument("--scales", type=Path, default=None, help="source_scale.py JSON: each source's measured µm/px.")
    parser.add_argument(
        "--choices", type=Path, default=None, help="bench_training_choices.py JSON: the training choices measured."
    )
    parser.add_argument(
        "--slides",
        type=Path,
        default=None,
        help="bench_slide_fidelity.py JSON: tiles of generated slides against held-out tiles.",
    )
    parser.add_argument(
        "--layout", type=Path, default=None, help="bench_layout.py JSON: layout structure, real against generated."
    )
    parser.add_argument(
        "--distilled", type=Path, default=None, help="bench_distilled.py JSON: the student against the default."
    )
    args = parser.parse_args()
    meta = json.loads((args.model / "model.json").read_text())
    heldout = held_out_quality(args, meta)
    held_out = real_tiles(args.data)
    real = hed_means(held_out)
    factor = meta["latent"]["factor"]
    quality: dict = {
        "codec_psnr_test_db": codec_psnr(args.model, held_out),
        "held_out_tiles": len(held_out),
        f"bicubic_x{factor}_psnr_db": bicubic_psnr(held_out, factor),
        f"bicubic_x{factor // 2}_psnr_db": bicubic_psnr(held_out, factor // 2),
    }
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        for subtype in meta["subtypes"]:
            result, image, mask, seconds = generated(args.model, Path(tmp) / f"{subtype}.tiff", args.size, subtype)
            t = meta["tile_size"]
            tiles = np.stack(
                [
                    image[y : y + t, x : x + t]
                    for y in range(0, args.size - t + 1, 256)
                    for x in range(0, args.size - t + 1, 256)
                ]
            )
            gen = hed_means(tiles)
            lo, hi = np.percentile(real, 2.5, axis=0), np.percentile(real, 97.5, axis=0)
            inside = ((gen >= lo) & (gen <= hi)).all(axis=1).mean()
            quality[subtype] = {
                "generate_seconds": round(seconds, 1),
                "size_px": args.size,
                "hed_mean_generated": gen.mean(0).round(4).tolist(),
                "hed_mean_real": real.mean(0).round(4).tolist(),
                "real_95pct_range": [lo.round(4).tolist(), hi.round(4).tolist()],
                "share_of_tiles_inside_real_range": round(float(inside), 3),
                "mask_class_fractions": {c["name"]: round(float((mask == c["id"]).mean()), 3) for c in meta["classes"]},
            }
            if subtype == meta["subtypes"][-1]:
                colors = np.array([c["color"] for c in meta["classes"]], np.float32)
                picture(image, mask, colors, ROOT / "docs" / "images" / "generated_example.jpg")
    copy_bundle(args.model, args.dest)
    quality["against_held_out_tiles"] = heldout
    sources = (
        ("scales", args.scales),
        ("choices", args.choices),
        ("slides", args.slides),
        ("layout", args.layout),
        ("distilled", args.distilled),
    )
    measured = {name: json.loads(path.read_text()) for name, path in sources if path is not None}
    (args.dest / "MODEL_CARD.md").write_text(model_card(meta, quality, **measured))
    (args.dest / "quality.json").write_text(json.dumps(quality, indent=2))
    size = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(json.dumps({"dest": str(args.dest), "bytes": size, "quality": quality}, indent=2))


def held_out_quality(args, meta: dict) -> dict:
    """Precision, recall and FID of 512 generated adenocarcinoma tiles against the held-out WSSS4LUAD test tiles, for
    this bundle and the one it replaces, with real training tiles as the yardstick (`wsi-synth evaluate`)."""
    if args.heldout is not None:
        doc = json.loads(args.heldout.read_text())
        return {
            "yardstick_real_train": doc["yardstick_real_train"],
            "previous": doc["shipped"],
            "this": doc[args.scheme],
            "source": str(args.heldout),
        }
    from wsi_synth.evaluation import heldout

    with tempfile.TemporaryDirectory(dir=ROOT / "bench-out") as tmp:
        work = Path(tmp)
        test, train = work / "real-test", work / "real-train"
        for split, folder in (("test", test), ("train", train)):
            heldout.export_split(args.data, split, folder, source_prefix="wsss4luad")
        yardstick = heldout.measure(test, train, work / "report-yardstick")
        rows = {
            name: heldout.tiles_quality(model, 512, test, yardstick, work, name)
            for name, model in (("previous", args.dest), ("this", args.model))
        }
        side_by_side(
            sorted(test.glob("*.png")),
            sorted((work / "tiles-this" / "images").glob("*.png")),
            ROOT / "docs" / "images" / "heldout_vs_generated.jpg",
        )
    rows["previous"]["bundle"] = previous_summary(args.dest)
    return {"yardstick_real_train": yardstick, **rows}


def side_by_side(real: list[Path], generated: list[Path], dest: Path, n: int = 8, zoom: int = 2) -> None:
    """Held-out real tiles (top row) above generated ones (bottom row), every `len // n`-th of each, at level 0 shown `zoom`×."""
    rows = [
        [Image.open(p).convert("RGB") for p in paths[:: max(1, len(paths) // n)][:n]] for paths in (real, generated)
    ]
    side = rows[0][0].width * zoom
    sheet = Image.new("RGB", (n * (side + 4) - 4, 2 * side + 4), "white")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile.resize((side, side), Image.Resampling.NEAREST), (c * (side + 4), r * (side + 4)))
    sheet.save(dest, quality=92)


def previous_summary(bundle: Path) -> str:
    """What the replaced bundle was: its image conditioning, µm/px and image-stage steps."""
    meta = json.loads((bundle / "model.json").read_text())
    image = meta["stages"]["image"]
    spatial = meta.get("image_conditioning", "per-class").startswith("spatial")
    empty = (
        f", all-unknown crops drawn with the {'map' if meta.get('empty_map') == 'map' else 'null'} embedding"
        if spatial
        else ""
    )
    return f"{meta.get('image_conditioning', 'per-class')}, {meta['mpp']} µm/px, {image['steps']} steps{empty}"


def heldout_table(h: dict) -> str:
    def row(label: str, m: dict, ratio: str, per_crop) -> str:
        return f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['fid']:.4g} | {ratio} | {per_crop} |"

    rows = [
        row(
            f"previous bundle ({h['previous'].get('bundle', 'per-class')})",
            h["previous"],
            f"{h['previous']['fid_over_yardstick']}×",
            h["previous"]["image_evaluations_per_crop"],
        ),
        row(
            "**this bundle**",
            h["this"],
            f"**{h['this']['fid_over_yardstick']}×**",
            h["this"]["image_evaluations_per_crop"],
        ),
        row("real training tiles (yardstick)", h["yardstick_real_train"], "1×", "—"),
    ]
    return (
        "| tiles | precision | recall | FID | FID / real-vs-real | evaluations per crop |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def scales_table(scales: dict | None) -> str:
    """Each source's measured µm/px (source_scale.py) and the scale import.sh applies."""
    if not scales:
        return ""
    rows = [
        f"| {name} | {v['mpp']} ({v['range'][0]}–{v['range'][1]}) |"
        if v.get("mpp")
        else f"| {name} | not measurable: {v['why']} |"
        for name, v in scales.items()
        if isinstance(v, dict) and "mpp" in v
    ]
    return (
        "Each source's magnification, measured from its nuclei against MoNuSeg (0.2527 µm/px) and CMU-1 (0.499 µm/px) "
        "(`python examples/default_model/source_scale.py`):\n\n| source | µm/px (range) |\n|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def choices_table(choices: dict | None) -> str:
    """The image stage's training choices measured at equal steps (bench_training_choices.py)."""
    if not choices:
        return ""
    rows = [
        f"| {name} | {json.dumps(v['keys']) if v['keys'] else 'plain ε-loss'} | {v['precision']:.3f} | {v['recall']:.3f} | {v['fid_over_yardstick']}× |"
        for name, v in choices.items()
        if isinstance(v, dict) and "keys" in v
    ]
    return (
        f"Training choices, each an image stage trained {choices['steps']} steps from scratch on this data with this codec and mask "
        f"stage (the same cost per step), measured as below (`python -m benchmarks.quality.bench_training_choices`):\n\n"
        "| variant | keys | precision | recall | FID / real-vs-real |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def slides_table(slides: dict | None) -> str:
    """Tiles cut from generated slides, and the model's `--count` tiles, against each view of the held-out tiles
    (bench_slide_fidelity.py)."""
    if not slides:
        return ""
    rows = []
    for view, row in slides["views"].items():
        y, cut, counted = row["yardstick"], row["slides"], row["count_tiles"]
        rows.append(
            f"| {view} ({row['held_out_tiles']}) | {y['precision']:.2f} / {y['recall']:.2f} | "
            f"{cut['precision']:.2f} / {cut['recall']:.2f} / {cut['fid_over_yardstick']}× | "
            f"{counted['precision']:.2f} / {counted['recall']:.2f} / {counted['fid_over_yardstick']}× |"
        )
    subtypes = slides["views"]["all"].get("subtypes", {})
    by_subtype = "; ".join(
        f"{name} {r['precision']:.2f} / {r['recall']:.2f} / {r['fid_over_yardstick']}×" for name, r in subtypes.items()
    )
    return (
        f"Where users look: 64 px tiles cut from generated {slides['size']}² *slides* (default settings, both subtypes, "
        f"seeds {', '.join(map(str, slides['seeds']))}), beside the model's `--count` tiles, against the held-out "
        f"tiles of the recipe's test split: of every source, and of each source alone "
        f"(`python -m benchmarks.quality.bench_slide_fidelity`). Every set is a seeded sample of {slides['tiles']} "
        "tiles, the yardstick's count (real training tiles of the same sources), because recall falls as a set "
        "grows. Precision / recall / FID over the yardstick's:\n\n"
        "| held-out view (tiles) | yardstick | slides | `--count` tiles |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + (f"\n\nEach subtype's slides alone, against every source: {by_subtype}." if by_subtype else "")
        + " A slide draws one stain, the labelled sources', where `--count` tiles each draw their own: LC25000's look"
        " (tiles without classes, another lab's stain) comes back in `--count` tiles, not on slides."
        ' docs/benchmarks.md ("Fidelity of generated slides") reads each view.\n' + regions_table(slides.get("regions"))
    )


def regions_table(regions: dict | None) -> str:
    """Windows of real slides beside windows of the generated ones, against the held-out tiles
    (bench_slide_fidelity.py's `regions`)."""
    if not regions:
        return ""

    def cells(r: dict) -> str:
        return " / ".join(
            f"{r[k]:.2f}" + (f" ± {r[k + '_sd']:.2f}" if k + "_sd" in r else "")
            for k in ("precision", "recall", "fid_over_yardstick")
        )

    n, px = regions["windows_per_set"], regions["window_px"]
    views = regions["views"]
    rows = [
        (f"windows of {n} real WSSS4LUAD slides", "real_windows"),
        (f"windows of the {n} generated slides", "slide_windows"),
        ("as many tiles of every training image", "every_training_image"),
    ]
    return (
        "\nReal slides as the yardstick of slides: the yardstick above samples tiles of every training image at once "
        f"({regions['training_images']} WSSS4LUAD images alone, regions of real slides with their stains and "
        f"tissues); {n} slides, real or generated, hold {n} stains. In each of {regions['draws']} draws, one {px} px "
        f"window from each of {n} real WSSS4LUAD training images and one from each of the {n} generated slides, "
        f"{regions['tiles_per_set']} tiles a set. Precision / recall / FID over the yardstick's (mean ± SD over the "
        "draws):\n\n"
        f"| tiles | {' | '.join(f'against {view}' for view in views)} |\n|---|{'---|' * len(views)}\n"
        + "".join(f"| {label} | {' | '.join(cells(views[v][key]) for v in views)} |\n" for label, key in rows)
        + "\nRecall against the tiles of many slides counts the slides as much as their realism, so slides are compared "
        'with real slides at one count and extent (docs/benchmarks.md, "Real slides as the yardstick of slides"; the '
        "first draw's windows side by side: docs/images/real_and_generated_windows.jpg).\n"
    )


def distilled_table(meta: dict, distilled: dict | None) -> str:
    """The image stage's student against the default and the teacher at as few steps (bench_distilled.py)."""
    student = meta["stages"].get("image_student")
    if not student or not distilled:
        return ""
    y = distilled["yardstick"]
    rows = [
        f"| real training tiles (yardstick) | | {y['precision']:.3f} | {y['recall']:.3f} | 1× | "
        f"{distilled.get('real_sharpness', 0):,.0f} (held-out) |"
    ]
    for name, row in distilled["runs"].items():
        settings = f"{row['settings']['steps']} {row['settings']['solver']} steps"
        rows.append(
            f"| {name}: {settings} | {row['mean_seconds']:.0f} s ({row['speedup_over_default']}×) | "
            f"{row['precision']:.3f} | {row['recall']:.3f} | {row['fid_over_yardstick']}× | {row.get('sharpness', 0):,.0f} |"
        )
    return (
        f"**Four-step slides.** The image stage ships a distilled student for 1–{student['distilled_steps']} steps "
        f"(`image_student/`, float16; `wsi-synth distill`, {student['steps']:,} steps of {student['config']['batch_size']}, "
        f"{student.get('train_seconds', 0) / 60:.0f} min on one CPU core). `generate --steps 4` uses it (the default 20 "
        f"steps keep the teacher). {distilled['size']}² slides of both subtypes, timed end to end in one run on this "
        "2-core CPU, their 64 px tiles against the held-out tiles (`python -m benchmarks.quality.bench_distilled`):\n\n"
        "| run | seconds per slide (speed-up) | precision | recall | FID / real-vs-real | sharpness |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "The student keeps the default's sharpness (median Laplacian variance of the tissue tiles) and precision, where "
        "the teacher at as few steps blurs. Slide-level recall and FID move from seed to seed by more than the gap "
        "between the runs: docs/benchmarks.md measures eight slides each (the student within 0.03 of the default's "
        "precision and recall, FID 1.10× the default's). The default stays at 20 teacher steps.\n"
    )


def layout_table(layout: dict | None) -> str:
    """Layout structure of generated adenocarcinoma class maps against the real layouts (bench_layout.py)."""
    if not layout:
        return ""
    lags = list(layout["real_layouts"]["same_class_at_px"])

    def row(label: str, d: dict) -> str:
        same = " | ".join(f"{d['same_class_at_px'][k]:.2f}" for k in lags)
        props = ", ".join(f"{k} {v:.2f}" for k, v in d["proportions"].items() if v)
        return f"| {label} | {props} | {same} | {100 * d['straight_share']:.2f} % |"

    rows = [row(f"real layouts ({layout['real_layouts']['count']})", layout["real_layouts"])]
    rows += [row(f"generated, --layout-strength {s}", d) for s, d in layout["generated"].items()]
    header = " | ".join(f"same class at {k} px" for k in lags)
    return (
        f"Layout at slide scale (`python -m benchmarks.quality.bench_layout`: adenocarcinoma class maps of {layout['size']}², "
        "at 1.1 µm/px, against the 22 real WSSS4LUAD layouts):\n\n"
        f"| class maps | proportions | {header} | straight boundary |\n|---|---|{'---|' * len(lags)}---|\n"
        + "\n".join(rows)
        + "\n"
    )


def model_card(
    meta: dict,
    quality: dict,
    scales: dict | None = None,
    choices: dict | None = None,
    slides: dict | None = None,
    layout: dict | None = None,
    distilled: dict | None = None,
) -> str:
    stages = meta["stages"]
    rows = "\n".join(
        f"| {s} | {info['steps']} | {info['config']['batch_size']} | {_networks(s, info['config'])} | {info.get('train_seconds', 0) / 60:.0f} min "
        f"| {info.get('final_loss', 0):.4f} |"
        for s, info in stages.items()
    )
    minutes = sum(info.get("train_seconds", 0) for info in stages.values()) / 60
    factor = meta["latent"]["factor"]
    q = json.dumps(quality, indent=2)
    return f"""# wsi-synth default model (demonstration)

**This is a demonstration model.** It is tiny ({meta["tile_size"]} px tiles, {meta["tile_size"] // factor}² latents) and was
trained for {minutes:.0f} minutes on a 2-core CPU, so that `wsi-synth generate` works on a fresh machine. Its slides
look like H&E texture with plausible tissue layouts, not like diagnostic pathology. Do not use it for research
results; train your own (`wsi-synth train`, README) on your data and GPUs.

## Data (public, from the project's shared data; licences as stated by their sources, several unconfirmed)
| data | use | source | licence |
|---|---|---|---|
| WSSS4LUAD validation + test tiles with masks (lung adenocarcinoma), as they are | labelled tiles, region masks | `Hammad-Mir/WSSS4LUAD` (WSSS4LUAD challenge, GDPH + TCGA-LUAD) | unconfirmed, likely research-only |
| OCDC tiles with tumour masks (oral squamous cell carcinoma), scaled ×0.44 | labelled tiles, region masks | `sarah-antillia/Tensorflow-Image-Segmentation-OCDC` (doi:10.17632/9bsc36jyrt.1) | CC BY 4.0 (unconfirmed) |
| LC25000 lung adenocarcinoma and squamous cell carcinoma tiles (224 px), scaled ×0.41 and ×0.35 | unlabelled tiles | `loser564/Lung-Cancer-Prediction-Model` (Borkowski et al. 2019) | not stated (unconfirmed) |
| WSSS4LUAD large layout masks without images (22, 1.4–6.3 mm of lung adenocarcinoma) | region masks (mask stage), 2048 px regions (layout stage) | `Hammad-Mir/WSSS4LUAD` | unconfirmed, likely research-only |

Treat the model as research-only, like its data. Every source is resampled to one magnification, {meta["mpp"]} µm/px
(`examples/default_model/import.sh`): WSSS4LUAD's as measured, LC25000's 224 px tiles (a downscaled 40× photograph)
down to it, OCDC's 640 px tiles from their stated 20×.
{scales_table(scales)}
## Classes and subtypes
- Classes: {", ".join(c["name"] for c in meta["classes"])} (0 = unknown / not annotated). WSSS4LUAD "tumour epithelium"
  and OCDC "tumour" → tumour; WSSS4LUAD stroma → stroma, normal → normal{_background(meta)}; OCDC non-tumour → unknown.
- Subtypes (the mask model's prompt): {", ".join(meta["subtypes"])}. Squamous has few region masks (OCDC only), so its
  layouts are the less varied.{_layout_stage(meta)}

## Training (`bash examples/train_default_model.sh`, configuration `examples/default_model/train.yaml`)
Seed 0, p_unc 0.5, T = 1000 scaled-linear, AdamW with warm-up and cosine decay, EMA weights{_loss(meta)}.

| stage | steps | batch | network | time | final loss |
|---|---|---|---|---|---|
{rows}

Codec: latent factor {factor}, {meta["latent"]["channels"]} channels, scale {meta["latent"]["scale"]:.4f}.{_carried(meta)}

{choices_table(choices)}
## Measured quality (`python examples/default_model/package.py`)
Against held-out real tiles: 512 generated 64 px adenocarcinoma tiles (`generate --count`, 20 DPM-Solver++ steps),
measured with `wsi-synth evaluate` (offline features) against the 357 WSSS4LUAD test-split tiles of the recipe's
import, which no stage trained on; the yardstick is the recipe's real WSSS4LUAD training tiles against the same
held-out tiles, in the same feature space. The image stage is conditioned `{meta.get("image_conditioning", "per-class")}`.

{heldout_table(quality["against_held_out_tiles"])}

{slides_table(slides)}
{layout_table(layout)}
{distilled_table(meta, distilled)}
A generated 4096² adenocarcinoma slide (thumbnail, mask, a real section for its layout; level 0 beside real tissue
at the same scale; `examples/default_model/slide_picture.py`):

![A generated 4096² slide beside real tissue](../../docs/images/slide_4096.jpg)

At the size of a real section, 16,384² (18 mm; `generate --size 16384 --subtype adenocarcinoma --steps 4`), the
slide is a section on glass (`--section auto`): one piece of tissue with glass along the whole border, its outline
procedural (as irregular as a real section's: solidity 0.89 against 0.887), not learnt. Inside it, the tissue is
this model's texture and the layout draws more glass than real tissue holds:

![A generated 16,384² slide beside a real section and real tissue](../../docs/images/slide_16384.jpg)

- Codec reconstruction PSNR on {quality["held_out_tiles"]} held-out tiles (test split, every source):
  **{quality["codec_psnr_test_db"]} dB**. For scale, bicubic down- and up-sampling of the same tiles gives
  {quality[f"bicubic_x{factor}_psnr_db"]} dB at ×{factor} and {quality[f"bicubic_x{factor // 2}_psnr_db"]} dB at ×{factor // 2}.
- Colour statistics: per-tile mean haematoxylin and eosin optical density (skimage `rgb2hed`) of {meta["tile_size"]} px tiles
  cut from a generated {quality[meta["subtypes"][0]]["size_px"]}² slide per subtype, against the 2.5–97.5 percentile
  range of the same held-out tiles; `generate_seconds` is the whole `generate` call on this 2-core CPU:

```json
{q}
```

## What it does not do
- {_empty_map(meta)} Unknown is {_unknown(quality, meta)} of a slide{_unknown_why(meta)}.
- Classifier-free guidance (`--omega` > 0) makes this model's tiles worse, not sharper: its null condition learnt
  from LC25000 alone (docs/benchmarks.md). Keep the default `--omega 0`.
- Generated tiles are {_stained(quality, meta)} stained than the held-out mix: mean optical density (H, E)
  {_means(quality, meta)} against {tuple(quality[meta["subtypes"][0]]["hed_mean_real"])} real.
- Masks carry the mask model's resolution ({meta["region_size"] // meta["region_mask_size"]} px per mask pixel): the sampled
  one-hot is smoothed (a Gaussian of 1 mask px) before the argmax, and the class map is upsampled as a blurred class
  field refined near boundaries (`--boundary-roughness`), so borders are contours with a drawn outline's wander
  (2.2–2.4 % of their length in straight runs against 0.91 % in real annotations), but no region is finer than that.
- {meta["tile_size"]} px tiles at {meta["mpp"]} µm/px give each crop ~{meta["tile_size"] * meta["mpp"]:.0f} µm of context: a few cells and their
  neighbours, not whole glands; nuclei are 5–10 px.
- A better model needs more labelled tiles, larger tiles and more steps (GPU hours), not different code.
"""


def _loss(meta: dict) -> str:
    config = meta["stages"]["image"]["config"]
    gamma, null = config["image"].get("min_snr_gamma"), config.get("null_tiles", "unlabelled")
    return (f", min-SNR-{gamma:g} loss weighting" if gamma else "") + (
        ", null condition learnt from every tile" if null == "all" else ""
    )


def _empty_map(meta: dict) -> str:
    if meta.get("empty_map", "null") == "map":
        return (
            "Crops whose map is entirely unknown are drawn with the map embedding and an all-zero map. No labelled training"
            " tile was entirely unknown (each holds some class), so such areas are the network's extrapolation from the"
            " unknown parts of labelled tiles: background, glass and unannotated tissue."
        )
    return (
        "Crops whose map is entirely unknown are drawn with the null condition, which learnt from the unlabelled LC25000"
        " tiles (another lab's staining): they come out bluer and more purple than the held-out tiles, with square edges."
    )


def _carried(meta: dict) -> str:
    notes = [f"{stage}: {info['carried_over']}" for stage, info in meta["stages"].items() if info.get("carried_over")]
    return "".join(
        f"\nCarried over, not retrained, in this build ({note}); the recipe trains it again." for note in notes
    )


def _background(meta: dict) -> str:
    names = [c["name"] for c in meta["classes"]]
    return (
        ", background (glass, lumen, alveolar space) → background"
        if "background" in names
        else "; background → unknown"
    )


def _layout_stage(meta: dict) -> str:
    if "layout" not in meta.get("stages", {}):
        return ""
    lay = meta["layout"]
    return (
        f"\n- Layout stage: the mask network trained on {lay['region_size']} px regions of the WSSS4LUAD layouts at "
        f"{lay['region_size'] // lay['region_mask_size']} px per layout pixel ({lay['region_size'] * meta['mpp'] / 1000:.1f} mm "
        f"per crop), subtypes {', '.join(lay['subtypes'])}; the other subtypes take its unconditional layout (that is, "
        "adenocarcinoma's). `generate` samples it first and starts the mask stage from it (`--layout-strength`)."
    )


def _unknown_why(meta: dict) -> str:
    if "background" in [c["name"] for c in meta["classes"]]:
        return (
            ": the layouts the mask and layout stages learn from leave nothing unknown. Glass is a class instead, and"
            " the layout over-draws it (a third of an adenocarcinoma slide against a fifth of the real layouts; at 2048²,"
            " a single layout crop, from half to three quarters), where the image stage draws a pale field with specks"
            " (WSSS4LUAD's background is alveolar space and glass with debris). Slides of four layout crops or more are"
            " sections on glass (`--section`): outside the procedural outline, background fades to clean glass"
        )
    return ": WSSS4LUAD's background and OCDC's non-tumour tissue are unknown in its training masks"


def _unknown(quality: dict, meta: dict) -> str:
    return " and ".join(f"{quality[s]['mask_class_fractions']['unknown']:.0%} ({s})" for s in meta["subtypes"])


def _stained(quality: dict, meta: dict) -> str:
    generated = np.mean([quality[s]["hed_mean_generated"][0] for s in meta["subtypes"]])
    return "more" if generated > quality[meta["subtypes"][0]]["hed_mean_real"][0] else "less"


def _means(quality: dict, meta: dict) -> str:
    return ", ".join(f"{tuple(quality[s]['hed_mean_generated'])} ({s})" for s in meta["subtypes"])


def _networks(stage: str, config: dict) -> str:
    net = config["codec" if stage == "codec" else stage.removesuffix("_student")]
    extra = (
        f", {net['latent_channels']} latent channels"
        if stage == "codec"
        else (", attention" if net.get("attention") else "")
    )
    return f"channels {tuple(net['block_out_channels'])}, {net['layers_per_block']} layer(s)/block{extra}"


if __name__ == "__main__":
    main()
