"""The `users` table of fieldgate.db: the only code that writes it.

The table is created by the store's migration (`gateway.store.tables`); this class reads and
writes its rows on the store's connection. Password hashing is `gateway.auth`'s.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.auth import hash_password
from gateway.core.acl import USER_ROLES, Role
from gateway.errors import FieldgateError


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

    def __init__(self, conn: sqlite3.Connection) -> None:
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
        try:
            self.conn.execute("INSERT INTO users (name, role, id, password_hash, created_at) "
                              "VALUES (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
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
