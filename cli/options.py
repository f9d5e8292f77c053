"""Click options made from the library's option specs (`wsi_synth.options`), and the factories of the commands
whose options are not specs yet, so a flag means the same everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

from wsi_synth.options import MAX_SEED, OVERWRITE, Option


def click_option(option: Option) -> Callable:
    """The click option of a spec: its flag, type, range, default and help."""
    names = [option.flag] + ([option.short] if option.short else [])
    if option.kind == "bool":
        return click.option(*names, option.name, is_flag=True, default=option.default, help=option.help)
    show = option.default is not None
    return click.option(
        *names,
        option.name,
        type=_click_type(option),
        default=option.default,
        required=option.required,
        show_default=show,
        help=option.help,
    )


def _click_type(option: Option) -> Any:
    bounds = {"min": option.low, "max": option.high, "min_open": option.low_open, "max_open": option.high_open}
    kinds = {
        "int": lambda: click.IntRange(**bounds) if option.low is not None or option.high is not None else int,
        "float": lambda: click.FloatRange(**bounds) if option.low is not None or option.high is not None else float,
        "choice": lambda: click.Choice(option.choices or ()),
        "str": lambda: str,
        "path": lambda: click.Path(exists=option.exists, dir_okay=False),
        "folder": lambda: click.Path(exists=option.exists, file_okay=False),
        "entry": lambda: click.Path(exists=option.exists),
        "output": lambda: click.Path(writable=True),
    }
    return kinds[option.kind]()


def spec_options(options: Iterable[Option]) -> Callable:
    """Decorate a command with the click options of `options`, listed in --help in that order."""

    def decorate(f: Callable) -> Callable:
        for option in reversed(tuple(options)):
            f = click_option(option)(f)
        return f

    return decorate


def renamed_option(old: str, new: Option) -> Callable:
    """A hidden `old` flag that still works for a renamed option; `take_renamed` moves its value and warns."""
    return click.option(old, "renamed_" + new.name, type=_click_type(new), default=None, hidden=True)


def take_renamed(options: dict, old: str, new: Option) -> dict:
    """`options` with a value given under the hidden `old` flag moved to `new` (unless `new` was given too)."""
    value = options.pop("renamed_" + new.name)
    if value is not None:
        click.echo(f"warning: {old} is now {new.flag}; {old} will be removed in 0.3", err=True)
        if options[new.name] == new.default:
            options[new.name] = value
    return options


def out_option(help_text: str):
    return click.option(
        "--out", "-o", required=True, type=click.Path(file_okay=True, dir_okay=True, writable=True), help=help_text
    )


def tile_options(f):
    """Options shared by `extract` and `import` (listed in --help in this order)."""
    options = [
        click.option(
            "--tile",
            "tile_size",
            type=click.IntRange(16),
            default=512,
            show_default=True,
            help="Tile size in pixels at --mpp.",
        ),
        click.option(
            "--mpp",
            type=click.FloatRange(min=0, min_open=True),
            default=0.5,
            show_default=True,
            help="Target resolution, µm per pixel.",
        ),
        click.option(
            "--classes",
            default=None,
            help="Class map: a built-in name (paper5) or a YAML/JSON file. Default: one class per annotation name.",
        ),
        click.option(
            "--unmapped",
            type=click.Choice(["error", "others", "ignore"]),
            default="error",
            show_default=True,
            help="What to do with annotation classes the map does not know.",
        ),
        click.option(
            "--min-annotated",
            type=click.FloatRange(0, 1, min_open=True),
            default=0.05,
            show_default=True,
            help="Least annotated fraction of a labelled tile.",
        ),
        click.option(
            "--region",
            "region_size",
            type=click.IntRange(1),
            default=2048,
            show_default=True,
            help="Region size (px at --mpp) for the mask model.",
        ),
        click.option(
            "--region-mask",
            "region_mask_size",
            type=click.IntRange(1),
            default=128,
            show_default=True,
            help="Region masks are downsampled to this size.",
        ),
        click.option(
            "--test-fraction",
            type=click.FloatRange(0, 1, max_open=True),
            default=0.2,
            show_default=True,
            help="Share of slides (images) held out.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


#: Options of `extract`/`import` that a dataset fixes; adding to an existing dataset takes them from it.
DATASET_OPTIONS = ("tile_size", "mpp", "region_size", "region_mask_size", "classes")


def dataset_options(ctx: click.Context) -> tuple:
    """The values of `DATASET_OPTIONS`, in that order: as given, or None when not given, so that the API takes an
    existing dataset's own (a second import adds to the first without repeating them), else the defaults."""
    from click.core import ParameterSource

    defaulted = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    return tuple(None if ctx.get_parameter_source(k) in defaulted else ctx.params[k] for k in DATASET_OPTIONS)


overwrite_option = click_option(OVERWRITE)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
SEED = click.IntRange(0, MAX_SEED)
seed_option = click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Random seed (split, tile sampling)."
)
