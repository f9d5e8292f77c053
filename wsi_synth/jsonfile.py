"""JSON documents on disk: versioned formats read with clear errors, and atomic writes (temp + rename)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from wsi_synth.errors import WsiSynthError

#: Upgrades a document of version v (the key) to version v + 1, in place of the keys that changed.
Migration = Callable[[dict], dict]


def read_versioned(
    path: Path,
    *,
    fmt: str,
    version: int,
    error: type[WsiSynthError],
    hint: str = "",
    migrations: Mapping[int, Migration] | None = None,
) -> dict:
    """The document at `path`, checked to be `fmt` at a version this code reads, and brought to `version` by
    `migrations` (one per older version); the format and version keys are removed."""
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(
            f"{path}: format is {doc.get('format') if isinstance(doc, dict) else None!r}, expected {fmt!r}{hint}"
        )
    if doc.get("version", 0) > version:
        raise error(
            f"{path}: format version {doc['version']} is newer than this wsi-synth reads ({version}); upgrade wsi-synth"
        )
    doc.pop("format")
    found = int(doc.pop("version", 0))
    for older in range(found, version):
        if migrations and older in migrations:
            doc = migrations[older](doc)
    return doc


def write_atomic(path: Path, doc: object) -> None:
    """Write JSON so that readers see the old document or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
