"""The Python API: the commands as functions with the CLI's argument names, errors that name parameters, and a
documented public surface."""

import importlib
import inspect
import keyword
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile
from wsi_synth_cli.main import cli

import wsi_synth
from tests.test_io_pyramid import tissue_like

COMMANDS = {
    "extract": "extract",
    "import": "import_tiles",
    "train": "train",
    "generate": "generate",
    "inpaint": "inpaint",
    "pyramid": "pyramid",
    "evaluate": "evaluate",
    "view": "view",
}
#: CLI parameters whose Python name differs from the flag for a reason (or that only the CLI has).
CLI_ONLY = {"quiet", "as_json", "renamed_tiff_tile"}  # renamed_*: the hidden old spelling of a renamed flag
RENAMED = {"tile_size": "tile", "region_size": "region", "region_mask_size": "region_mask", "subtypes_csv": "subtypes"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_cli_option_is_a_parameter_of_the_api_function_with_the_flag_name(command):
    click_command = cli.commands[command]
    function = getattr(wsi_synth, COMMANDS[command])
    parameters = inspect.signature(function).parameters
    for option in click_command.params:
        if option.name in CLI_ONLY:
            continue
        name = RENAMED.get(option.name, option.name)
        assert name in parameters, f"{command}: {option.opts} has no parameter {name!r}"
        flag = next((o for o in option.opts if o.startswith("--")), None)
        if flag is not None:
            expected = flag[2:].replace("-", "_")
            expected += "_" if keyword.iskeyword(expected) else ""  # --class is class_ (PEP 8)
            assert expected == name, f"{command}: parameter {name!r} is not named like {flag}"


def test_import_wsi_synth_loads_no_torch():
    code = (
        "import sys, wsi_synth; wsi_synth.__all__; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_name_parameters_in_python_and_flags_on_the_command_line(tmp_path, runner):
    tifffile.imwrite(tmp_path / "img.tif", tissue_like(64, 64))
    with pytest.raises(wsi_synth.BadArgumentError) as caught:
        wsi_synth.pyramid(tmp_path / "img.tif", tmp_path / "s.tiff", mpp=0.5, annotations="kml")
    assert "annotations must be" in str(caught.value)
    (tmp_path / "s.tiff").write_bytes(b"old")
    with pytest.raises(wsi_synth.OutputExistsError) as caught:
        wsi_synth.pyramid(tmp_path / "img.tif", tmp_path / "s.tiff", mpp=0.5)
    assert "overwrite=True" in str(caught.value) and "--overwrite" not in str(caught.value)
    result = runner.invoke(
        cli, ["pyramid", str(tmp_path / "img.tif"), "--mpp", "0.5", "--out", str(tmp_path / "s.tiff")]
    )
    assert result.exit_code == 2 and "pass --overwrite" in result.output


def test_a_notebook_drives_the_same_functions_as_the_cli(tmp_path):
    image = tissue_like(300, 400)
    tifffile.imwrite(tmp_path / "img.tif", image)
    result = wsi_synth.pyramid(tmp_path / "img.tif", tmp_path / "s.ome.zarr", mpp=0.25, tiff_tile=256)
    assert result["format"] == "ome-zarr"
    described = wsi_synth.describe(tmp_path / "s.ome.zarr")
    assert described["mpp"] == 0.25 and described["levels"][0] == [3, 300, 400]
    plan = wsi_synth.generate(None, tmp_path / "g.tiff", size=4096, subtype="squamous", dry_run=True)
    assert plan["output_px"] == [4096, 4096] and not (tmp_path / "g.tiff").exists()
    assert np.array_equal(
        np.moveaxis(np.asarray(__import__("zarr").open(str(tmp_path / "s.ome.zarr"), mode="r")["0"]), 0, 2), image
    )


def _public_objects():
    for info in pkgutil.walk_packages(wsi_synth.__path__, "wsi_synth."):
        if info.name.startswith("wsi_synth.default_model"):
            continue
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{info.name}.{name}", obj
                if inspect.isclass(obj):
                    for attr, member in vars(obj).items():
                        if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                            yield f"{info.name}.{name}.{attr}", member


def test_every_public_module_class_and_function_has_a_docstring():
    undocumented = []
    for name, obj in _public_objects():
        doc = obj.__doc__
        if isinstance(obj, property):
            doc = obj.fget.__doc__
        # a dataclass's generated signature
        if not doc or (inspect.isclass(obj) and doc.startswith(obj.__name__ + "(")):
            undocumented.append(name)
    assert not undocumented, undocumented


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda w, t: w.generate(None, t / "a.tiff", size=128.5), "generate(size=128.5): size must be a whole number"),
        (lambda w, t: w.generate(None, t / "a.tiff", size="big"), "size must be a whole number, got str"),
        (lambda w, t: w.generate(None, t / "a.tiff", size=64, steps="4"), "steps must be a whole number"),
        (lambda w, t: w.generate(None, t / "t", size=64.7, count=2), "size must be a whole number"),
        (lambda w, t: w.generate(None, None, size=64), "out must be a string or a path, got NoneType"),
        (lambda w, t: w.generate(None, t / "a.tiff", size=64, omega="3"), "omega must be a number"),
        (lambda w, t: w.generate(None, t / "a.tiff", size=64, tiles=2), "unexpected keyword argument 'tiles'"),
        (lambda w, t: w.import_tiles(t, t / "d", tile=64.0), "tile must be a whole number or None"),
        (lambda w, t: w.train("image", t, t / "m", max_steps="10"), "max_steps must be a whole number or None"),
    ],
)
def test_api_arguments_of_the_wrong_type_are_one_error_naming_the_parameter_before_any_work(tmp_path, call, fragment):
    import wsi_synth

    with pytest.raises(wsi_synth.BadArgumentError, match=re.escape(fragment)):
        call(wsi_synth, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made: no half-made folder, no work store


def test_every_package_folder_is_installed_and_the_cli_under_its_own_name():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(root).parts) for p in (root / "wsi_synth").rglob("__init__.py")}
    assert folders <= set(setuptools["packages"]), (
        f"add to pyproject.toml's packages: {sorted(folders - set(setuptools['packages']))}"
    )
    assert setuptools["package-dir"] == {"wsi_synth_cli": "cli"} and "cli" not in setuptools["packages"]
    import wsi_synth_cli.main

    assert Path(wsi_synth_cli.main.__file__).parent.name == "cli"  # the folder, installed under the package's name


def test_the_version_is_defined_once_and_the_installed_package_reports_it():
    from importlib.metadata import version

    assert version("wsi-synth") == wsi_synth.__version__
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"## [{wsi_synth.__version__}]" in changelog, "the CHANGELOG has a section for this version"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_cli_default_is_the_api_default(command):
    """The commands whose options are not specs yet (extract, import, train, evaluate) agree with their API function
    too: same default for every option; a setting the dataset fixes is None in the API (the dataset's own, else the
    default) and the CLI passes None when it is not given."""
    from wsi_synth_cli.options import DATASET_OPTIONS

    parameters = inspect.signature(getattr(wsi_synth, COMMANDS[command])).parameters
    for option in cli.commands[command].params:
        if option.name in CLI_ONLY or not isinstance(option, click.Option) or option.required:
            continue
        name = RENAMED.get(option.name, option.name)
        api_default = parameters[name].default
        if api_default is inspect.Parameter.empty:  # positional in the API (generate's model, out)
            continue
        if option.name in DATASET_OPTIONS:
            assert api_default is None, f"{command}: {name} defaults to the dataset's own"
            continue
        cli_default = option.get_default(click.Context(cli.commands[command]))
        if command == "train" and api_default is None:  # train's settings override the config file's only when given
            assert cli_default is None, f"train --{name}: the config's value unless given"
            continue
        assert cli_default == api_default, f"{command} --{name}: CLI {cli_default!r} ≠ API {api_default!r}"


def test_a_cli_command_run_in_process_leaves_the_library_logger_as_it_found_it(runner, tmp_path, caplog):
    """Tests and notebooks run the CLI in-process; afterwards the library's notes must still reach their handlers."""
    import logging

    from wsi_synth_cli.main import cli

    logger = logging.getLogger("wsi_synth")
    before = (logger.handlers[:], logger.level, logger.propagate)
    result = runner.invoke(cli, ["-v", "info", str(tmp_path / "missing.tiff")])
    assert result.exit_code == 2
    assert (logger.handlers, logger.level, logger.propagate) == before
    with caplog.at_level(logging.INFO, logger="wsi_synth"):
        logging.getLogger("wsi_synth.generation.run").info("plan: after the CLI")
    assert [r.getMessage() for r in caplog.records] == ["plan: after the CLI"]
