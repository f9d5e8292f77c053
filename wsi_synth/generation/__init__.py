"""`wsi-synth generate`: a synthetic slide and its tissue mask at any size, from a model bundle.

- `config`: what a run is asked for, its canvases and each stage's sampler settings;
- `plan`: what a run will cost (and, calibrated on the device, how long it will take);
- `masks`: the class map — cleaning, a user's mask, resampling between canvases;
- `decode`: latents to RGB row bands, batched and in bounded memory;
- `run`: the run itself, its work folder and fingerprint, and the outputs.
"""

from wsi_synth.generation.config import GenerateConfig
from wsi_synth.generation.plan import make_plan
from wsi_synth.generation.run import generate

__all__ = ["GenerateConfig", "generate", "make_plan"]
