"""`generate --count N`: many independent synthetic tiles with their masks, as a folder `import` reads back.

    DIR/images/00000.png   RGB tiles
    DIR/masks/00000.png    class ids (uint8, the model's classes)
    DIR/legend.yaml        class id → name, the legend format `import --legend` reads
    DIR/manifest.csv       index, files, seed, subtype, the given mask (with --mask), class fractions per tile
    DIR/tiles.json         the run's record (model, settings, timings, denoiser evaluations)

Tile i is the slide `generate` makes at the same size with seed `tile_seed(seed, i)` (and, without `--subtype`, the
subtype that seed draws). With `--mask` (one mask, or a folder of them: tile i takes the (i mod n)-th in name order)
it is the slide `generate --mask` makes from that mask, so that a user's own annotated masks get new tissue drawn for
them (the manifest names each tile's mask). The tiles of a group are sampled together, their crops sharing the
denoiser's batches (`sampling.canvas.sample_canvases`), which changes nothing but the speed. Tiles are written a group
at a time and the manifest grows with each finished group, so an interrupted run continues with `--resume` from the
first unfinished tile, giving the same tiles as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from wsi_synth import __version__
from wsi_synth.errors import BadArgumentError, OutputExistsError
from wsi_synth.generation.config import GenerateConfig, check_bundle, geometry, sampler_config, stage_denoiser
from wsi_synth.generation.decode import DecodedImage, default_decode_batch
from wsi_synth.generation.masks import (
    PixelLabels,
    Roughness,
    load_mask,
    mask_classes,
    mask_cleaning,
    mask_sources,
    smooth,
)
from wsi_synth.models.bundle import Bundle, open_bundle
from wsi_synth.progress import ProgressCallback, TaskClock
from wsi_synth.resumable import check_identity
from wsi_synth.sampling.sampler import SampleStats

logger = logging.getLogger(__name__)

#: Largest tile side of a `--count` run: beyond it, a tile is a slide (`generate` without `--count`).
MAX_TILE = 4096
#: Tiles sampled together by default: enough crops to fill the denoiser's batches, few enough to lose little to an
#: interruption.
GROUP = 32
#: Most tiles in one run (five digits in the file names).
MAX_COUNT = 99_999
#: What a tile folder holds (and all `--overwrite` removes).
TILE_ENTRIES = ("images", "masks", "legend.yaml", "manifest.csv", "tiles.json")


def tile_seed(seed: int, index: int) -> int:
    """Tile `index`'s seed: independent streams for every (seed, index), in the range `--seed` accepts."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def generate_tiles(
    model: str | Path,
    out: str | Path,
    config: GenerateConfig,
    count: int,
    *,
    group: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Write `count` tiles of `config.width` × `config.height` px with their masks into the folder `out` (see the
    module docstring). `group` tiles are sampled together; `config.subtype` None draws each tile's subtype."""
    log = log or logger.info  # a library logs; the CLI passes its own stderr writer
    from wsi_synth.io.atomic import check_apart, claim

    group = group or GROUP
    bundle, g, sources = _check(model, config, count, group)
    out = Path(out)
    check_apart(out, [model, config.mask])  # --overwrite would delete a --mask folder inside --out
    with claim(out, "the tile folder", create_folder=True):
        done = _prepare_folder(out, bundle, config, count, overwrite=overwrite, resume=resume, named=bool(sources))
        if done:
            log(f"resuming: {done} of {count} tiles are written")
        started = time.perf_counter()
        stats = {"mask": SampleStats(), "image": SampleStats()}
        clock = TaskClock("tiles", "tile", on_progress, lambda: stats["mask"].evaluations + stats["image"].evaluations)
        for first in range(done, count, group):
            indices = list(range(first, min(first + group, count)))
            _write_group(out, bundle, model, config, g, indices, stats, sources)
            clock(indices[-1] + 1, count)
        record = {
            "model": str(Path(model).resolve()),
            "wsi_synth": __version__,
            "count": count,
            "config": asdict(config),
            "solvers": {
                stage: sampler_config(config, g, stage, bundle).solver
                for stage in ("image",) + (() if sources else ("mask",))
            },
            "classes": bundle.classes,
            "resumed_at": done,
            "seconds": round(time.perf_counter() - started, 2),
            "evaluations": {k: asdict(v) for k, v in stats.items()},
        }
        from wsi_synth.jsonfile import write_atomic

        write_atomic(out / "tiles.json", record)
    return {
        "out": str(out),
        "count": count,
        "images": str(out / "images"),
        "masks": str(out / "masks"),
        "legend": str(out / "legend.yaml"),
        "manifest": str(out / "manifest.csv"),
        "record": str(out / "tiles.json"),
        "resumed_at": done,
    }


def _check(model, config: GenerateConfig, count: int, group: int):
    if not 1 <= count <= MAX_COUNT:
        raise BadArgumentError(f"--count must be 1–{MAX_COUNT:,}, got {count}")
    if max(config.width, config.height) > MAX_TILE:
        raise BadArgumentError(
            f"--count tiles must be at most {MAX_TILE} px a side, got {config.width}×{config.height}: generate a slide "
            "(without --count) and cut it instead"
        )
    if config.workers > 1 or config.scheduler:
        raise BadArgumentError(
            "--count runs in this process (its tiles share the denoiser's batches): drop --workers/--scheduler"
        )
    if group < 1:
        raise BadArgumentError(f"the group size must be at least 1, got {group}")
    config.validate()
    bundle = open_bundle(model)
    if config.subtype is None and not bundle.subtypes and config.mask is None:
        raise BadArgumentError(f"model {model} has no subtypes to draw from: pass --subtype")
    check_bundle(bundle, replace(config, subtype=config.subtype or next(iter(bundle.subtypes), None)))
    for stage in ("codec", "image") + (("mask",) if config.mask is None else ()):
        bundle.check_files(stage)
    g = geometry(bundle, config)
    sources = mask_sources(config.mask) if config.mask is not None else []
    for source in sources:  # every mask is read before the first tile: a bad one refuses the run, not its middle
        load_mask(source, bundle, g, stretch=config.stretch)
    return bundle, g, sources


def _settings(bundle: Bundle, config: GenerateConfig, count: int) -> dict:
    """What determines the tiles: a slide's fingerprint (every setting that changes pixels) and the count."""
    from wsi_synth.generation.run import run_fingerprint

    return {**run_fingerprint(bundle, config), "count": count}


def _prepare_folder(
    out: Path, bundle: Bundle, config: GenerateConfig, count: int, *, overwrite: bool, resume: bool, named: bool
) -> int:
    """A fresh tile folder, or with `resume` the tiles an earlier run of the same settings finished (their number)."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"--out {out} is a file: --count writes a folder of tiles (images/, masks/, …); choose a folder name"
        )
    settings = _settings(bundle, config, count)
    state = out / ".tiles-run.json"
    if resume and state.is_file():
        check_identity({"identity": json.loads(state.read_text())}, settings, out)
        return _finished(out)
    others = (
        [
            p.name
            for p in out.iterdir()
            if p.name not in (*TILE_ENTRIES, ".tiles-run.json") and not p.name.startswith(".")
        ]
        if out.is_dir()
        else []
    )
    if others:
        raise OutputExistsError(
            f"--out {out} holds other files ({', '.join(sorted(others)[:3])}): choose an empty or new folder"
        )
    if (out / "manifest.csv").exists() and not overwrite:
        hint = "pass --resume to continue it, or " if state.is_file() else ""
        raise OutputExistsError(f"--out {out} already holds tiles: {hint}pass --overwrite to replace them")
    for name in (*TILE_ENTRIES, ".tiles-run.json"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    from wsi_synth.jsonfile import write_atomic

    legend = "".join(f"{c['id']}: {json.dumps(c['name'])}\n" for c in bundle.classes)
    (out / "legend.yaml").write_text("# class id -> name (wsi-synth import --legend reads this)\n" + legend)
    with open(out / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerow(
            ["index", "image", "mask", "seed", "subtype"]
            + (["mask_source"] if named else [])
            + [f"fraction_{c['name']}" for c in bundle.classes]
        )
    write_atomic(state, settings)
    return 0


def _finished(out: Path) -> int:
    """Tiles finished by an earlier run: the manifest's rows, a prefix of the indices (groups finish in order)."""
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return len(rows)


def _write_group(
    out: Path,
    bundle: Bundle,
    model,
    config: GenerateConfig,
    g,
    indices: list[int],
    stats: dict,
    sources: list[Path] | None = None,
) -> None:
    from wsi_synth.sampling.canvas import sample_canvases

    abar = bundle.schedule.alphas_cumprod()
    seeds = [tile_seed(config.seed, i) for i in indices]
    draw = lambda s: bundle.subtypes[np.random.default_rng(s).integers(len(bundle.subtypes))]  # noqa: E731
    # only the mask stage reads the subtype: tiles from given masks draw none
    subtypes = [config.subtype or (None if sources else draw(s)) for s in seeds]
    tiles = [replace(config, seed=s, subtype=sub) for s, sub in zip(seeds, subtypes, strict=True)]
    named = [sources[i % len(sources)] for i in indices] if sources else []
    if named:
        masks = [load_mask(source, bundle, g, stretch=config.stretch) for source in named]
    else:
        masks = _sampled_masks(model, bundle, config, g, tiles, stats)
    image_configs = [sampler_config(t, g, "image", bundle) for t in tiles]
    latents = sample_canvases(
        stage_denoiser(model, "image", config.device, image_configs[0]),
        (bundle.latent.channels, *g.lat),
        abar,
        image_configs,
        labels=[
            smooth(m, g.px_per_msk, g.lat, g.factor, roughness=Roughness(config.boundary_roughness, t.seed))
            for m, t in zip(masks, tiles, strict=True)
        ],
        stats=stats["image"],
    )
    codec = bundle.load_codec(device=config.device)
    rows: list[list] = []
    given = [[source.name] for source in named] if named else [[] for _ in indices]  # the manifest's mask_source
    for index, tile, msk, lat, source in zip(indices, tiles, masks, latents, given, strict=True):
        image = DecodedImage(
            codec,
            lat,
            bundle.latent.scale,
            g.factor,
            g.lat_crop,
            g.px,
            config.device,
            batch=config.decode_batch or default_decode_batch(config.device),
        )[0 : g.px[0]]
        labels = PixelLabels(msk, g.px_per_msk, g.px, Roughness(config.boundary_roughness, tile.seed))[0 : g.px[0]]
        name = f"{index:05d}.png"
        _write_png(out / "images" / name, image)
        _write_png(out / "masks" / name, labels)
        fractions = np.bincount(labels.ravel(), minlength=len(bundle.classes))[: len(bundle.classes)] / labels.size
        rows.append(
            [index, f"images/{name}", f"masks/{name}", tile.seed, tile.subtype or "", *source]
            + [f"{f:.4f}" for f in fractions]
        )
    with open(out / "manifest.csv", "a", newline="") as fh:  # the group's rows once all its files are in place
        csv.writer(fh).writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def _sampled_masks(model, bundle: Bundle, config: GenerateConfig, g, tiles: list[GenerateConfig], stats: dict):
    """The tiles' class maps drawn by the mask stage, prompted with each tile's subtype, and cleaned."""
    from wsi_synth.sampling.canvas import sample_canvases

    mask_configs = [sampler_config(t, g, "mask", bundle) for t in tiles]
    one_hots = sample_canvases(
        stage_denoiser(model, "mask", config.device, mask_configs[0]),
        (len(bundle.classes), *g.msk),
        bundle.schedule.alphas_cumprod(),
        mask_configs,
        conditions=[1 + bundle.subtypes.index(str(t.subtype)) for t in tiles],  # every tile has drawn its subtype
        stats=stats["mask"],
    )
    cleaning = mask_cleaning(config, bundle)
    return [mask_classes(o, **cleaning) for o in one_hots]


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    from wsi_synth.io.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
