"""Build the diffusers networks from configurations. Each is fully described by its own config.json.

- codec: `AutoencoderKL` (RGB ↔ latents, downsampling f = 2^(levels − 1)).
- image denoiser: `UNet2DModel` on latents + 1 channel (the conditioning class's mask), class embedding
  with id 0 = null (unconditional), 1..K−1 = tissue classes.
  (spatial conditioning: K−1 one-hot channels; spatial-global also mixes the class embedding by the crop's class
  fractions, `mix_class_embedding`).
- mask denoiser: `UNet2DModel` on one-hot class maps (K channels in [−1, 1]), class embedding = subtype
  with id 0 = null.
"""

from __future__ import annotations

import torch

from wsi_synth.concurrency import import_names
from wsi_synth.errors import BadArgumentError, BadModelError
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


def mix_class_embedding(net, classes: int):
    """Make an image UNet of spatial-global conditioning take the crop's class fractions as its class embedding.

    Its embedding has K + 1 rows (0 = null, 1 + c = class c, unknown included). Every caller passes the spatial
    labels (0 = null, 1 = map) and the map as the last K−1 input channels; a hook turns them into mixing weights
    just before the forward pass, so training, sampling, previews and distillation share one definition. The
    weights stay a plain `nn.Embedding` table, so the network's folder is a standard diffusers UNet2DModel.
    """
    inner = getattr(net, "module", net)
    table = inner.class_embedding
    if isinstance(table, _MixedEmbedding):
        return net
    if table is None or table.num_embeddings != classes + 1:
        raise BadModelError(
            f"a spatial-global image network needs a class embedding of {classes + 1} entries (null and "
            f"{classes} classes), it has {getattr(table, 'num_embeddings', 0)}"
        )
    mixed = _MixedEmbedding(table.num_embeddings, table.embedding_dim, device=table.weight.device)
    mixed.weight = table.weight
    inner.class_embedding = mixed

    def fractions_as_labels(module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs["sample"]
        labels = kwargs.get("class_labels")
        if labels is None or labels.is_floating_point():
            return args, kwargs
        maps = sample[:, sample.shape[1] - (classes - 1) :].float().mean(dim=(2, 3)).clamp(0, 1)
        unknown = (1 - maps.sum(dim=1, keepdim=True)).clamp(min=0)
        weights = torch.cat([torch.zeros_like(unknown), unknown, maps], dim=1)
        weights = weights / weights.sum(dim=1, keepdim=True)
        null = torch.nn.functional.one_hot(torch.zeros_like(labels), classes + 1).to(weights)
        kwargs["class_labels"] = torch.where((labels == 0)[:, None], null, weights)
        return args, kwargs

    inner.register_forward_pre_hook(fractions_as_labels, with_kwargs=True)
    return net


class _MixedEmbedding(torch.nn.Embedding):
    """An embedding table that also takes rows of mixing weights (a float tensor (B, entries))."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.is_floating_point():
            return input.to(self.weight.dtype) @ self.weight
        return super().forward(input)


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
