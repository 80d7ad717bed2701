"""Schema versions: what a store found against what this fieldgate reads, said once for every store
(the SQLite files, `gateway.store.sqlite.SqliteFile`, and PostgreSQL, `gateway.store.postgres`)."""

from __future__ import annotations

from gateway.errors import StoreError


def version_problem(where: str, found: int | None, version: int, *, readonly: bool) -> StoreError | None:
    """Why a store at `where` whose schema is `found` (None: no tables yet) cannot be used by this fieldgate
    (which reads `version`): a writer refuses only a newer schema (it migrates older ones forward); a reader
    refuses any other, and none."""
    if found is not None and found > version:
        return StoreError(f"{where} has schema version {found}, newer than this fieldgate's {version}",
                          hint="Use the fieldgate version that wrote it.")
    if not readonly:
        return None
    if found is None:
        return StoreError(f"{where} holds no fieldgate tables yet",
                          hint="Start `fieldgate serve` (or `fieldgate bridge`) on it once, or point --data-dir "
                          "(or storage.url) at the one it uses.")
    if found < version:
        return StoreError(f"{where} has schema version {found}; this fieldgate reads {version}",
                          hint="Start `fieldgate serve` (or `fieldgate bridge`) once: it upgrades the file (or "
                          "database) in place.")
    return None
