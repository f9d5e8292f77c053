"""Every option of the slide-writing commands, defined once: its Python name, default, range or choices and help.

The click options (`cli/options.py`), the API signatures' defaults (`api.py`), the run configurations' defaults and
their range checks (`generation.config`, `generation.inpaint`) all read these specs, and `tests/test_options.py`
proves that every CLI option, API parameter and configuration field agree. Importable without numpy or torch, so
`--help` stays instant.

Options come in groups that several commands share (sampling, output) and groups of one command; a command's list is
the concatenation, in the order `--help` shows them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from wsi_synth.defaults import BOUNDARY_ROUGHNESS, LAYOUT_STRENGTH
from wsi_synth.errors import BadArgumentError

#: The names each choice accepts; the modules that implement them import these (one list each).
SOLVERS = ("ddim", "dpm-solver++", "distilled")
#: What the commands accept: a solver, or `auto` (the stage's distilled student where it serves, else the default).
SOLVER_CHOICES = ("auto", *SOLVERS)
PLANNERS = ("shifted-grid", "random-patch", "fixed-grid")
FORMATS = ("tiff", "ome-tiff", "ome-zarr", "dicom")
NGFF_VERSIONS = ("0.4", "0.5")
SECTIONS = ("auto", "on", "off")
#: Chosen by measurement (docs/benchmarks.md, "Fewer steps"): DPM-Solver++(2M) at 20 steps matches or beats
#: 50 DDIM steps on the Gaussian oracle and on the bundled model, at 2.5× fewer denoiser evaluations.
DEFAULT_SOLVER = "dpm-solver++"
DEFAULT_STEPS = 20
#: Classifier-free guidance beyond this only saturates: the paper uses ω ≤ 3; 20 already gives flat colour.
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1  # what numpy and torch generators accept
#: Largest side accepted: 10× the 100,000 px slides the pipeline is measured at (docs/benchmarks.md).
MAX_SIDE = 1_000_000


@dataclass(frozen=True)
class Option:
    """One option: `name` is the API parameter (and the click parameter), `flag` the CLI spelling, `field` the run
    configuration's attribute. `kind` is int, float, str, bool (a flag), choice, path (a file), folder, entry (a file
    or a folder) or output.
    A range is `low`–`high` (either open with `low_open`/`high_open`); `step` asks for a multiple of it."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    step: int | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    short: str | None = None  # a one-letter alias, e.g. -o
    exists: bool = True  # a path or folder must exist when the command starts
    field: str | None = None  # the configuration's attribute when it differs from `name`
    why: str = ""  # said after a refusal: why the range is what it is

    @property
    def flag(self) -> str:
        """The CLI spelling: `--max-memory` for max_memory, `--class` for class_."""
        return "--" + self.name.rstrip("_").replace("_", "-")

    @property
    def attribute(self) -> str:
        """The run configuration's attribute that holds the option."""
        return self.field or self.name

    def but(self, **changes: Any) -> Option:
        """This option with another default or help (a command whose JPEG quality default differs, …)."""
        return replace(self, **changes)

    def check(self, value: Any) -> None:
        """Refuse a value outside the range or choices, naming the flag and what it accepts."""
        if value is None or self.kind not in ("int", "float", "choice"):
            return
        if self.kind == "choice":
            if value not in (self.choices or ()):
                raise BadArgumentError(f"{self.flag} must be one of {', '.join(self.choices or ())}, got {value!r}")
            return
        finite = math.isfinite(value)
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not finite or below or above or (self.step and value % self.step):
            why = f" ({self.why})" if self.why and finite else ""
            raise BadArgumentError(f"{self.flag} must be {self.accepted()}, got {value}{why}")

    def accepted(self) -> str:
        """What the option accepts, in words: "1–100", "at least 1", "> 0", "a multiple of 16 in 16–4096"."""
        if self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            span = f"{_number(self.low)}–{_number(self.high)}"
        elif self.low is not None and self.high is None:
            span = (
                f"> {_number(self.low)}"
                if self.low_open
                else ("at least" if self.kind == "int" else "≥") + f" {_number(self.low)}"
            )
        else:
            low = "" if self.low is None else f"{_number(self.low)} <{'' if self.low_open else '='} "
            high = "" if self.high is None else f" <{'' if self.high_open else '='} {_number(self.high)}"
            span = f"{low}{self.flag}{high}" if (low or high) else "a finite number"
        return f"a multiple of {self.step} in {span}" if self.step else span


def check_sampling(config: Any) -> None:
    """The sampling options of any run (`SAMPLING`), and the one rule between two of them."""
    check_options(config, SAMPLING)
    eta = getattr(config, "eta", 0.0)  # inpaint has no --eta
    if eta > 0 and config.solver != "ddim":
        raise BadArgumentError(f"--eta {eta} needs --solver ddim ({config.solver} is deterministic)")


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def check_options(config: Any, options: Iterable[Option]) -> None:
    """Check each of `options` that `config` holds against its range or choices."""
    for option in options:
        if hasattr(config, option.attribute):
            option.check(getattr(config, option.attribute))


def by_name(options: Iterable[Option]) -> dict[str, Option]:
    """The options by their Python name."""
    return {o.name: o for o in options}


# -- what to sample ----------------------------------------------------------------------------------------------
MODEL = Option("model", "folder", short="-m", help="Model bundle folder (default: the bundled demonstration model).")
STEPS = Option("steps", "int", DEFAULT_STEPS, "Solver steps per stage.", low=1)
SOLVER = Option(
    "solver",
    "choice",
    "auto",
    "auto: a stage's distilled student (`wsi-synth distill`) when --steps is at most what it was distilled for and "
    "the guidance is the one it folded in, else dpm-solver++; dpm-solver++: DPM-Solver++(2M) (20 steps match 50 "
    "DDIM steps); ddim: the paper's; distilled: the image stage's student, or an error.",
    choices=SOLVER_CHOICES,
)
ETA = Option("eta", "float", 0.0, "DDIM η (0 = deterministic; needs --solver ddim).", low=0, high=1)
OMEGA = Option(
    "omega",
    "float",
    0.0,
    "Classifier-free guidance of the image stage.",
    low=0,
    high=MAX_GUIDANCE,
    why="guidance this strong saturates every pixel",
)
SEED = Option("seed", "int", 0, "Random seed.", low=0, high=MAX_SEED)
BATCH_SIZE = Option("batch_size", "int", 16, "Crops per denoiser call.", low=1, high=4096)
DECODE_BATCH = Option("decode_batch", "int", 0, "Tiles per codec call (0: 4 on CPU, 16 on GPU).", low=0, high=1024)
DEVICE = Option("device", "str", "cpu", "cpu, cuda, cuda:1, …")
RESUME = Option("resume", "bool", False, "Continue an interrupted run from its work folder.")
#: What every sampler run checks (`check_sampling`): the generate, inpaint and sampler configurations hold these.
SAMPLING = (STEPS, SOLVER, ETA, OMEGA, SEED, BATCH_SIZE)

# -- what to write -----------------------------------------------------------------------------------------------
TIFF_TILE = Option(
    "tiff_tile", "int", 512, "Tile side of the written TIFF (256 or 512 for viewers).", low=16, high=4096, step=16
)
QUALITY = Option("quality", "int", 90, "JPEG quality.", low=1, high=100)
FORMAT = Option(
    "format",
    "choice",
    None,
    "tiff: Aperio-style (OpenSlide, QuPath, ASAP); ome-tiff: OME-XML, levels in SubIFDs (Bio-Formats, OMERO); "
    "ome-zarr: NGFF folder with labels (napari, vizarr, QuPath; --ngff); dicom: a DICOM WSI folder with the mask "
    "as a Segmentation (OpenSlide ≥ 4, wsidicom, PACS). Default: from the --out name (.ome.zarr, .ome.tiff, .dcm), "
    "else tiff.",
    choices=FORMATS,
)
NGFF = Option(
    "ngff",
    "choice",
    "0.4",
    "OME-Zarr outputs: NGFF 0.4 (Zarr v2; what napari-ome-zarr, vizarr and QuPath read today) or 0.5 (Zarr v3, "
    "sharded; ome-zarr-py ≥ 0.10 and newer viewers).",
    choices=NGFF_VERSIONS,
)
ANNOTATIONS = Option(
    "annotations",
    "str",
    "geojson",
    "Annotation files beside the image: geojson (QuPath), asap (ASAP XML), or both: geojson,asap.",
)
OVERWRITE = Option("overwrite", "bool", False, "Replace an existing output instead of refusing.")
OUTPUT = (TIFF_TILE, QUALITY, FORMAT, NGFF, ANNOTATIONS, OVERWRITE)

# -- generate ----------------------------------------------------------------------------------------------------
GENERATE = (
    MODEL,
    Option(
        "size", "int", None, "Width in px (square unless --height).", low=1, high=MAX_SIDE, required=True, field="width"
    ),
    Option(
        "count",
        "int",
        None,
        "Write N independent tiles of --size with masks into the folder --out (images/, masks/, legend.yaml, "
        "manifest.csv); without --subtype each tile draws one.",
        low=1,
    ),
    Option("height", "int", None, "Height in px (default: --size).", low=1, high=MAX_SIDE),
    Option("subtype", "str", None, "Subtype prompt for the mask stage (one of the model's subtypes)."),
    Option(
        "mask",
        "entry",
        None,
        "Skip the mask stage: a label TIFF/PNG or QuPath GeoJSON; with --count, one for every tile or a folder of "
        "them (tile i takes the i-th in name order, cycling).",
        exists=False,
    ),
    Option("stretch", "bool", False, "Resize a --mask image of another aspect ratio to fit (else refused)."),
    Option("out", "output", None, "Output: s.tiff, s.ome.tiff or s.ome.zarr.", required=True, short="-o"),
    STEPS,
    SOLVER,
    ETA,
    OMEGA,
    OMEGA.but(name="mask_omega", help="Guidance of the mask stage."),
    Option(
        "boundary_roughness",
        "float",
        BOUNDARY_ROUGHNESS,
        "Wander of class contours, calibrated on real annotations (0: smooth contours).",
        low=0,
        high=1,
    ),
    Option(
        "layout_strength",
        "float",
        LAYOUT_STRENGTH,
        "Models with a layout stage: how far the mask stage departs from the slide-scale layout (0: the layout as "
        "drawn, 1: ignore it).",
        low=0,
        high=1,
    ),
    Option(
        "section",
        "choice",
        "auto",
        "Models with a layout stage and a background class: draw a tissue section on glass (a seeded outline, glass "
        "outside). auto: on slides of at least 4 layout crops a side (9 mm with the bundled model).",
        choices=SECTIONS,
    ),
    Option("planner", "choice", "shifted-grid", "Which crops each step evaluates.", choices=PLANNERS),
    Option("context", "int", None, "shifted-grid context margin, latent px (default d/8).", low=0),
    BATCH_SIZE,
    DECODE_BATCH,
    SEED,
    DEVICE,
    *OUTPUT[:2],
    Option(
        "dry_run",
        "bool",
        False,
        "Print the plan (canvases, crops per step, evaluations, memory, projected time) and stop.",
    ),
    RESUME,
    Option("save_every", "int", 5, "Steps between saved states (for --resume).", low=1),
    Option(
        "max_memory",
        "float",
        8.0,
        "GB of canvases to hold in memory; beyond it they live in a zarr work store beside the output.",
        low=0,
        field="max_memory_gb",
    ),
    Option("workers", "int", 1, "N > 1: start a local dask cluster of N worker processes.", low=1),
    Option(
        "threads",
        "int",
        0,
        "torch threads (0: one per core; with --workers, cores / N per worker). On a busy machine, fewer is often "
        "much faster.",
        low=0,
    ),
    Option(
        "scheduler",
        "str",
        None,
        "tcp://HOST:PORT of a dask.distributed scheduler (one model per worker; shared filesystem).",
    ),
    *OUTPUT[2:],
)

# -- inpaint -----------------------------------------------------------------------------------------------------
INPAINT = (
    Option(
        "out", "output", None, "Output: edited.tiff, edited.ome.tiff or edited.ome.zarr.", required=True, short="-o"
    ),
    MODEL,
    Option(
        "class_",
        "str",
        None,
        "Regenerate every region as this model class ('unknown': the null condition). "
        "Default: each region's own class.",
    ),
    Option(
        "classes",
        "str",
        None,
        "Map the regions' class names to the model's: a built-in map (paper5) or a YAML/JSON file, as in extract.",
    ),
    OMEGA.but(help="Classifier-free guidance."),
    STEPS.but(help="Solver steps."),
    SOLVER,
    SEED,
    Option("margin", "int", 32, "Level-0 px over which new pixels fade into the original outside each region.", low=0),
    BATCH_SIZE,
    DECODE_BATCH,
    DEVICE,
    Option("slide_mpp", "float", None, "Level-0 µm/px for a slide whose metadata lacks it.", low=0, low_open=True),
    Option(
        "max_area",
        "float",
        64.0,
        "Most level-0 megapixels of one region's box with its context.",
        low=0,
        low_open=True,
        field="max_area_mp",
    ),
    TIFF_TILE,
    QUALITY.but(default=95, help="JPEG quality (the kept pixels are re-encoded once)."),
    Option("resume", "bool", False, "Continue an interrupted run: keep the patches it finished."),
    *OUTPUT[2:],
)

# -- pyramid -----------------------------------------------------------------------------------------------------
PYRAMID = (
    Option("out", "output", None, "Output: s.tiff, s.ome.tiff or s.ome.zarr.", required=True, short="-o"),
    Option("mpp", "float", None, "Level-0 µm per pixel of IMAGE.", low=0, low_open=True, required=True),
    Option("labels", "path", None, "uint8 class map of the same size (TIFF/PNG)."),
    Option("legend", "path", None, "YAML/JSON: class value -> name (for the mask and GeoJSON)."),
    *OUTPUT,
)

# -- distill -----------------------------------------------------------------------------------------------------
DISTILL = (
    Option(
        "stage",
        "choice",
        "image",
        "The stage to distil: image (the whole cost of a slide), mask or layout.",
        choices=("image", "mask", "layout"),
    ),
    Option(
        "steps",
        "int",
        4,
        "The most steps the student will be asked for (it serves 1 … N).",
        low=1,
        high=16,
        why="a student for more steps saves little over the teacher",
    ),
    OMEGA.but(
        help="Guidance folded into the student (generate uses it when --omega, or --mask-omega for the mask stages, "
        "is this value).",
    ),
    Option(
        "teacher_steps",
        "int",
        DEFAULT_STEPS,
        "DPM-Solver++ steps the teacher spends on the whole schedule (fewer on a shorter span).",
        low=2,
        high=1000,
    ),
    Option("max_steps", "int", 2000, "Training steps.", low=1),
    BATCH_SIZE.but(help="Examples per training step.", default=16),
    Option("lr", "float", 1e-4, "Learning rate.", low=0, high=1, low_open=True, high_open=True),
    Option("checkpoint_every", "int", 250, "Steps between checkpoints (for --resume).", low=1),
    Option("sample_every", "int", 1000, "Steps between preview PNGs (MODEL/previews/).", low=1),
    SEED,
    DEVICE,
    Option("resume", "bool", False, "Continue from the student's last checkpoint."),
    Option("overwrite", "bool", False, "Distil the stage again from its teacher (the old student is replaced)."),
)
