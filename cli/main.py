"""Entry point: the command group, error handling (one line, exit 2; --debug for tracebacks), logging."""

from __future__ import annotations

import logging
import sys

import click

from wsi_synth import __version__
from wsi_synth.errors import WsiSynthError
from wsi_synth.io.atomic import is_disk_full

EXIT_BAD_INPUT = 2


class _Group(click.Group):
    """Turns library errors into one line on stderr; `--debug` lets the traceback through."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        debug = "--debug" in sys.argv[1:] or bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except WsiSynthError as exc:
            if debug:
                raise
            _fail(exc.cli_message(), EXIT_BAD_INPUT)
        except OSError as exc:
            if debug:
                raise
            if is_disk_full(exc):  # the user's to fix, like bad input; nothing partial is kept
                _fail(
                    f"disk full{f' writing {exc.filename}' if exc.filename else ''}: free some space or choose "
                    "another --out",
                    EXIT_BAD_INPUT,
                )
            _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
        except KeyboardInterrupt:
            resume = (
                "re-run the same command with --resume"
                if ctx.invoked_subcommand in ("generate", "train", "distill", "inpaint")
                else "re-run the same command"
            )
            _fail(f"interrupted ({resume} to continue)", 130)
        except MemoryError:
            if debug:
                raise
            _fail("out of memory: use smaller sizes or batches (see --help), or a machine with more memory", 1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug, not bad input: one line, and the way to the traceback
            if debug:
                raise
            _fail(
                f"internal error {type(exc).__name__}: {exc} "
                "(run with --debug for the traceback, and please report it)",
                1,
            )


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message.splitlines()[0] if message else 'failed'}", err=True)
    sys.exit(code)


class _LineHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wsi-synth")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Print progress notes (per-slide counts, timings).")
def cli(debug: bool, verbose: bool) -> None:
    """Synthetic H&E whole-slide images with tissue masks (DiffInfinite).

    \b
    Typical workflow:
      wsi-synth extract slides/ annotations/ --out data/     # training set from annotated slides
      wsi-synth import tiles/img --masks tiles/mask --legend legend.yaml --out data/
      wsi-synth info data/                                   # what a dataset / slide / output holds
    """
    _log_to_stderr(click.get_current_context(), verbose)


def _log_to_stderr(ctx: click.Context, verbose: bool) -> None:
    """Our notes go to stderr for the length of one command, then the logger is as it was.

    Restoring matters when the CLI runs inside a Python process (tests, notebooks): a logger left
    non-propagating would hide the library's notes from that process's own handlers.
    """
    logger = logging.getLogger("wsi_synth")
    before = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [_LineHandler()]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False

    def restore() -> None:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
        logger.propagate = before[2]

    ctx.call_on_close(restore)


def _register() -> None:
    from . import distill, evaluate, extract, generate, import_tiles, info, inpaint, pyramid, train, view

    for module in (extract, import_tiles, train, distill, generate, inpaint, info, pyramid, evaluate, view):
        cli.add_command(module.command)


_register()


def main() -> None:
    cli()


if __name__ == "__main__":  # `torchrun --nproc_per_node N -m cli.main train image …`
    main()
