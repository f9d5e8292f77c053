"""The model bundle: `model.json` plus one diffusers `save_pretrained` folder per network.

    model/
      model.json        format, version, classes, subtypes, tile size, MPP, latent factor/channels/scale,
                        schedule, conditioning, per-stage provenance (steps, dataset hash, versions, config)
      codec/            AutoencoderKL (or model.json names an external codec: a local folder or a hub id)
      image_unet/       UNet2DModel (EMA weights)
      mask_unet/        UNet2DModel (EMA weights)
      image_student/    a few-step student of a stage (`wsi-synth distill`; float16 weights), optional
      checkpoints/      training state for --resume (not needed to generate)

Writes are atomic per file (`model.json` last), so an interrupted save never leaves a bundle that claims
a stage it does not hold.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wsi_synth.concurrency import import_names
from wsi_synth.errors import BadModelError
from wsi_synth.jsonfile import read_versioned, write_atomic
from wsi_synth.models.conditioning import PER_CLASS, SPATIAL, Conditioning

FORMAT = "wsi-synth-model"
#: 2: the image stage's conditioning and a spatial stage's empty-map embedding are always written (version 1 left
#: them out where a reader had to assume the old behaviour: per-class, and null for a spatial bundle).
VERSION = 2
STAGES = ("codec", "image", "mask", "layout")
#: The diffusion stages a student can be distilled from, and the name of each student (its record and folder).
STUDENTS = {"image": "image_student", "mask": "mask_student", "layout": "layout_student"}
FOLDERS = {
    "codec": "codec",
    "image": "image_unet",
    "mask": "mask_unet",
    "layout": "layout_unet",
    **{student: student for student in STUDENTS.values()},
}


@dataclass(frozen=True)
class LatentSpec:
    """The codec's latent space: spatial factor f, channels, and the scale that makes latents unit variance."""

    factor: int
    channels: int
    scale: float


@dataclass(frozen=True)
class ScheduleSpec:
    """The noise schedule the networks were trained with."""

    num_train_timesteps: int
    beta_schedule: str

    def alphas_cumprod(self):
        """ᾱ_t for every training timestep (a torch tensor)."""
        from wsi_synth.diffusion.schedule import alphas_cumprod

        return alphas_cumprod(self.num_train_timesteps, self.beta_schedule)


@dataclass
class Bundle:
    """A model bundle folder: model.json (classes, subtypes, latent, schedule, stages) and one folder per network.

    Read model.json through the typed properties (`latent`, `schedule`, `tile_size`, …): each checks its key once,
    and a bundle whose stage that writes it is missing is a one-line error naming the stage. Only this module and
    the trainer (which writes it) touch `meta`.
    """

    root: Path
    meta: dict = field(default_factory=dict)

    def _required(self, key: str, stage: str):
        if key not in self.meta:
            raise BadModelError(
                f"model bundle {self.root}: model.json lacks {key!r}: train the {stage} stage first (`wsi-synth train "
                f"{stage} DATA --out {self.root}`)"
            )
        return self.meta[key]

    @property
    def latent(self) -> LatentSpec:
        """The codec's latent space (written when the codec is trained or attached)."""
        v = self._required("latent", "codec")
        return LatentSpec(int(v["factor"]), int(v["channels"]), float(v["scale"]))

    @property
    def schedule(self) -> ScheduleSpec:
        """The noise schedule (written by the image and mask stages)."""
        v = self._required("schedule", "image")
        return ScheduleSpec(int(v["num_train_timesteps"]), str(v["beta_schedule"]))

    @property
    def tile_size(self) -> int:
        """Training tile side in px at `mpp`: the image stage's crop is tile_size / f latent px."""
        return int(self._required("tile_size", "codec"))

    @property
    def mpp(self) -> float:
        """µm per pixel of the training tiles, and so of generated slides."""
        return float(self._required("mpp", "codec"))

    @property
    def region_size(self) -> int:
        """Side in px of the regions the mask stage learnt from."""
        return int(self._required("region_size", "codec"))

    @property
    def region_mask_size(self) -> int:
        """Side of the mask stage's crops (a region downsampled)."""
        return int(self._required("region_mask_size", "codec"))

    @property
    def layout_geometry(self) -> tuple[int, int] | None:
        """The layout stage's (region px, layout crop px): its crops see `region` px of slide at region / crop px per
        layout pixel. None without a layout stage."""
        v = self.meta.get("layout")
        return (int(v["region_size"]), int(v["region_mask_size"])) if self.has("layout") and v else None

    def layout_condition(self, subtype: str) -> int:
        """The layout network's condition for `subtype`: its embedding where the layout data had that subtype, else
        the null condition (the layout of all its data)."""
        known = self.meta.get("layout", {}).get("subtypes", [])
        return 1 + self.subtypes.index(subtype) if subtype in known else 0

    @property
    def image_conditioning(self) -> str:
        """How the image network takes its condition: "per-class" (the paper's: a class and its binary mask) or
        "spatial" (the crop's class map as one-hot channels), "spatial-global" (and its class fractions as the class
        embedding). Bundles from before the choice are per-class."""
        return str(self.meta.get("image_conditioning", PER_CLASS))

    @property
    def conditioning(self) -> Conditioning:
        """The image network's conditioning as sampling and the network check need it (models.conditioning)."""
        return Conditioning(self.image_conditioning, len(self.classes), self.empty_map)

    @property
    def empty_map(self) -> str:
        """What a spatially conditioned image network learnt from a labelled tile whose map holds no class: "map" (the
        map embedding with all-zero channels) or "null" (the null embedding; spatial bundles from before the key)."""
        return str(self.meta.get("empty_map", "null"))

    @property
    def external_codec(self) -> str | None:
        """A codec used from outside the bundle (a local folder or a hub id), or None when the bundle holds its own."""
        return self.meta.get("stages", {}).get("codec", {}).get("external")

    @property
    def classes(self) -> list[dict]:
        """The model's classes [{id, name, color}], 0 = unknown."""
        return self.meta.get("classes", [])

    @property
    def subtypes(self) -> list[str]:
        """The subtypes the mask model takes as prompts."""
        return self.meta.get("subtypes", [])

    # --- written by the trainer, here so that model.json has one owner ---------------------------------------------

    def adopt_data(
        self,
        *,
        classes: list[dict],
        subtypes: list[str],
        tile_size: int,
        mpp: float,
        region_size: int,
        region_mask_size: int,
    ) -> None:
        """Record what the bundle was trained on (the classes, subtypes and sizes every stage must share)."""
        self.meta.update(
            classes=list(classes),
            subtypes=list(subtypes),
            tile_size=int(tile_size),
            mpp=float(mpp),
            region_size=int(region_size),
            region_mask_size=int(region_mask_size),
        )

    def adopt_layout_data(self, *, region_size: int, region_mask_size: int, subtypes: list[str]) -> None:
        """Record the geometry of the layout stage's regions (its own, coarser than the mask stage's) and the subtypes
        its data has (for the others it draws its unconditional layout)."""
        self.meta["layout"] = {
            "region_size": int(region_size),
            "region_mask_size": int(region_mask_size),
            "subtypes": list(subtypes),
        }

    def has_data(self) -> bool:
        """Whether a stage has already bound the bundle to a class scheme (see `adopt_data`)."""
        return self.meta.get("classes") is not None

    def set_latent(self, latent: LatentSpec) -> None:
        """Record the codec's latent space."""
        self.meta["latent"] = {"factor": latent.factor, "channels": latent.channels, "scale": latent.scale}

    def has_latent(self) -> bool:
        """Whether the latent space is recorded."""
        return "latent" in self.meta

    def set_external_codec(self, source: str) -> None:
        """Use a codec from outside the bundle (a local folder, recorded by absolute path, or a hub id)."""
        self.meta["stages"]["codec"] = {"external": source}

    def drop_stage(self, stage: str) -> None:
        """Forget a stage (before training it again)."""
        self.meta["stages"].pop(stage, None)

    def record_stage(
        self, stage: str, record: dict, *, schedule: ScheduleSpec, image_conditioning: str | None = None
    ) -> None:
        """Record a trained stage's provenance, the schedule it was trained with and the conditioning scheme."""
        if image_conditioning is not None:
            self.meta["image_conditioning"] = image_conditioning
            if Conditioning(image_conditioning).spatial:
                self.meta["empty_map"] = "map"
            else:
                self.meta.pop("empty_map", None)
        self.meta["schedule"] = {
            "num_train_timesteps": schedule.num_train_timesteps,
            "beta_schedule": schedule.beta_schedule,
            "prediction_type": "epsilon",
        }
        self._describe_conditioning()
        self.meta["stages"][stage] = dict(record)

    def _describe_conditioning(self) -> None:
        self.meta["conditioning"] = {
            "image": self.conditioning.description,
            "mask": "one-hot class maps in [-1, 1], subtype embedding (id 0 = null, i+1 = subtypes[i])",
            "layout": "as the mask stage, on coarser regions (model.json's layout geometry); generate starts the mask "
            "stage from it",
        }

    def forget_stage(self, stage: str) -> None:
        """Remove `stage`'s record from model.json on disk too (under the lock `write_stage` takes), so a stage whose
        files were discarded is not claimed by the file in the meantime nor merged back by a later `write_stage`."""
        self.drop_stage(stage)
        with self._locked_file() as disk:
            if disk is not None:
                disk.get("stages", {}).pop(stage, None)
                _write_file(self.root, disk)

    def write_stage(self, stage: str) -> None:
        """Write model.json with `stage`'s record merged into the file as it is now, under a lock: stages trained at
        the same time into one bundle (another process, another GPU) each keep their record."""
        with self._locked_file() as disk:
            if disk is not None:
                self.meta = _merged(disk, self.meta, stage)
                self._describe_conditioning()
            self.write_meta()

    @contextmanager
    def _locked_file(self) -> Iterator[dict | None]:
        """model.json as on disk (None before the first write), read and rewritten under an exclusive lock."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".model.json.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.root / "model.json"
            yield (
                read_versioned(path, fmt=FORMAT, version=VERSION, error=BadModelError, migrations=MIGRATIONS)
                if path.is_file()
                else None
            )

    def student(self, stage: str) -> dict | None:
        """The record of `stage`'s distilled student (steps, timesteps, folded guidance, teacher hash), or None."""
        return self.meta.get("stages", {}).get(STUDENTS.get(stage, ""))

    def teacher_sha256(self, stage: str) -> str:
        """The SHA-256 of `stage`'s network weights: what a student records of its teacher, so a student whose
        teacher was retrained since is known stale. Computed once per version of the files (generation asks for it
        whenever it picks a stage's solver)."""
        self.check_files(stage)
        weights = sorted((self.root / FOLDERS[stage]).glob("*.safetensors"))
        return _weights_sha256(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in weights))

    def has(self, stage: str) -> bool:
        """Whether `stage` has been trained into this bundle."""
        return stage in self.meta.get("stages", {})

    def require(self, stage: str) -> None:
        """Refuse a bundle without `stage`, saying which command trains it."""
        if not self.has(stage):
            if stage in STUDENTS.values():
                teacher = _teacher_of(stage)
                raise BadModelError(
                    f"model bundle {self.root} has no distilled {teacher} stage: distil it with `wsi-synth distill "
                    f"{self.root} DATA --stage {teacher}`, or choose another --solver"
                )
            hint = f"wsi-synth train {stage} DATA --out {self.root}" + (
                " (or pass --codec PATH)" if stage == "codec" else ""
            )
            raise BadModelError(f"model bundle {self.root} has no {stage} stage: train it with `{hint}`")

    def check_files(self, stage: str) -> None:
        """The stage's network folder is complete (a config and weights), or a one-line error naming it; without
        this, diffusers would take the missing folder for a model-hub id and report a failed connection."""
        if stage == "codec" and self.meta.get("stages", {}).get("codec", {}).get("external"):
            return
        folder = self.root / FOLDERS[stage]
        weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")) if folder.is_dir() else []
        if not (folder / "config.json").is_file() or not weights:
            raise BadModelError(
                f"model bundle {self.root} lists a {stage} stage but {folder} is missing or incomplete "
                f"(needs config.json and weights): copy the whole bundle folder again, or retrain the {stage} stage"
            )
        for path in weights:
            if path.suffix == ".safetensors":
                _check_safetensors(path, stage)
        self._check_network(stage, folder)

    def _check_network(self, stage: str, folder: Path) -> None:
        """The network's config agrees with model.json (latent channels and factor, classes, subtypes, conditioning):
        a bundle assembled from different trainings is refused when opened, not after the sampling."""
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise BadModelError(
                f"model bundle {self.root}: {folder.name}/config.json is unreadable ({exc}): copy the bundle again, or "
                f"retrain the {stage} stage"
            ) from exc
        if not {"latent", "classes"} <= set(self.meta):
            return  # a bundle being assembled (or written by hand) states nothing yet to check the network against
        n = len(self.classes)
        if stage == "codec":
            expected = {"latent_channels": self.latent.channels, "downsampling factor": self.latent.factor}
            config = {**config, "downsampling factor": 2 ** (len(config.get("block_out_channels", [0])) - 1)}
        elif _teacher_of(stage) == "image":
            conditioning = self.conditioning
            expected = {
                "in_channels": self.latent.channels + conditioning.mask_channels,
                "out_channels": self.latent.channels,
                "num_class_embeds": conditioning.class_embeddings,
            }
        else:
            expected = {"in_channels": n, "out_channels": n, "num_class_embeds": len(self.subtypes) + 1}
        for key, want in expected.items():
            if config.get(key) != want:
                raise BadModelError(
                    f"model bundle {self.root}: {folder.name}/config.json has {key} {config.get(key)} where model.json "
                    f"({n} classes, "
                    f"{len(self.subtypes)} subtypes, {self.latent.channels}-channel latents at f = "
                    f"{self.latent.factor}) needs {want}: "
                    f"its files come from different trainings; copy the whole bundle again, or retrain the {stage} "
                    "stage"
                )

    def load_codec(self, *, device: str = "cpu"):
        """The codec (a diffusers AutoencoderKL) on `device`, in eval mode."""
        (AutoencoderKL,) = import_names("diffusers", "AutoencoderKL")

        external = self.meta.get("stages", {}).get("codec", {}).get("external")
        self.require("codec")
        self.check_files("codec")
        source = external or str(self.root / FOLDERS["codec"])
        try:
            return (
                AutoencoderKL.from_pretrained(source, local_files_only=not _is_hub_id(source), low_cpu_mem_usage=False)
                .to(device)
                .eval()
            )
        except (OSError, ValueError) as exc:
            raise BadModelError(f"cannot load the codec from {source}: {str(exc).splitlines()[0]}") from exc

    def load_unet(self, stage: str, *, device: str = "cpu"):
        """The `stage` UNet (a diffusers UNet2DModel; `image_student` etc. for a student) on `device`, in eval mode,
        in float32 whatever it was saved in."""
        import torch

        (UNet2DModel,) = import_names("diffusers", "UNet2DModel")

        self.require(stage)
        self.check_files(stage)
        try:
            net = (
                UNet2DModel.from_pretrained(
                    str(self.root / FOLDERS[stage]), low_cpu_mem_usage=False, torch_dtype=torch.float32
                )
                .to(device)
                .eval()
            )
        except (OSError, ValueError) as exc:
            raise BadModelError(f"cannot load the {stage} network of {self.root}: {str(exc).splitlines()[0]}") from exc
        if stage in ("image", STUDENTS["image"]) and self.conditioning.global_classes:
            from wsi_synth.models.networks import mix_class_embedding

            mix_class_embedding(net, len(self.classes))
        return net

    def save_network(self, stage: str, network, *, half: bool = False) -> None:
        """Write a network's folder (via a temporary folder + rename); `half` stores float16 weights (half the
        size; loaded back as float32)."""
        import copy

        final = self.root / FOLDERS[stage]
        tmp = self.root / f".{FOLDERS[stage]}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        (copy.deepcopy(network).half() if half else network).save_pretrained(tmp, safe_serialization=True)
        _readable_like_other_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def write_meta(self) -> None:
        """Write model.json atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_file(self.root, self.meta)

    def summary(self) -> dict:
        """What `wsi-synth info` shows of a bundle."""
        m = self.meta
        return {
            "path": str(self.root),
            "classes": [c["name"] for c in self.classes],
            "subtypes": self.subtypes,
            "tile_size": m.get("tile_size"),
            "mpp": m.get("mpp"),
            "latent": m.get("latent"),
            "stages": {
                s: {
                    k: v
                    for k, v in info.items()
                    if k in ("steps", "external", "dataset_sha256", "final_loss", "psnr_test_db")
                }
                for s, info in m.get("stages", {}).items()
            },
        }


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
        raise BadArgumentError(
            "this install has no bundled default model: pass --model MODEL (train one with `wsi-synth train`)"
        )
    return Path(str(bundled))


def _is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/"))


#: The model.json keys a stage's training sets (beside its record and the schedule every stage writes).
STAGE_KEYS = {
    "codec": ("latent",),
    "image": ("latent", "image_conditioning", "empty_map"),
    "mask": (),
    "layout": ("layout",),
    **{student: () for student in STUDENTS.values()},
}


def _write_file(root: Path, meta: dict) -> None:
    write_atomic(root / "model.json", {"format": FORMAT, "version": VERSION, **meta})


@functools.lru_cache(maxsize=16)
def _weights_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    """One SHA-256 over the bytes of `files` (path, mtime, size: a new version of a file is a new key)."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _teacher_of(name: str) -> str:
    """The stage a network belongs to: `image` for `image` and for its student `image_student`."""
    return next((teacher for teacher, student in STUDENTS.items() if student == name), name)


def _merged(disk: dict, mine: dict, stage: str) -> dict:
    """model.json as on disk, with `stage`'s record and the keys it owns from `mine`; keys and stages absent on disk
    (the data binding of a first stage, an external codec) are taken from `mine` too."""
    merged = dict(disk)
    for key, value in mine.items():
        if key not in merged or key in STAGE_KEYS[stage] or key == "schedule":
            merged[key] = value
    for key in STAGE_KEYS[stage]:
        if key not in mine:
            merged.pop(key, None)
    # stages absent on disk (an external codec this run recorded) and an external codec this run chose come from `mine`
    theirs = disk.get("stages", {})
    ours = {k: v for k, v in mine["stages"].items() if k == stage or k not in theirs or v.get("external")}
    merged["stages"] = {**theirs, **ours}
    return merged


def open_bundle(root: str | Path, *, create: bool = False) -> Bundle:
    """Open the model bundle at `root` (or create an empty one), checking model.json's format, version and shape."""
    root = Path(root)
    meta_path = root / "model.json"
    if not meta_path.is_file():
        if create:
            # hidden: claims, desktop files
            if root.exists() and any(not p.name.startswith(".") for p in root.iterdir()):
                raise BadModelError(f"{root} exists and is not a model bundle (no model.json): choose another --out")
            return Bundle(root, {"stages": {}})
        raise BadModelError(f"{root} is not a wsi-synth model bundle (no model.json)")
    meta = read_versioned(meta_path, fmt=FORMAT, version=VERSION, error=BadModelError, migrations=MIGRATIONS)
    meta.setdefault("stages", {})
    _check_meta(meta, meta_path)
    return Bundle(root, meta)


def _from_version_1(meta: dict) -> dict:
    """Version 1 → 2: what an older reader assumed, written out. A bundle with an image stage and no conditioning key
    was trained per-class; a spatial one without `empty_map` learnt an all-unknown map as the null embedding."""
    meta = dict(meta)
    if "image" in meta.get("stages", {}) and "image_conditioning" not in meta:
        meta["image_conditioning"] = PER_CLASS
    if meta.get("image_conditioning") == SPATIAL and "empty_map" not in meta:
        meta["empty_map"] = "null"
    return meta


MIGRATIONS = {1: _from_version_1}


def _check_meta(meta: dict, path: Path) -> None:
    """The shape of every key a reader indexes, checked once where the file is read (keys may be absent while a
    bundle is being trained): a hand-edited or damaged model.json is a one-line error, not a TypeError later."""

    def positive_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    checks = {
        "stages": lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
        "latent": lambda v: (
            isinstance(v, dict)
            and positive_int(v.get("factor"))
            and positive_int(v.get("channels"))
            and isinstance(v.get("scale"), (int, float))
            and not isinstance(v.get("scale"), bool)
        ),
        "schedule": lambda v: (
            isinstance(v, dict)
            and positive_int(v.get("num_train_timesteps"))
            and isinstance(v.get("beta_schedule"), str)
        ),
        "classes": lambda v: (
            isinstance(v, list)
            and bool(v)
            and all(isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str) for c in v)
        ),
        "subtypes": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "tile_size": positive_int,
        "region_size": positive_int,
        "region_mask_size": positive_int,
        "mpp": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "layout": lambda v: (
            isinstance(v, dict) and positive_int(v.get("region_size")) and positive_int(v.get("region_mask_size"))
        ),
    }

    def student_record(v: object) -> bool:  # what `generate` reads of a student's record to decide whether it serves
        return (
            isinstance(v, dict)
            and positive_int(v.get("distilled_steps"))
            and isinstance(v.get("omega"), (int, float))
            and not isinstance(v.get("omega"), bool)
            and isinstance(v.get("teacher_sha256"), str)
        )

    # a student's record first: a damaged one is named, not reported as the whole "stages"
    checks = {**{f"stages.{student}": student_record for student in STUDENTS.values()}, **checks}
    stages: dict = meta["stages"] if isinstance(meta.get("stages"), dict) else {}
    flat = {**meta, **{f"stages.{k}": v for k, v in stages.items()}}
    for key, ok in checks.items():
        if key in flat and not ok(flat[key]):
            raise BadModelError(
                f"{path}: {key!r} has an unexpected value {json.dumps(flat[key])[:80]}: the file is damaged or was "
                "edited by hand; copy the bundle again"
            )


def _check_safetensors(path: Path, stage: str) -> None:
    """A safetensors file holds its whole header and every tensor it declares (a truncated copy is refused by name)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len)) if 8 + header_len <= size else None
    except (OSError, ValueError) as exc:
        header = None
        reason = str(exc)
    else:
        reason = "its header is damaged"
    if header is not None:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end <= size:
            return
        reason = f"it is truncated ({size:,} of {8 + header_len + end:,} bytes)"
    raise BadModelError(
        f"{path}: the {stage} network's weights are unreadable ({reason}): copy the bundle again, or retrain the "
        f"{stage} stage"
    )
