"""`wsi-synth generate`: mask stage → cleaning → upsampling → image stage → tiled decode → pyramid outputs.

Sizes here are (height, width); `px_` is output pixels, `lat_` latent pixels, `msk_` mask-canvas pixels.
The canvases are held in memory (a 100,000² slide at f = 8 is a 4 × 12,500² float32 latent canvas, 2.5 GB);
the state is saved to a work folder beside the output every few steps, so `--resume` continues an
interrupted run and produces the same output.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from wsi_synth.errors import BadAnnotationError, BadArgumentError
from wsi_synth.jsonfile import write_atomic
from wsi_synth.models.bundle import Bundle, open_bundle
from wsi_synth.sampling.canvas import BundleDenoiser, sample_canvas
from wsi_synth.sampling.planners import PlannerConfig, crops_per_step, minimum_crops
from wsi_synth.sampling.sampler import SamplerConfig, SampleStats


@dataclass(frozen=True)
class GenerateConfig:
    width: int
    height: int
    subtype: str | None = None
    steps: int = 50
    eta: float = 0.0
    omega: float = 0.0
    mask_omega: float = 0.0
    planner: str = "shifted-grid"
    context: int | None = None  # latent px; None = d/8
    batch_size: int = 16
    seed: int = 0
    device: str = "cpu"
    mask: str | None = None
    tile: int = 512
    quality: int = 90
    save_every: int = 5
    max_memory_gb: float = 8.0  # canvases larger than this live in a zarr work store beside the output
    workers: int = 1  # > 1: a local dask.distributed cluster of this many worker processes
    scheduler: str | None = None  # tcp://HOST:PORT of a running dask.distributed scheduler
    min_region: int = 3  # mask-canvas px: regions thinner than this are removed (the paper's min-pooling)

    def validate(self) -> None:
        if self.width < 1 or self.height < 1:
            raise BadArgumentError(f"--size must be at least 1 px, got {self.width}×{self.height}")
        if self.steps < 1:
            raise BadArgumentError(f"--steps must be at least 1, got {self.steps}")


@dataclass(frozen=True)
class Geometry:
    px: tuple[int, int]
    lat: tuple[int, int]
    msk: tuple[int, int]
    factor: int
    lat_crop: int
    msk_crop: int
    px_per_msk: float


def geometry(bundle: Bundle, config: GenerateConfig) -> Geometry:
    """Canvas sizes for the output; canvases are at least one crop (the output is cut from the corner)."""
    meta = bundle.meta
    factor = meta["latent"]["factor"]
    lat_crop = meta["tile_size"] // factor
    msk_crop = meta["region_mask_size"]
    px_per_msk = meta["region_size"] / meta["region_mask_size"]
    h, w = config.height, config.width
    lat = (max(math.ceil(h / factor), lat_crop), max(math.ceil(w / factor), lat_crop))
    msk = (max(math.ceil(h / px_per_msk), msk_crop), max(math.ceil(w / px_per_msk), msk_crop))
    return Geometry((h, w), lat, msk, factor, lat_crop, msk_crop, px_per_msk)


def _planner(config: GenerateConfig, crop: int) -> PlannerConfig:
    context = config.context if config.context is not None else crop // 8
    planner = PlannerConfig(config.planner, crop, context if config.planner == "shifted-grid" else 0)
    planner.validate()
    return planner


def make_plan(model: str | Path, config: GenerateConfig) -> dict:
    """What a run will do (no weights loaded): canvases, crops per step vs N0, evaluations, memory."""
    config.validate()
    bundle = open_bundle(model)
    _check_bundle(bundle, config)
    g = geometry(bundle, config)
    image_planner = _planner(config, g.lat_crop)
    stages = {}
    if config.mask is None:
        mask_planner = _planner(config, g.msk_crop)
        crops = crops_per_step(mask_planner, g.msk)
        passes = 2 if config.mask_omega > 0 else 1
        stages["mask"] = {"canvas": list(g.msk), "crop": g.msk_crop, "crops_per_step": crops, "n0": minimum_crops(g.msk, g.msk_crop),
                          "evaluations": crops * passes * config.steps}
    crops = crops_per_step(image_planner, g.lat)
    # each crop runs once per class present (+ the null pass); 2 per crop is typical for tissue maps
    stages["image"] = {"canvas": list(g.lat), "crop": g.lat_crop, "crops_per_step": crops, "n0": minimum_crops(g.lat, g.lat_crop),
                       "evaluations_estimate": crops * 2 * config.steps}
    channels = bundle.meta["latent"]["channels"]
    memory = 3 * channels * g.lat[0] * g.lat[1] * 4 + g.lat[0] * g.lat[1]
    return {"output_px": [config.width, config.height], "planner": asdict(image_planner), "stages": stages, "steps": config.steps,
            "memory_bytes": memory}


def _check_bundle(bundle: Bundle, config: GenerateConfig) -> None:
    bundle.require("image")
    bundle.require("codec")
    if config.mask is None:
        bundle.require("mask")
        if config.subtype not in bundle.subtypes:
            raise BadArgumentError(f"--subtype {config.subtype!r} is not one the model knows: {', '.join(bundle.subtypes) or '(none)'}")
    for key in ("latent", "tile_size", "region_size", "region_mask_size", "classes"):
        if key not in bundle.meta:
            raise BadArgumentError(f"model bundle {bundle.root}: model.json lacks {key!r} (was every stage trained?)")


# --- mask stage ------------------------------------------------------------------------------------------------


def clean_mask(classes: np.ndarray, *, min_region: int) -> np.ndarray:
    """The paper's cleaning: pixels on a boundary between two classes become unknown; regions thinner than
    `min_region` px are removed (min-pooling, i.e. an opening per class)."""
    from scipy import ndimage

    out = classes.copy()
    padded = np.pad(classes, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    boundary = np.zeros(classes.shape, bool)
    for n in neighbours:
        boundary |= (n != classes) & (n != 0) & (classes != 0)
    out[boundary] = 0
    if min_region > 1:
        structure = np.ones((min_region, min_region), bool)
        for c in np.unique(out):
            if c == 0:
                continue
            region = out == c
            kept = ndimage.binary_opening(region, structure=structure)
            out[region & ~kept] = 0
    return out


def load_mask(path: str | Path, bundle: Bundle, g: Geometry) -> np.ndarray:
    """A user's class map at mask-canvas resolution: a label image (TIFF/PNG, values = class ids) or a QuPath GeoJSON."""
    path = Path(path)
    classes = bundle.classes
    if not path.is_file():
        raise BadArgumentError(f"--mask {path}: file not found")
    if path.suffix.lower() in (".geojson", ".json"):
        from wsi_synth.io.geojson import geojson_to_mask

        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise BadAnnotationError(f"--mask {path} is not valid JSON: {exc}") from exc
        return geojson_to_mask(doc, g.msk, downsample=g.px_per_msk, classes=classes)
    import tifffile
    from PIL import Image

    labels = tifffile.imread(path, level=0) if path.suffix.lower() in (".tif", ".tiff") else np.asarray(Image.open(path))
    if labels.ndim != 2:
        raise BadArgumentError(f"--mask {path}: expected a single-channel label image, got shape {labels.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {c["id"] for c in classes})
    if unknown:
        known = ", ".join(f"{c['id']}={c['name']}" for c in classes)
        raise BadArgumentError(f"--mask {path}: values {unknown} are not classes of the model ({known})")
    ys = _centres(0, g.msk[0], g.px_per_msk, g.px[0] / labels.shape[0], labels.shape[0])
    xs = _centres(0, g.msk[1], g.px_per_msk, g.px[1] / labels.shape[1], labels.shape[1])
    return labels[ys][:, xs].astype(np.uint8)


def _centres(start: int, stop: int, dst_px: float, src_px: float, limit: int) -> np.ndarray:
    """Source index under the centre of each destination pixel start..stop−1 (pixel sizes in output px)."""
    return np.minimum(((np.arange(start, stop) + 0.5) * dst_px / src_px).astype(int), limit - 1)


def nearest(labels: np.ndarray, src_px: float, shape: tuple[int, int], dst_px: float) -> np.ndarray:
    """Resample a class map whose pixels are `src_px` output px wide to `shape` pixels of `dst_px` (centres)."""
    return labels[_centres(0, shape[0], dst_px, src_px, labels.shape[0])][:, _centres(0, shape[1], dst_px, src_px, labels.shape[1])]


class PixelLabels:
    """The mask-canvas class map seen at output resolution, row band by row band (never materialised)."""

    def __init__(self, labels: np.ndarray, px_per_label: float, shape: tuple[int, int]) -> None:
        self.labels, self.px_per_label = labels, px_per_label
        self.shape, self.dtype = shape, np.dtype(np.uint8)

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        ys = _centres(y0, y1, 1.0, self.px_per_label, self.labels.shape[0])
        xs = _centres(0, self.shape[1], 1.0, self.px_per_label, self.labels.shape[1])
        return self.labels[ys][:, xs]


# --- decode ----------------------------------------------------------------------------------------------------


class DecodedImage:
    """Latents decoded to RGB in overlapping tiles with tapered blending, produced row band by row band.

    Tiles are 2d latent px with a d/8 overlap, blended with linear ramps and normalised by the summed weights,
    so no tile edge shows, at (2d / (2d − d/8))² ≈ 1.14× the work of one non-overlapping decode (the paper's four
    shifted Hann tilings cost 4×).
    """

    def __init__(self, codec, latents: np.ndarray, scale: float, factor: int, crop: int, shape: tuple[int, int], device: str) -> None:
        self.codec, self.latents, self.scale, self.factor, self.device = codec, latents, scale, factor, device
        self.tile = min(2 * crop, latents.shape[1], latents.shape[2])
        self.overlap = max(1, crop // 8) if self.tile < max(latents.shape[1:]) else 0
        self.shape, self.dtype = (*shape, 3), np.dtype(np.uint8)
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.decoded_latent_px = 0

    def _starts(self, n: int) -> list[int]:
        step = self.tile - self.overlap
        starts = list(range(0, max(n - self.tile, 0) + 1, step))
        if starts[-1] + self.tile < n:
            starts.append(n - self.tile)
        return starts

    def _ramp(self, n: int, first: bool, last: bool) -> np.ndarray:
        w = np.ones(n, np.float32)
        o = self.overlap * self.factor
        if o:
            ramp = (np.arange(o, dtype=np.float32) + 0.5) / o
            if not first:
                w[:o] = ramp
            if not last:
                w[-o:] = ramp[::-1]
        return w

    def _decode_row(self, y: int, last_row: bool, first_row: bool) -> tuple[np.ndarray, np.ndarray]:
        """One row of tiles: weighted colours (tile·f, W·f, 3) and their weights (tile·f, W·f)."""
        _, lh, lw = self.latents.shape
        f, t = self.factor, self.tile
        acc = np.zeros((t * f, lw * f, 3), np.float32)
        weights = np.zeros((t * f, lw * f), np.float32)
        xs = self._starts(lw)
        wy = self._ramp(t * f, first_row, last_row)
        for k, x in enumerate(xs):
            z = torch.from_numpy(np.asarray(self.latents[:, y : y + t, x : x + t])[None] / self.scale).to(self.device)
            with torch.no_grad():
                rgb = self.codec.decode(z).sample[0].float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy()
            self.decoded_latent_px += t * t
            w2 = wy[:, None] * self._ramp(t * f, k == 0, k == len(xs) - 1)[None, :]
            acc[:, x * f : (x + t) * f] += rgb * w2[..., None]
            weights[:, x * f : (x + t) * f] += w2
        return acc, weights

    def _blended_rows(self, y0: int, y1: int) -> np.ndarray:
        """Output rows [y0, y1) as floats in [−1, 1], summing the tile rows that cover them."""
        _, lh, _ = self.latents.shape
        f, t = self.factor, self.tile
        starts = self._starts(lh)
        out = np.zeros((y1 - y0, self.latents.shape[2] * f, 3), np.float32)
        total = np.zeros((y1 - y0, self.latents.shape[2] * f), np.float32)
        for k, ys in enumerate(starts):
            a, b = ys * f, (ys + t) * f
            if b <= y0 or a >= y1:
                continue
            if ys not in self._rows:
                self._rows = {key: v for key, v in self._rows.items() if key + t > ys - t}  # keep the previous row only
                self._rows[ys] = self._decode_row(ys, k == len(starts) - 1, k == 0)
            colours, weights = self._rows[ys]
            lo, hi = max(a, y0), min(b, y1)
            out[lo - y0 : hi - y0] += colours[lo - a : hi - a]
            total[lo - y0 : hi - y0] += weights[lo - a : hi - a]
        # Normalising by the summed weights keeps the blend exact where clamped edge tiles overlap more than the ramp.
        return out / np.maximum(total, 1e-6)[..., None]

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        rgb = self._blended_rows(y0, y1)[:, : self.shape[1]]
        return ((rgb + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


# --- the run ---------------------------------------------------------------------------------------------------


def generate(model: str | Path, out: str | Path, config: GenerateConfig, *, overwrite: bool = False, resume: bool = False,
             progress: bool = True, log=print) -> dict:
    """Generate a synthetic slide and its mask; write s.tiff, s.mask.tiff, s.geojson, s.json beside `out`."""
    from wsi_synth.diffusion.schedule import alphas_cumprod
    from wsi_synth.io.atomic import check_output
    from wsi_synth.io.outputs import OutputPaths, write_slide_outputs

    config.validate()
    bundle = open_bundle(model)
    _check_bundle(bundle, config)
    paths = OutputPaths.beside(out)
    for p in paths.all():
        check_output(p, overwrite=overwrite)
    g = geometry(bundle, config)
    plan = make_plan(model, config)
    log(f"plan: {json.dumps(plan)}")
    work = Path(out).with_name(f".{Path(out).name}.work")
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    schedule = bundle.meta["schedule"]
    abar = alphas_cumprod(schedule["num_train_timesteps"], schedule["beta_schedule"])
    out_of_core = plan["memory_bytes"] > config.max_memory_gb * 1e9
    timings: dict[str, float] = {}
    stats = {"mask": SampleStats(), "image": SampleStats()}
    with _scheduler(config) as client:
        run = {"abar": abar, "out_of_core": out_of_core, "client": client, "resume": resume, "save_every": config.save_every}
        started = time.perf_counter()
        if config.mask is not None:
            msk = load_mask(config.mask, bundle, g)
        else:
            sampler = SamplerConfig(_planner(config, g.msk_crop), steps=config.steps, eta=config.eta, omega=config.mask_omega,
                                    batch_size=config.batch_size, window=_window(g.msk_crop), seed=config.seed)
            one_hot = _stage(BundleDenoiser(str(model), "mask", config.device), (len(bundle.classes), *g.msk), sampler, work / "mask",
                             condition=1 + bundle.subtypes.index(config.subtype), stats=stats["mask"], **run)
            msk = clean_mask(np.asarray(one_hot[:]).argmax(0).astype(np.uint8), min_region=config.min_region)
        timings["mask_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        lat_labels = nearest(msk, g.px_per_msk, g.lat, g.factor)
        denoiser = BundleDenoiser(str(model), "image", config.device)
        per_call = calibrate(denoiser, (bundle.meta["latent"]["channels"], g.lat_crop, g.lat_crop), config.batch_size, with_mask=True)
        eta_s = plan["stages"]["image"]["evaluations_estimate"] / config.batch_size * per_call
        log(f"image stage: ~{eta_s / 60:.1f} min (calibrated: {per_call * 1000:.0f} ms per {config.batch_size} crops on {config.device})"
            + (f"; canvas in a zarr work store ({plan['memory_bytes'] / 1e9:.1f} GB > --max-memory)" if out_of_core else ""))
        sampler = SamplerConfig(_planner(config, g.lat_crop), steps=config.steps, eta=config.eta, omega=config.omega,
                                batch_size=config.batch_size, window=_window(g.lat_crop), seed=config.seed + 1)
        latents = _stage(denoiser, (bundle.meta["latent"]["channels"], *g.lat), sampler, work / "image", labels=lat_labels,
                         stats=stats["image"], **run)
        timings["image_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    codec = bundle.load_codec(device=config.device)
    image = DecodedImage(codec, latents, bundle.meta["latent"]["scale"], g.factor, g.lat_crop, g.px, config.device)
    labels = PixelLabels(msk, g.px_per_msk, g.px)
    record = {"model": str(Path(model).resolve()), "config": asdict(config), "plan": plan, "out_of_core": out_of_core,
              "evaluations": {k: asdict(v) for k, v in stats.items()}, "classes": bundle.classes}
    result = write_slide_outputs(image, labels, out, mpp=bundle.meta["mpp"], classes=bundle.classes, tile=config.tile, quality=config.quality,
                                 overwrite=overwrite, progress=progress, record={**record, "timings": timings})
    timings["decode_write_s"] = round(time.perf_counter() - started, 2)
    record_path = Path(result["record"])
    doc = json.loads(record_path.read_text())
    doc["timings"] = timings
    doc["decode"] = {"decoded_latent_px": image.decoded_latent_px, "relative_to_one_plain_decode": round(image.decoded_latent_px / (g.lat[0] * g.lat[1]), 3)}
    write_atomic(record_path, doc)
    shutil.rmtree(work, ignore_errors=True)
    return {**result, "timings": timings, "evaluations": record["evaluations"]}


def calibrate(denoiser, shape: tuple[int, int, int], batch: int, *, with_mask: bool) -> float:
    """Seconds per denoiser call of `batch` crops of `shape` (C, d, d), timed after one warm-up call."""
    z = torch.zeros(batch, *shape)
    t = torch.full((batch,), 500, dtype=torch.long)
    labels = torch.zeros(batch, dtype=torch.long)
    masks = torch.zeros(batch, 1, *shape[1:]) if with_mask else None
    denoiser(z, t, labels, masks)
    started = time.perf_counter()
    denoiser(z, t, labels, masks)
    return time.perf_counter() - started


def _window(crop: int) -> int:
    """Chunk side in latent px: 16 crops (a multiple of the random-patch planning region)."""
    return 16 * crop


def _stage(denoiser, shape, sampler: SamplerConfig, work: Path, *, abar, out_of_core: bool, client, resume: bool, save_every: int,
           labels=None, condition: int = 0, stats: SampleStats):
    work.mkdir(parents=True, exist_ok=True)
    return sample_canvas(denoiser, shape, abar, sampler, work=work, out_of_core=out_of_core, labels=labels, condition=condition,
                         client=client, resume=resume, save_every=save_every, stats=stats)


class _scheduler:
    """None (this process), a local dask.distributed cluster (`workers` > 1), or a client of `scheduler`."""

    def __init__(self, config: GenerateConfig) -> None:
        self.config, self.client, self.cluster = config, None, None

    def __enter__(self):
        if self.config.scheduler or self.config.workers > 1:
            try:
                from distributed import Client, LocalCluster
            except ImportError as exc:
                raise BadArgumentError("--workers/--scheduler need dask.distributed: pip install 'wsi-synth[distributed]'") from exc
            if self.config.scheduler:
                self.client = Client(self.config.scheduler)
            else:
                self.cluster = LocalCluster(n_workers=self.config.workers, threads_per_worker=1, processes=True, dashboard_address=None)
                self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
