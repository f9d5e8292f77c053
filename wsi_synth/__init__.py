"""wsi-synth: synthetic H&E whole-slide images with tissue masks, by hierarchical random-patch latent diffusion.

The library is split by responsibility (see DESIGN.md): `slide` and `annotations` read what users have,
`extract` and `data` turn it into a training set, `io` writes gigapixel outputs viewers open.
"""

from wsi_synth.errors import (
    BadAnnotationError,
    BadArgumentError,
    BadDatasetError,
    BadSlideError,
    OutputExistsError,
    OutputWriteError,
    WsiSynthError,
)

__version__ = "0.1.0"

__all__ = [
    "BadAnnotationError",
    "BadArgumentError",
    "BadDatasetError",
    "BadSlideError",
    "OutputExistsError",
    "OutputWriteError",
    "WsiSynthError",
    "__version__",
]
