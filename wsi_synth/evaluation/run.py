"""Run an evaluation: embed every input once, compute every metric, write the report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wsi_synth.errors import BadArgumentError
from wsi_synth.evaluation import metrics
from wsi_synth.evaluation.features import FeatureExtractor
from wsi_synth.evaluation.inputs import TileSource, iter_batches, open_source, read_centre, tile_classes

THUMB = 96  # gallery thumbnails, px
#: Neighbours whose classes decide what class a tile looks like (odd, so two classes rarely tie).
VOTE_K = 5


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of `evaluate` (the CLI's options of the same names)."""

    k: int = 3
    size: int = 256
    mode: str = "tiled"
    tile: int = 512
    split: str | None = None
    source: str | None = None  # datasets: only the sources whose id starts with this
    max_tiles: int | None = None
    cells: int | None = None  # None: chosen from the sample size (metrics.cells_for)
    min_per_cell: int = 20
    gallery: int = 16
    seam_period: int | None = None
    batch_size: int = 64
    seed: int = 0


@dataclass
class Embedded:
    """One input's tiles in feature space, with thumbnails for the gallery."""

    source: TileSource
    features: np.ndarray
    thumbs: np.ndarray


def embed(
    source: TileSource, extractor: FeatureExtractor, config: EvaluateConfig, *, label: str, progress: bool
) -> Embedded:
    """Features of every tile (batched, bounded memory) and a small thumbnail of each for the gallery."""
    from tqdm import tqdm

    features, thumbs = [], []
    with tqdm(total=len(source), desc=f"features: {label}", unit="tile", disable=not progress, leave=False) as bar:
        for batch in iter_batches(source, batch=config.batch_size):
            features.append(extractor(batch).astype(np.float32))
            thumbs.append(
                batch[:, :: max(1, batch.shape[1] // THUMB), :: max(1, batch.shape[2] // THUMB)][:, :THUMB, :THUMB]
            )
            bar.update(len(batch))
    if not features:
        raise BadArgumentError(f"{source.path}: no tiles to evaluate")
    return Embedded(source, np.concatenate(features), np.concatenate(thumbs))


def evaluate(
    real: str | Path,
    synthetic: str | Path,
    extractor: FeatureExtractor,
    out: str | Path,
    *,
    train: str | Path | None = None,
    config: EvaluateConfig = EvaluateConfig(),
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Compare REAL and SYNTHETIC tiles (and SYNTHETIC against TRAIN for copying); write `out/report.{json,html}`."""
    from wsi_synth.evaluation.report import write_report
    from wsi_synth.io.atomic import check_not_inputs, check_output

    out = Path(out)
    check_not_inputs([out / "report.json", out / "report.html"], [real, synthetic, train])
    for name in ("report.json", "report.html"):
        check_output(out / name, overwrite=overwrite) if out.is_dir() else None

    def cut(path: str | Path, split: str | None, source: str | None, seed: int) -> TileSource:
        return open_source(
            path,
            size=config.size,
            mode=config.mode,
            tile=config.tile,
            split=split,
            source=source,
            max_tiles=config.max_tiles,
            seed=seed,
        )

    sources = {
        "real": cut(real, config.split, config.source, config.seed),
        "synthetic": cut(synthetic, None, None, config.seed + 1),
    }
    if train is not None:
        sources["train"] = cut(train, "train", config.source, config.seed + 2)
    counts = {label: len(s) for label, s in sources.items() if label != "train"}
    if config.k >= min(counts.values()):
        raise BadArgumentError(
            f"--k {config.k} needs more than {config.k} tiles in each set, got real {counts['real']} tiles, "
            f"synthetic {counts['synthetic']} tiles: lower --k or give more tiles (with k ≥ n every tile covers all)"
        )
    timings: dict[str, float] = {}
    embedded = {}
    for label, source in sources.items():
        t = time.perf_counter()
        embedded[label] = embed(source, extractor, config, label=label, progress=progress)
        timings[f"features_{label}_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    real_f, fake_f = embedded["real"].features, embedded["synthetic"].features
    k = min(config.k, len(real_f) - 1, len(fake_f) - 1)
    if k < 1:
        raise BadArgumentError(f"need at least 2 tiles in each set, got real {len(real_f)}, synthetic {len(fake_f)}")
    precision, recall = metrics.precision_recall(real_f, fake_f, k=k)
    result: dict = {"precision": precision, "recall": recall, "k": k, "fid": metrics.frechet_distance(real_f, fake_f)}
    gallery = []
    if "train" in embedded:
        train_f = embedded["train"].features
        result["authenticity"] = metrics.authenticity(train_f, fake_f)
        result["copying"] = metrics.data_copying(
            train_f, real_f, fake_f, cells=config.cells, min_per_cell=config.min_per_cell, seed=config.seed
        )
        index, distance = metrics.nearest(fake_f, train_f)
        result["nn_distance"] = {
            "synthetic_to_train": _summary(distance),
            "real_to_train": _summary(metrics.nearest(real_f, train_f)[1]),
        }
        histogram = {"synthetic": distance, "real": metrics.nearest(real_f, train_f)[1]}
        for i in range(min(config.gallery, len(fake_f))):
            gallery.append((embedded["synthetic"].thumbs[i], embedded["train"].thumbs[index[i]], float(distance[i])))
    else:
        histogram = {}
    if config.seam_period and sources["synthetic"].kind == "slides":
        result["seams"] = [
            {"slide": p.name, **metrics.seam_score(read_centre(p, 16 * config.seam_period), config.seam_period)}
            for p in sources["synthetic"].items
        ]
    by_class = class_fidelity(embedded, k=k)
    if by_class is not None:
        result["classes"] = by_class
    timings["metrics_s"] = round(time.perf_counter() - t, 2)
    report = {
        "notes": size_notes(len(real_f), len(fake_f)),
        "inputs": {
            label: {
                "path": str(s.path),
                "kind": s.kind,
                "tiles": len(embedded[label].features),
                **({"sampled_from": s.available} if s.available is not None else {}),
                "mode": s.mode if s.kind == "slides" else None,
                **({"slides": [str(p) for p in s.items]} if s.kind == "slides" else {}),
            }
            for label, s in sources.items()
        },
        "feature_extractor": {
            "name": extractor.name,
            "comparable_with_published": extractor.comparable,
            "dim": int(real_f.shape[1]),
        },
        "metrics": result,
        "config": asdict(config),
        "timings": timings,
    }
    write_report(out, report, gallery=gallery, histogram=histogram, overwrite=overwrite)
    return report


def class_fidelity(embedded: dict[str, Embedded], *, k: int) -> dict | None:
    """Whether each class is drawn as it looks, when the synthetic tiles and a real set carry classes (datasets,
    `generate --count` folders, slides beside their label pyramid).

    A tile's class is the class on most of its pixels; what it *looks like* is the class most of its `VOTE_K` nearest
    labelled real tiles carry (the reference: TRAIN when it has classes, else REAL). The yardstick is the same vote for
    the real tiles (REAL against TRAIN, or each REAL tile against the others): how often real tissue of a class looks
    like that class in this feature space. Per class, precision and recall compare the synthetic tiles of a class with
    the real tiles of that class."""
    found = {label: tile_classes(e.source) for label, e in embedded.items()}
    classes = {label: c for label, c in found.items() if c is not None}
    if "synthetic" not in classes or "real" not in classes:
        return None
    reference = "train" if "train" in classes else "real"
    ref_f, ref_c = _labelled(embedded[reference].features, classes[reference])
    real_f, real_c = _labelled(embedded["real"].features, classes["real"])
    fake_f, fake_c = _labelled(embedded["synthetic"].features, classes["synthetic"])
    if len(ref_f) <= VOTE_K or len(real_f) < 2 or len(fake_f) < 1:
        return None
    real_vote = metrics.neighbour_vote(real_f, ref_f, ref_c, k=VOTE_K, same_set=reference == "real")
    fake_vote = metrics.neighbour_vote(fake_f, ref_f, ref_c, k=VOTE_K)
    per_class = {}
    for name in sorted(set(fake_c.tolist()) | set(real_c.tolist())):
        mine, theirs = fake_c == name, real_c == name
        entry: dict = {
            "synthetic_tiles": int(mine.sum()),
            "real_tiles": int(theirs.sum()),
            "looks_like_its_class": {
                "synthetic": _share(fake_vote[mine] == name),
                "real": _share(real_vote[theirs] == name),
            },
            "synthetic_looks_like": {
                other: _share(fake_vote[mine] == other) for other in sorted(set(ref_c.tolist())) if mine.any()
            },
        }
        if min(mine.sum(), theirs.sum()) > k:
            entry["precision"], entry["recall"] = metrics.precision_recall(real_f[theirs], fake_f[mine], k=k)
        per_class[name] = entry
    return {"reference": reference, "vote_k": VOTE_K, "per_class": per_class}


def _labelled(features: np.ndarray, classes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of tiles that have a class, and their classes."""
    keep = [i for i, c in enumerate(classes) if c is not None]
    return features[keep], np.array([classes[i] for i in keep], dtype=object)


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


#: Sets whose sizes differ by more than this factor get a note: their precision and recall do not compare.
SIZE_RATIO_NOTE = 2.0


def size_notes(real: int, synthetic: int) -> list[str]:
    """What the reader should know about set sizes. Recall falls as the synthetic set grows (each synthetic tile's
    k-NN ball shrinks; one model's slide tiles: 0.40 at 546, 0.21 at 8,192) and precision likewise with the real
    set, so reports compare only at like counts."""
    if max(real, synthetic) <= SIZE_RATIO_NOTE * min(real, synthetic):
        return []
    return [
        f"real has {real} tiles, synthetic {synthetic}: recall falls as the synthetic set grows and precision as the "
        "real set does, so compare reports at like counts (--max-tiles draws a seeded sample)"
    ]


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "median": float(np.median(values)), "p05": float(np.percentile(values, 5))}
