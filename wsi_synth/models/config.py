"""Training configurations: presets `tiny` (tests, CPU demos) and `paper` (the paper's sizes), or YAML.

A configuration is a frozen dataclass saved into the bundle; loading validates every key by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from wsi_synth.errors import BadArgumentError
from wsi_synth.models.conditioning import KINDS, SPATIAL


@dataclass(frozen=True)
class CodecConfig:
    """The codec's network and learning rate (a diffusers AutoencoderKL)."""

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
    """A diffusion UNet's network and learning rate (a diffusers UNet2DModel)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = False  # attention blocks at the lowest resolution
    norm_num_groups: int = 8
    lr: float = 2e-4
    #: Min-SNR-γ loss weighting (Hang et al. 2023): each timestep's ε-loss weighted by min(SNR, γ) / SNR, so the
    #: easy, nearly noise-free steps stop dominating the gradient. None: the plain ε-loss (every bundle before it).
    min_snr_gamma: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything `wsi-synth train` needs besides the data and the output."""

    codec: CodecConfig = field(default_factory=CodecConfig)
    image: UNetConfig = field(default_factory=UNetConfig)
    mask: UNetConfig = field(default_factory=UNetConfig)
    #: The layout stage: a mask-stage network on a layout dataset's coarser regions.
    layout: UNetConfig = field(default_factory=UNetConfig)
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
    #: The image network's conditioning: "spatial" (the class map as one-hot channels; measured better,
    #: docs/benchmarks.md), "spatial-global" (also the map's class fractions as the class embedding, which reaches
    #: every block) or "per-class" (the paper's).
    image_conditioning: str = SPATIAL
    #: What the image network's null condition learns from: "unlabelled" (the unlabelled tiles when there are any,
    #: else the labelled ones) or "all" (every tile, labelled or not: the null condition is then the data's
    #: marginal, as classifier-free guidance assumes, and not one source's look).
    null_tiles: str = "unlabelled"
    #: How strongly the image stage favours tiles of rare classes (`data.samplers.class_balanced_weights`): 0 draws
    #: every labelled tile alike (every bundle before it), 1 draws every class about equally often.
    class_balance: float = 0.0

    def validate(self) -> None:
        """Refuse values training cannot use, naming the key."""
        if self.image_conditioning not in KINDS:
            raise BadArgumentError(f"image_conditioning must be {' or '.join(KINDS)}, got {self.image_conditioning!r}")
        for part in ("image", "mask", "layout"):
            gamma = getattr(self, part).min_snr_gamma
            if gamma is not None and not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
                raise BadArgumentError(f"{part}.min_snr_gamma must be a positive number or null, got {gamma!r}")
        if self.null_tiles not in ("unlabelled", "all"):
            raise BadArgumentError(f"null_tiles must be unlabelled or all, got {self.null_tiles!r}")
        if not (isinstance(self.class_balance, (int, float)) and 0 <= self.class_balance <= 1):
            raise BadArgumentError(f"class_balance must be in [0, 1], got {self.class_balance!r}")
        if not 0 <= self.p_unc <= 1:
            raise BadArgumentError(f"p_unc must be in [0, 1], got {self.p_unc}")
        for name in ("batch_size", "max_steps", "checkpoint_every", "sample_every", "num_train_timesteps"):
            if getattr(self, name) < 1:
                raise BadArgumentError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise BadArgumentError(f"seed must be in 0–{2**32 - 1}, got {self.seed}")
        if self.warmup_steps < 0 or not 0 <= self.ema_decay < 1 or not self.grad_clip > 0:
            raise BadArgumentError(
                f"warmup_steps must be ≥ 0, ema_decay in [0, 1) and grad_clip > 0, got {self.warmup_steps}, "
                f"{self.ema_decay}, {self.grad_clip}"
            )
        for part in ("codec", "image", "mask", "layout"):
            if not getattr(self, part).lr > 0:
                raise BadArgumentError(f"{part}.lr must be positive, got {getattr(self, part).lr}")

    def to_json(self) -> dict:
        """The configuration as recorded in model.json."""
        return asdict(self)


PRESETS = {
    "tiny": TrainConfig(),
    # The paper: SD-2 VAE (f = 8, 4 channels, bring it with --codec), a large UNet on 64×64 latents, 128 px masks.
    "paper": TrainConfig(
        codec=CodecConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        image=UNetConfig(
            block_out_channels=(256, 512, 768, 768), layers_per_block=2, attention=True, norm_num_groups=32, lr=1e-4
        ),
        mask=UNetConfig(
            block_out_channels=(128, 256, 512), layers_per_block=2, attention=True, norm_num_groups=32, lr=1e-4
        ),
        layout=UNetConfig(
            block_out_channels=(128, 256, 512), layers_per_block=2, attention=True, norm_num_groups=32, lr=1e-4
        ),
        batch_size=32,
        max_steps=200_000,
        warmup_steps=1000,
        ema_decay=0.9999,
        checkpoint_every=5000,
        sample_every=5000,
    ),
}


def load_config(spec: str | Path | None, **overrides) -> TrainConfig:
    """A preset name, a YAML file (keys as in TrainConfig, nested for codec/image/mask/layout), or the tiny preset."""
    if spec is None or str(spec) in PRESETS:
        config = PRESETS[str(spec or "tiny")]
    else:
        config = _from_yaml(Path(spec))
        try:
            config.validate()
        except BadArgumentError as exc:
            raise BadArgumentError(f"--config {spec}: {exc}") from exc
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()
    return config


def _from_yaml(path: Path) -> TrainConfig:
    import yaml

    if not path.is_file():
        raise BadArgumentError(f"--config {path}: not a preset ({', '.join(PRESETS)}) and not a file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
        raise BadArgumentError(
            f"--config {path}: not readable YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    if not isinstance(doc, dict):
        raise BadArgumentError(
            f"--config {path}: must be a mapping of settings (e.g. max_steps: 2000), got a {type(doc).__name__}"
        )
    return config_from_dict(doc, where=f"--config {path}")


def config_from_dict(doc: dict, *, where: str = "config") -> TrainConfig:
    """A TrainConfig from a YAML/JSON document, with its nested network sections; unknown keys are refused."""
    nested = {"codec": CodecConfig, "image": UNetConfig, "mask": UNetConfig, "layout": UNetConfig}
    known = {f.name for f in fields(TrainConfig)}
    kwargs = {}
    for key, value in doc.items():
        if key not in known:
            raise BadArgumentError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in nested:
            if not isinstance(value, dict):
                raise BadArgumentError(f"{where}: {key} must be a mapping of its settings, got {value!r}")
            sub_known = {f.name for f in fields(nested[key])}
            bad = set(value) - sub_known
            if bad:
                raise BadArgumentError(
                    f"{where}: unknown key {key}.{sorted(bad)[0]} (known: {', '.join(sorted(sub_known))})"
                )
            value = nested[key](**{k: _typed(nested[key](), k, v, f"{where}: {key}.{k}") for k, v in value.items()})
        else:
            value = _typed(TrainConfig(), key, value, f"{where}: {key}")
        kwargs[key] = value
    return TrainConfig(**kwargs)


def _typed(defaults: object, key: str, value: object, where: str) -> object:
    """`value` as the type of the default of `key` (an int is a float; a list of ints a tuple); else a one-line
    error."""
    default = getattr(defaults, key)
    if default is None:  # optional numbers (image.min_snr_gamma): null or a finite number
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        value = float(value) if ok and value is not None else value  # type: ignore[arg-type]
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif isinstance(default, tuple):
        ok = (
            isinstance(value, (list, tuple))
            and bool(value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        )
        value = tuple(value) if ok else value  # type: ignore[arg-type]
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise BadArgumentError(f"{where} must be {_kind(default)}, got {value!r}")
    return value


def _kind(default: object) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, tuple):
        return "a list of positive integers, e.g. [32, 64]"
    return {int: "an integer", float: "a finite number", str: "a string", type(None): "null or a finite number"}.get(
        type(default), type(default).__name__
    )
