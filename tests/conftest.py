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
        pytest.skip(f"real test data not found: {path} (clone the project beside ../shared, or set WSI_SYNTH_SHARED_DATA)")
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
