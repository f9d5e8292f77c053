"""The references written from the code itself, so that they cannot drift from it: the signatures in docs/api.md
(their defaults come from `wsi_synth.options`, like the CLI's) and every command's `--help` in docs/cli.md.

    python docs/signatures.py            # rewrite both
    python docs/signatures.py --check    # exit 1, naming each part that differs (tests/test_options.py runs it)
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

API_MD = Path(__file__).resolve().parent / "api.md"
CLI_MD = Path(__file__).resolve().parent / "cli.md"
OPTIONS = "\n## Options\n"
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


def options_text() -> str:
    """The Options section of docs/cli.md: each command's `--help`, as a 100-column terminal shows it."""
    from click.testing import CliRunner
    from wsi_synth_cli.main import cli

    parts = [OPTIONS, "\nEach command's `--help`, written from the option definitions (`python docs/signatures.py`).\n"]
    for name in sorted(cli.commands):
        shown = CliRunner().invoke(cli, [name, "--help"], prog_name="wsi-synth", terminal_width=100).output
        parts.append(f"\n### `wsi-synth {name}`\n\n```text\n{shown.rstrip()}\n```\n")
    return "".join(parts)


def with_options(markdown: str) -> str:
    return markdown.split(OPTIONS, 1)[0].rstrip("\n") + "\n" + options_text()


def main(argv: list[str]) -> int:
    api, cli_md = API_MD.read_text(encoding="utf-8"), CLI_MD.read_text(encoding="utf-8")
    if "--check" not in argv:
        API_MD.write_text(rewritten(api), encoding="utf-8")
        CLI_MD.write_text(with_options(cli_md), encoding="utf-8")
        return 0
    stale = [f"the signature of {m[1]} in docs/api.md" for m in HEADING.finditer(api) if m[2] != signature_text(m[1])]
    stale += ["the options in docs/cli.md"] if with_options(cli_md) != cli_md else []
    for what in stale:
        print(f"{what} differs from the code: run python docs/signatures.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
