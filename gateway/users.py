"""Users and authentication: the only code that writes the `users` table (in fieldgate.db).

Passwords are stored as PBKDF2-HMAC-SHA512 (`$pbkdf2-sha512$<iterations>$<salt>$<hash>`, like
mosquitto_passwd), never in clear and never logged. Verifying costs about 0.1 s by design, so the
broker remembers, for each user, a keyed digest of the last password that verified against the
stored hash: a phone reconnecting after a tunnel costs one HMAC, not one KDF. Changing or removing
the user changes the stored hash and so voids that memory.

`Authenticator.identify` is what the broker calls on CONNECT. Anonymous clients are accepted only
when `allow_anonymous` is on *and* the listener is bound to a loopback address *and* the client
connects from one (Mosquitto 2's posture); they get the `local` role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway import dbfiles
from gateway.acl import USER_ROLES, Identity, Role
from gateway.errors import FieldgateError

ITERATIONS = 100_000
#: The embedded bridge's user name; its password is made up at every start and never stored.
BRIDGE_USER = "$fieldgate-bridge"


class UserError(FieldgateError):
    """A users command could not be carried out."""


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$pbkdf2-sha512${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2-sha512":
            return False
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    id: str
    created_at: str


class UserStore:
    """The `users` table of fieldgate.db."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.conn = dbfiles.connect(path, readonly=readonly)
        if not readonly:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, id TEXT NOT NULL, "
                "password_hash TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT "
                "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
            )

    def close(self) -> None:
        self.conn.close()

    def _has_table(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone() is not None

    def add(self, name: str, role: Role, user_id: str | None, password: str) -> User:
        if role not in USER_ROLES:
            raise UserError(f"role {role} cannot be given to a user", hint="Use courier, shop, ordersys or operator.")
        if not name or name.startswith("$") or len(name) > 64:
            raise UserError(f"invalid user name {name!r}", hint="1-64 characters, not starting with '$'.")
        user_id = user_id or name
        if any(c in user_id for c in "/+#") or len(user_id) > 64:
            raise UserError(f"invalid id {user_id!r}: it appears in topic names", hint="No '/', '+' or '#'.")
        if not password:
            raise UserError("empty password")
        try:
            self.conn.execute("INSERT INTO users (name, role, id, password_hash) VALUES (?, ?, ?, ?)",
                              (name, role.value, user_id, hash_password(password)))
        except sqlite3.IntegrityError:
            raise UserError(f"user {name!r} exists", hint="Use `fieldgate users passwd` to change its password.") \
                from None
        return self.get(name)  # type: ignore[return-value]

    def set_password(self, name: str, password: str) -> None:
        if not password:
            raise UserError("empty password")
        if self.conn.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                             (hash_password(password), name)).rowcount == 0:
            raise UserError(f"no user {name!r}", hint="List users with `fieldgate users list`.")

    def remove(self, name: str) -> None:
        if self.conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
            raise UserError(f"no user {name!r}", hint="List users with `fieldgate users list`.")

    def get(self, name: str) -> User | None:
        if not self._has_table():
            return None
        row = self.conn.execute("SELECT name, role, id, created_at FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], Role(row[1]), row[2], row[3])

    def list(self) -> list[User]:
        if not self._has_table():
            return []
        rows = self.conn.execute("SELECT name, role, id, created_at FROM users ORDER BY role, name")
        return [User(r[0], Role(r[1]), r[2], r[3]) for r in rows]

    def credentials(self, name: str) -> tuple[User, str] | None:
        if not self._has_table():
            return None
        row = self.conn.execute("SELECT name, role, id, created_at, password_hash FROM users WHERE name = ?",
                                (name,)).fetchone()
        return None if row is None else (User(row[0], Role(row[1]), row[2], row[3]), row[4])


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Decides who a CONNECT is, from its credentials and where it came from."""

    def __init__(self, users: UserStore, *, allow_anonymous: bool) -> None:
        self.users = users
        self.allow_anonymous = allow_anonymous
        self.bridge_password = secrets.token_urlsafe(24)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[str, bytes]] = {}  # user -> (stored hash, keyed digest of password)

    def identify(self, username: str | None, password: str | None, *, listener_host: str | None,
                 peer_host: str | None) -> Identity | None:
        """The identity of a connecting client, or None: refuse with CONNACK 5 (not authorized)."""
        if username is None:
            if self.allow_anonymous and is_loopback(listener_host) and is_loopback(peer_host):
                return Identity(Role.local)
            return None
        if username == BRIDGE_USER:
            ok = password is not None and hmac.compare_digest(password, self.bridge_password)
            return Identity(Role.gateway, username=username) if ok and is_loopback(peer_host) else None
        found = self.users.credentials(username)
        if found is None or password is None:
            return None
        user, stored = found
        digest = hmac.new(self._key, password.encode(), "sha256").digest()
        remembered = self._verified.get(username)
        if remembered is None or remembered[0] != stored or not hmac.compare_digest(remembered[1], digest):
            if not verify_password(password, stored):
                return None
            self._verified[username] = (stored, digest)
        return Identity(user.role, id=user.id, username=user.name)
