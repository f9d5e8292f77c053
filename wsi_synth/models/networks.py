"""Build the diffusers networks from configurations. Each is fully described by its own config.json.

- codec: `AutoencoderKL` (RGB ↔ latents, downsampling f = 2^(levels − 1)).
- image denoiser: `UNet2DModel` on latents + 1 channel (the conditioning class's mask), class embedding
  with id 0 = null (unconditional), 1..K−1 = tissue classes.
- mask denoiser: `UNet2DModel` on one-hot class maps (K channels in [−1, 1]), class embedding = subtype
  with id 0 = null.
"""

from __future__ import annotations

from wsi_synth.concurrency import import_names
from wsi_synth.errors import BadArgumentError
from wsi_synth.models.config import CodecConfig, UNetConfig


def build_codec(config: CodecConfig):
    """A diffusers AutoencoderKL from a CodecConfig."""
    (AutoencoderKL,) = import_names("diffusers", "AutoencoderKL")

    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=config.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        sample_size=256,
    )


def build_unet(config: UNetConfig, *, in_channels: int, out_channels: int, num_class_embeds: int, sample_size: int):
    """A diffusers UNet2DModel from a UNetConfig, with the conditioning input channels of its stage."""
    (UNet2DModel,) = import_names("diffusers", "UNet2DModel")

    n = len(config.block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if config.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=config.norm_num_groups,
        num_class_embeds=num_class_embeds,
        attention_head_dim=8,
    )


def codec_factor(codec) -> int:
    """The codec's spatial downsampling factor f (2 per level after the first)."""
    return 2 ** (len(codec.config.block_out_channels) - 1)


def check_fits(unet_config: UNetConfig, size: int, what: str) -> None:
    """A UNet halves its input (levels − 1) times: the size must divide evenly."""
    step = 2 ** (len(unet_config.block_out_channels) - 1)
    if size % step:
        raise BadArgumentError(
            f"{what} of {size} px does not fit a UNet with {len(unet_config.block_out_channels)} levels "
            f"(needs a multiple of {step}): change the tile size, the codec, or the UNet's block_out_channels"
        )
