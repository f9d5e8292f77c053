"""Write-then-rename: an interrupted or failed write never leaves a file under the final name."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_synth.errors import OutputExistsError, OutputWriteError


def check_output(path: str | Path, *, overwrite: bool, need_bytes: int = 0) -> Path:
    """Refuse an existing output (unless `overwrite`), a missing or unwritable folder, or too little space."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} exists: pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputWriteError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputWriteError(f"output folder {folder} is not writable")
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise OutputWriteError(f"not enough disk space in {folder}: about {need_bytes / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")
    return path


@contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False, need_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block completes.

    On any failure the temporary file is removed; a full disk becomes `OutputWriteError`.
    """
    path = check_output(path, overwrite=overwrite, need_bytes=need_bytes)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OutputWriteError(f"disk full while writing {path}; the partial file was removed") from exc
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
