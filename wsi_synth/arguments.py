"""Checks of the Python API's arguments against their annotations, at the boundary: `generate(size=128.5)` or
`steps="4"` is a one-line `BadArgumentError` naming the parameter, before any work, instead of a bare `TypeError`
(or a `RuntimeError` from tifffile after the whole sampling). The CLI's click types already give these guarantees;
the API gets them here. Values (ranges) are checked by each run's configuration."""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import typing
from collections.abc import Callable
from typing import TypeVar

from wsi_synth.errors import BadArgumentError

F = TypeVar("F", bound=Callable)

#: Annotation names this module checks; anything else (callbacks, `Any`) passes as given.
_KINDS: dict[str, Callable[[object], bool]] = {
    "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "Path": lambda v: isinstance(v, os.PathLike),
    "dict": lambda v: isinstance(v, dict),
    "None": lambda v: v is None,
}
_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "True or False",
    "str": "a string",
    "Path": "a path",
    "dict": "a dict",
    "None": "None",
}


def checked(function: F) -> F:
    """Check each argument of `function` against its annotation (`int`, `float`, `str | Path | None`, …)."""
    signature = inspect.signature(function)
    kinds = {name: _annotation_kinds(p.annotation) for name, p in signature.parameters.items()}

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise BadArgumentError(f"{function.__name__}(): {exc}") from None
        for name, value in bound.arguments.items():
            accepted = kinds.get(name)
            if accepted and not any(_KINDS[k](value) for k in accepted):
                wanted = " or ".join(_WORDS[k] for k in accepted)
                raise BadArgumentError(
                    f"{function.__name__}({name}={value!r}): {name} must be {wanted}, got {type(value).__name__}"
                )
        return function(*args, **kwargs)

    return typing.cast(F, wrapper)


def _annotation_kinds(annotation: object) -> tuple[str, ...] | None:
    """The kinds of a string annotation like "str | Path | None"; None when any part is not one this module checks."""
    if not isinstance(annotation, str):
        return None
    parts = tuple(part.strip() for part in annotation.split("|"))
    return parts if all(part in _KINDS for part in parts) else None
