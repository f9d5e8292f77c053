"""A `generate` run: mask stage → cleaning → upsampling → image stage → tiled decode → pyramid outputs.

The canvases live in memory, or in a zarr work store beside the output when they exceed `max_memory_gb`
(a 100,000² slide at f = 8 is a 4 × 12,500² float32 latent canvas, 2.5 GB per buffer). The work folder
`.OUT.work/` holds each stage's state and `run.json`, the run's fingerprint: a hash of the model's files and
every setting that determines the result. `--resume` continues an interrupted run only when the fingerprint
matches (otherwise a one-line error names what changed) and produces the same output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wsi_synth import __version__
from wsi_synth.errors import BadArgumentError
from wsi_synth.generation.cluster import Cluster, ClusterLostError, cluster_lost, use_threads
from wsi_synth.generation.config import (
    GenerateConfig,
    check_bundle,
    geometry,
    sampler_config,
    stage_denoiser,
    uses_layout,
)
from wsi_synth.generation.decode import DecodedImage, default_decode_batch
from wsi_synth.generation.masks import (
    PixelLabels,
    Roughness,
    layout_start,
    load_mask,
    mask_classes,
    mask_cleaning,
    mask_sha256,
    smooth,
)
from wsi_synth.generation.plan import Plan, plan_run
from wsi_synth.generation.section import OnGlass
from wsi_synth.models.bundle import Bundle, open_bundle
from wsi_synth.progress import ProgressCallback, TaskClock
from wsi_synth.resumable import WorkFolder, model_sha256
from wsi_synth.sampling.canvas import sample_canvas
from wsi_synth.sampling.sampler import SampleStats

logger = logging.getLogger(__name__)

#: Settings that do not change the result, left out of the fingerprint: how the work is run, not what it makes.
NOT_IN_FINGERPRINT = (
    "batch_size",
    "decode_batch",
    "device",
    "tiff_tile",
    "quality",
    "save_every",
    "max_memory_gb",
    "workers",
    "threads",
    "scheduler",
    "format",
    "ngff",
    "annotations",
)


@dataclass(frozen=True)
class RunRecord:
    """What `s.json` says of a `generate` run: the model, the version, every setting, the plan, whether it ran out of
    core or resumed, the evaluations per stage, the classes, the timings and the decode's cost; `outputs` is what
    was written (added by the writer). `to_json`/`from_json` are the file's document."""

    model: str
    wsi_synth: str
    config: dict
    plan: Plan
    out_of_core: bool
    resumed: bool
    evaluations: dict[str, SampleStats]
    classes: list[dict]
    timings: dict[str, float]
    decode: dict[str, float]
    outputs: dict | None = None

    def to_json(self) -> dict:
        """The record as written to `s.json` (without `outputs`, which the writer adds)."""
        doc: dict = {"model": self.model, "wsi_synth": self.wsi_synth, "config": self.config}
        doc["plan"] = self.plan.to_json()
        doc |= {"out_of_core": self.out_of_core, "resumed": self.resumed}
        doc["evaluations"] = {k: asdict(v) for k, v in self.evaluations.items()}
        doc |= {"classes": self.classes, "timings": self.timings, "decode": self.decode}
        return doc | ({"outputs": self.outputs} if self.outputs is not None else {})

    @classmethod
    def from_json(cls, doc: dict) -> RunRecord:
        """A record read back from `s.json`."""
        return cls(
            str(doc["model"]),
            str(doc["wsi_synth"]),
            dict(doc["config"]),
            Plan.from_json(doc["plan"]),
            bool(doc["out_of_core"]),
            bool(doc["resumed"]),
            {k: SampleStats(**v) for k, v in doc["evaluations"].items()},
            list(doc["classes"]),
            dict(doc["timings"]),
            dict(doc["decode"]),
            doc.get("outputs"),
        )


def generate(
    model: str | Path,
    out: str | Path,
    config: GenerateConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Generate a synthetic slide and its mask; write s.tiff, s.mask.tiff, s.geojson, s.json beside `out` (or the
    set of `config.format` and `config.annotations`, see `io.outputs`).

    The output set is claimed for the run (a second run on the same `out` fails at once) and renamed into place
    together at the end. Everything that can be checked is checked before the work folder is made; when a run
    fails, its work folder is removed unless it holds a saved state worth resuming (never after a full disk).
    `on_progress` receives a `Progress` report after every solver step of each stage.
    """
    log = log or logger.info  # a library logs; the CLI passes its own stderr writer
    from wsi_synth.io.atomic import check_not_inputs, check_output
    from wsi_synth.io.outputs import OutputPaths, check_ngff, claim_outputs

    config.validate()
    use_threads(config.threads)
    bundle = open_bundle(model)
    check_bundle(bundle, config)
    for stage in ("codec", "image") + (("mask",) if config.mask is None else ()):
        bundle.check_files(stage)
    g = geometry(bundle, config)
    paths = OutputPaths.beside(out, config.format, config.annotations)
    check_ngff(config.ngff, paths.format)
    check_not_inputs(paths.touched(overwrite=overwrite), [config.mask, model])
    with claim_outputs(out):
        for p in paths.all():
            check_output(p, overwrite=overwrite)
        plan = plan_run(bundle, config, g)
        out_of_core = plan.memory_bytes > config.max_memory_gb * 1e9
        check_resources(plan, config, Path(out), out_of_core=out_of_core)
        user_mask = load_mask(config.mask, bundle, g, stretch=config.stretch) if config.mask is not None else None
        log(f"plan: {json.dumps(plan.to_json())}")
        for note in plan.notes:
            log(f"note: {note}")
        identity = run_fingerprint(bundle, config)
        folder = WorkFolder.beside(out, identity, saved=_has_saved_state)
        work = folder.path
        resumed = folder.prepare(resume=resume, overwrite=overwrite)
        if resume and not resumed:
            log(f"nothing to resume in {work}: starting from the beginning")
        with folder.running(log), _cluster_loss_named(config, work):
            result = _run(
                model,
                bundle,
                out,
                config,
                g,
                plan,
                work,
                identity,
                user_mask,
                out_of_core=out_of_core,
                resumed=resumed,
                overwrite=overwrite,
                progress=progress,
                log=log,
                on_progress=on_progress,
            )
    return result


def sample_class_map(
    model,
    bundle: Bundle,
    config: GenerateConfig,
    g,
    *,
    work: Path | None = None,
    identity: dict | None = None,
    stats: dict | None = None,
    run: dict | None = None,
    timings: dict | None = None,
    on_progress: ProgressCallback | None = None,
) -> np.ndarray:
    """The cleaned class map on the mask canvas: the mask stage, started from the layout stage's layout where the
    bundle has one (or that layout alone at --layout-strength 0)."""
    stats = stats if stats is not None else {"mask": SampleStats(), "layout": SampleStats()}
    run = run if run is not None else {}
    timings = timings if timings is not None else {}
    abar = bundle.schedule.alphas_cumprod()
    start = None
    if uses_layout(bundle, config):
        started = time.perf_counter()
        layout = _sample_stage(model, bundle, config, g, abar, "layout", work, identity or {}, stats, run, on_progress)
        layout = _as_section(layout, bundle, config, g)
        timings["layout_s"] = round(time.perf_counter() - started, 2)
        if config.layout_strength == 0:
            cleaning = mask_cleaning(config, bundle, coarser=g.px_per_lay / g.px_per_msk)
            return smooth(mask_classes(layout, **cleaning), g.px_per_lay, g.msk, g.px_per_msk)
        start = layout_start(layout, g.px_per_lay, g, config.layout_strength)
    one_hot = _sample_stage(
        model, bundle, config, g, abar, "mask", work, identity or {}, stats, run, on_progress, start=start
    )
    return mask_classes(one_hot, **mask_cleaning(config, bundle))


def _section(bundle: Bundle, config: GenerateConfig, g) -> tuple[np.ndarray, int] | None:
    """(the section's field on the layout canvas, the background class) where `--section` draws one, else None."""
    from wsi_synth.generation.section import background_id, section_field, wants_section

    background = background_id(bundle.classes)
    if background is None or not uses_layout(bundle, config) or not wants_section(config.section, g.lay, g.lay_crop):
        return None
    extent = (g.px[0] / g.px_per_lay, g.px[1] / g.px_per_lay)  # the slide in layout px (the canvas may overhang it)
    return section_field(g.lay, extent, config.seed), background


def _as_section(layout: np.ndarray, bundle: Bundle, config: GenerateConfig, g) -> np.ndarray:
    """The layout as a tissue section on glass where `--section` asks for one, else unchanged."""
    from wsi_synth.generation.section import on_glass

    section = _section(bundle, config, g)
    return layout if section is None else on_glass(layout, *section)


def _sample_stage(
    model,
    bundle: Bundle,
    config: GenerateConfig,
    g,
    abar,
    stage: str,
    work: Path | None,
    identity: dict,
    stats: dict,
    run: dict,
    on_progress,
    start=None,
) -> np.ndarray:
    """The one-hot canvas of the layout or mask stage, prompted with the subtype."""
    canvas = g.lay if stage == "layout" else g.msk
    assert config.subtype is not None and canvas is not None, "check_bundle requires a subtype for the mask stage"
    condition = (
        bundle.layout_condition(config.subtype) if stage == "layout" else 1 + bundle.subtypes.index(config.subtype)
    )
    sampler = sampler_config(config, g, stage, bundle)
    one_hot = sample_canvas(
        stage_denoiser(model, stage, config.device, sampler),
        (len(bundle.classes), *canvas),
        abar=abar,
        config=sampler,
        work=work / stage if work is not None else None,
        condition=condition,
        stats=stats[stage],
        fingerprint={**identity, "stage": stage},
        progress=TaskClock(f"{stage} stage", "step", on_progress, lambda: stats[stage].evaluations),
        start=start,
        **run,
    )
    return np.asarray(one_hot[:])


def _run(
    model,
    bundle: Bundle,
    out,
    config: GenerateConfig,
    g,
    plan: Plan,
    work: Path,
    identity: dict,
    user_mask: np.ndarray | None,
    *,
    out_of_core: bool,
    resumed: bool,
    overwrite: bool,
    progress: bool,
    log,
    on_progress: ProgressCallback | None = None,
) -> dict:
    from wsi_synth.io.outputs import write_slide_outputs

    abar = bundle.schedule.alphas_cumprod()
    timings: dict[str, float] = {}
    stats = {"mask": SampleStats(), "image": SampleStats()}
    if uses_layout(bundle, config):
        stats["layout"] = SampleStats()
    with Cluster(workers=config.workers, scheduler=config.scheduler, threads=config.threads) as client:
        # a cluster's tasks share the canvas through the zarr work store
        out_of_core = out_of_core or client is not None
        run = {"out_of_core": out_of_core, "client": client, "resume": resumed, "save_every": config.save_every}
        started = time.perf_counter()
        if user_mask is not None:
            msk = user_mask
        else:
            msk = sample_class_map(
                model,
                bundle,
                config,
                g,
                work=work,
                identity=identity,
                stats=stats,
                run=run,
                timings=timings,
                on_progress=on_progress,
            )
        timings["mask_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        rough = Roughness(config.boundary_roughness, config.seed)
        lat_labels = smooth(msk, g.px_per_msk, g.lat, g.factor, roughness=rough)
        log(
            f"image stage: canvas {g.lat[1]}×{g.lat[0]} latent px, {plan.steps} {plan.solver} steps"
            + (f"; in a zarr work store ({plan.memory_bytes / 1e9:.1f} GB > --max-memory)" if out_of_core else "")
        )
        sampler = sampler_config(config, g, "image", bundle)
        latents = sample_canvas(
            stage_denoiser(model, "image", config.device, sampler),
            (bundle.latent.channels, *g.lat),
            abar=abar,
            config=sampler,
            work=work / "image",
            labels=lat_labels,
            stats=stats["image"],
            fingerprint={**identity, "stage": "image"},
            progress=TaskClock("image stage", "step", on_progress, lambda: stats["image"].evaluations),
            **run,
        )
        timings["image_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    codec = bundle.load_codec(device=config.device)
    image = DecodedImage(
        codec,
        latents,
        bundle.latent.scale,
        g.factor,
        g.lat_crop,
        g.px,
        config.device,
        batch=config.decode_batch or default_decode_batch(config.device),
    )
    labels = PixelLabels(msk, g.px_per_msk, g.px, Roughness(config.boundary_roughness, config.seed))
    pixels: DecodedImage | OnGlass = image
    section = _section(bundle, config, g)  # None with a --mask: no layout stage runs
    if section is not None:
        pixels = OnGlass(image, labels, section[0], g.px_per_lay, section[1])

    def record() -> dict:  # written last, once the pyramids are complete, so it holds the decode's own figures
        timings["decode_write_s"] = round(time.perf_counter() - started, 2)
        decode = {
            "decoded_latent_px": image.decoded_latent_px,
            "relative_to_one_plain_decode": round(image.decoded_latent_px / (g.lat[0] * g.lat[1]), 3),
        }
        model_path = str(Path(model).resolve())
        made = RunRecord(model_path, __version__, asdict(config), plan, out_of_core, resumed, stats, bundle.classes,
                         timings, decode)  # fmt: skip
        return made.to_json()

    result = write_slide_outputs(
        pixels,
        labels,
        out,
        mpp=bundle.mpp,
        classes=bundle.classes,
        tile=config.tiff_tile,
        quality=config.quality,
        overwrite=overwrite,
        progress=progress,
        record=record,
        fmt=config.format,
        ngff=config.ngff,
        annotations=config.annotations,
    )
    return {**result, "timings": timings, "evaluations": {k: asdict(v) for k, v in stats.items()}}


def check_resources(plan: Plan, config: GenerateConfig, out: Path, *, out_of_core: bool) -> None:
    """Refuse at the start a run that cannot finish: canvases larger than the memory available, or a work store
    and outputs larger than the free disk. Each message gives the estimate and the way out."""
    from wsi_synth.io.atomic import check_folder, human_size

    need_memory = 0 if out_of_core else plan.memory_bytes
    available = available_memory()
    if available is not None and need_memory > available:
        raise BadArgumentError(
            f"the canvases need about {human_size(need_memory)} of memory and {human_size(available)} is available: "
            f"lower --max-memory (now {config.max_memory_gb:g}) to keep them in a work store on disk"
        )
    from wsi_synth.io.pyramid import slide_output_bytes

    need_disk = (plan.memory_bytes if out_of_core else 0) + slide_output_bytes(
        config.width, config.height, lossless=config.format == "ome-zarr"
    )
    folder = check_folder(out)
    free = shutil.disk_usage(folder).free
    if need_disk > free:
        raise BadArgumentError(
            f"this run needs about {human_size(need_disk)} of disk in {folder} (work store and outputs) and "
            f"{human_size(free)} is free: free some space or choose another --out"
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable; else free pages), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextmanager
def _cluster_loss_named(config: GenerateConfig, work: Path) -> Iterator[None]:
    """A lost dask cluster as one line that says where the saved state is and how to go on."""
    try:
        yield
    except Exception as exc:
        if (config.scheduler or config.workers > 1) and cluster_lost(exc):
            where = f"at {config.scheduler}" if config.scheduler else f"of {config.workers} local workers"
            raise ClusterLostError(
                f"the dask cluster {where} was lost during the run ({type(exc).__name__}); the state saved so far "
                f"is in {work}: start the cluster again and re-run with --resume"
            ) from exc
        raise


def _has_saved_state(work: Path) -> bool:
    """Whether a stage of the run saved a state to resume from (each stage's `state.json` pointer)."""
    return any(work.glob("*/state.json"))


def run_fingerprint(bundle: Bundle, config: GenerateConfig) -> dict:
    """Everything that determines the output: the model's files, the mask file, and every setting that matters."""
    settings = {k: v for k, v in asdict(config).items() if k not in NOT_IN_FINGERPRINT and k != "mask"}
    return {
        "wsi_synth": __version__,
        "model_sha256": model_sha256(bundle),
        "mask_sha256": mask_sha256(config.mask) if config.mask else None,
        **settings,
    }
