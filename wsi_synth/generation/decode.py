"""Latents → RGB row bands: overlapping decode tiles, batched codec calls, tapered blending, bounded memory.

Tiles are 2d latent px with a d/4 overlap, blended with linear ramps and normalised by the summed weights, so
no tile edge shows, at (2d / (2d − d/4))² ≈ 1.31× the work of one non-overlapping decode (the paper's four
shifted Hann tilings cost 4×). The codec's output drifts near a tile's edge (its group norms see only the tile), and
a d/8 overlap left the tile grid faintly visible in flat glass: its seams measured 1.25× the mean step between
neighbouring pixels there, against 1.10× (the measure's floor) at d/4 (docs/benchmarks.md, "Decode seams").
The weights are separable, so their sums are two 1-D arrays and every tile's contribution is normalised as it
arrives.

Memory does not grow with the slide's area: a row of tiles is decoded `batch` tiles per codec call (on a GPU the
next batch decoding while the current one is blended), columns are finished left to right as soon as
no later tile reaches them, finished rows become uint8, and only the rows the next tile row overlaps stay as
float32 partial sums. At 100,000 px with f = 8 and 64² crops that is ~0.4 GB, where two full-width float32
tile rows would be ~2.5 GB.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from wsi_synth.concurrency import prefetch


def default_decode_batch(device: str) -> int:
    """Tiles per codec call: a few on a CPU (larger batches do not run faster there), more on a GPU."""
    return 16 if str(device).startswith("cuda") else 4


class DecodedImage:
    """An (H, W, 3) uint8 image produced row band by row band from a (C, h, w) latent canvas (numpy or zarr)."""

    def __init__(
        self,
        codec,
        latents,
        scale: float,
        factor: int,
        crop: int,
        shape: tuple[int, int],
        device: str,
        *,
        batch: int = 4,
        overlap: int | None = None,
    ) -> None:
        self.codec, self.latents, self.scale, self.factor, self.device = codec, latents, scale, factor, device
        self.batch = max(1, batch)
        _, lh, lw = latents.shape
        self.tile = min(2 * crop, lh, lw)
        default = max(1, crop // 4)  # latent px; measured in benchmarks/quality/bench_decode_seams.py
        self.overlap = (default if overlap is None else overlap) if self.tile < max(lh, lw) else 0
        self.shape, self.dtype = (*shape, 3), np.dtype(np.uint8)
        self.row_starts, self.col_starts = self._starts(lh), self._starts(lw)
        self.row_total = self._total(self.row_starts, lh)
        self.col_total = self._total(self.col_starts, lw)
        self.decoded_latent_px = 0
        self._rows = self._finished_rows()
        self._ready: list[tuple[int, np.ndarray]] = []  # finished uint8 rows: (first output row, rows)

    # --- geometry -------------------------------------------------------------------------------------------------

    def _starts(self, n: int) -> list[int]:
        step = self.tile - self.overlap
        starts = list(range(0, max(n - self.tile, 0) + 1, step))
        if starts[-1] + self.tile < n:
            starts.append(n - self.tile)
        return starts

    def _ramp(self, first: bool, last: bool) -> np.ndarray:
        """Weights across one tile, output px: 1 inside, linear ramps over the overlaps with its neighbours."""
        w = np.ones(self.tile * self.factor, np.float32)
        o = self.overlap * self.factor
        if o:
            ramp = (np.arange(o, dtype=np.float32) + 0.5) / o
            if not first:
                w[:o] = ramp
            if not last:
                w[-o:] = ramp[::-1]
        return w

    def _total(self, starts: list[int], n: int) -> np.ndarray:
        """Summed weights along one axis (output px): the blend's normaliser, separable in y and x."""
        f = self.factor
        total = np.zeros(n * f, np.float32)
        for k, s in enumerate(starts):
            total[s * f : (s + self.tile) * f] += self._ramp(k == 0, k == len(starts) - 1)
        return total

    # --- decoding -------------------------------------------------------------------------------------------------

    def _decoded_tiles(self, ys: int) -> Iterator[tuple[int, np.ndarray]]:
        """(tile index, RGB float tile in [−1, 1]) along one tile row, `batch` tiles per codec call, one call ahead."""
        t = self.tile

        def calls() -> Iterator[tuple[int, np.ndarray]]:
            for b0 in range(0, len(self.col_starts), self.batch):
                xs = self.col_starts[b0 : b0 + self.batch]
                z = np.stack([np.asarray(self.latents[:, ys : ys + t, x : x + t]) for x in xs]) / self.scale
                with torch.no_grad():
                    rgb = self.codec.decode(torch.from_numpy(z).to(self.device)).sample.float().clamp(-1, 1)
                yield b0, rgb.permute(0, 2, 3, 1).cpu().numpy()

        # On a GPU the next codec call runs while this batch is blended; on a CPU the codec's threads already use
        # every core, and a second thread would only compete with them.
        for b0, rgb in prefetch(calls(), depth=1) if str(self.device).startswith("cuda") else calls():
            self.decoded_latent_px += len(rgb) * t * t
            for k, tile in enumerate(rgb):
                yield b0 + k, tile

    def _finished_rows(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first output row, uint8 rows) in order, one tile row at a time."""
        f, T = self.factor, self.tile * self.factor
        width = self.latents.shape[2] * f
        pending = np.zeros((0, width, 3), np.float32)  # partial sums of rows the next tile row also covers
        for k, ys in enumerate(self.row_starts):
            top = ys * f
            end = max(top + T, top + len(pending))
            next_top = self.row_starts[k + 1] * f if k + 1 < len(self.row_starts) else end
            wy = (self._ramp(k == 0, k == len(self.row_starts) - 1) / self.row_total[top : top + T])[:, None, None]
            done = np.empty((next_top - top, width, 3), np.uint8)
            carry = np.zeros((end - next_top, width, 3), np.float32)
            columns = _ColumnBlender(end - top, width)
            for col, tile in self._decoded_tiles(ys):
                x = self.col_starts[col] * f
                wx = (self._ramp(col == 0, col == len(self.col_starts) - 1) / self.col_total[x : x + T])[None, :, None]
                columns.add(x, tile * wy * wx)
                next_x = self.col_starts[col + 1] * f if col + 1 < len(self.col_starts) else width
                finished = columns.finish(next_x)
                if finished is not None:
                    x0, x1, block = finished
                    block[: len(pending)] += pending[:, x0:x1]
                    done[:, x0:x1] = _to_uint8(block[: next_top - top])
                    carry[:, x0:x1] = block[next_top - top :]
            pending = carry
            yield top, done

    def __getitem__(self, rows: slice) -> np.ndarray:
        y0, y1, _ = rows.indices(self.shape[0])
        while not self._ready or self._ready[-1][0] + len(self._ready[-1][1]) < y1:
            self._ready.append(next(self._rows))
        self._ready = [(top, block) for top, block in self._ready if top + len(block) > y0]  # rows are read in order
        parts = [block[max(y0 - top, 0) : y1 - top] for top, block in self._ready if top < y1]
        return np.concatenate(parts)[:, : self.shape[1]] if len(parts) > 1 else parts[0][:, : self.shape[1]]


class _ColumnBlender:
    """Sums tile contributions along a row of tiles; hands back columns once no later tile reaches them."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.start = 0  # first column not yet handed back
        self.acc = np.zeros((height, 0, 3), np.float32)

    def add(self, x: int, contribution: np.ndarray) -> None:
        end = x + contribution.shape[1]
        if end - self.start > self.acc.shape[1]:
            grown = np.zeros((self.height, end - self.start, 3), np.float32)
            grown[:, : self.acc.shape[1]] = self.acc
            self.acc = grown
        self.acc[: contribution.shape[0], x - self.start : end - self.start] += contribution

    def finish(self, before: int) -> tuple[int, int, np.ndarray] | None:
        """Columns [start, before) are complete: return (x0, x1, their sums) and forget them (None if none are)."""
        n = before - self.start
        if n <= 0:
            return None
        block = self.acc[:, :n].copy()
        self.acc = self.acc[:, n:]
        x0, self.start = self.start, before
        return x0, before, block


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return ((rgb + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
