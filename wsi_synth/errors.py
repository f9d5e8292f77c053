"""The exception family: one base, a few specific kinds. The CLI prints them as one line, exit code 2."""

from __future__ import annotations


class WsiSynthError(Exception):
    """Base of every error wsi-synth raises on purpose. The message names the thing, the value, and a fix."""


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
