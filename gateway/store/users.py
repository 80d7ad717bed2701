"""The `users` and `tokens` tables of fieldgate.db: the only code that writes them.

The tables are created by the store's migration (`gateway.store.tables`); this class reads and
writes their rows on the store's connection. Password hashing is `gateway.auth`'s. A bearer token
(for the HTTP side) is `fg_<id>_<secret>`; only the sha256 of the whole token is stored, so a
stolen database yields no usable token. Tokens expire (optionally) and can be revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.auth import hash_password
from gateway.core.acl import USER_ROLES, Role
from gateway.errors import FieldgateError
from gateway.store.database import Connection


class UserError(FieldgateError):
    """A users command could not be carried out."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    id: str
    created_at: str


class Users:
    """Rows of the `users` table, on a connection to fieldgate.db."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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
        if not self.conn.execute("INSERT INTO users (name, role, id, password_hash, created_at) VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT DO NOTHING", (name, role.value, user_id, hash_password(password),
                                                            _now())).rowcount:
            raise UserError(f"user {name!r} exists", hint="Use `fieldgate users passwd` to change its password.")
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
        row = self.conn.execute("SELECT name, role, id, created_at FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], Role(row[1]), row[2], row[3])

    def list(self) -> list[User]:
        rows = self.conn.execute("SELECT name, role, id, created_at FROM users ORDER BY role, name")
        return [User(r[0], Role(r[1]), r[2], r[3]) for r in rows]

    def has_courier(self, courier_id: str) -> bool:
        """Is there a user with the courier role and this id?"""
        return self.conn.execute("SELECT 1 FROM users WHERE role = 'courier' AND id = ?",
                                 (courier_id,)).fetchone() is not None

    def credentials(self, name: str) -> tuple[User, str] | None:
        row = self.conn.execute("SELECT name, role, id, created_at, password_hash FROM users WHERE name = ?",
                                (name,)).fetchone()
        return None if row is None else (User(row[0], Role(row[1]), row[2], row[3]), row[4])


@dataclass(frozen=True)
class Token:
    token_id: str
    user: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """Rows of the `tokens` table: bearer tokens of users, for the HTTP side."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def create(self, user: str, expires_at: datetime | None) -> tuple[Token, str]:
        """A new token for `user`; the token itself is returned once, never stored."""
        if Users(self.conn).get(user) is None:
            raise UserError(f"no user {user!r}", hint="Add it first with `fieldgate users add`.")
        token_id = secrets.token_hex(4)
        token = f"fg_{token_id}_{secrets.token_urlsafe(32)}"
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.conn.execute('INSERT INTO tokens (token_id, "user", digest, created_at, expires_at) '
                          "VALUES (?, ?, ?, ?, ?)",
                          (token_id, user, _digest(token), now,
                           None if expires_at is None else expires_at.astimezone(UTC).isoformat(timespec="seconds")))
        return Token(token_id, user, now, None if expires_at is None else expires_at.isoformat(), None), token

    def list(self) -> list[Token]:
        rows = self.conn.execute('SELECT token_id, "user", created_at, expires_at, revoked_at FROM tokens '
                                 "ORDER BY created_at, token_id")
        return [Token(*row) for row in rows]

    def revoke(self, token_id: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if self.conn.execute("UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                             (now, token_id)).rowcount == 0:
            raise UserError(f"no live token {token_id!r}", hint="List them with `fieldgate tokens list`.")

    def user_of(self, token: str, now: datetime) -> User | None:
        """The user of a live (not revoked, not expired) token, or None."""
        row = self.conn.execute(
            'SELECT u.name, u.role, u.id, u.created_at FROM tokens t JOIN users u ON u.name = t."user" '
            "WHERE t.digest = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)",
            (_digest(token), now.astimezone(UTC).isoformat(timespec="seconds"))).fetchone()
        return None if row is None else User(row[0], Role(row[1]), row[2], row[3])
