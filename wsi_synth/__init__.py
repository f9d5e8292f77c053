"""wsi-synth: synthetic H&E whole-slide images with tissue masks, by hierarchical random-patch latent diffusion.

The library is split by responsibility (see DESIGN.md): `slide` and `annotations` read what users have,
`extract` and `data` turn it into a training set, `io` writes gigapixel outputs viewers open.

`open_bundle`, `open_dataset` and `default_model` are imported on first use, so `import wsi_synth` stays light
(no torch).
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

__version__ = "0.1.0"

_LAZY = {"open_bundle": "wsi_synth.models.bundle", "default_model": "wsi_synth.models.bundle", "open_dataset": "wsi_synth.data.store"}

__all__ = [
    "BadAnnotationError",
    "BadArgumentError",
    "BadDatasetError",
    "BadModelError",
    "BadSlideError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputWriteError",
    "WsiSynthError",
    "__version__",
    "default_model",
    "open_bundle",
    "open_dataset",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsi_synth' has no attribute {name!r}")
