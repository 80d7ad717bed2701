"""Who an HTTP request is, and how often it may come: the same users and roles as MQTT.

    Authorization: Basic base64(user:password)   a fieldgate user (`fieldgate users add`); only over TLS
                                                 (http.tls) or from a loopback address, as a password
                                                 must not cross a network in clear
    Authorization: Bearer fg_<id>_<secret>       a token of a user (`fieldgate tokens create USER`),
                                                 stored as its sha256, revocable, maybe expiring
    Cookie: fg_session=…                         the shop terminal's login (`gateway.web.session`);
                                                 its writes also carry X-CSRF-Token
    Authorization: Bearer <local token>          the running gateway's own operator token, written to
                                                 <data_dir>/local-http.json (0600) for the CLI on this
                                                 machine (`fieldgate top`)

The identity is the user's role and id, as on MQTT: what a role may do over HTTP is what it may
publish or read there (`gateway.http.app`). Each user gets `http.max_request_rate` requests per
second (bursts of two seconds' worth); beyond that a 429 with Retry-After.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time
from datetime import UTC, datetime

from gateway.auth import Authenticator, is_loopback
from gateway.core.acl import Identity, Role
from gateway.http.problems import HttpProblem, problem
from gateway.http.reader import Reader
from gateway.store.users import User
from gateway.web.session import Sessions, fingerprint

#: The user name of the gateway's own operator token.
LOCAL_USER = "$local"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="fieldgate", charset="UTF-8", Bearer realm="fieldgate"'}


def _unauthorized(detail: str, hint: str) -> HttpProblem:
    return HttpProblem(problem("unauthorized", detail, hint=hint), _CHALLENGE)


class _Users:
    """Password hashes for the Authenticator, looked up through the HTTP side's reader."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def credentials(self, name: str) -> tuple[User, str] | None:
        with self.reader() as store:
            return store.users.credentials(name)


class HttpAuth:
    def __init__(self, reader: Reader, sessions: Sessions, *, tls: bool, local_token: str, rate: float) -> None:
        self.reader = reader
        self.sessions = sessions
        self.tls = tls
        self.local_token = local_token
        self.passwords = Authenticator(_Users(reader), allow_anonymous=False)
        self.limits = RateLimit(rate)

    def identify(self, authorization: str | None, peer: str | None, *, cookie: str | None = None,
                 csrf: str | None = None, write: bool = False) -> Identity:
        """The identity of a request's credentials (the Authorization header, else the shop terminal's session
        cookie, which a `write` must back with its CSRF token); raises a 401 or 403 problem if none hold."""
        if not authorization and cookie:
            identity = self.session_user(cookie)
            if write and not (csrf and hmac.compare_digest(csrf.encode(), self.sessions.csrf(cookie).encode())):
                raise HttpProblem(problem("forbidden", "a write with the session cookie needs its CSRF token",
                                          hint="Send the page's csrf meta value in X-CSRF-Token."))
        elif not authorization:
            raise _unauthorized("this endpoint needs credentials",
                                "Send Authorization: Bearer <token> (`fieldgate tokens create USER`) or Basic "
                                "credentials of a fieldgate user.")
        else:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "bearer":
                identity = self._bearer(value)
            elif scheme.lower() == "basic":
                identity = self._basic(value, peer)
            else:
                raise _unauthorized(f"unknown authorization scheme {scheme[:20]!r}", "Use Basic or Bearer.")
        allowed, wait = self.limits.take(identity.username or str(identity))
        if not allowed:
            raise HttpProblem(problem("rate-limited", f"more than {self.limits.rate:g} requests per second from "
                                      f"{identity.username}", hint=f"Retry after {wait} s."),
                              {"Retry-After": str(wait)})
        return identity

    def session_user(self, cookie: str) -> Identity:
        """The user of a session cookie; 401 if it is forged or expired, or the user is gone or changed."""
        session = self.sessions.read(cookie, datetime.now(UTC))
        found = None
        if session is not None:
            with self.reader() as store:
                found = store.users.credentials(session.user)
        if session is None or found is None or fingerprint(found[1]) != session.fingerprint:
            raise _unauthorized("the session has ended", "Log in again at /shop/login.")
        user = found[0]
        return Identity(user.role, id=user.id, username=user.name)

    def login(self, user: str, password: str, peer: str | None) -> str:
        """A session cookie for a user's name and password (as Basic credentials: over TLS or from loopback)."""
        if not self.tls and not is_loopback(peer):
            raise _unauthorized("a password is only taken over TLS or from this machine",
                                "Open the page over https (http.tls), or from the gateway's own machine.")
        allowed, wait = self.limits.take(f"login:{peer}")
        if not allowed:
            raise HttpProblem(problem("rate-limited", "too many logins", hint=f"Retry after {wait} s."),
                              {"Retry-After": str(wait)})
        identity = self.passwords.identify(user, password, listener_host=None, peer_host=peer)
        found = None
        if identity is not None:
            with self.reader() as store:
                found = store.users.credentials(user)
        if identity is None or found is None:
            raise _unauthorized("wrong user name or password", "Ask the operator (`fieldgate users list`).")
        return self.sessions.issue(user, found[1], datetime.now(UTC))

    def _bearer(self, token: str) -> Identity:
        if self.local_token and hmac.compare_digest(token.encode(), self.local_token.encode()):
            return Identity(Role.operator, username=LOCAL_USER)
        with self.reader() as store:
            user = store.tokens.user_of(token, datetime.now(UTC))
        if user is None:
            raise _unauthorized("the bearer token is unknown, revoked or expired",
                                "Make a new one with `fieldgate tokens create USER`.")
        return Identity(user.role, id=user.id, username=user.name)

    def _basic(self, value: str, peer: str | None) -> Identity:
        if not self.tls and not is_loopback(peer):
            raise _unauthorized("Basic credentials are only taken over TLS or from this machine",
                                "Use a bearer token, or turn on http.tls (a password must not cross a network in "
                                "clear).")
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep or not user or user.startswith("$"):
            raise _unauthorized("malformed Basic credentials", "Send base64 of USER:PASSWORD.")
        identity = self.passwords.identify(user, password, listener_host=None, peer_host=peer)
        if identity is None:
            raise _unauthorized("wrong user name or password", "Check them with `fieldgate users list`.")
        return identity


class RateLimit:
    """A token bucket per user: `rate` per second, bursts of two seconds' worth; 0 is no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, user: str) -> tuple[bool, int]:
        """(allowed, seconds to wait if not)."""
        if self.rate <= 0:
            return True, 0
        now, burst = time.monotonic(), 2 * self.rate
        with self._lock:
            tokens, then = self._buckets.get(user, (burst, now))
            tokens = min(burst, tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[user] = (tokens, now)
                return False, max(1, round((1 - tokens) / self.rate + 0.5))
            self._buckets[user] = (tokens - 1, now)
            return True, 0
