"""What a `generate` run is asked for (`GenerateConfig`), the canvases it implies (`Geometry`), and the sampler
settings of each stage. Sizes are (height, width); `px_` is output pixels, `lat_` latent pixels, `msk_`
mask-canvas pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from wsi_synth.devices import check_device
from wsi_synth.errors import BadArgumentError, BadModelError
from wsi_synth.generation.section import background_id
from wsi_synth.io.outputs import annotation_formats
from wsi_synth.models.bundle import Bundle
from wsi_synth.models.conditioning import Conditioning
from wsi_synth.models.denoiser import BundleDenoiser
from wsi_synth.options import DEFAULT_SOLVER, GENERATE, by_name, check_options, check_sampling
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig

_G = by_name(GENERATE)  # each field's default is its option's (wsi_synth.options)


@dataclass(frozen=True)
class GenerateConfig:
    """What a `generate` run is asked for: the CLI's options (`max_memory_gb` is `--max-memory`)."""

    width: int
    height: int
    subtype: str | None = None
    steps: int = _G["steps"].default
    solver: str = _G["solver"].default
    eta: float = _G["eta"].default
    omega: float = _G["omega"].default
    mask_omega: float = _G["mask_omega"].default
    planner: str = _G["planner"].default
    context: int | None = _G["context"].default  # latent px; None = d/8
    batch_size: int = _G["batch_size"].default
    decode_batch: int = _G["decode_batch"].default  # tiles per codec call; 0 = sized to the device
    seed: int = _G["seed"].default
    device: str = _G["device"].default
    mask: str | None = None
    tiff_tile: int = _G["tiff_tile"].default
    quality: int = _G["quality"].default
    save_every: int = _G["save_every"].default
    max_memory_gb: float = _G["max_memory"].default  # canvases larger than this live in a zarr work store
    workers: int = _G["workers"].default  # > 1: a local dask.distributed cluster of this many worker processes
    # torch threads of this process (0: one per core); local workers get cores / workers
    threads: int = _G["threads"].default
    scheduler: str | None = None  # tcp://HOST:PORT of a running dask.distributed scheduler
    min_region: int = 3  # mask-canvas px: regions thinner than this are removed (the paper's min-pooling)
    mask_sigma: float = 1.0  # mask-canvas px: the sampled one-hot is smoothed by this Gaussian before the argmax
    # wander of class contours (generation.masks.Roughness)
    boundary_roughness: float = _G["boundary_roughness"].default
    # how far the mask stage departs from the layout (1: ignores it)
    layout_strength: float = _G["layout_strength"].default
    section: str = _G["section"].default  # a tissue section on glass (generation.section): auto, on, off
    stretch: bool = False  # a --mask of another aspect ratio is resized to fit (else refused)
    format: str | None = None  # tiff, ome-tiff, ome-zarr; None: from the output's name
    ngff: str = _G["ngff"].default  # the NGFF version of an OME-Zarr output
    annotations: tuple[str, ...] = tuple(_G["annotations"].default.split(","))  # geojson (QuPath), asap (ASAP XML)

    def validate(self) -> None:
        """Refuse values no run can use, with a line naming the option and its range."""
        check_options(self, GENERATE)
        check_sampling(self)
        annotation_formats(self.annotations)
        check_device(self.device)


@dataclass(frozen=True)
class Geometry:
    """The canvases of a run: output, latent and mask sizes (height, width), the codec factor and crop sizes; the
    layout canvas (`lay`, None without a layout stage) is coarser than the mask canvas."""

    px: tuple[int, int]
    lat: tuple[int, int]
    msk: tuple[int, int]
    factor: int
    lat_crop: int
    msk_crop: int
    px_per_msk: float
    lay: tuple[int, int] | None = None
    lay_crop: int = 0
    px_per_lay: float = 0.0


def geometry(bundle: Bundle, config: GenerateConfig) -> Geometry:
    """Canvas sizes for the output; canvases are at least one crop (the output is cut from the corner)."""
    factor = bundle.latent.factor
    lat_crop = bundle.tile_size // factor
    msk_crop = bundle.region_mask_size
    px_per_msk = bundle.region_size / bundle.region_mask_size
    h, w = config.height, config.width
    lat = (max(math.ceil(h / factor), lat_crop), max(math.ceil(w / factor), lat_crop))
    msk = (max(math.ceil(h / px_per_msk), msk_crop), max(math.ceil(w / px_per_msk), msk_crop))
    if not uses_layout(bundle, config):
        return Geometry((h, w), lat, msk, factor, lat_crop, msk_crop, px_per_msk)
    region, lay_crop = bundle.layout_geometry  # type: ignore[misc]
    px_per_lay = region / lay_crop
    # the layout canvas covers the mask canvas (which may be larger than the output: at least one crop)
    lay = tuple(max(math.ceil(m * px_per_msk / px_per_lay), lay_crop) for m in msk)
    return Geometry((h, w), lat, msk, factor, lat_crop, msk_crop, px_per_msk, lay, lay_crop, px_per_lay)  # type: ignore[arg-type]


def uses_layout(bundle: Bundle, config: GenerateConfig) -> bool:
    """Whether the run samples the layout stage: the bundle has one, the mask stage runs, and it is not ignored."""
    return bundle.layout_geometry is not None and config.mask is None and config.layout_strength < 1


def planner_config(config: GenerateConfig, crop: int) -> PlannerConfig:
    """The planner for crops of `crop` px: the context margin defaults to d/8 and applies to shifted-grid only."""
    context = config.context if config.context is not None else crop // 8
    planner = PlannerConfig(config.planner, crop, context if config.planner == "shifted-grid" else 0)
    planner.validate()
    return planner


def sampler_config(config: GenerateConfig, g: Geometry, stage: str, bundle: Bundle) -> SamplerConfig:
    """The sampler settings of the layout, mask or image stage (the image stage draws from seed + 1, the layout stage
    from seed + 2; the image stage is conditioned the way the bundle's image network was trained). A stage run by its
    distilled student samples without guidance: the student has it folded in."""
    crop = {"mask": g.msk_crop, "layout": g.lay_crop}.get(stage, g.lat_crop)
    omega = config.omega if stage == "image" else config.mask_omega
    solver = stage_solver(bundle, stage, config.solver, config.steps, omega)
    return SamplerConfig(
        planner_config(config, crop),
        steps=config.steps,
        eta=config.eta,
        omega=0.0 if solver == "distilled" else omega,
        batch_size=config.batch_size,
        window=window_size(crop),
        seed=config.seed + {"mask": 0, "image": 1, "layout": 2}[stage],
        solver=solver,
        conditioning=bundle.conditioning if stage == "image" else Conditioning(),
    )


def stage_solver(bundle: Bundle, stage: str, solver: str, steps: int, omega: float) -> str:
    """The solver `stage` runs. `auto`: its distilled student where the bundle holds a current one (its teacher
    unchanged since) for at least `steps` steps with guidance `omega` folded in, else DPM-Solver++. `distilled`: the
    student, refused with the reason where the image stage's cannot serve (a class-map stage without a student of
    its own runs DPM-Solver++). Any other name is the teacher with that solver."""
    if solver not in ("auto", "distilled"):
        return solver
    why_not = _student_unfit(bundle, stage, steps, omega)
    if why_not is None:
        return "distilled"
    if solver == "distilled" and (stage == "image" or bundle.student(stage) is not None):
        raise BadArgumentError(f"--solver distilled: {why_not}")
    return DEFAULT_SOLVER


def _student_unfit(bundle: Bundle, stage: str, steps: int, omega: float) -> str | None:
    """Why `stage`'s student cannot run these steps and guidance, or None when it can."""
    record = bundle.student(stage)
    if record is None:
        return (
            f"the model has no distilled {stage} stage (make one with `wsi-synth distill MODEL DATA --stage {stage}`)"
        )
    if steps > int(record.get("distilled_steps", 0)):
        return f"the {stage} stage was distilled for at most {record.get('distilled_steps')} steps, not {steps}"
    if float(record.get("omega", 0.0)) != omega:
        flag = "--omega" if stage == "image" else "--mask-omega"
        return f"the {stage} student has guidance {record.get('omega')} folded in, not {flag} {omega}"
    if record.get("teacher_sha256") != bundle.teacher_sha256(stage):
        return f"the {stage} stage was retrained after its student was distilled: distil it again (--overwrite)"
    return None


def stage_denoiser(model: str | Path, stage: str, device: str, sampler: SamplerConfig) -> BundleDenoiser:
    """The network that runs a stage with these sampler settings: its distilled student, or the stage's own."""
    return BundleDenoiser(str(model), stage, device, student=sampler.solver == "distilled")


def window_size(crop: int) -> int:
    """Chunk side in latent px: 16 crops (a multiple of the random-patch planning region)."""
    return 16 * crop


def check_bundle(bundle: Bundle, config: GenerateConfig) -> None:
    """Refuse a bundle that lacks a stage or a key this run needs, or a subtype it does not know."""
    bundle.require("image")
    bundle.require("codec")
    if config.mask is None:
        bundle.require("mask")
        if config.subtype is None:
            raise BadArgumentError(
                f"--subtype is required (the mask stage's prompt): one of {', '.join(bundle.subtypes) or '(none)'}; or "
                "pass --mask to give the class map yourself"
            )
        if config.subtype not in bundle.subtypes:
            raise BadArgumentError(
                f"--subtype {config.subtype!r} is not one the model knows: {', '.join(bundle.subtypes) or '(none)'}"
            )
    if config.section == "on" and (not uses_layout(bundle, config) or background_id(bundle.classes) is None):
        raise BadArgumentError(
            "--section on draws the section's outline around the layout stage's layout, glass (class background) "
            "outside: the run needs a model with a layout stage and a background class, and no --mask or "
            "--layout-strength 1"
        )
    # each refuses a bundle that lacks it
    _ = (bundle.latent, bundle.tile_size, bundle.region_size, bundle.region_mask_size)
    if not bundle.classes:
        raise BadModelError(f"model bundle {bundle.root}: model.json lists no classes: train the codec stage first")
    trained = bundle.schedule.num_train_timesteps
    if config.steps > trained:
        raise BadArgumentError(
            f"--steps {config.steps} is more than the {trained} noise levels the model was trained on: use at most "
            f"{trained} "
            f"(20 DPM-Solver++ or 50 DDIM steps are enough)"
        )
