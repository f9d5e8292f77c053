"""The dask.distributed cluster of a `generate` run: none (this process), a local cluster (`--workers N`), or a client
of a running scheduler (`--scheduler tcp://HOST:PORT`), and what a run says when that cluster goes away.

Cluster runs hold no state in a worker's memory: the canvas is a zarr work store and the class map an `.npy` file in
the shared work folder (`sampling.canvas.StoredLabels`), so the tasks of a lost worker are recomputed elsewhere.
Losing the scheduler ends the run with one line; the state saved in the work folder resumes with `--resume`.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from wsi_synth.errors import BadArgumentError, WsiSynthError

#: How long to wait for a scheduler that accepts the connection but does not answer.
CONNECT_TIMEOUT_S = 30


class ClusterLostError(WsiSynthError):
    """The dask cluster went away during a run (scheduler stopped, network lost); the saved state is kept."""


class Cluster:
    """A context manager yielding the dask client of a run's settings, or None to run in this process."""

    def __init__(self, *, workers: int, scheduler: str | None, threads: int = 0) -> None:
        self.workers, self.scheduler, self.threads = workers, scheduler, threads
        self.client, self.local = None, None

    def __enter__(self):
        if not self.scheduler and self.workers <= 1:
            return None
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise BadArgumentError(
                "--workers/--scheduler need dask.distributed: pip install 'wsi-synth[distributed]'"
            ) from exc
        if self.scheduler:
            probe(self.scheduler)
            try:
                self.client = Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise BadArgumentError(
                    f"--scheduler {self.scheduler}: cannot connect ({str(exc).splitlines()[0]}); start it with `dask "
                    "scheduler`, or drop --scheduler"
                ) from exc
        else:
            # each worker process gets its share of the cores: N processes of one-per-core torch threads oversubscribe
            per_worker = self.threads or max(1, (os.cpu_count() or 1) // self.workers)
            env = {"OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker)}
            self.local = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env
            )
            self.client = Client(self.local)
        return self.client

    def __exit__(self, *exc) -> None:
        # a client whose scheduler is gone would wait for it on close: give up quickly, the run is over either way
        for closing in (self.client, self.local):
            if closing is not None:
                try:
                    closing.close(timeout=5)  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - nothing left to save; the run's own error is the one to report
                    pass


def use_threads(threads: int) -> None:
    """Set torch's intra-op threads for this process (0 leaves torch's default, one per core). On a machine other work
    also uses, fewer threads than cores is often much faster: the threads then wait on each other less."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def probe(address: str) -> None:
    """Refuse at once a scheduler address that is malformed or where nothing listens (a refused connection is
    final; dask's client would retry it for its whole timeout)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.port is None:
        raise BadArgumentError(
            f"--scheduler {address}: not a scheduler address; give it as tcp://HOST:PORT (what `dask scheduler` prints)"
        )
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except ConnectionRefusedError:
        raise BadArgumentError(
            f"--scheduler {address}: nothing listens there (connection refused); start it with `dask scheduler`, or "
            "drop --scheduler"
        ) from None
    except OSError as exc:
        raise BadArgumentError(
            f"--scheduler {address}: cannot connect ({exc.strerror or type(exc).__name__}); check the address, or drop "
            "--scheduler"
        ) from None


def cluster_lost(exc: BaseException) -> bool:
    """Whether `exc` says the cluster itself went away (not an error raised inside a task, which dask re-raises as
    is)."""
    if isinstance(exc, WsiSynthError):
        return False
    lost = {"CancelledError", "FutureCancelledError", "CommClosedError", "StreamClosedError"}
    return any(type(e).__module__.split(".")[0] == "distributed" or type(e).__name__ in lost for e in _chain(exc))


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
