"""`distill`: a few-step student of a bundle's diffusion stage (image, mask or layout), trained into the bundle beside
its teacher (which stays).

What the student learns (direct distillation, Luhman & Luhman 2021, sampled like a consistency model: Song et al.
2023, Luo et al. 2023): at each timestep that 1 … N multistep consistency steps visit (diffusers' LCMScheduler grid),
where the teacher's probability-flow ODE ends. A training example is the stage's own training draw x₀ (a tile's
latents with its class map, or a region's class map with its subtype), noised to x_t; the teacher, with its guidance
ω folded in, solves the ODE from there to t = 0 with DPM-Solver++ at the default step density, and the student's ε̂ is
regressed onto the ε that points at that end. `generate` then takes each step's x̂₀ from the student and re-noises it
to the next timestep (`diffusion.solvers`, `distilled`), one evaluation per crop and step, so N steps cost N/20 of
the default and guidance costs nothing more.

The loop, checkpoints, `--resume` and EMA are training's (`training.loop`); the student is saved in float16.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsi_synth.data.store import Dataset, open_dataset
from wsi_synth.devices import check_device
from wsi_synth.diffusion.schedule import guided
from wsi_synth.diffusion.solvers import distillation_timesteps, make_solver
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import check_apart, claim
from wsi_synth.models.bundle import FOLDERS, STUDENTS, BadModelError, Bundle, open_bundle
from wsi_synth.models.config import TrainConfig, config_from_dict
from wsi_synth.models.denoiser import network_eps
from wsi_synth.options import DISTILL, by_name, check_options
from wsi_synth.training.loop import loop
from wsi_synth.training.run import bind_bundle_to_dataset, discard_stage
from wsi_synth.training.stages import StageSpec, build_stage, seed_of

log = logging.getLogger("wsi_synth")


_D = by_name(DISTILL)  # each field's default is its option's (wsi_synth.options)


@dataclass(frozen=True)
class DistillConfig:
    """The settings of one distillation: the student's steps, the guidance folded in, the teacher's step density and
    the training run's length, batch, learning rate and seed (`wsi_synth.options.DISTILL`)."""

    steps: int = _D["steps"].default
    omega: float = _D["omega"].default
    teacher_steps: int = _D["teacher_steps"].default
    max_steps: int = _D["max_steps"].default
    batch_size: int = _D["batch_size"].default
    lr: float = _D["lr"].default
    checkpoint_every: int = _D["checkpoint_every"].default
    sample_every: int = _D["sample_every"].default
    seed: int = _D["seed"].default
    warmup_steps: int = 100

    def validate(self) -> None:
        """Refuse settings that cannot be distilled, naming the option and its range."""
        check_options(self, DISTILL)


def distill(
    model: str | Path,
    data: str | Path,
    stage: str,
    config: DistillConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Distil `stage` (image, mask or layout) of the bundle at `model` into a student for ≤ `config.steps` steps,
    trained on the dataset `data` the stage was trained on (or one with the same classes and geometry). Returns the
    run's record (also written into model.json under `STAGE_student`)."""
    if stage not in STUDENTS:
        raise BadArgumentError(f"--stage must be one of {', '.join(STUDENTS)}, got {stage!r}")
    if resume and overwrite:
        raise BadArgumentError("--resume continues the student and --overwrite starts it again: pass one of them")
    config.validate()
    check_device(device)
    bundle = open_bundle(model)
    bundle.require(stage)
    dataset = open_dataset(data)
    dataset.check()
    check_apart(model, [data])
    student = STUDENTS[stage]
    with claim(bundle.root / FOLDERS[student], f"the {student} of"):
        bind_bundle_to_dataset(bundle, dataset, stage, check_only=True)  # before anything is discarded
        if overwrite:
            discard_stage(bundle, student)
        spec, train_config = _student_spec(bundle, dataset, stage, config, device)
        return loop(spec, bundle, train_config, dataset, resume=resume, device=device, progress=progress)


def _student_spec(
    bundle: Bundle, dataset: Dataset, stage: str, config: DistillConfig, device: str
) -> tuple[StageSpec, TrainConfig]:
    """The student as a stage of training: initialised from its teacher, drawing the teacher's training batches,
    with the distillation loss; previews sampled by the student's own solver at its steps."""
    recorded = (bundle.meta["stages"][stage] or {}).get("config")
    if not isinstance(recorded, dict):
        raise BadModelError(f"model bundle {bundle.root}: the {stage} stage has no training record to distil from")
    teacher_config = config_from_dict(recorded, where=f"{bundle.root}/model.json {stage} config")
    train_config = replace(
        teacher_config,
        batch_size=config.batch_size,
        max_steps=config.max_steps,
        warmup_steps=min(config.warmup_steps, config.max_steps // 10 + 1),
        checkpoint_every=config.checkpoint_every,
        sample_every=config.sample_every,
        seed=config.seed,
    )
    data = build_stage(stage, dataset, bundle, train_config, device, preview=("distilled", config.steps))
    assert data.draw is not None, "every diffusion stage exposes its batches"
    teacher = bundle.load_unet(stage, device=device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = bundle.load_unet(stage, device=device).train()
    abar = bundle.schedule.alphas_cumprod().float()
    grid = distillation_timesteps(abar, config.steps)
    target = TeacherODE(teacher, stage, device, abar, omega=config.omega, steps=config.teacher_steps)
    teacher_sha = bundle.teacher_sha256(stage)

    def loss(net, step: int) -> torch.Tensor:
        x0, extra, labels = _split_draw(data.draw(step), stage)  # type: ignore[misc]
        gen = torch.Generator(device="cpu").manual_seed(seed_of(config.seed, "distill", step))
        t = grid[int(torch.randint(len(grid), (1,), generator=gen))]
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        a, s = math.sqrt(float(abar[t])), math.sqrt(1 - float(abar[t]))
        xt = a * x0 + s * noise
        end = target.solve(xt, t, labels, extra)
        eps_target = (xt - a * end) / s
        inputs = torch.cat([xt, extra], 1) if extra is not None else xt
        predicted = net(inputs, torch.full((len(xt),), t, device=xt.device), class_labels=labels).sample.float()
        return F.mse_loss(predicted, eps_target)

    def finish(net) -> dict:
        return {
            "teacher": stage,
            "teacher_sha256": teacher_sha,
            "distilled_steps": config.steps,
            "timesteps": list(grid),
            "omega": config.omega,
            "teacher_solver": f"dpm-solver++, {config.teacher_steps} steps over the whole schedule",
            "method": "direct distillation of the teacher's ODE end, multistep consistency sampling",
        }

    spec = StageSpec(STUDENTS[stage], student, config.lr, loss, data.preview, finish, data.draw, half=True)
    return spec, train_config


def _split_draw(batch: tuple, stage: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x₀, the image network's map channels or None, class labels) of a stage's training batch."""
    if stage == "image":
        z0, masks, labels = batch
        return z0, masks, labels
    x0, labels = batch
    return x0, None, labels


class TeacherODE:
    """Where the teacher's probability-flow ODE from (x_t, t) ends at t = 0: DPM-Solver++(2M) over the schedule cut
    at t, with as many steps as the default sampler spends on that span, guidance ω as `generate` applies it."""

    def __init__(self, net, stage: str, device: str, abar: torch.Tensor, *, omega: float, steps: int) -> None:
        self.net, self.stage, self.device, self.abar = net, stage, device, abar
        self.omega, self.steps = omega, steps

    def solve(self, xt: torch.Tensor, t: int, labels: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """x̂₀ at the end of the teacher's ODE from the batch `xt` at timestep `t` (one t for the batch)."""
        steps = max(2, math.ceil(self.steps * (t + 1) / len(self.abar)))
        solver = make_solver("dpm-solver++", self.abar[: t + 1], steps)
        x = xt.detach().cpu().numpy().astype(np.float32)
        x0_prev = None
        for j, tj in enumerate(solver.timesteps):
            eps = self.guided_eps(torch.from_numpy(x), tj, labels, extra).numpy()
            x, x0_prev = solver.update(j, x, eps, x0_prev)
        return torch.from_numpy(np.ascontiguousarray(x)).to(xt.device)

    def guided_eps(self, x: torch.Tensor, t: int, labels: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """ε̃ as the sampler forms it: guided (`schedule.guided`) where a pixel has a class (all pixels of a mask-stage
        region with a subtype), the conditional ε elsewhere."""
        ts = torch.full((len(x),), t, dtype=torch.long)
        labels, extra = labels.cpu(), extra.cpu() if extra is not None else None
        eps = network_eps(self.net, self.stage, self.device, x, ts, labels, extra)
        if self.omega == 0:
            return eps
        null_extra = torch.zeros_like(extra) if extra is not None else None
        null = network_eps(self.net, self.stage, self.device, x, ts, torch.zeros_like(labels), null_extra)
        where = (labels != 0).view(-1, 1, 1, 1)
        if extra is not None:
            where = where & (extra.sum(1, keepdim=True) > 0.5)
        return torch.where(where, guided(eps, null, self.omega), eps)
