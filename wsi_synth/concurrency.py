"""Small concurrency helpers shared by the sampler, the decoder and the pyramid writer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce `items` in a background thread, up to `depth` ahead of the consumer; exceptions are re-raised here.

    Used where producing the next item (gathering crops, decoding tiles, halving a band) releases the GIL for
    most of its time, so it overlaps the consumer's work (the denoiser, JPEG encoding) instead of taking turns.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, re-raised there
            slots.put(exc)

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


_IMPORT_LOCK = threading.RLock()


def import_names(module: str, *names: str) -> tuple:
    """`from module import names`, under one process-wide lock. diffusers resolves its public names lazily on first
    access; two threads doing that at once (two `wsi_synth.generate` calls in one process) can see a half-initialised
    module and fail with "cannot import name 'DDPMScheduler' from 'diffusers'"."""
    import importlib

    with _IMPORT_LOCK:
        loaded = importlib.import_module(module)
        return tuple(getattr(loaded, name) for name in names)
