"""Training of a bundle's stages: `train` (the run), `stages` (what differs per stage), `loop` (the shared loop and
its record), `checkpoints` and `previews`."""

from wsi_synth.training.run import train

__all__ = ["train"]
