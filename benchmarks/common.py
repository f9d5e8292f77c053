"""Shared benchmark helpers: realistic H&E content of any size, timing, peak memory. Prints nothing itself."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("WSI_SYNTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def base_tissue() -> tuple[np.ndarray, str]:
    """The real CMU-1 H&E region (2220×2967) when ../shared/data is there; smooth synthetic texture otherwise."""
    slide = SHARED / "slides" / "CMU-1-Small-Region.svs"
    if slide.exists():
        import openslide

        with openslide.OpenSlide(str(slide)) as s:
            return np.ascontiguousarray(
                np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3]
            ), "CMU-1-Small-Region.svs, mirrored"
    rng = np.random.default_rng(0)
    from PIL import Image

    small = (rng.random((100, 100, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((2048, 2048), Image.Resampling.BICUBIC)), "synthetic smooth texture"


def _mirror(n: int, start: int, m: int) -> np.ndarray:
    i = np.arange(start, start + n) % (2 * m)
    return np.where(i < m, i, 2 * m - 1 - i)


def tissue(height: int, width: int, base: np.ndarray) -> np.ndarray:
    """An (height, width, 3) image tiled from `base` by mirroring (no seams, real texture)."""
    return np.ascontiguousarray(base[_mirror(height, 0, base.shape[0])][:, _mirror(width, 0, base.shape[1])])


def lazy_tissue(height: int, width: int, base: np.ndarray, chunk: int = 1024):
    """The same image as a lazily generated dask array: nothing exists until a band is asked for."""
    import dask.array as da

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        return base[_mirror(y1 - y0, y0, base.shape[0])][:, _mirror(x1 - x0, x0, base.shape[1])]

    return da.map_blocks(block, dtype=np.uint8, chunks=(_chunks(height, chunk), _chunks(width, chunk), (3,)))


def _chunks(n: int, c: int) -> tuple[int, ...]:
    return tuple([c] * (n // c) + ([n % c] if n % c else []))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    subprocess started by a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
    }


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def emit(doc: dict) -> None:
    print(json.dumps(doc, indent=2))


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "default_model"
#: The bundled model's recipe import settings (examples/default_model/import.sh): 64 px tiles at 1.1 µm/px.
RECIPE_IMPORT = (
    "--tile",
    "64",
    "--mpp",
    "1.1",
    "--region",
    "256",
    "--region-mask",
    "32",
    "--classes",
    str(RECIPE / "classes.yaml"),
    "-q",
)


def wsi_synth_cli(*args: str) -> str:
    """Run a wsi-synth command in a subprocess (as a user would); its stdout."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "wsi_synth_cli.main", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def recipe_data(out: Path) -> None:
    """The bundled model's whole training set (examples/default_model/import.sh) in `out`."""
    import subprocess

    env = {
        **os.environ,
        "DATA": str(SHARED),
        "WORK": str(out.resolve()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    subprocess.run(["bash", str(RECIPE / "import.sh")], cwd=ROOT, env=env, check=True, capture_output=True)


def import_wsss(out: Path) -> None:
    """The WSSS4LUAD tiles with masks, imported into `out` exactly as the bundled model's recipe imports them."""
    wsss = SHARED / "tiles_masks"
    for split in ("val", "test"):
        wsi_synth_cli(
            "import",
            str(wsss / f"wsss4luad_{split}" / "img"),
            "--masks",
            str(wsss / f"wsss4luad_{split}" / "mask"),
            "--legend",
            str(RECIPE / "wsss.yaml"),
            "--subtype",
            "adenocarcinoma",
            *RECIPE_IMPORT,
            "--out",
            str(out),
        )


def heldout_yardstick(work: Path, yardstick_tiles: int, *, source_prefix: str | None = None) -> tuple[Path, dict]:
    """The recipe's data in `work/data` (imported unless there), its held-out test split (every tile of every source,
    or of the sources whose id starts with `source_prefix`; never trained on) as `work/real-test`, and the yardstick:
    a seeded sample of `yardstick_tiles` real training tiles of the same sources against it in the same feature
    space. Returns (held-out folder, {held_out_tiles, yardstick_train_tiles, yardstick})."""
    from wsi_synth.evaluation import heldout

    kinds = ("labelled", "unlabelled")
    data = work / "data"
    if not (data / "dataset.json").is_file():
        recipe_data(data)
    view = f"-{source_prefix.strip('_-')}" if source_prefix else ""
    held_out, train = work / f"real-test{view}", work / f"real-train{view}"
    n_test = heldout.export_split(data, "test", held_out, kinds=kinds, source_prefix=source_prefix)
    n_train = heldout.export_split(
        data, "train", train, kinds=kinds, source_prefix=source_prefix, limit=yardstick_tiles
    )
    yardstick = heldout.measure(held_out, train, work / f"report-yardstick{view}")
    return held_out, {"held_out_tiles": n_test, "yardstick_train_tiles": n_train, "yardstick": yardstick}
