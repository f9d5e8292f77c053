"""Each option of the slide-writing commands is defined once (`wsi_synth.options`): the CLI option, the API parameter,
the run configuration's field and docs/api.md agree on the name, the default and the range, and a value outside the
range is refused the same way by the CLI and by the configuration."""

from __future__ import annotations

import dataclasses
import inspect
import runpy
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile
from wsi_synth_cli.main import cli

import wsi_synth
from wsi_synth.errors import BadArgumentError
from wsi_synth.generation.config import GenerateConfig
from wsi_synth.generation.inpaint import InpaintConfig
from wsi_synth.options import DISTILL, GENERATE, INPAINT, PYRAMID, Option, by_name
from wsi_synth.training.distill import DistillConfig

COMMANDS = {
    "generate": (GENERATE, wsi_synth.generate, GenerateConfig),
    "inpaint": (INPAINT, wsi_synth.inpaint, InpaintConfig),
    "pyramid": (PYRAMID, wsi_synth.pyramid, None),
    "distill": (DISTILL, wsi_synth.distill, DistillConfig),
}
CLI_ONLY = {"quiet", "as_json", "renamed_tiff_tile"}  # how the CLI prints, and a renamed flag's hidden old spelling
API_ONLY = {"progress", "log", "on_progress"}  # the CLI derives these from --quiet


def _click_params(name: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in cli.commands[name].params if isinstance(p, click.Option) and p.name not in CLI_ONLY}


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_options_and_api_parameters_are_the_same_set_with_the_same_defaults(command):
    options, function, _ = COMMANDS[command]
    specs = by_name(options)
    params = _click_params(command)
    api = {
        n: p
        for n, p in inspect.signature(function).parameters.items()
        if p.kind is p.KEYWORD_ONLY and n not in API_ONLY
    }
    # generate(model, out)
    arguments = {p.name for p in cli.commands[command].params if isinstance(p, click.Argument)}  # distill MODEL DATA
    positional_outputs = {"out", "model"} & set(inspect.signature(function).parameters) - set(api) - arguments
    assert set(params) == set(specs), "every CLI option is a spec and every spec a CLI option"
    assert set(api) | positional_outputs == set(specs), "every API parameter is a spec and every spec an API parameter"
    for name, spec in specs.items():
        assert params[name].default == spec.default, (
            f"--{name}: CLI default {params[name].default!r} ≠ spec {spec.default!r}"
        )
        assert params[name].required == spec.required
        if name in api and not spec.required:
            assert api[name].default == spec.default, f"{function.__name__}({name}=): API default ≠ spec"


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_ranges_and_choices_are_the_specs(command):
    options, _, _ = COMMANDS[command]
    params = _click_params(command)
    for spec in options:
        kind = params[spec.name].type
        if spec.kind == "choice":
            assert tuple(kind.choices) == spec.choices
        elif spec.kind in ("int", "float") and (spec.low is not None or spec.high is not None):
            assert (kind.min, kind.max, kind.min_open, kind.max_open) == (
                spec.low,
                spec.high,
                spec.low_open,
                spec.high_open,
            ), spec.name


@pytest.mark.parametrize("command", ["generate", "inpaint", "distill"])
def test_configuration_defaults_are_the_specs(command):
    options, _, config_class = COMMANDS[command]
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    held = [o for o in options if o.attribute in fields]
    assert len(held) >= 9, "the configuration holds the sampling (and output) options"
    for spec in held:
        field = fields[spec.attribute]
        if field.default is not dataclasses.MISSING and spec.default is not None:
            wanted = tuple(spec.default.split(",")) if spec.name == "annotations" else spec.default  # held parsed
            assert field.default == wanted, f"{config_class.__name__}.{spec.attribute}"


def _outside(spec: Option) -> list:
    """Values just outside the range of `spec`."""
    values = []
    if spec.low is not None:
        values.append(spec.low if spec.low_open else spec.low - (1 if spec.kind == "int" else 1e-3))
    if spec.high is not None:
        values.append(spec.high if spec.high_open else spec.high + (1 if spec.kind == "int" else 1e-3))
    if spec.step:
        values.append(spec.low + spec.step // 2)
    return values


def _bounded(options) -> list[Option]:
    return [o for o in options if o.kind in ("int", "float") and (o.low is not None or o.high is not None)]


@pytest.mark.parametrize("spec", _bounded(GENERATE), ids=lambda o: o.flag)
def test_generate_refuses_a_value_outside_the_range_in_the_cli_and_the_configuration(spec, runner, tmp_path):
    for value in _outside(spec):
        base = {"size": 64, "width": 64, "height": 64, "subtype": "adenocarcinoma"}
        result = runner.invoke(
            cli, ["generate", *_args(base, spec, value), "--out", str(tmp_path / "s.tiff"), "--dry-run"]
        )
        assert result.exit_code == 2 and spec.flag in result.output, (spec.flag, value, result.output)
        if hasattr(GenerateConfig, spec.attribute) or spec.attribute in ("width", "height"):
            fields = {"width": 64, "height": 64} | {spec.attribute: value}
            with pytest.raises(BadArgumentError) as refused:
                GenerateConfig(**fields).validate()
            assert spec.flag in refused.value.cli_message()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("spec", [o for o in _bounded(INPAINT) if o.default is not None], ids=lambda o: o.flag)
def test_inpaint_refuses_a_value_outside_the_range_in_the_configuration(spec):
    for value in _outside(spec):
        with pytest.raises(BadArgumentError) as refused:
            InpaintConfig(**{spec.attribute: value}).validate()
        assert spec.flag in refused.value.cli_message()


def _args(base: dict, spec: Option, value) -> list[str]:
    given = {"size": base["size"], "subtype": base["subtype"]} | {spec.name: value}
    return [item for name, v in given.items() for item in (by_name(GENERATE)[name].flag, str(v))]


def test_the_renamed_tile_flag_still_works_and_says_its_new_name(runner, tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.full((600, 700, 3), 180, np.uint8))
    result = runner.invoke(
        cli,
        [
            "pyramid",
            str(tmp_path / "img.tif"),
            "--mpp",
            "0.5",
            "--tile",
            "256",
            "--out",
            str(tmp_path / "s.tiff"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "--tile is now --tiff-tile" in result.output
    with tifffile.TiffFile(tmp_path / "s.tiff") as tif:
        assert tif.pages[0].tilewidth == 256


def test_docs_api_signatures_are_the_code():
    check = runpy.run_path(str(Path(__file__).resolve().parents[1] / "docs" / "signatures.py"))["main"]
    assert check(["--check"]) == 0, "docs/api.md is stale: run python docs/signatures.py"


@pytest.mark.parametrize("spec", _bounded(DISTILL), ids=lambda o: o.flag)
def test_distill_refuses_a_value_outside_the_range_in_the_cli_and_the_configuration(spec, runner, tmp_path):
    for value in _outside(spec):
        result = runner.invoke(cli, ["distill", str(tmp_path), str(tmp_path), spec.flag, str(value)])
        assert result.exit_code == 2 and spec.flag in result.output, (spec.flag, value, result.output)
        with pytest.raises(BadArgumentError) as refused:
            DistillConfig(**{spec.attribute: value}).validate()
        assert spec.flag in refused.value.cli_message()
    assert not any(tmp_path.iterdir())
