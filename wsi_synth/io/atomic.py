"""Output safety: write-then-rename (an interrupted or failed write never leaves a file under the final name),
sets of outputs renamed into place together, and claims (one run per output at a time)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_synth.errors import BadArgumentError, OutputBusyError, OutputExistsError, OutputWriteError


def check_output(path: str | Path, *, overwrite: bool, need_bytes: int = 0) -> Path:
    """Refuse an existing output (unless `overwrite`), a missing or unwritable folder, or too little space.

    Outputs are files, except Zarr stores (`*.zarr`) and DICOM folders (`*.dcm`, `*.dicom`): an existing folder is
    replaced only when it is itself one (a Zarr store, a folder of DICOM files only), so `--overwrite` never deletes
    a folder of other files.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} exists: pass --overwrite to replace it")
    if path.is_dir() and not is_folder_output(path):
        raise OutputExistsError(f"output {path} is a folder: choose a file name")
    if path.is_dir() and not _is_our_folder(path):
        kind = "a Zarr store" if path.name.lower().endswith(".zarr") else "a DICOM folder"
        raise OutputExistsError(
            f"output {path} is a folder that is not {kind}: it is not replaced (choose another --out)"
        )
    folder = check_folder(path)
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise OutputWriteError(
            f"not enough disk space in {folder}: about {human_size(need_bytes)} needed, {human_size(free)} free"
        )
    return path


def check_folder(path: str | Path, *, create: bool = False) -> Path:
    """The folder `path` would be written in: it must exist (or be created), be a folder and be writable."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            raise OutputWriteError(f"cannot write {path}: {above} is a file, not a folder")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise OutputWriteError(f"output folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK):
        raise OutputWriteError(f"output folder {folder} is not writable")
    return folder


def human_size(n: int) -> str:
    """Bytes as GB, MB or kB, so a small figure never reads 0.0 GB."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def output_name(path: str | Path) -> str:
    """The name a person knows an output by: a temporary `.NAME.set-PID` or `.NAME.partial-PID` is shown as NAME."""
    import re

    name = Path(path).name
    match = re.fullmatch(r"\.(.+)\.(?:set|partial)-\d+", name)
    return match.group(1) if match else name


@contextmanager
def output_set(paths: list[Path], *, overwrite: bool = False) -> Iterator[list[Path]]:
    """Temporary paths for a set of outputs, renamed into place together when the block completes.

    Each output is checked first, so a refusal writes nothing; on any failure every temporary is removed and
    no output of the set is touched (an earlier set stays whole until the new one is complete).
    """
    for path in paths:
        check_output(path, overwrite=overwrite)
    temps = [path.with_name(f".{path.name}.set-{os.getpid()}") for path in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths, strict=True):
            if tmp.exists():
                _replace(tmp, path)
    except BaseException:
        for tmp in temps:
            remove_path(tmp)
        raise


@contextmanager
def claim(path: str | Path, what: str = "output", *, create_folder: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on `path` for the block: a second run on the same output fails at once.

    The lock is `flock` on a hidden file beside `path` (released by the kernel when a process dies, so a
    crash never leaves a stale claim); the file is removed on release, and a claimant that locked a file
    already removed tries again.
    """
    path = Path(path)
    check_folder(path, create=create_folder)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputBusyError(
                f"another run is writing {what} {path} (it holds {lock}): wait for it to finish, or choose another "
                "--out"
            )
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows only; checked on Linux
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


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
        remove_path(tmp)
        if is_disk_full(exc):
            raise OutputWriteError(f"disk full while writing {path}; the partial file was removed") from exc
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        remove_path(tmp)
        raise


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from, is the disk (or quota) running out."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


#: Outputs written as folders: Zarr stores (`s.ome.zarr`) and DICOM WSI folders (`s.dcm`, `s.dicom`).
FOLDER_SUFFIXES = (".zarr", ".dcm", ".dicom")


def is_folder_output(path: str | Path) -> bool:
    """Whether an output is written as a folder (`FOLDER_SUFFIXES`)."""
    return Path(path).name.lower().endswith(FOLDER_SUFFIXES)


def _is_our_folder(path: Path) -> bool:
    """A folder an output of ours may replace: a Zarr store, or a folder of DICOM files only."""
    from wsi_synth.io.dicom import is_dicom_folder

    return _is_zarr_store(path) or is_dicom_folder(path)


def _is_zarr_store(path: Path) -> bool:
    return any((path / name).is_file() for name in (".zgroup", ".zattrs", ".zarray", "zarr.json"))


def _replace(tmp: Path, path: Path) -> None:
    """`os.replace`, also for a folder output over an existing one (which `os.replace` cannot do): the old one is
    moved aside first and removed once the new one is in place."""
    if not tmp.is_dir() or not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, aside)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(aside, path)
        raise
    remove_path(aside)


def remove_output(path: Path) -> None:
    """Remove an output file, a Zarr store or a DICOM folder; any other folder is left alone (not ours to delete)."""
    if path.is_dir() and not _is_our_folder(path):
        return
    remove_path(path)


def remove_path(path: Path) -> None:
    """Remove a file or a folder (temporaries: no check of what the folder holds)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_apart(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is an input, holds one, or lies inside an input folder: writing (or
    `--overwrite`) there could destroy the inputs, and the next run would read its own output as input."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source or source.is_relative_to(target):
            raise BadArgumentError(
                f"--out {out} is or holds the input {given}: choose an --out outside the inputs (nothing was changed)"
            )
        if source.is_dir() and target.is_relative_to(source):
            raise BadArgumentError(
                f"--out {out} lies inside the input folder {given}: choose an --out outside the inputs (nothing was "
                "changed)"
            )


def check_not_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Refuse output files that are input files (the same file by any path) or lie inside an input folder: replacing
    one would destroy an input the run reads, e.g. `--mask s.mask.tiff --out s.tiff`, `pyramid s.tiff --out s.tiff`,
    or `--model m --out m/model.tiff`, whose record `m/model.json` is the bundle's own."""
    sources = [Path(i) for i in inputs if i is not None and Path(i).exists()]
    for out in outputs:
        out = Path(out)
        for source in sources:
            if out.exists() and os.path.samefile(out, source) or out.resolve() == source.resolve():
                raise BadArgumentError(
                    f"the output {out} is the input {source}: choose another --out (nothing was changed)"
                )
            if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
                raise BadArgumentError(
                    f"the output {out} lies inside the input folder {source}: choose an --out outside it (nothing was "
                    "changed)"
                )
