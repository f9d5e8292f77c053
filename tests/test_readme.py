"""The README's set-up commands are the ones CI runs: a newcomer copies them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one_verbatim():
    main_job, tests = _setup_commands()
    assert "wsi-synth generate" in main_job and "torch==2.13.0" in main_job
    ci = [
        line
        for line in ROOT.joinpath(".ci", "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [tests]


def test_relative_links_in_the_readme_and_docs_point_at_files_that_exist():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert not broken, broken
