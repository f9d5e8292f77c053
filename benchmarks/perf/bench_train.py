"""Training throughput (samples/s) per stage, tiny and paper-size configurations, on this machine's CPU.

    python -m benchmarks.perf.bench_train [--device cpu] [--tiny-steps 30] [--paper-steps 3]

Datasets are imported from ../shared/data (WSSS4LUAD tiles with masks): 64 px tiles for `tiny`,
512 px tiles with 128 px region masks for `paper`. The paper-size codec is trained here only to time it
(the paper uses the SD-2 VAE); its image UNet runs on 64×64 latents (f = 8) like the paper's.
Figures include data loading and the first, slower steps. Prints JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from benchmarks.common import SHARED, Timer, emit, machine


def make_dataset(folder: Path, tile: int, region: int, region_mask: int) -> Path:
    from wsi_synth.data.importer import ImportConfig, import_tiles

    wsss = SHARED / "tiles_masks" / "wsss4luad_test"
    legend = folder / "legend.yaml"
    legend.write_text("0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n")
    data = folder / f"data{tile}"
    import_tiles(
        wsss / "img",
        data,
        ImportConfig(
            tile_size=tile,
            subtype="adenocarcinoma",
            region_size=region,
            region_mask_size=region_mask,
            test_fraction=0.1,
        ),
        masks=wsss / "mask",
        legend=legend,
        progress=False,
    )
    return data


def run(preset: str, data: Path, model: Path, steps: int, batch: int, device: str) -> dict:
    from wsi_synth.models.config import load_config
    from wsi_synth.training import train

    config = load_config(preset, max_steps=steps, batch_size=batch, checkpoint_every=10**9, sample_every=10**9)
    if preset == "paper":
        # f = 8 as the SD-2 VAE
        config = replace(config, codec=replace(config.codec, block_out_channels=(128, 256, 512, 512)))
    out = {}
    for stage in ("codec", "image", "mask"):
        with Timer() as t:
            result = train(stage, data, model, config, device=device, progress=False)
        out[stage] = {
            "samples_per_s": result["samples_per_s"],
            "steps": steps,
            "batch_size": batch,
            "wall_s": round(t.seconds, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny-steps", type=int, default=30)
    parser.add_argument("--paper-steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2] / "bench-out") as tmp:
        folder = Path(tmp)
        results = {
            "tiny (64 px tiles, 16² latents, 32² masks)": run(
                "tiny", make_dataset(folder, 64, 256, 32), folder / "m_tiny", args.tiny_steps, 8, args.device
            ),
            "paper (512 px tiles, 64² latents, 128² masks)": run(
                "paper", make_dataset(folder, 512, 512, 128), folder / "m_paper", args.paper_steps, 2, args.device
            ),
        }
    emit({"benchmark": "train", "machine": machine(), "device": args.device, "results": results})


if __name__ == "__main__":
    main()
