"""The model bundle: `model.json` plus one diffusers `save_pretrained` folder per network.

    model/
      model.json        format, version, classes, subtypes, tile size, MPP, latent factor/channels/scale,
                        schedule, conditioning, per-stage provenance (steps, dataset hash, versions, config)
      codec/            AutoencoderKL (or model.json names an external codec: a local folder or a hub id)
      image_unet/       UNet2DModel (EMA weights)
      mask_unet/        UNet2DModel (EMA weights)
      checkpoints/      training state for --resume (not needed to generate)

Writes are atomic per file (`model.json` last), so an interrupted save never leaves a bundle that claims
a stage it does not hold.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from wsi_synth.errors import BadModelError
from wsi_synth.jsonfile import read_versioned, write_atomic

FORMAT = "wsi-synth-model"
VERSION = 1
STAGES = ("codec", "image", "mask")
FOLDERS = {"codec": "codec", "image": "image_unet", "mask": "mask_unet"}


@dataclass
class Bundle:
    """A model bundle folder: model.json (classes, subtypes, latent, schedule, stages) and one folder per network."""

    root: Path
    meta: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[dict]:
        """The model's classes [{id, name, color}], 0 = unknown."""
        return self.meta.get("classes", [])

    @property
    def subtypes(self) -> list[str]:
        """The subtypes the mask model takes as prompts."""
        return self.meta.get("subtypes", [])

    def has(self, stage: str) -> bool:
        """Whether `stage` has been trained into this bundle."""
        return stage in self.meta.get("stages", {})

    def require(self, stage: str) -> None:
        """Refuse a bundle without `stage`, saying which command trains it."""
        if not self.has(stage):
            hint = f"wsi-synth train {stage} DATA --out {self.root}" + (" (or pass --codec PATH)" if stage == "codec" else "")
            raise BadModelError(f"model bundle {self.root} has no {stage} stage: train it with `{hint}`")

    def check_files(self, stage: str) -> None:
        """The stage's network folder is complete (a config and weights), or a one-line error naming it; without
        this, diffusers would take the missing folder for a model-hub id and report a failed connection."""
        if stage == "codec" and self.meta.get("stages", {}).get("codec", {}).get("external"):
            return
        folder = self.root / FOLDERS[stage]
        weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")) if folder.is_dir() else []
        if not (folder / "config.json").is_file() or not weights:
            raise BadModelError(f"model bundle {self.root} lists a {stage} stage but {folder} is missing or incomplete "
                                f"(needs config.json and weights): copy the whole bundle folder again, or retrain the {stage} stage")

    def load_codec(self, *, device: str = "cpu"):
        """The codec (a diffusers AutoencoderKL) on `device`, in eval mode."""
        from diffusers import AutoencoderKL

        external = self.meta.get("stages", {}).get("codec", {}).get("external")
        self.require("codec")
        self.check_files("codec")
        source = external or str(self.root / FOLDERS["codec"])
        try:
            return AutoencoderKL.from_pretrained(source, local_files_only=not _is_hub_id(source), low_cpu_mem_usage=False).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BadModelError(f"cannot load the codec from {source}: {str(exc).splitlines()[0]}") from exc

    def load_unet(self, stage: str, *, device: str = "cpu"):
        """The `stage` UNet (a diffusers UNet2DModel) on `device`, in eval mode."""
        from diffusers import UNet2DModel

        self.require(stage)
        self.check_files(stage)
        try:
            return UNet2DModel.from_pretrained(str(self.root / FOLDERS[stage]), low_cpu_mem_usage=False).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BadModelError(f"cannot load the {stage} network of {self.root}: {str(exc).splitlines()[0]}") from exc

    def save_network(self, stage: str, network) -> None:
        """Write a network's folder (via a temporary folder + rename)."""
        final = self.root / FOLDERS[stage]
        tmp = self.root / f".{FOLDERS[stage]}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        network.save_pretrained(tmp, safe_serialization=True)
        _readable_like_other_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def write_meta(self) -> None:
        """Write model.json atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / "model.json", {"format": FORMAT, "version": VERSION, **self.meta})

    def summary(self) -> dict:
        """What `wsi-synth info` shows of a bundle."""
        m = self.meta
        return {"path": str(self.root), "classes": [c["name"] for c in self.classes], "subtypes": self.subtypes,
                "tile_size": m.get("tile_size"), "mpp": m.get("mpp"), "latent": m.get("latent"),
                "stages": {s: {k: v for k, v in info.items() if k in ("steps", "external", "dataset_sha256", "final_loss", "psnr_test_db")}
                           for s, info in m.get("stages", {}).items()}}


def _readable_like_other_files(folder: Path) -> None:
    """safetensors writes its files 0600 (through a private temporary file); give them the mode every other
    file gets under this process's umask, so a shared model folder is readable by the group as intended."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def default_model() -> Path:
    """The demonstration bundle shipped inside the package (`wsi_synth/default_model`): what `generate` uses
    without `--model`. Raises `BadArgumentError` when this install does not carry it."""
    from importlib.resources import files

    from wsi_synth.errors import BadArgumentError

    bundled = files("wsi_synth") / "default_model"
    if not (bundled / "model.json").is_file():
        raise BadArgumentError("this install has no bundled default model: pass --model MODEL (train one with `wsi-synth train`)")
    return Path(str(bundled))


def _is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/"))


def open_bundle(root: str | Path, *, create: bool = False) -> Bundle:
    """Open the model bundle at `root` (or create an empty one), checking model.json's format, version and shape."""
    root = Path(root)
    meta_path = root / "model.json"
    if not meta_path.is_file():
        if create:
            if root.exists() and any(not p.name.startswith(".") for p in root.iterdir()):  # hidden: claims, desktop files
                raise BadModelError(f"{root} exists and is not a model bundle (no model.json): choose another --out")
            return Bundle(root, {"stages": {}})
        raise BadModelError(f"{root} is not a wsi-synth model bundle (no model.json)")
    meta = read_versioned(meta_path, fmt=FORMAT, version=VERSION, error=BadModelError)
    meta.setdefault("stages", {})
    _check_meta(meta, meta_path)
    return Bundle(root, meta)


def _check_meta(meta: dict, path: Path) -> None:
    """The shape of every key a reader indexes, checked once where the file is read (keys may be absent while a
    bundle is being trained): a hand-edited or damaged model.json is a one-line error, not a TypeError later."""
    def positive_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    checks = {
        "stages": lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
        "latent": lambda v: isinstance(v, dict) and positive_int(v.get("factor")) and positive_int(v.get("channels"))
        and isinstance(v.get("scale"), (int, float)) and not isinstance(v.get("scale"), bool),
        "schedule": lambda v: isinstance(v, dict) and positive_int(v.get("num_train_timesteps")) and isinstance(v.get("beta_schedule"), str),
        "classes": lambda v: isinstance(v, list) and bool(v) and all(isinstance(c, dict) and isinstance(c.get("id"), int)
                                                                      and isinstance(c.get("name"), str) for c in v),
        "subtypes": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "tile_size": positive_int, "region_size": positive_int, "region_mask_size": positive_int,
        "mpp": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
    }
    for key, ok in checks.items():
        if key in meta and not ok(meta[key]):
            raise BadModelError(f"{path}: {key!r} has an unexpected value {json.dumps(meta[key])[:80]}: the file is damaged or was edited by hand; "
                                "copy the bundle again")
