"""Passwords and authentication: who a CONNECT (or, later, an HTTP request) is.

Passwords are stored as PBKDF2-HMAC-SHA512 (`$pbkdf2-sha512$<iterations>$<salt>$<hash>`, like
mosquitto_passwd), never in clear and never logged. Verifying costs about 0.1 s by design, so the
broker remembers, for each user, a keyed digest of the last password that verified against the
stored hash: a phone reconnecting after a tunnel costs one HMAC, not one KDF. Changing or removing
the user changes the stored hash and so voids that memory.

`Authenticator.identify` is what the broker calls on CONNECT. Anonymous clients are accepted only
when `allow_anonymous` is on *and* the listener is bound to a loopback address *and* the client
connects from one (Mosquitto 2's posture); they get the `local` role. The users themselves live in
the `users` table (`gateway.store.users`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from typing import TYPE_CHECKING, Protocol

from gateway.core.acl import Identity, Role

if TYPE_CHECKING:
    from gateway.store.users import User

ITERATIONS = 100_000
#: The embedded bridge's user name; its password is made up at every start and never stored.
BRIDGE_USER = "$fieldgate-bridge"


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


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class Credentials(Protocol):
    """Where users' password hashes are looked up (`gateway.store.users.Users`)."""

    def credentials(self, name: str) -> tuple[User, str] | None: ...


class Authenticator:
    """Decides who a CONNECT (or an HTTP request with Basic credentials) is, from its credentials and where it
    came from."""

    def __init__(self, users: Credentials, *, allow_anonymous: bool) -> None:
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
