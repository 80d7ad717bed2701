"""Every error fieldgate raises on purpose, in one tree.

    FieldgateError                  anything fieldgate reports on purpose; has .hint
    ├── ConfigError                 broker.yaml or a command-line override is wrong
    ├── InvalidInput                a command's arguments do not make a valid shop, courier, …
    ├── StoreError                  the database (SQLite file or PostgreSQL) is missing, locked or not ours
    │   └── StoreBusy               the work may succeed if done again: a conflict with another bridge
    │                               instance, or the connection to PostgreSQL was lost
    ├── BrokerStartError            the embedded broker could not start (port taken, bad listener)
    ├── HttpStartError              the HTTP listener could not start (port taken, bad TLS files)
    ├── TransportError              the bridge could not reach or talk to an MQTT broker
    └── Rejected                    one inbound message is refused; becomes a Rejection + dead letter
        ├── PayloadError            wrong shape (HTTP 422)
        │   ├── NotJson             not JSON at all (400)
        │   ├── TooLarge            over a size limit (413)
        │   └── UnsupportedType     not a type fieldgate takes there (415)
        ├── UnknownTopic            a topic outside the contract
        ├── UnknownOrder            an order_id the gateway has never accepted (404)
        ├── NotYours                a courier or shop acting on an order that is not theirs (403)
        ├── IllegalTransition       a status change the order's lifecycle forbids (409)
        ├── KeyReused               an HTTP Idempotency-Key reused for another request (409)
        └── InternalError           the gateway failed on a message: a bug (500; the message is kept)

Messages say what was wrong; `hint` says what to do about it. The CLI prints both and exits 1;
the bridge turns a `Rejected` into a Rejection payload on the sender's errors topic; the HTTP side
answers it as an RFC 9457 problem with the status in brackets (`gateway.http.problems`).

`translate` is the one place where the exceptions of the libraries underneath (sqlite3, the OS)
become errors of this tree; amqtt's are translated where amqtt is used (`gateway.broker.embedded`),
psycopg's where it is used (`gateway.store.postgres`).
"""

from __future__ import annotations

import sqlite3


class FieldgateError(Exception):
    """Base of every error fieldgate raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint


class ConfigError(FieldgateError):
    """The configuration file or an override is invalid."""

    hint = "Check broker.yaml against docs/config.md, or run `fieldgate serve --help`."


class InvalidInput(FieldgateError):
    """A command's arguments do not validate (a shop, a courier, ...); `errors` lists each bad field."""

    hint = "See the command's --help."


class StoreError(FieldgateError):
    """The database cannot be opened or used."""

    hint = "Pass --data-dir or set FIELDGATE_DATA_DIR to the directory `fieldgate serve` uses."


class StoreBusy(StoreError):
    """Not a fault of the work: it conflicted with another bridge instance's transaction (a deadlock, a
    serialization failure) or the database connection was lost. The bridge rolls the batch back and runs it
    again; nothing is acknowledged meanwhile."""

    hint = "Nothing to do if it passes; if it persists, check that PostgreSQL is up (`fieldgate cluster check`)."


class BrokerStartError(FieldgateError):
    """The embedded broker could not start."""

    hint = "Is another broker already listening on that port? Try --port with a free one."


class HttpStartError(FieldgateError):
    """The HTTP listener could not start."""

    hint = "Is something else listening on http.port? Pick a free one (--http-port), or set http.enabled: false."


class TransportError(FieldgateError):
    """The bridge could not reach an MQTT broker."""

    hint = "Check the broker URL (mqtt://HOST:PORT) and that the broker is running."


class Rejected(FieldgateError):
    """One inbound message is refused. Carries what the Rejection payload needs."""

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        order_id: str | None = None,
        msg_id: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.order_id = order_id
        self.msg_id = msg_id
        self.errors = errors or []


class PayloadError(Rejected):
    """The payload is not JSON, does not match its schema, or is too large."""


class NotJson(PayloadError):
    """The payload is not JSON at all."""


class TooLarge(PayloadError):
    """The payload is over a size limit."""


class UnsupportedType(PayloadError):
    """The body is not a type fieldgate takes there (a file that is no photo or voice note, a form for JSON)."""


class UnknownTopic(Rejected):
    """The topic is not part of the topic contract."""


class UnknownOrder(Rejected):
    """The message names an order the gateway never accepted."""


class NotYours(Rejected):
    """A courier or shop acted on an order that is not assigned to it."""


class IllegalTransition(Rejected):
    """The order's lifecycle forbids this status change."""


class KeyReused(Rejected):
    """An HTTP Idempotency-Key was used before for a different request."""


class InternalError(Rejected):
    """Handling a message failed on a bug; the message is kept as a dead letter."""


def translate(exc: BaseException) -> FieldgateError | None:
    """A library's exception said the fieldgate way, with a hint; None if it is not one we know (a bug)."""
    if isinstance(exc, FieldgateError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreError(f"the database is locked by another process ({exc})",
                          hint="Another fieldgate command is writing, or `fieldgate db vacuum` is running; "
                          "try again in a moment.")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"the database failed: {exc}",
                          hint="`fieldgate db check` says whether the files are healthy.")
    if isinstance(exc, PermissionError):
        return StoreError(f"permission denied: {exc.filename or exc}",
                          hint="Run as the user that owns the data directory, or pass --data-dir.")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return FieldgateError(f"{exc.strerror or exc}{where}", hint="Check the path and that this user may use it.")
    return None
