"""Uploaded files, content-addressed under `<data_dir>/media/`: the only code that writes them.

A file is stored as `media/<first two hex digits>/<sha256>`, written to a temporary name, fsynced, renamed
into place and its directory fsynced — so it is on disk before the row that names it commits (the
`media` table of fieldgate.db, written by `gateway.store.tables`). The same bytes uploaded twice are one
file. A crash between file and commit leaves a file no row names: `fieldgate db check --fix` removes
such orphans.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

DIR_NAME = "media"


class MediaFiles:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / DIR_NAME

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` durably; its sha256 (hex)."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{sha}.{os.getpid()}.tmp")
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return sha

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def orphans(self, named: Iterable[str]) -> list[Path]:
        """Files (and leftover temporaries) that no media row names."""
        if not self.root.exists():
            return []
        keep = set(named)
        return sorted(p for p in self.root.glob("*/*") if p.is_file() and p.name not in keep)
