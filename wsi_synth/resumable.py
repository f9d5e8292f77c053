"""Resumable runs: the one lifecycle that `generate`, its `--count` tiles and `inpaint` share, and the fingerprints
that training's checkpoints and extraction's finished slides are checked by.

A run claims its output (`io.outputs.claim_outputs`), keeps its intermediate state in a work folder beside the output
(`WorkFolder`) identified by a fingerprint of everything that determines the result, resumes it only when the
fingerprint matches (`check_identity` names what changed), keeps it after a failure only when it holds work worth
resuming (never after a full disk), and publishes the output atomically (`io.atomic`) before the folder goes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_synth.errors import BadArgumentError, OutputExistsError
from wsi_synth.io.atomic import is_disk_full
from wsi_synth.jsonfile import write_atomic

if TYPE_CHECKING:  # the bundle imports torch-free modules only, but this module stays importable without it
    from wsi_synth.models.bundle import Bundle

#: The file in a work folder that holds the fingerprint of the run that made it.
IDENTITY = "run.json"


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(bundle: Bundle) -> str:
    """One hash over model.json and every file of its networks (and an external codec's folder, or its hub id)."""
    from wsi_synth.models.bundle import FOLDERS

    digest = hashlib.sha256((bundle.root / "model.json").read_bytes())
    stages = [s for s in ("codec", "image", "mask", "layout") if s != "layout" or bundle.has("layout")]
    folders = [bundle.root / FOLDERS[s] for s in stages]
    external = bundle.external_codec
    if external:
        folders.append(Path(external)) if Path(external).is_dir() else digest.update(external.encode())
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def check_identity(saved: dict, identity: dict, work: Path) -> None:
    """Refuse to resume a state made with other settings, naming each one that changed."""
    old = saved.get("identity", {})
    changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
    if changed:
        what = ", ".join(f"{k} {_short(old.get(k))} → {_short(identity.get(k))}" for k in changed[:6])
        raise BadArgumentError(
            f"cannot --resume from {work}: it was made with other settings ({what}); "
            "run with the original arguments, or with --overwrite instead of --resume to start again"
        )


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "…"


@dataclass
class WorkFolder:
    """The work folder of one run: `path`, the run's `identity` (fingerprint), and `saved(path)`, whether the
    folder holds work worth resuming (a sampler state, a finished patch)."""

    path: Path
    identity: dict
    saved: Callable[[Path], bool]

    @classmethod
    def beside(cls, out: str | Path, identity: dict, saved: Callable[[Path], bool]) -> WorkFolder:
        """The work folder of the output `out`: `.OUT.work` beside it."""
        return cls(Path(out).with_name(f".{Path(out).name}.work"), identity, saved)

    def prepare(self, *, resume: bool, overwrite: bool) -> bool:
        """A fresh folder, or — with `resume` — the existing one when the same run made it (True). Without `resume`,
        an interrupted run's saved work is never discarded silently: `overwrite` discards it."""
        record = self.path / IDENTITY
        if resume and record.is_file():
            try:
                before = json.loads(record.read_text())
            except ValueError:
                before = None
            if isinstance(before, dict):
                check_identity({"identity": before}, self.identity, self.path)
                return True
        if not resume and not overwrite and self.saved(self.path):
            raise OutputExistsError(
                f"an interrupted run left its state in {self.path}: pass --resume to continue it, or --overwrite to "
                "start again"
            )
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        write_atomic(record, self.identity)
        return False

    def keep_or_remove(self, exc: BaseException, log: Callable[[str], None]) -> None:
        """After a failed run: keep a folder that holds saved work unless the disk is full, else remove it."""
        if self.saved(self.path) and not is_disk_full(exc):
            log(
                f"the work folder {self.path} holds the state saved so far: fix the cause and re-run with --resume to "
                "continue"
            )
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    @contextmanager
    def running(self, log: Callable[[str], None]) -> Iterator[WorkFolder]:
        """The run's body: on failure the folder is kept or removed (`keep_or_remove`) and the error goes on; on
        success, after the body published the output, the folder is removed. Ctrl-C keeps it as it is."""
        try:
            yield self
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.keep_or_remove(exc, log)
            raise
        shutil.rmtree(self.path, ignore_errors=True)
