"""The shop terminal's login: a signed session cookie and its CSRF token.

The cookie (`fg_session`: HttpOnly, SameSite=Strict, Secure over TLS) holds the user name, when the
session ends (`web.session_hours` after login) and a fingerprint of the user's password hash, signed
with HMAC-SHA256 under the gateway's secret key. Nothing is kept on the server: a session survives a
gateway restart (a counter screen stays logged in), and ends when it expires, when the user is
removed or its password changed (the fingerprint no longer matches), or at logout (the cookie is
cleared).

Writes made with the cookie (POST) must also carry the session's CSRF token in `X-CSRF-Token` (the
page has it in a meta tag). SameSite=Strict already keeps the cookie off other sites' requests; the
token makes a forged same-site request fail too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

COOKIE = "fg_session"
CSRF_HEADER = "x-csrf-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(password_hash: str) -> str:
    """Changes whenever the password does."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    user: str
    expires: int  # epoch seconds
    fingerprint: str


class Sessions:
    def __init__(self, key: bytes, lifetime: timedelta) -> None:
        self._key = hashlib.sha256(b"fieldgate session\0" + key).digest()
        self.lifetime = lifetime

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(self, user: str, password_hash: str, now: datetime) -> str:
        """A new session's cookie value."""
        body = _b64(json.dumps([user, int((now + self.lifetime).timestamp()), fingerprint(password_hash)]).encode())
        return f"{body}.{self._sign(body)}"

    def read(self, cookie: str, now: datetime) -> Session | None:
        """The session a cookie holds, or None if it is forged, damaged or expired."""
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            user, expires, mark = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if not isinstance(user, str) or not isinstance(expires, int) or expires < now.timestamp():
            return None
        return Session(user, expires, str(mark))

    def csrf(self, cookie: str) -> str:
        """The CSRF token that goes with a session cookie."""
        return _b64(hmac.new(self._key, b"csrf\0" + cookie.encode(), hashlib.sha256).digest()[:18])
