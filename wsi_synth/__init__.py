"""wsi-synth: synthetic H&E whole-slide images with tissue masks, by hierarchical random-patch latent diffusion.

The commands are functions here, with the command-line arguments as keyword parameters (`wsi_synth.api`):
`extract`, `import_tiles`, `train`, `distill`, `generate`, `inpaint`, `pyramid`, `evaluate`, and `describe` for
`info`; with `open_bundle`, `open_dataset` and `default_model`. They are imported on first use, so
`import wsi_synth` stays light (no torch).

The library is split by responsibility (see DESIGN.md): `slide` and `annotations` read what users have,
`extraction` and `data` turn it into a training set, `training` trains the `models`' networks, `diffusion` holds the
noise schedule and the solvers beneath training and sampling, `sampling` and `generation` make slides, `io` writes
the outputs viewers open, `evaluation` measures them.
"""

from wsi_synth.errors import (
    BadAnnotationError,
    BadArgumentError,
    BadDatasetError,
    BadModelError,
    BadSlideError,
    OutputBusyError,
    OutputExistsError,
    OutputWriteError,
    WsiSynthError,
)

__version__ = "0.2.0"

_LAZY = {
    "open_bundle": "wsi_synth.models.bundle",
    "default_model": "wsi_synth.models.bundle",
    "open_dataset": "wsi_synth.data.store",
    "describe": "wsi_synth.info",
    "Progress": "wsi_synth.progress",
    **{
        name: "wsi_synth.api"
        for name in (
            "extract",
            "import_tiles",
            "train",
            "distill",
            "generate",
            "inpaint",
            "pyramid",
            "evaluate",
            "view",
        )
    },
}

__all__ = [
    "BadAnnotationError",
    "BadArgumentError",
    "BadDatasetError",
    "BadModelError",
    "BadSlideError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputWriteError",
    "Progress",
    "WsiSynthError",
    "__version__",
    "default_model",
    "describe",
    "distill",
    "evaluate",
    "extract",
    "generate",
    "import_tiles",
    "inpaint",
    "open_bundle",
    "open_dataset",
    "pyramid",
    "train",
    "view",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsi_synth' has no attribute {name!r}")
