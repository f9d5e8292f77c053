"""The exception family: one base, a few specific kinds. The CLI prints them as one line, exit code 2.

Messages are written once, naming arguments by their command-line flags (`--size`, `pass --overwrite`). The same
arguments are keyword parameters of the Python API (`wsi_synth.generate(size=…)`), so `str(error)` names them as
parameters (`size`, `pass overwrite=True`) and only the CLI shows the flags (`error.cli_message()`).
"""

from __future__ import annotations

import re

#: Flags that are switches: in Python they read `name=True`.
SWITCHES = frozenset({"overwrite", "resume", "stretch", "dry_run", "quiet", "debug", "json"})
_FLAG = re.compile(r"(?<![\w/.\-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def as_parameters(message: str) -> str:
    """A message naming command-line flags, with each flag as the Python parameter of the same name."""

    def parameter(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f"{name}=True" if name in SWITCHES else name

    return _FLAG.sub(parameter, message)


class WsiSynthError(Exception):
    """Base of every error wsi-synth raises on purpose. The message names the thing, the value, and a fix."""

    def __str__(self) -> str:
        return as_parameters(super().__str__())

    def __format__(self, spec: str) -> str:
        # An error wrapped into another's message (f"--legend: {exc}") keeps its flags, so the outer error renders
        # the whole message one way: parameters for Python, flags for the CLI.
        return format(self.cli_message(), spec)

    def cli_message(self) -> str:
        """The message as the command line shows it: arguments named by their flags."""
        return super().__str__()


class BadSlideError(WsiSynthError):
    """A slide is missing, unreadable, truncated, or lacks metadata we need (e.g. MPP)."""


class BadAnnotationError(WsiSynthError):
    """An annotation file cannot be parsed, matched to a slide, or mapped to the training classes."""


class BadArgumentError(WsiSynthError):
    """An argument value is out of range or inconsistent with another argument or with existing data."""


class BadDatasetError(WsiSynthError):
    """A dataset directory is missing, incomplete, or incompatible with what the command needs."""


class BadModelError(WsiSynthError):
    """A model bundle is missing, incomplete, or does not match the data or arguments."""


class OutputExistsError(BadArgumentError):
    """An output exists and `overwrite` was not given."""


class OutputBusyError(BadArgumentError):
    """Another run holds the claim on this output."""


class OutputWriteError(WsiSynthError):
    """An output could not be written (full disk, unwritable folder); the partial file was removed."""
