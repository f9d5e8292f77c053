"""`wsi-synth distill` and the `distilled` solver: the student's training, its record in the bundle, when generate
uses it, its sampling maths against diffusers' LCMScheduler and the exact Gaussian field, and its refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from wsi_synth_cli.main import cli

from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.diffusion.solvers import distillation_timesteps, lcm_scheduler, make_solver
from wsi_synth.sampling.canvas import sample_canvas, sample_canvases
from wsi_synth.sampling.gaussian import GaussianFieldDenoiser, GaussianFieldStudent
from wsi_synth.sampling.planners import PlannerConfig
from wsi_synth.sampling.sampler import SamplerConfig

ABAR = alphas_cumprod().float()


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_the_distilled_solver_is_diffusers_lcm_step_with_the_same_noise(steps):
    from diffusers.utils.torch_utils import randn_tensor

    solver = make_solver("distilled", ABAR, steps)
    scheduler = lcm_scheduler(ABAR)
    scheduler.set_timesteps(steps)
    assert solver.timesteps == tuple(int(t) for t in scheduler.timesteps)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours, theirs = x.numpy().copy(), x.clone()
    for j, t in enumerate(solver.timesteps):
        eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(100 + j))
        theirs = scheduler.step(eps, t, theirs, generator=torch.Generator().manual_seed(j)).prev_sample
        noise = randn_tensor(eps.shape, generator=torch.Generator().manual_seed(j)).numpy()
        ours, _ = solver.update(j, ours, eps.numpy(), None, noise=noise if j + 1 < steps else None)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)


def test_a_student_for_n_steps_learns_every_timestep_of_1_to_n_steps():
    grid = distillation_timesteps(ABAR, 4)
    for k in range(1, 5):
        assert set(make_solver("distilled", ABAR, k).timesteps) <= set(grid)
    assert 999 in grid and len(grid) == len(set(grid))


def test_the_exact_student_of_a_gaussian_field_draws_its_variance_in_one_to_four_steps():
    """With the perfect student, each step's x̂₀ is an exact sample, so 1, 2 or 4 steps keep the field's variance and
    correlation; the exact ε-oracle with DPM-Solver++ at 4 steps does not (it blurs)."""
    d, length = 8, 2.0

    def statistics(denoiser, solver: str, steps: int) -> dict:
        configs = [
            SamplerConfig(PlannerConfig("fixed-grid", d, 0), steps=steps, batch_size=64, seed=s, solver=solver)
            for s in range(400)
        ]
        x = np.stack(sample_canvases(denoiser, (1, d, d), ABAR, configs))[:, 0].astype(np.float64)
        variance = float((x**2).mean())
        return {"variance": variance, "lag1": float((x[..., :-1] * x[..., 1:]).mean() / variance)}

    student = GaussianFieldStudent(d, length, ABAR)
    for steps in (1, 2, 4):
        s = statistics(student, "distilled", steps)
        assert abs(s["variance"] - 1) < 0.15, (steps, s)
        assert abs(s["lag1"] - student.target_correlation(1)) < 0.03, (steps, s)
    assert statistics(GaussianFieldDenoiser(d, length, ABAR), "dpm-solver++", 4)["variance"] < 0.8


def _fake_student(z, t, labels, masks):
    # a smooth, position-free function of the crop: any chunking must give the same canvas
    return torch.tanh(z * 0.5 + t.view(-1, 1, 1, 1).float() / 1000)


@pytest.mark.parametrize("change", [{"window": 32}, {"batch_size": 3}, {"window": 48, "batch_size": 7}])
def test_distilled_sampling_is_the_same_for_any_window_and_batch(change):
    """Its fresh noise at every step is keyed by seed, step and position, like the initial noise."""
    planner = PlannerConfig("random-patch", 16, 0, region=32)
    base = SamplerConfig(planner, steps=4, batch_size=64, seed=3, solver="distilled")
    other = SamplerConfig(**{**base.__dict__, **change})
    a = sample_canvas(_fake_student, (2, 96, 96), ABAR, base)
    b = sample_canvas(_fake_student, (2, 96, 96), ABAR, other)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        a, sample_canvas(_fake_student, (2, 96, 96), ABAR, SamplerConfig(**{**base.__dict__, "seed": 4}))
    )


@pytest.fixture(scope="module")
def distilled(tiny_model, tmp_path_factory):
    """A copy of the tiny model with an image student for ≤ 3 steps, distilled from the CLI: (data, model, record)."""
    from click.testing import CliRunner

    model = tmp_path_factory.mktemp("distilled") / "model"
    shutil.copytree(tiny_model, model)
    data = tiny_model.parent / "data"
    result = CliRunner().invoke(
        cli,
        ["distill", str(model), str(data), "--steps", "3", "--max-steps", "40", "--batch-size", "8", "--lr", "1e-3",
         "--sample-every", "40", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return data, model, json.loads(result.output)


def test_distill_records_the_student_beside_its_teacher_in_float16(distilled, tiny_model):
    from safetensors import safe_open

    from wsi_synth.models.bundle import open_bundle

    _, model, record = distilled
    bundle = open_bundle(model)
    saved = bundle.student("image")
    assert saved is not None and saved["distilled_steps"] == 3 and saved["omega"] == 0.0
    assert saved["timesteps"] == list(distillation_timesteps(ABAR, 3)) == record["timesteps"]
    assert saved["teacher_sha256"] == bundle.teacher_sha256("image") == open_bundle(tiny_model).teacher_sha256("image")
    (weights,) = (model / "image_student").glob("*.safetensors")
    with safe_open(str(weights), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    assert (model / "previews" / "image_student_step0000040.png").is_file()
    student = bundle.load_unet("image_student")
    assert next(student.parameters()).dtype == torch.float32
    assert any(
        not torch.equal(p, q) for p, q in zip(student.parameters(), bundle.load_unet("image").parameters(), strict=True)
    )


def test_the_student_lands_nearer_the_teachers_ode_end_than_the_teacher_in_one_step(distilled):
    """What distillation is for: from x_t, the student's x̂₀ is nearer where the teacher's 20-step ODE ends than the
    teacher's own one-step x̂₀ (measured on training draws it never saw: other steps of the draw sequence)."""
    from wsi_synth.data.store import open_dataset
    from wsi_synth.models.bundle import open_bundle
    from wsi_synth.models.denoiser import network_eps
    from wsi_synth.training.distill import DistillConfig, TeacherODE, _split_draw, _student_spec

    data, model, _ = distilled
    bundle = open_bundle(model)
    spec, _ = _student_spec(bundle, open_dataset(data), "image", DistillConfig(steps=3, batch_size=8), "cpu")
    teacher, student = bundle.load_unet("image"), bundle.load_unet("image_student")
    ode = TeacherODE(teacher, "image", "cpu", ABAR, omega=0.0, steps=20)
    errors = {"teacher": 0.0, "student": 0.0}
    for step in range(10_000, 10_006):
        x0, masks, labels = _split_draw(spec.draw(step), "image")  # type: ignore[misc]
        for t in (999, 499):
            a, s = float(ABAR[t]) ** 0.5, (1 - float(ABAR[t])) ** 0.5
            xt = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(step))
            end = ode.solve(xt, t, labels, masks)
            ts = torch.full((len(xt),), t)
            for name, net in (("teacher", teacher), ("student", student)):
                x0_hat = (xt - s * network_eps(net, "image", "cpu", xt, ts, labels, masks)) / a
                errors[name] += float((x0_hat - end).pow(2).mean())
    assert errors["student"] < 0.8 * errors["teacher"], errors


def _plan(runner, model, *args) -> dict:
    result = runner.invoke(
        cli,
        ["generate", "-m", str(model), "--size", "128", "--subtype", "adenocarcinoma", "--out", "x.tiff", "--dry-run",
         "--json", *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_generate_uses_the_student_at_or_below_its_steps_and_the_teacher_otherwise(distilled, runner):
    _, model, _ = distilled
    for steps in ("1", "3"):
        plan = _plan(runner, model, "--steps", steps)
        assert plan["solver"] == plan["stages"]["image"]["solver"] == "distilled"
        assert plan["stages"]["mask"]["solver"] == "dpm-solver++"  # no mask student: the mask stage keeps its teacher
        assert plan["stages"]["image"]["steps"] == int(steps)
    assert _plan(runner, model, "--steps", "4")["solver"] == "dpm-solver++"
    assert _plan(runner, model, "--steps", "3", "--solver", "dpm-solver++")["solver"] == "dpm-solver++"
    assert _plan(runner, model, "--steps", "3", "--omega", "1")["solver"] == "dpm-solver++", "ω is folded in at 0"


def test_a_student_slide_is_deterministic_and_differs_from_the_teachers(distilled, tmp_path):
    import tifffile

    import wsi_synth

    _, model, _ = distilled
    common = {"size": 128, "subtype": "adenocarcinoma", "steps": 3, "seed": 5}
    wsi_synth.generate(model, tmp_path / "a.tiff", **common)
    wsi_synth.generate(model, tmp_path / "b.tiff", **common, batch_size=5)
    wsi_synth.generate(model, tmp_path / "t.tiff", **common, solver="dpm-solver++")
    records = {k: json.loads((tmp_path / f"{k}.json").read_text()) for k in "abt"}
    assert records["a"]["plan"]["solver"] == "distilled" and records["t"]["plan"]["solver"] == "dpm-solver++"
    assert records["a"]["evaluations"]["image"]["steps"] == 3 == records["t"]["evaluations"]["image"]["steps"]
    pixels = {k: tifffile.imread(tmp_path / f"{k}.tiff").astype(int) for k in "abt"}
    assert np.array_equal(tifffile.imread(tmp_path / "a.mask.tiff"), tifffile.imread(tmp_path / "b.mask.tiff"))
    # as for the teacher (test_generate): batched CPU kernels round differently per batch size, noise and plans do not
    # depend on it (bit-identical in test_distilled_sampling_is_the_same_for_any_window_and_batch)
    assert (pixels["a"] == pixels["b"]).mean() > 0.99 and np.abs(pixels["a"] - pixels["b"]).max() <= 16
    assert (pixels["a"] != pixels["t"]).mean() > 0.5


def test_solver_distilled_is_refused_where_the_student_cannot_serve(distilled, tiny_model, runner):
    _, model, _ = distilled
    cases = {
        (str(tiny_model), "3"): "no distilled image stage",
        (str(model), "4"): "distilled for at most 3 steps",
    }
    for (bundle, steps), message in cases.items():
        result = runner.invoke(
            cli,
            ["generate", "-m", bundle, "--size", "128", "--subtype", "adenocarcinoma", "--out", "x.tiff", "--dry-run",
             "--solver", "distilled", "--steps", steps],
        )  # fmt: skip
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    result = runner.invoke(
        cli,
        ["generate", "-m", str(model), "--size", "128", "--subtype", "adenocarcinoma", "--out", "x.tiff", "--dry-run",
         "--solver", "distilled", "--steps", "2", "--omega", "2"],
    )  # fmt: skip
    assert result.exit_code == 2 and "folded in" in result.output


def test_a_student_whose_teacher_changed_is_not_used(distilled, tmp_path, runner):
    """A student is only valid for the weights it was distilled from: auto falls back, an explicit request says why,
    and retraining the stage with --overwrite discards it."""
    from safetensors.torch import load_file, save_file

    data, model, _ = distilled
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (weights,) = (copy / "image_unet").glob("*.safetensors")
    tensors = load_file(str(weights))
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, str(weights))
    assert _plan(runner, copy, "--steps", "2")["solver"] == "dpm-solver++"
    refused = runner.invoke(
        cli,
        ["generate", "-m", str(copy), "--size", "128", "--subtype", "adenocarcinoma", "--out", "x.tiff", "--dry-run",
         "--solver", "distilled", "--steps", "2"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "retrained after its student" in refused.output
    retrain = runner.invoke(
        cli,
        ["train", "image", str(data), "--out", str(copy), "--max-steps", "2", "--batch-size", "2", "--overwrite", "-q"],
    )
    assert retrain.exit_code == 0, retrain.output
    assert (
        not (copy / "image_student").exists()
        and "image_student" not in json.loads((copy / "model.json").read_text())["stages"]
    )


def test_distill_resumes_an_interrupted_run_to_the_same_student(distilled, tmp_path, monkeypatch):
    from wsi_synth.training import distill as distill_module
    from wsi_synth.training.distill import DistillConfig, distill

    data, model, _ = distilled
    a, b = tmp_path / "a", tmp_path / "b"
    for copy in (a, b):
        shutil.copytree(model, copy)
        shutil.rmtree(copy / "image_student")
        meta = json.loads((copy / "model.json").read_text())
        del meta["stages"]["image_student"]
        (copy / "model.json").write_text(json.dumps(meta))
        (copy / "checkpoints" / "image_student.pt").unlink()
    config = DistillConfig(steps=2, max_steps=4, batch_size=2, checkpoint_every=100, sample_every=100)
    distill(a, data, "image", config, progress=False)
    real = distill_module.TeacherODE.solve
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(distill_module.TeacherODE, "solve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(b, data, "image", config, progress=False)
    monkeypatch.setattr(distill_module.TeacherODE, "solve", real)
    distill(b, data, "image", config, resume=True, progress=False)
    sa = torch.load(a / "checkpoints" / "image_student.pt", weights_only=False)
    sb = torch.load(b / "checkpoints" / "image_student.pt", weights_only=False)
    assert sa["step"] == sb["step"] == 4 and sa["losses"] == sb["losses"]
    assert all(torch.equal(sa["net"][k], sb["net"][k]) for k in sa["net"])


def test_distill_refuses_what_it_cannot_distil_in_one_line(distilled, tiny_model, tmp_path, runner):
    data, model, _ = distilled
    other = tmp_path / "other-data"
    shutil.copytree(data, other)
    manifest = json.loads((other / "dataset.json").read_text())
    manifest["classes"] = [{**c, "name": c["name"] + "-x"} for c in manifest["classes"]]
    (other / "dataset.json").write_text(json.dumps(manifest))
    no_image = tmp_path / "codec-only"
    no_image.mkdir()
    meta = json.loads((tiny_model / "model.json").read_text())
    meta["stages"] = {"codec": meta["stages"]["codec"]}
    (no_image / "model.json").write_text(json.dumps(meta))
    cases = [
        ([str(model), str(data)], "already has its image_student"),
        ([str(model), str(data), "--resume", "--overwrite"], "pass one of them"),
        ([str(no_image), str(data)], "no image stage"),
        ([str(model), str(other), "--overwrite"], "classes"),
        ([str(model), str(data), "--stage", "codec"], "codec"),
        ([str(model), str(data), "--steps", "17"], "17"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["distill", *args, "-q"])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    assert json.loads((model / "model.json").read_text())["stages"]["image_student"]["distilled_steps"] == 3


def test_count_tiles_use_the_student_and_each_is_the_slide_generate_makes_with_its_seed(distilled, tmp_path, runner):
    import tifffile
    from PIL import Image

    _, model, _ = distilled
    common = ["--model", str(model), "--subtype", "adenocarcinoma", "--steps", "2", "-q"]
    result = runner.invoke(cli, ["generate", *common, "--size", "96", "--count", "2", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "t" / "tiles.json").read_text())
    assert record["solvers"] == {"mask": "dpm-solver++", "image": "distilled"}
    manifest = (tmp_path / "t" / "manifest.csv").read_text().splitlines()
    header, row = manifest[0].split(","), dict(zip(manifest[0].split(","), manifest[2].split(","), strict=True))
    assert "seed" in header
    result = runner.invoke(
        cli, ["generate", *common, "--size", "96", "--seed", row["seed"], "--out", str(tmp_path / "s.tiff")]
    )
    assert result.exit_code == 0, result.output
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "t" / row["mask"])), tifffile.imread(tmp_path / "s.mask.tiff")
    )
    tile = np.asarray(Image.open(tmp_path / "t" / row["image"])).astype(float)
    slide = tifffile.imread(tmp_path / "s.tiff").astype(float)
    assert 10 * np.log10(255**2 / np.mean((tile - slide) ** 2)) > 30


def test_inpaint_uses_the_student_and_keeps_the_slide_outside_the_regions(distilled, cmu_slide, tmp_path, runner):
    import openslide
    from shapely.geometry import Point, mapping

    _, model, _ = distilled
    regions = tmp_path / "r.geojson"
    feature = {"type": "Feature", "geometry": mapping(Point(1100, 1500).buffer(60)), "properties": {"name": "r"}}
    regions.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    out = tmp_path / "edited.tiff"
    result = runner.invoke(
        cli,
        ["inpaint", str(cmu_slide), str(regions), "--model", str(model), "--class", "unknown", "--steps", "2",
         "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["solver"] == "distilled"

    def level0(path):
        with openslide.OpenSlide(str(path)) as s:
            return np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB")).astype(int)

    before, after = level0(cmu_slide), level0(out)
    far = np.ones(before.shape[:2], bool)
    far[1500 - 200 : 1500 + 200, 1100 - 200 : 1100 + 200] = False
    assert np.abs(before[far] - after[far]).mean() < 3  # re-encoded once, not regenerated
    inside = np.abs(before[1480:1520, 1080:1120] - after[1480:1520, 1080:1120]).mean()
    assert inside > 10


def test_the_mask_stage_distils_too_and_each_stage_picks_its_own_student(distilled, tmp_path, runner):
    _, model, _ = distilled
    data = distilled[0]
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    result = runner.invoke(
        cli,
        [
            "distill",
            str(copy),
            str(data),
            "--stage",
            "mask",
            "--steps",
            "2",
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["stage"] == "mask_student"
    two, three = _plan(runner, copy, "--steps", "2"), _plan(runner, copy, "--steps", "3")
    assert two["stages"]["mask"]["solver"] == "distilled" and two["stages"]["image"]["solver"] == "distilled"
    assert three["stages"]["mask"]["solver"] == "dpm-solver++" and three["stages"]["image"]["solver"] == "distilled"
    assert _plan(runner, copy, "--steps", "2", "--mask-omega", "1")["stages"]["mask"]["solver"] == "dpm-solver++"


@pytest.mark.parametrize(
    "damage", [{"distilled_steps": "8"}, {"distilled_steps": 0}, {"omega": None}, {"teacher_sha256": 3}, None]
)
def test_a_damaged_student_record_is_one_line_naming_it(distilled, tmp_path, runner, damage):
    _, model, _ = distilled
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["stages"]["image_student"] = None if damage is None else {**meta["stages"]["image_student"], **damage}
    (copy / "model.json").write_text(json.dumps(meta))
    result = runner.invoke(
        cli,
        ["generate", "-m", str(copy), "--size", "128", "--subtype", "adenocarcinoma", "--out", str(tmp_path / "x.tiff"),
         "--steps", "2", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "image_student" in result.output and len(result.output.strip().splitlines()) == 1, result.output
