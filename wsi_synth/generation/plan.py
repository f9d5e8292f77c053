"""What a `generate` run will cost, before it runs: canvases, crops per step against the minimum, denoiser
evaluations, memory — and, when the weights are at hand, a projection of the wall time per stage (host,
denoiser, decode, write) calibrated on the chosen device.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.diffusion.solvers import make_solver
from wsi_synth.generation.config import (
    GenerateConfig,
    Geometry,
    check_bundle,
    geometry,
    planner_config,
    sampler_config,
    stage_denoiser,
    uses_layout,
)
from wsi_synth.models.bundle import Bundle, open_bundle
from wsi_synth.sampling.canvas import start_step
from wsi_synth.sampling.planners import estimate_crops_per_step, minimum_crops
from wsi_synth.sampling.sampler import SamplerConfig, windows_for

#: Denoiser evaluations per image crop of a per-class bundle when the class map is not known yet: one per class
#: present plus the null pass for unknown pixels; measured 1.4–2.9 on real masks (docs/benchmarks.md). A spatial
#: bundle makes exactly one pass per crop (two with guidance).
EVALUATIONS_PER_CROP = 2.0
#: Decode work relative to one non-overlapping decode: (2d / (2d − d/8))².
DECODE_OVERLAP = (16 / 15) ** 2


@dataclass(frozen=True)
class StagePlan:
    """One stage of a plan: its canvas (h, w) and crop, crops per step against the minimum N0, steps, denoiser
    evaluations (exact, or estimated where the class map is not known yet) and planning windows."""

    canvas: tuple[int, int]
    crop: int
    crops_per_step: int
    crops_exact: bool
    n0: int
    evaluations: int
    evaluations_exact: bool
    windows: int
    steps: int
    solver: str = ""  # "distilled" where the stage runs its student; "" (older plans): the plan's

    def to_json(self) -> dict:
        """The stage as `--dry-run --json` prints it (an estimate is named `evaluations_estimate`)."""
        key = "evaluations" if self.evaluations_exact else "evaluations_estimate"
        doc = {"canvas": list(self.canvas), "crop": self.crop, "steps": self.steps}
        doc |= {"solver": self.solver} if self.solver else {}
        doc |= {"crops_per_step": self.crops_per_step, "crops_exact": self.crops_exact, "n0": self.n0}
        return doc | {key: self.evaluations, "windows": self.windows}

    @classmethod
    def from_json(cls, doc: dict, steps: int) -> StagePlan:
        """A stage of a plan read back (a stage without `steps` runs the plan's)."""
        exact = "evaluations" in doc
        canvas = (int(doc["canvas"][0]), int(doc["canvas"][1]))
        evaluations = int(doc["evaluations" if exact else "evaluations_estimate"])
        return cls(
            canvas, int(doc["crop"]), int(doc["crops_per_step"]), bool(doc.get("crops_exact", True)), int(doc["n0"]),
            evaluations, exact, int(doc["windows"]), int(doc.get("steps", steps)), str(doc.get("solver", "")),
        )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What a `generate` run will do: output size, planner, solver and steps, each stage, canvas memory, notes, and
    the projected seconds per part when the weights were at hand. `to_json`/`from_json` are the `--dry-run --json`
    document (and the run record's `plan`)."""

    output_px: tuple[int, int]
    planner: dict
    solver: str
    steps: int
    stages: dict[str, StagePlan]
    memory_bytes: int
    notes: tuple[str, ...] = ()
    projection: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict:
        """The plan as a JSON-ready dict."""
        doc: dict = {"output_px": list(self.output_px), "planner": dict(self.planner), "solver": self.solver}
        doc |= {"steps": self.steps, "stages": {k: v.to_json() for k, v in self.stages.items()}}
        doc["memory_bytes"] = self.memory_bytes
        if self.notes:
            doc["notes"] = list(self.notes)
        if self.projection is not None:
            doc["projection"] = self.projection
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> Plan:
        """A plan read back from its JSON."""
        steps = int(doc["steps"])
        return cls(
            (int(doc["output_px"][0]), int(doc["output_px"][1])),
            dict(doc["planner"]),
            str(doc["solver"]),
            steps,
            {k: StagePlan.from_json(v, steps) for k, v in doc["stages"].items()},
            int(doc["memory_bytes"]),
            tuple(doc.get("notes", ())),
            doc.get("projection"),
        )


def make_plan(model: str | Path, config: GenerateConfig, *, project: bool = False) -> Plan:
    """What a run will do (no weights loaded unless `project`): canvases, crops per step vs N0, evaluations,
    memory; with `project`, also the projected seconds per stage on `config.device`."""
    config.validate()
    bundle = open_bundle(model)
    check_bundle(bundle, config)
    return plan_run(bundle, config, geometry(bundle, config), project=project)


def plan_run(bundle: Bundle, config: GenerateConfig, g: Geometry, *, project: bool = False) -> Plan:
    """`make_plan` for a bundle already opened and checked, and its geometry."""
    image = sampler_config(config, g, "image", bundle)
    steps = len(make_solver(image.solver, bundle.schedule.alphas_cumprod(), config.steps))
    stages: dict[str, StagePlan] = {}
    layout = uses_layout(bundle, config)
    if layout:
        stages["layout"] = _class_map_stage(bundle, config, g, "layout", steps)
    if config.mask is None and not (layout and config.layout_strength == 0):  # strength 0: the layout is the map
        skipped = start_step(steps, config.layout_strength) if layout else 0
        stages["mask"] = _class_map_stage(bundle, config, g, "mask", steps - skipped)
    crops, exact = estimate_crops_per_step(planner_config(config, g.lat_crop), g.lat)
    windows = len(windows_for(image, g.lat))
    stages["image"] = StagePlan(
        g.lat,
        g.lat_crop,
        crops,
        exact,
        minimum_crops(g.lat, g.lat_crop),
        int(crops * image_passes(bundle, image.omega) * steps),
        False,  # passes per crop follow the drawn map (per-class), and repeated edge crops share one evaluation
        windows,
        steps,
        image.solver,
    )
    notes: tuple[str, ...] = ()
    if config.workers > 1 and windows < config.workers:
        # windows are 16 crops a side: smaller ones would evaluate every crop that straddles their edges twice
        notes = (
            f"the image stage is {windows} window(s) of 16 crops a side at this size, so at most {windows} of the "
            f"{config.workers} workers have work; a cluster pays off from about {2 * 16 * g.lat_crop * g.factor:,} px "
            "a side",
        )
    planner = asdict(planner_config(config, g.lat_crop))
    plan = Plan(
        (config.width, config.height), planner, image.solver, steps, stages, canvas_bytes(bundle, g, image), notes
    )
    return replace(plan, projection=projection(bundle, config, g, plan)) if project else plan


def _class_map_stage(bundle: Bundle, config: GenerateConfig, g: Geometry, stage: str, steps: int) -> StagePlan:
    """The plan of the layout or mask stage: `steps` steps over its canvas, one pass per crop (two with guidance)."""
    canvas, crop = (g.lay, g.lay_crop) if stage == "layout" else (g.msk, g.msk_crop)
    assert canvas is not None, "a plan lists the layout stage only when the run has one"
    crops, exact = estimate_crops_per_step(planner_config(config, crop), canvas)
    sampler = sampler_config(config, g, stage, bundle)
    passes = 2 if sampler.omega > 0 else 1
    windows = len(windows_for(sampler, canvas))
    return StagePlan(
        canvas, crop, crops, exact, minimum_crops(canvas, crop), crops * passes * steps, True, windows, steps,
        sampler.solver,
    )  # fmt: skip


def image_passes(bundle: Bundle, omega: float) -> float:
    """Denoiser evaluations per image crop at guidance `omega`: known for spatial conditioning, estimated for
    per-class."""
    if bundle.conditioning.spatial:
        return 2.0 if omega > 0 else 1.0
    return EVALUATIONS_PER_CROP


def canvas_bytes(bundle: Bundle, g: Geometry, image: SamplerConfig) -> int:
    """Bytes of the image stage's state: two buffer sets (x, and x̂₀ for multistep solvers) and the class map."""
    sets = 2 * (2 if image.solver == "dpm-solver++" else 1)
    return sets * bundle.latent.channels * g.lat[0] * g.lat[1] * 4 + g.lat[0] * g.lat[1]


def projection(bundle: Bundle, config: GenerateConfig, g: Geometry, plan: Plan) -> dict:
    """Projected seconds per stage on `config.device`, from short calibrations of each part."""

    channels = bundle.latent.channels
    out: dict = {"device": config.device}
    for stage, info in plan.stages.items():
        crop = {"mask": g.msk_crop, "layout": g.lay_crop}.get(stage)
        shape = (len(bundle.classes), crop, crop) if crop else (channels, g.lat_crop, g.lat_crop)
        sampler = sampler_config(config, g, stage, bundle)
        denoiser = stage_denoiser(bundle.root, stage, config.device, sampler)
        per_call = calibrate(denoiser, shape, config.batch_size, with_mask=stage == "image")
        evaluations = info.evaluations
        crops = info.crops_per_step * info.steps
        host = host_seconds_per_crop(shape, sampler, labelled=stage == "image")
        out[stage] = {
            "denoiser_s": round(evaluations / config.batch_size * per_call, 1),
            "host_s": round(crops * host, 1),
            "denoiser_crops_per_s": round(config.batch_size / per_call, 1),
            "host_us_per_crop": round(host * 1e6, 1),
        }
    decode_s = decode_seconds_per_latent_px(bundle, config, g) * g.lat[0] * g.lat[1] * DECODE_OVERLAP
    out["decode_s"] = round(decode_s, 1)
    out["write_s"] = round(config.width * config.height * 3 / write_bytes_per_second(config), 1)
    out["total_s"] = round(
        sum(v["denoiser_s"] + v["host_s"] for k, v in out.items() if isinstance(v, dict))
        + out["decode_s"]
        + out["write_s"],
        1,
    )
    return out


def calibrate(denoiser, shape: tuple[int, int, int], batch: int, *, with_mask: bool) -> float:
    """Seconds per denoiser call of `batch` crops of `shape` (C, d, d), timed after one warm-up call."""
    z = torch.zeros(batch, *shape)
    t = torch.full((batch,), 500, dtype=torch.long)
    labels = torch.zeros(batch, dtype=torch.long)
    # The image denoiser fills absent masks with the null condition's zeros, as many channels as its scheme takes.
    masks = None
    denoiser(z, t, labels, masks)
    started = time.perf_counter()
    denoiser(z, t, labels, masks)
    return time.perf_counter() - started


def host_seconds_per_crop(shape: tuple[int, int, int], sampler, *, labelled: bool) -> float:
    """The sampler's own time per crop (planning, gathering, indexing, the update), with a null denoiser on one
    window of a canvas with a two-class map."""
    from dataclasses import replace

    from wsi_synth.sampling.canvas import sample
    from wsi_synth.sampling.sampler import SampleStats

    c, d, _ = shape
    side = min(8 * d, 1024)
    labels = None
    if labelled:
        labels = np.zeros((side, side), np.uint8)
        labels[: side // 2] = 1
        labels[:, side // 3 :] = 2
    stats = SampleStats()
    config = replace(sampler, steps=2, window=0)
    started = time.perf_counter()
    sample(lambda z, t, lab, m: z, (c, side, side), alphas_cumprod(1000), config, labels=labels, stats=stats)
    return (time.perf_counter() - started) / max(stats.crops, 1)


def decode_seconds_per_latent_px(bundle: Bundle, config: GenerateConfig, g: Geometry) -> float:
    """Seconds the codec takes per latent pixel on `config.device`, timed on one batch of decode tiles."""
    from wsi_synth.generation.decode import default_decode_batch

    codec = bundle.load_codec(device=config.device)
    batch = config.decode_batch or default_decode_batch(config.device)
    side = min(2 * g.lat_crop, g.lat[0], g.lat[1])
    z = torch.zeros(batch, bundle.latent.channels, side, side, device=config.device)
    with torch.no_grad():
        codec.decode(z)
        started = time.perf_counter()
        codec.decode(z).sample.cpu()
    return (time.perf_counter() - started) / (batch * side * side)


def write_bytes_per_second(config: GenerateConfig) -> float:
    """JPEG tiles per second on this machine's cores (tifffile encodes on every core), as raw RGB bytes/s."""
    import os

    import imagecodecs

    rng = np.random.default_rng(0)  # tissue-like: smooth stain variation plus cell-scale texture
    smooth = np.repeat(np.repeat(rng.normal(0, 30, (config.tiff_tile // 16, config.tiff_tile // 16, 3)), 16, 0), 16, 1)
    tile = np.clip(150 + smooth + rng.normal(0, 25, (config.tiff_tile, config.tiff_tile, 3)), 0, 255).astype(np.uint8)
    imagecodecs.jpeg_encode(tile, level=config.quality)
    started = time.perf_counter()
    for _ in range(8):
        imagecodecs.jpeg_encode(tile, level=config.quality)
    per_core = 8 * tile.nbytes / (time.perf_counter() - started)
    return per_core * (os.cpu_count() or 1) / (4 / 3)  # the levels below add a third more pixels to encode
