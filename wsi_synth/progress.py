"""Progress of long runs, as reports the library emits and a caller renders (the CLI with tqdm, a notebook or a
cluster client however it likes). The library never prints progress itself.

A run calls `on_progress(Progress(...))` after each unit of work: a solver step of a stage, a group of tiles, an
inpainted patch. `eta_s` is measured from the units done in this run (a resumed run's earlier units cost nothing now).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One report: `task` (e.g. "image stage") has done `done` of `total` `unit`s, made `evaluations` denoiser
    evaluations so far, after `elapsed_s` seconds; `eta_s` is the projected time to finish it (None until known)."""

    task: str
    done: int
    total: int
    unit: str
    evaluations: int
    elapsed_s: float
    eta_s: float | None


ProgressCallback = Callable[[Progress], None]


class TaskClock:
    """Turns `(done, total)` ticks of one task into `Progress` reports with an ETA, for `on_progress`."""

    def __init__(
        self, task: str, unit: str, on_progress: ProgressCallback | None, evaluations: Callable[[], int] = lambda: 0
    ) -> None:
        self.task, self.unit, self.on_progress, self.evaluations = task, unit, on_progress, evaluations
        self.started = time.perf_counter()
        self.first: int | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.on_progress is None:
            return
        if self.first is None:
            self.first = done - 1  # a resumed task starts past zero: only this run's units set the pace
        elapsed = time.perf_counter() - self.started
        ran = done - self.first
        eta = elapsed / ran * (total - done) if ran > 0 else None
        self.on_progress(
            Progress(
                self.task,
                done,
                total,
                self.unit,
                self.evaluations(),
                round(elapsed, 2),
                None if eta is None else round(eta, 2),
            )
        )
