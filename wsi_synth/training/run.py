"""`train`: one stage of a bundle trained on a dataset — the run (claims, resume, distributed set-up) and the
binding of the bundle to its dataset (classes, subtypes, geometry). The stages are `training.stages`, the loop
`training.loop`."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import torch

from wsi_synth.data.store import Dataset, open_dataset
from wsi_synth.devices import check_device
from wsi_synth.errors import BadArgumentError
from wsi_synth.io.atomic import check_apart, claim
from wsi_synth.models.bundle import FOLDERS, STAGES, STUDENTS, BadModelError, Bundle, open_bundle
from wsi_synth.models.config import TrainConfig
from wsi_synth.training.loop import loop
from wsi_synth.training.stages import build_stage

log = logging.getLogger("wsi_synth")
LATENT_CACHE_MAX = 20_000  # latents kept per run (float16); beyond that, tiles are re-encoded


def train(
    stage: str,
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    device: str = "cpu",
    codec: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train one stage (`codec`, `image`, `mask` or `layout`) on a dataset into the bundle at `out`. The layout stage
    is a mask-stage network on another dataset's coarser regions (tissue layouts at slide scale), added to a bundle
    whose other stages bound it to a class scheme; `generate` samples it first and starts the mask stage from it.

    `overwrite` replaces that stage (its network, checkpoint and previews), never the bundle's other stages
    or other files; retraining the codec under an image stage trained on its latents is refused.

    Started by `torchrun --nproc_per_node N`, the UNet stages train data-parallel (DDP; NCCL on GPUs, gloo
    on CPU): `batch_size` is per process, each rank draws its own batch, rank 0 writes everything.
    """
    if stage not in STAGES:
        raise BadArgumentError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    rank, world, device = _init_distributed(device)
    if world > 1 and stage == "codec":
        raise BadArgumentError("train codec runs on one process (it is small): start it without torchrun")
    if resume and overwrite:
        raise BadArgumentError("--resume continues the stage and --overwrite starts it again: pass one of them")
    check_device(device)
    dataset = open_dataset(data)
    dataset.check()  # a damaged source is named now, not met as a zarr error after minutes of training
    check_apart(out, [data])
    if Path(out).exists() and not Path(out).is_dir():
        raise BadModelError(f"--out {out} is a file, not a model bundle folder: choose another --out")
    created = not Path(out).exists()
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        return _train_claimed(
            stage,
            dataset,
            out,
            config,
            resume=resume,
            device=device,
            codec=codec,
            overwrite=overwrite,
            progress=progress,
            rank=rank,
            world=world,
        )
    except BaseException:
        if created and rank == 0:
            _remove_if_untrained(Path(out))
        raise


def _train_claimed(
    stage: str,
    dataset: Dataset,
    out: str | Path,
    config: TrainConfig,
    *,
    resume: bool,
    device: str,
    codec: str | None,
    overwrite: bool,
    progress: bool,
    rank: int,
    world: int,
) -> dict:
    # rank 0 writes the stage: it claims it first, so a second `train STAGE` on this bundle stops at once
    with claim(Path(out) / FOLDERS[stage], f"the {stage} stage of") if rank == 0 else contextlib.nullcontext():
        bundle = open_bundle(out, create=True)
        bind_bundle_to_dataset(bundle, dataset, stage)
        if overwrite and rank == 0:
            discard_stage(bundle, stage)
        if rank == 0 and not (bundle.root / "model.json").is_file():
            bundle.write_meta()  # claims the folder as a bundle at once, so an interrupted first stage can --resume
        if codec is not None:
            # a local folder is recorded absolute, so that the bundle loads from any working directory
            bundle.set_external_codec(str(Path(codec).resolve()) if Path(codec).exists() else codec)
        spec = build_stage(stage, dataset, bundle, config, device, rank=rank)
        try:
            return loop(
                spec,
                bundle,
                config,
                dataset,
                resume=resume,
                device=device,
                progress=progress and rank == 0,
                rank=rank,
                world=world,
            )
        finally:
            if world > 1:
                torch.distributed.destroy_process_group()


def _remove_if_untrained(root: Path) -> None:
    """A bundle folder this run created, when the run failed before saving anything to resume from: no skeleton
    (a model.json without stages, empty folders) is left behind. A saved checkpoint keeps the folder."""
    if any((root / "checkpoints").glob("*.pt")) or any((root / name).is_dir() for name in FOLDERS.values()):
        return
    (root / "model.json").unlink(missing_ok=True)
    for folder in ("previews", "checkpoints"):
        if (root / folder).is_dir() and not any((root / folder).iterdir()):
            (root / folder).rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def discard_stage(bundle: Bundle, stage: str) -> None:
    """What a previous `train STAGE` wrote into the bundle: its network folder, checkpoint, previews, record."""
    if stage == "codec" and bundle.has("image") and not bundle.external_codec:
        raise BadModelError(
            f"{bundle.root}: its image stage was trained on this codec's latents; retrain the codec into a new --out "
            "(or retrain the image stage after it)"
        )
    for path in (bundle.root / FOLDERS[stage], bundle.root / "checkpoints" / f"{stage}.pt"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in (bundle.root / "previews").glob(f"{stage}_step*.png"):
        path.unlink()
    bundle.forget_stage(stage)
    if stage in STUDENTS:  # a student of the old teacher would be stale
        discard_stage(bundle, STUDENTS[stage])


def _init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, this process's device) — from torchrun's environment, or (0, 1, device)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.distributed.get_rank(), world, device


def bind_bundle_to_dataset(bundle: Bundle, dataset: Dataset, stage: str, *, check_only: bool = False) -> None:
    """A bundle serves one class scheme and subtype list: refuse a dataset that disagrees (`check_only`: and change
    nothing, e.g. a distillation on the data the stage was trained on)."""
    if stage == "layout":
        _bind_layout_data(bundle, dataset, check_only=check_only)
        return
    classes = dataset.classes
    subtypes = dataset.subtypes
    if bundle.has_data():
        mine = [c["name"] for c in bundle.classes]
        if mine != [c["name"] for c in classes]:
            raise BadModelError(
                f"{bundle.root} was trained with classes {mine}, the dataset has {[c['name'] for c in classes]}"
            )
        if bundle.subtypes != subtypes:
            raise BadModelError(
                f"{bundle.root} was trained with subtypes {bundle.subtypes}, the dataset has {subtypes}"
            )
        if bundle.tile_size != dataset.tile_size:
            raise BadModelError(
                f"{bundle.root} was trained on {bundle.tile_size} px tiles, the dataset has {dataset.tile_size}"
            )
    if check_only:
        return
    bundle.adopt_data(
        classes=classes,
        subtypes=subtypes,
        tile_size=dataset.tile_size,
        mpp=dataset.mpp,
        region_size=dataset.region_size,
        region_mask_size=dataset.region_mask_size,
    )


def _bind_layout_data(bundle: Bundle, dataset: Dataset, *, check_only: bool = False) -> None:
    """The layout stage adds to a bundle bound to a class scheme: same classes, subtypes among the bundle's (a layout
    data set may hold some of them only), regions larger than the mask stage's."""
    if not bundle.has_data():
        raise BadModelError(
            f"{bundle.root} has no stage yet: train the codec, image and mask stages first; the layout stage adds to "
            "them"
        )
    mine, theirs = [c["name"] for c in bundle.classes], [c["name"] for c in dataset.classes]
    if mine != theirs:
        raise BadModelError(
            f"{bundle.root} was trained with classes {mine}, the layout dataset has {theirs}: import it with the same "
            "--classes"
        )
    foreign = sorted(set(dataset.subtypes) - set(bundle.subtypes))
    if foreign:
        raise BadModelError(
            f"the layout dataset's subtypes {foreign} are not the model's ({', '.join(bundle.subtypes)})"
        )
    if dataset.region_size <= bundle.region_size:
        raise BadArgumentError(
            f"the layout dataset's regions ({dataset.region_size} px) are not larger than the mask stage's "
            f"({bundle.region_size} px): "
            "import the layouts with a larger --region (e.g. 2048) for the layout stage"
        )
    if check_only:
        return
    bundle.adopt_layout_data(
        region_size=dataset.region_size, region_mask_size=dataset.region_mask_size, subtypes=dataset.subtypes
    )
