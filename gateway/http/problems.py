"""Errors over HTTP: RFC 9457 problem details, and the one place fieldgate's errors become them.

Every error response of the HTTP side is `application/problem+json`:

    {"type": "/problems/not-json", "title": "Body is not JSON", "status": 400,
     "detail": "payload is not valid JSON (expected value at line 1 column 1)",
     "hint": "Send one UTF-8 JSON object per message.", "errors": [...], "order_id": null}

`type` names the kind of problem (GET it for a description); `detail` says what was wrong with this
request and `hint` what to do, as the Rejection of the same message on MQTT would. A `Rejected`
maps to its status by class (`for_rejected`), most specific class first.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from gateway.core.models import FieldProblem
from gateway.errors import (
    IllegalTransition,
    InternalError,
    KeyReused,
    NotJson,
    NotYours,
    PayloadError,
    Rejected,
    TooLarge,
    UnknownOrder,
    UnsupportedType,
)

MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Kind:
    """One kind of problem: its status, title, and what it means (served at its `type` URI)."""

    slug: str
    status: int
    title: str
    about: str

    @property
    def type(self) -> str:
        return f"/problems/{self.slug}"


KINDS: dict[str, Kind] = {k.slug: k for k in (
    Kind("not-json", 400, "Body is not JSON", "The request body could not be parsed as JSON."),
    Kind("bad-request", 400, "Bad request", "A query parameter, cursor or header is malformed."),
    Kind("unauthorized", 401, "Authentication required",
         "Send HTTP Basic credentials of a fieldgate user (over TLS or from loopback) or a bearer token "
         "(`fieldgate tokens create USER`)."),
    Kind("forbidden", 403, "Not allowed", "This user's role may not do this, or the order is not its own."),
    Kind("not-found", 404, "Not found", "No such order, courier or route."),
    Kind("method-not-allowed", 405, "Method not allowed", "The route exists but not with this method."),
    Kind("conflict", 409, "Conflict with the order's state", "The order's lifecycle forbids this step now."),
    Kind("key-reused", 409, "Idempotency-Key reused",
         "The Idempotency-Key was used in the last 24 hours for a different request."),
    Kind("too-large", 413, "Body too large", "The body is over the size limit of this endpoint."),
    Kind("unsupported-type", 415, "Unsupported type",
         "The body's type is not one this endpoint takes (JSON; or a JPEG, PNG, WebP, OGG/Opus or M4A file)."),
    Kind("invalid", 422, "Invalid request body", "The body is JSON but does not match its schema; see `errors`."),
    Kind("rate-limited", 429, "Too many requests", "This user sent more than http.max_request_rate requests per "
         "second; wait for Retry-After seconds."),
    Kind("internal", 500, "Internal error", "The gateway failed on this request: a bug. The request is kept as a "
         "dead letter for an operator."),
    Kind("unavailable", 503, "Not ready", "The gateway is starting, stopping or too busy; retry after Retry-After "
         "seconds."),
)}

#: Most specific first: a subclass before its base.
_BY_CLASS: tuple[tuple[type[Rejected], str], ...] = (
    (NotJson, "not-json"),
    (TooLarge, "too-large"),
    (UnsupportedType, "unsupported-type"),
    (PayloadError, "invalid"),
    (UnknownOrder, "not-found"),
    (NotYours, "forbidden"),
    (IllegalTransition, "conflict"),
    (KeyReused, "key-reused"),
    (InternalError, "internal"),
)


class Problem(BaseModel):
    """An RFC 9457 problem detail, with fieldgate's extension members."""

    type: str = Field(description="URI reference naming the kind of problem; GET it for a description")
    title: str
    status: int
    detail: str = Field(description="what was wrong with this request")
    hint: str = Field(default="", description="what to do about it")
    errors: list[FieldProblem] = Field(default=[], description="each offending field of the body")
    order_id: str | None = None


class HttpProblem(Exception):
    """Raised by handlers; the app answers it as a problem response (with `headers`, e.g. WWW-Authenticate)."""

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers or {}


def problem(slug: str, detail: str, *, hint: str = "", order_id: str | None = None,
            errors: list[FieldProblem] | None = None) -> Problem:
    kind = KINDS[slug]
    return Problem(type=kind.type, title=kind.title, status=kind.status, detail=detail, hint=hint,
                   errors=errors or [], order_id=order_id)


def for_rejected(exc: Rejected) -> Problem:
    """The problem a refused message is over HTTP; a refusal of no listed class is an invalid request (422)."""
    slug = next((slug for cls, slug in _BY_CLASS if isinstance(exc, cls)), "invalid")
    return problem(slug, exc.message, hint=exc.hint, order_id=exc.order_id,
                   errors=[FieldProblem(**e) for e in exc.errors])
