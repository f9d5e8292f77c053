"""The signatures in docs/api.md, written from the functions themselves so that the reference cannot drift from the
code (the defaults come from `wsi_synth.options`, like the CLI's).

    python docs/signatures.py            # rewrite the ```python block under each "## `wsi_synth.NAME`" heading
    python docs/signatures.py --check    # exit 1, naming each block that differs (tests/test_options.py runs it)
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

API_MD = Path(__file__).resolve().parent / "api.md"
HEADING = re.compile(r"^## `(wsi_synth(?:\.\w+)+)`\n\n```python\n(.*?)\n```", re.M | re.S)
WIDTH = 120


def signature_text(dotted: str) -> str:
    """`name(parameters) -> return`, wrapped at 120 columns with continuation lines indented by four."""
    module, _, name = dotted.rpartition(".")
    target = getattr(importlib.import_module(module), name)
    signature = inspect.signature(target)
    parts, keyword_only_marked = [], False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only_marked:
            parts.append("*")
            keyword_only_marked = True
        parts.append(_parameter_text(parameter))
    returns = signature.return_annotation
    tail = "" if returns is inspect.Signature.empty or inspect.isclass(target) else f" -> {returns}"
    text = f"{name}({', '.join(parts)}){tail}"
    return textwrap.fill(text, width=WIDTH, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)


def _parameter_text(parameter: inspect.Parameter) -> str:
    text = parameter.name
    if parameter.annotation is not inspect.Parameter.empty:
        text += f": {parameter.annotation}"
    if parameter.default is not inspect.Parameter.empty:
        default = parameter.default
        shown = repr(default).replace("'", '"')  # the docs quote strings as the code does
        text += f" = {shown}"
    return text


def rewritten(markdown: str) -> str:
    return HEADING.sub(lambda m: f"## `{m[1]}`\n\n```python\n{signature_text(m[1])}\n```", markdown)


def main(argv: list[str]) -> int:
    current = API_MD.read_text(encoding="utf-8")
    wanted = rewritten(current)
    if "--check" not in argv:
        API_MD.write_text(wanted, encoding="utf-8")
        return 0
    stale = [m[1] for m in HEADING.finditer(current) if m[2] != signature_text(m[1])]
    for name in stale:
        print(
            f"docs/api.md: the signature of {name} differs from the code: run python docs/signatures.py",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
