"""Training configurations: presets `tiny` (tests, CPU demos) and `paper` (the paper's sizes), or YAML.

A configuration is a frozen dataclass saved into the bundle; loading validates every key by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from wsi_synth.errors import BadArgumentError


@dataclass(frozen=True)
class CodecConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # f = 2^(len - 1)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 16
    kl_weight: float = 1e-6
    # Decode a posterior sample while training (the VAE's own objective), or its mean: the mean trains a sharp
    # codec in far fewer steps, because the decoder need not first learn to undo the sampling noise.
    sample_posterior: bool = True
    lr: float = 2e-4


@dataclass(frozen=True)
class UNetConfig:
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = False  # attention blocks at the lowest resolution
    norm_num_groups: int = 8
    lr: float = 2e-4


@dataclass(frozen=True)
class TrainConfig:
    """Everything `wsi-synth train` needs besides the data and the output."""

    codec: CodecConfig = field(default_factory=CodecConfig)
    image: UNetConfig = field(default_factory=UNetConfig)
    mask: UNetConfig = field(default_factory=UNetConfig)
    batch_size: int = 8
    max_steps: int = 1000
    warmup_steps: int = 50
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_unc: float = 0.5
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    checkpoint_every: int = 500
    sample_every: int = 500
    seed: int = 0

    def validate(self) -> None:
        if not 0 <= self.p_unc <= 1:
            raise BadArgumentError(f"p_unc must be in [0, 1], got {self.p_unc}")
        for name in ("batch_size", "max_steps", "checkpoint_every", "sample_every"):
            if getattr(self, name) < 1:
                raise BadArgumentError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_json(self) -> dict:
        return asdict(self)


PRESETS = {
    "tiny": TrainConfig(),
    # The paper: SD-2 VAE (f = 8, 4 channels, bring it with --codec), a large UNet on 64×64 latents, 128 px masks.
    "paper": TrainConfig(codec=CodecConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
                         image=UNetConfig(block_out_channels=(256, 512, 768, 768), layers_per_block=2, attention=True, norm_num_groups=32, lr=1e-4),
                         mask=UNetConfig(block_out_channels=(128, 256, 512), layers_per_block=2, attention=True, norm_num_groups=32, lr=1e-4),
                         batch_size=32, max_steps=200_000, warmup_steps=1000, ema_decay=0.9999, checkpoint_every=5000, sample_every=5000),
}


def load_config(spec: str | Path | None, **overrides) -> TrainConfig:
    """A preset name, a YAML file (keys as in TrainConfig, nested for codec/image/mask), or the tiny preset."""
    if spec is None or str(spec) in PRESETS:
        config = PRESETS[str(spec or "tiny")]
    else:
        config = _from_yaml(Path(spec))
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()
    return config


def _from_yaml(path: Path) -> TrainConfig:
    import yaml

    if not path.is_file():
        raise BadArgumentError(f"--config {path}: not a preset ({', '.join(PRESETS)}) and not a file")
    doc = yaml.safe_load(path.read_text()) or {}
    return config_from_dict(doc, where=str(path))


def config_from_dict(doc: dict, *, where: str = "config") -> TrainConfig:
    nested = {"codec": CodecConfig, "image": UNetConfig, "mask": UNetConfig}
    known = {f.name for f in fields(TrainConfig)}
    kwargs = {}
    for key, value in doc.items():
        if key not in known:
            raise BadArgumentError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in nested:
            sub_known = {f.name for f in fields(nested[key])}
            bad = set(value) - sub_known
            if bad:
                raise BadArgumentError(f"{where}: unknown key {key}.{sorted(bad)[0]} (known: {', '.join(sorted(sub_known))})")
            value = nested[key](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        kwargs[key] = value
    return TrainConfig(**kwargs)
