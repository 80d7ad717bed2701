"""The data directory: one running gateway per directory, enforced by an exclusive lock; its secret key.

`fieldgate serve` and `fieldgate bridge` hold `fcntl.flock(LOCK_EX)` on `<data_dir>/fieldgate.lock`
for as long as they run; the kernel releases it when the process ends, even by kill -9, so a
stale lock file never blocks a restart. The file holds the owner's pid, for the error message.
Commands that need the gateway stopped (`db vacuum`) take the same lock; commands that need it
running (`orders assign`, ...) ask `holder()`.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import StoreError

LOCK_NAME = "fieldgate.lock"


class DataDirInUse(StoreError):
    """Another fieldgate process holds the data directory."""

    hint = "Stop it first (or give this one its own --data-dir)."


def _pid_in(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text or "unknown"


def _open(data_dir: Path) -> int:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {data_dir}: {exc.strerror or exc}",
                         hint="Create it, or pass --data-dir with a directory this user may write.") from exc


@contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this process, or raise DataDirInUse at once."""
    fd = _open(data_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise DataDirInUse(f"data directory {data_dir} is in use by another fieldgate (pid {_pid_in(fd)})") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def holder(data_dir: Path) -> str | None:
    """The pid of the fieldgate holding `data_dir`, or None if no gateway runs on it."""
    path = data_dir / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _pid_in(fd)
            raise
        return None
    finally:
        os.close(fd)


SECRET_KEY = "secret.key"


def secret_key(data_dir: Path) -> bytes:
    """The gateway's secret key (`<data_dir>/secret.key`, 32 random bytes, mode 0600), made at first use: it
    keys the customers' tracking links and signs the shop terminal's session cookies. Kept out of fieldgate.db,
    so a copy of the database alone makes neither. Deleting it ends every link and session."""
    path = data_dir / SECRET_KEY
    if not path.exists():
        # Written whole under a temporary name, then linked into place: bridges sharing the directory may start
        # at once, and each must read the one key that won, never a half-written file.
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{SECRET_KEY}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first: use that one
        finally:
            draft.unlink()
    key = path.read_bytes()
    if len(key) < 32:
        raise StoreError(f"{path} is damaged ({len(key)} bytes, not 32)",
                         hint="Delete it: a new key is made, and earlier tracking links and logins end.")
    return key
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key
