"""The Python API: one function per command, with the command's arguments as keyword parameters of the same names
and defaults (`--slide-mpp` is `slide_mpp`, `--format` is `format`), returning what the command prints. The CLI
calls exactly these functions, so a notebook and a shell run the same code.

    import wsi_synth
    wsi_synth.import_tiles("wsss/img", "data/", masks="wsss/mask", legend="wsss.yaml", subtype="luad", tile=64)
    wsi_synth.train("codec", "data/", "model/", config="tiny", max_steps=2000)
    record = wsi_synth.generate(None, "s.tiff", size=4096, subtype="squamous")     # None: the bundled model
    wsi_synth.inpaint("slide.svs", "regions.geojson", "edited.tiff", class_="stroma")  # `--class` is class_
    report = wsi_synth.evaluate("data/", "s.tiff", "report/", split="test")

Errors are `wsi_synth.WsiSynthError` subclasses whose message names these parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace as _Arguments
from typing import Any

from wsi_synth.arguments import checked
from wsi_synth.options import DISTILL, GENERATE, INPAINT, PYRAMID, by_name
from wsi_synth.progress import ProgressCallback

_G, _I, _P, _D = by_name(GENERATE), by_name(INPAINT), by_name(PYRAMID), by_name(DISTILL)  # each command's defaults

#: Defaults of the settings a dataset fixes, used when `out` is not a dataset yet (else the dataset's own).
DATASET_DEFAULTS = {"tile": 512, "mpp": 0.5, "region": 2048, "region_mask": 128}


def _dataset_settings(out: str | Path, overwrite: bool, **given: Any) -> dict:
    """The settings a dataset fixes: as given, else (adding to an existing dataset) the dataset's own, else the
    defaults — so a second import adds to the first without repeating them."""
    from wsi_synth.data.store import existing_settings

    existing = None if overwrite else existing_settings(out)
    names = {
        "tile": "tile_size",
        "mpp": "mpp",
        "region": "region_size",
        "region_mask": "region_mask_size",
        "classes": "classes",
    }
    return {
        k: v if v is not None else (existing[names[k]] if existing else DATASET_DEFAULTS.get(k))
        for k, v in given.items()
    }


@checked
def extract(
    slides: str | Path,
    annotations: str | Path,
    out: str | Path,
    *,
    tile: int | None = None,
    mpp: float | None = None,
    classes: str | dict | None = None,
    unmapped: str = "error",
    min_annotated: float = 0.05,
    region: int | None = None,
    region_mask: int | None = None,
    test_fraction: float = 0.2,
    min_tissue: float = 0.5,
    unlabelled_per_slide: int = 200,
    subtype: str | None = None,
    subtypes: str | Path | None = None,
    slide_mpp: float | None = None,
    workers: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
):
    """`wsi-synth extract`: labelled tiles, unlabelled tiles and region masks from annotated slides, into the dataset
    `out` (created, or resumed: finished slides are skipped). `tile`, `mpp`, `region`, `region_mask` and `classes`
    default to an existing dataset's own. Returns the `ExtractSummary`."""
    from wsi_synth.extraction.pipeline import ExtractConfig
    from wsi_synth.extraction.pipeline import extract as run

    s = _dataset_settings(out, overwrite, tile=tile, mpp=mpp, region=region, region_mask=region_mask, classes=classes)
    config = ExtractConfig(
        tile_size=s["tile"],
        mpp=s["mpp"],
        min_annotated=min_annotated,
        min_tissue=min_tissue,
        unlabelled_per_slide=unlabelled_per_slide,
        region_size=s["region"],
        region_mask_size=s["region_mask"],
        test_fraction=test_fraction,
        seed=seed,
        workers=workers,
        slide_mpp=slide_mpp,
        classes=s["classes"],
        unmapped=unmapped,  # type: ignore[arg-type]  # the class map refuses any other value, naming --unmapped
        subtype=subtype,
        subtypes_csv=str(subtypes) if subtypes is not None else None,
    )
    return run(slides, annotations, out, config, overwrite=overwrite, progress=progress)


@checked
def import_tiles(
    images: str | Path | None,
    out: str | Path,
    *,
    layouts: str | Path | None = None,
    masks: str | Path | None = None,
    legend: str | Path | None = None,
    subtype: str | None = None,
    scale: float = 1.0,
    stretch: bool = False,
    tile: int | None = None,
    mpp: float | None = None,
    classes: str | dict | None = None,
    unmapped: str = "error",
    min_annotated: float = 0.05,
    region: int | None = None,
    region_mask: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    stride: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
):
    """`wsi-synth import`: a folder of tile images (with `masks` and their `legend`, or unlabelled) into the dataset
    `out`, as one source; or, with `layouts` instead of `images`, a folder of label masks without images (tissue
    layouts, with their `legend`) as region masks for the mask stage, a window every `stride` px (default: half the
    region). Returns the `ImportSummary`."""
    from wsi_synth.data.importer import ImportConfig, import_layouts
    from wsi_synth.data.importer import import_tiles as run
    from wsi_synth.errors import BadArgumentError

    if (images is None) == (layouts is None):
        raise BadArgumentError(
            "give either a folder of IMAGES or --layouts (label masks without images), not "
            + ("both" if images else "neither")
        )
    if layouts is not None and (masks is not None or legend is None):
        raise BadArgumentError("--layouts are label masks themselves: give their --legend, and no --masks")
    if stride is not None and layouts is None:
        raise BadArgumentError("--stride spaces the windows of --layouts; tiles of IMAGES do not overlap")
    if stride is not None and stride < 1:
        raise BadArgumentError(f"--stride must be at least 1 px, got {stride}")

    s = _dataset_settings(out, overwrite, tile=tile, mpp=mpp, region=region, region_mask=region_mask, classes=classes)
    config = ImportConfig(
        tile_size=s["tile"],
        mpp=s["mpp"],
        scale=scale,
        subtype=subtype,
        classes=s["classes"],
        unmapped=unmapped,  # type: ignore[arg-type]  # the class map refuses any other value, naming --unmapped
        min_annotated=min_annotated,
        region_size=s["region"],
        region_mask_size=s["region_mask"],
        test_fraction=test_fraction,
        seed=seed,
        stretch=stretch,
        layout_stride=stride,
    )
    if layouts is not None:
        return import_layouts(layouts, out, config, legend=legend, overwrite=overwrite, progress=progress)  # type: ignore[arg-type]
    return run(images, out, config, masks=masks, legend=legend, overwrite=overwrite, progress=progress)  # type: ignore[arg-type]


@checked
def train(
    stage: str,
    data: str | Path,
    out: str | Path,
    *,
    config: str = "tiny",
    max_steps: int | None = None,
    batch_size: int | None = None,
    p_unc: float | None = None,
    checkpoint_every: int | None = None,
    sample_every: int | None = None,
    seed: int | None = None,
    conditioning: str | None = None,
    device: str = "cpu",
    codec: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """`wsi-synth train`: train `stage` ("codec", "image", "mask" or "layout") on the dataset `data` into the bundle
    `out` (the layout stage on a dataset of larger regions, e.g. `import --layouts … --region 2048`).
    `config` is a preset (tiny, paper) or a YAML file; the other settings override it (`conditioning`: the image
    stage's "per-class", "spatial" or "spatial-global" conditioning). Returns the stage's record."""
    from wsi_synth.models.config import load_config
    from wsi_synth.training import train as run

    settings = load_config(
        config,
        max_steps=max_steps,
        batch_size=batch_size,
        p_unc=p_unc,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every,
        seed=seed,
        image_conditioning=conditioning,
    )
    return run(
        stage, data, out, settings, resume=resume, device=device, codec=codec, overwrite=overwrite, progress=progress
    )


@checked
def distill(
    model: str | Path,
    data: str | Path,
    *,
    stage: str = _D["stage"].default,
    steps: int = _D["steps"].default,
    omega: float = _D["omega"].default,
    teacher_steps: int = _D["teacher_steps"].default,
    max_steps: int = _D["max_steps"].default,
    batch_size: int = _D["batch_size"].default,
    lr: float = _D["lr"].default,
    checkpoint_every: int = _D["checkpoint_every"].default,
    sample_every: int = _D["sample_every"].default,
    seed: int = _D["seed"].default,
    device: str = _D["device"].default,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """`wsi-synth distill`: a student of the bundle's `stage` for ≤ `steps` steps (guidance `omega` folded in),
    trained on `data` (the dataset the stage was trained on) into the bundle beside its teacher. `generate`,
    `inpaint` and `--count` then use it when `--steps` is at most `steps` (solver `auto`). Returns its record."""
    from wsi_synth.training.distill import DistillConfig
    from wsi_synth.training.distill import distill as run

    config = DistillConfig(
        steps=steps,
        omega=omega,
        teacher_steps=teacher_steps,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every,
        seed=seed,
    )
    return run(model, data, stage, config, resume=resume, overwrite=overwrite, device=device, progress=progress)


@checked
def generate(
    model: str | Path | None,
    out: str | Path,
    *,
    size: int,
    height: int | None = _G["height"].default,
    count: int | None = _G["count"].default,
    subtype: str | None = _G["subtype"].default,
    mask: str | Path | None = _G["mask"].default,
    stretch: bool = _G["stretch"].default,
    steps: int = _G["steps"].default,
    solver: str = _G["solver"].default,
    eta: float = _G["eta"].default,
    omega: float = _G["omega"].default,
    mask_omega: float = _G["mask_omega"].default,
    boundary_roughness: float = _G["boundary_roughness"].default,
    layout_strength: float = _G["layout_strength"].default,
    section: str = _G["section"].default,
    planner: str = _G["planner"].default,
    context: int | None = _G["context"].default,
    batch_size: int = _G["batch_size"].default,
    decode_batch: int = _G["decode_batch"].default,
    seed: int = _G["seed"].default,
    device: str = _G["device"].default,
    tiff_tile: int = _G["tiff_tile"].default,
    quality: int = _G["quality"].default,
    dry_run: bool = _G["dry_run"].default,
    resume: bool = _G["resume"].default,
    save_every: int = _G["save_every"].default,
    max_memory: float = _G["max_memory"].default,
    workers: int = _G["workers"].default,
    threads: int = _G["threads"].default,
    scheduler: str | None = _G["scheduler"].default,
    format: str | None = _G["format"].default,
    ngff: str = _G["ngff"].default,
    annotations: str = _G["annotations"].default,
    overwrite: bool = _G["overwrite"].default,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """`wsi-synth generate`: a synthetic slide of `size` × `height` px (default square) and its mask from the bundle
    `model` (None: the bundled demonstration model), written beside `out` in `format` (tiff, ome-tiff, ome-zarr;
    default from the name) with `annotations` ("geojson", "asap" or "geojson,asap"). With `count`, `out` is a folder
    of that many tiles with masks (see `generation.tiles`), drawn by the mask stage or, with `mask` a file or a folder
    of masks, for those masks. With `dry_run`, returns the plan and writes nothing.
    `on_progress(wsi_synth.Progress)` is called after every solver step of each stage (every group of tiles with
    `count`), with the evaluations so far and an ETA. A bundle with a layout stage draws the slide's layout first and
    starts the mask stage from it; `layout_strength` (0–1) is how far the mask stage departs from it (1: ignored);
    `section` ("auto", "on", "off") draws that layout as a tissue section on glass (`generation.section`).
    Returns the run's record."""
    from wsi_synth.generation import GenerateConfig, make_plan
    from wsi_synth.generation import generate as run
    from wsi_synth.io.outputs import annotation_formats

    model = _model(model)
    config = GenerateConfig(
        width=size,
        height=height if height is not None else size,
        subtype=subtype,
        steps=steps,
        solver=solver,
        eta=eta,
        omega=omega,
        mask_omega=mask_omega,
        boundary_roughness=boundary_roughness,
        layout_strength=layout_strength,
        section=section,
        planner=planner,
        context=context,
        batch_size=batch_size,
        decode_batch=decode_batch,
        seed=seed,
        device=device,
        mask=str(mask) if mask is not None else None,
        stretch=stretch,
        tiff_tile=tiff_tile,
        quality=quality,
        save_every=save_every,
        max_memory_gb=max_memory,
        workers=workers,
        threads=threads,
        scheduler=scheduler,
        format=format,
        ngff=ngff,
        annotations=annotation_formats(annotations),
    )
    if count is not None:
        from wsi_synth.errors import BadArgumentError
        from wsi_synth.generation.tiles import generate_tiles

        slide_only = [
            f"--{n}"
            for n, v in (
                ("dry-run", dry_run),
                ("format", format is not None),
                ("ngff", ngff != _G["ngff"].default),
                ("annotations", annotations != "geojson"),
            )
            if v
        ]
        if slide_only:
            raise BadArgumentError(
                f"{', '.join(slide_only)} applies to one slide, not to --count tiles (PNG images and masks)"
            )
        return generate_tiles(
            model, out, config, count, overwrite=overwrite, resume=resume, log=log, on_progress=on_progress
        )
    if dry_run:
        return make_plan(model, config, project=_has_weights(model)).to_json()
    return run(
        model, out, config, overwrite=overwrite, resume=resume, progress=progress, log=log, on_progress=on_progress
    )


@checked
def inpaint(
    slide: str | Path,
    regions: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = _I["model"].default,
    class_: str | None = _I["class_"].default,
    classes: str | None = _I["classes"].default,
    omega: float = _I["omega"].default,
    steps: int = _I["steps"].default,
    solver: str = _I["solver"].default,
    seed: int = _I["seed"].default,
    margin: int = _I["margin"].default,
    batch_size: int = _I["batch_size"].default,
    decode_batch: int = _I["decode_batch"].default,
    device: str = _I["device"].default,
    slide_mpp: float | None = _I["slide_mpp"].default,
    max_area: float = _I["max_area"].default,
    tiff_tile: int = _I["tiff_tile"].default,
    quality: int = _I["quality"].default,
    format: str | None = _I["format"].default,
    ngff: str = _I["ngff"].default,
    annotations: str = _I["annotations"].default,
    resume: bool = _I["resume"].default,
    overwrite: bool = _I["overwrite"].default,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """`wsi-synth inpaint`: the `regions` (an annotation file, level-0 px) of the real `slide` regenerated by the
    bundle `model` (None: the bundled demonstration model) as `class_` (`--class`; default: each region's own class,
    mapped by `classes` as in `extract`), the rest of the slide kept; written beside `out` with the slide's size and
    MPP: image pyramid, label pyramid of the regions, annotations and record. Returns the run's record."""
    from wsi_synth.generation.inpaint import InpaintConfig
    from wsi_synth.generation.inpaint import inpaint as run
    from wsi_synth.io.outputs import annotation_formats

    config = InpaintConfig(
        class_=class_,
        classes=classes,
        steps=steps,
        solver=solver,
        omega=omega,
        seed=seed,
        margin=margin,
        batch_size=batch_size,
        decode_batch=decode_batch,
        device=device,
        slide_mpp=slide_mpp,
        max_area_mp=max_area,
        tiff_tile=tiff_tile,
        quality=quality,
        format=format,
        ngff=ngff,
        annotations=annotation_formats(annotations),
    )
    return run(
        _model(model),
        slide,
        regions,
        out,
        config,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        log=log,
        on_progress=on_progress,
    )


@checked
def pyramid(
    image: str | Path,
    out: str | Path,
    *,
    mpp: float,
    labels: str | Path | None = _P["labels"].default,
    legend: str | Path | None = _P["legend"].default,
    tiff_tile: int = _P["tiff_tile"].default,
    quality: int = _P["quality"].default,
    format: str | None = _P["format"].default,
    ngff: str = _P["ngff"].default,
    annotations: str = _P["annotations"].default,
    overwrite: bool = _P["overwrite"].default,
    progress: bool = False,
) -> dict:
    """`wsi-synth pyramid`: an existing image (and its label map `labels`, named by `legend`) as a viewer-ready
    pyramid in `format`, with the label pyramid and `annotations`. Returns what was written."""
    from wsi_synth import __version__
    from wsi_synth.io.atomic import check_not_inputs
    from wsi_synth.io.outputs import (
        OutputPaths,
        annotation_formats,
        check_ngff,
        claim_outputs,
        open_image_lazily,
        write_slide_outputs,
    )
    from wsi_synth.options import PYRAMID, check_options

    check_options(_Arguments(mpp=mpp, tiff_tile=tiff_tile, quality=quality, format=format, ngff=ngff), PYRAMID)
    kinds = annotation_formats(annotations)
    paths = OutputPaths.beside(out, format, kinds)
    check_ngff(ngff, paths.format)
    check_not_inputs(paths.touched(overwrite=overwrite), [image, labels, legend])
    classes = (
        _legend_classes(legend) if legend else [{"id": i, "name": f"class {i}", "color": [0, 0, 0]} for i in range(256)]
    )
    pixels = open_image_lazily(image)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.dtype == "uint16":  # 16-bit scans: scaled to 8 bits, not clipped
        pixels = (pixels.astype("float32") / 257.0).round().astype("uint8")
    label_map = open_image_lazily(labels, labels=True) if labels else None
    record = {"command": "pyramid", "wsi_synth": __version__, "image": str(Path(image).resolve()), "mpp": mpp}
    record |= {
        "labels": str(Path(labels).resolve()) if labels else None,
        "legend": str(Path(legend).resolve()) if legend else None,
    }
    with claim_outputs(out):  # one run per output set
        return write_slide_outputs(
            pixels,
            label_map,
            out,
            mpp=mpp,
            classes=classes,
            tile=tiff_tile,
            quality=quality,
            overwrite=overwrite,
            progress=progress,
            fmt=format,
            ngff=ngff,
            annotations=kinds,
            record=record,
        )


@checked
def evaluate(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    *,
    train: str | Path | None = None,
    features: str = "offline",
    feature_input: str = "uint8",
    k: int = 3,
    size: int = 256,
    mode: str = "tiled",
    tile: int = 512,
    split: str | None = None,
    source: str | None = None,
    max_tiles: int | None = None,
    cells: int | None = None,
    min_per_cell: int = 20,
    gallery: int = 16,
    seam_period: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """`wsi-synth evaluate`: how close `synthetic` tiles are to `real` ones (precision, recall, FID), and whether they
    copy `train` (authenticity, C_T); writes `out/report.json` and `out/report.html`. Returns the report."""
    from wsi_synth.evaluation.features import load_extractor
    from wsi_synth.evaluation.run import EvaluateConfig
    from wsi_synth.evaluation.run import evaluate as run

    config = EvaluateConfig(
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
        seed=seed,
    )
    extractor = load_extractor(features, device=device, input_range=feature_input)
    return run(real, synthetic, extractor, out, train=train, config=config, overwrite=overwrite, progress=progress)


@checked
def view(
    path: str | Path,
    path2: str | Path | None = None,
    *,
    port: int = 8765,
    host: str = "127.0.0.1",
    block: bool = True,
):
    """`wsi-synth view`: serve a viewer of `path` (and `path2` beside it, in step) on `host`:`port`. With `block`
    (the CLI), until Ctrl-C; without, in a background thread: returns the running `Viewer` (`.url`, `.close()`)."""
    from wsi_synth.viewer import Viewer, open_viewed

    slides = [open_viewed(p) for p in (path, path2) if p is not None]
    viewer = Viewer(slides, host=host, port=port)
    if not block:
        return viewer.start()
    viewer.serve_forever()
    return viewer


def _model(model: str | Path | None) -> str:
    if model is not None:
        return str(model)
    from wsi_synth.models.bundle import default_model

    return str(default_model())


def _has_weights(model: str) -> bool:
    """A projection needs the networks; a bundle folder holding only model.json still gets the plan."""
    from wsi_synth.errors import BadModelError
    from wsi_synth.models.bundle import open_bundle

    bundle = open_bundle(model)
    try:
        for stage in ("image", "mask"):
            bundle.check_files(stage)
    except BadModelError:
        return False
    return True


def _legend_classes(path: str | Path) -> list[dict]:
    from wsi_synth.classes import read_legend, scheme

    names = read_legend(path)
    palette = {c.name: c.color for c in scheme([names[k] for k in sorted(names) if k])}
    return [{"id": k, "name": v, "color": list(palette.get(v, (0, 0, 0)))} for k, v in sorted(names.items())]
