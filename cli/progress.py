"""The library's progress reports (`wsi_synth.Progress`) rendered as tqdm bars on stderr, one bar per task."""

from __future__ import annotations

from typing import Any


class ProgressBars:
    """An `on_progress` callback: a bar per task ("mask stage", "image stage", "tiles", …) with the steps done, the
    denoiser evaluations so far, and tqdm's rate and ETA. Use as a context manager so the last bar is closed."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: str | None = None

    def __call__(self, report) -> None:
        from tqdm import tqdm

        if report.task != self._task:
            self.close()
            # a resumed task starts past zero: tqdm's rate (and so its ETA) counts only what this run does
            self._bar = tqdm(
                total=report.total,
                initial=report.done - 1,
                desc=report.task,
                unit=report.unit,
                leave=True,
                dynamic_ncols=True,
            )
            self._task = report.task
        self._bar.set_postfix_str(f"{report.evaluations:,} evaluations", refresh=False)
        self._bar.update(report.done - self._bar.n)
        if report.done >= report.total:  # finished: the next bar (the writer's) takes its own line, not a nested one
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._task = None, None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
