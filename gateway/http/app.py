"""The HTTP side's routes (FastAPI): orders in, commands, uploads, the read API, health and metrics.

A write is the MQTT message it stands for, handled by the same code on the same path: the request
becomes an `Inbound` on the topic its sender would publish (`orders/in`, `shops/{shop_id}/commands`,
`operator/commands`, `…/media/{order_id}/{media_kind}`), submitted to the bridge (`Bridge.request`),
validated, applied and committed with its acks, dead letter or Rejection like any other; the answer
is made from what became of it, in the same transaction. Who may write what is the topic ACL
(`gateway.core.acl`); who may read what follows the same roles:

    route                               operator  ordersys  shop              courier
    POST   /api/v1/orders                  -         yes       -                 -
    POST   /api/v1/orders/{id}/commands    yes       -         its orders        -
    POST   /api/v1/orders/{id}/media       -         -         its orders        its orders
    GET    /api/v1/orders[/{id}]           all       all       its orders        orders it has
    GET    /api/v1/couriers                all       -         its couriers      itself
    GET    /api/v1/couriers/{id}/track     all       -         -                 itself
    GET    /api/v1/stats, /metrics         yes       -         -                 -

Reads run on worker threads through the read-only `Reader`; nothing here writes the store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from gateway import metrics
from gateway.bridge.service import Handled, Inbound, Reply
from gateway.bridge.worker import Bridge
from gateway.config import Settings
from gateway.core import acl, contract
from gateway.core.acl import Identity, Role
from gateway.core.lifecycle import OrderRecord
from gateway.core.models import (
    Ack,
    ChatHistory,
    ChatIn,
    FieldProblem,
    MediaAck,
    MediaKind,
    Order,
    ShopCommand,
    Status,
)
from gateway.errors import PayloadError, Rejected, TooLarge, UnsupportedType
from gateway.http import problems, tracks
from gateway.http.auth import HttpAuth
from gateway.http.models import (
    ChatPosted,
    CommandDone,
    Couriers,
    CourierSummary,
    Health,
    MediaStored,
    OrderAccepted,
    OrderDetail,
    OrdersPage,
    TimelineEntry,
)
from gateway.http.problems import HttpProblem, Problem, problem
from gateway.http.reader import Reader
from gateway.store.media import MediaFiles
from gateway.store.queries import Queries
from gateway.web.live import Hub
from gateway.web.session import COOKIE, CSRF_HEADER

log = logging.getLogger("fieldgate.http")

#: Longest a write waits for the bridge before answering 503.
WRITE_TIMEOUT_SECONDS = 30.0
#: Most fixes one track request returns.
TRACK_MAX_FIXES = 20_000
_FILES = ("image/jpeg", "image/png", "image/webp", "audio/ogg", "audio/mp4")


@dataclass
class Context:
    """The running parts the routes use (set as `app.state.ctx` by `gateway.http.server`)."""

    settings: Settings
    bridge: Bridge
    reader: Reader
    auth: HttpAuth
    checks: Callable[[], dict[str, bool]]  # readiness of each part
    hub: Hub  # the pages' live updates
    media: MediaFiles


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


_basic = HTTPBasic(auto_error=False, realm="fieldgate", description="a fieldgate user; over TLS or from loopback")
_bearer = HTTPBearer(auto_error=False, description="`fieldgate tokens create USER`")


def caller(
    request: Request,
    _basic_credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    _bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """Who sent the request (the two parameters only document the schemes in /openapi.json)."""
    peer = request.client.host if request.client else None
    return context(request).auth.identify(request.headers.get("authorization"), peer,
                                       cookie=request.cookies.get(COOKIE), csrf=request.headers.get(CSRF_HEADER),
                                       write=request.method not in ("GET", "HEAD", "OPTIONS"))


Caller = Annotated[Identity, Depends(caller)]
OrderId = Annotated[str, Path(pattern=contract.ID_PATTERN, description="the order's order_id")]
CourierId = Annotated[str, Path(pattern=contract.ID_PATTERN)]


def _forbidden(detail: str, hint: str = "") -> HttpProblem:
    return HttpProblem(problem("forbidden", detail, hint=hint))


def _reply(status: int, body: Any) -> Reply:
    return status, body.model_dump_json().encode()


def _problem_reply(p: Problem) -> Reply:
    return p.status, p.model_dump_json().encode()


def _answer(response: Callable[[Handled], Reply]) -> Callable[[Handled], Reply]:
    """A refused message answers as its problem; an applied one as `response` makes it."""

    def respond(handled: Handled) -> Reply:
        if handled.refused is not None:
            return _problem_reply(problems.for_rejected(handled.refused))
        return response(handled)

    return respond


def _published(handled: Handled, topic_test: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in handled.published if topic_test(m.topic)]


@_answer
def _order_reply(handled: Handled) -> Reply:
    acks = [Ack.model_validate(a) for a in _published(handled, lambda t: t == contract.ORDERSYS_ACKS)]
    ack = next(a for a in acks if a.kind == "accepted")
    assert ack.order_id is not None and ack.status is not None
    return _reply(200 if ack.duplicate else 202, OrderAccepted(order_id=ack.order_id, status=ack.status,
                                                               duplicate=ack.duplicate, tracking_url=ack.tracking_url))


@_answer
def _command_reply(handled: Handled) -> Reply:
    order = handled.order
    assert order is not None
    return _reply(200, CommandDone(order_id=order.order_id, result="done" if handled.published else "unchanged",
                                   status=order.status, order=order))


@_answer
def _media_reply(handled: Handled) -> Reply:
    ack = next(a for a in _published(handled, lambda t: t.endswith("/media/ack")))
    return _reply(201, MediaStored.model_validate(MediaAck.model_validate(ack).model_dump()))


@_answer
def _chat_reply(handled: Handled) -> Reply:
    order = handled.order
    assert order is not None
    seq = next((m["seq"] for m in _published(handled, lambda t: t.endswith("/chat")) if "seq" in m), None)
    return _reply(201 if seq else 200, ChatPosted(order_id=order.order_id, seq=seq, duplicate=seq is None))


async def _body(request: Request, limit: int) -> tuple[bytes, bool]:
    """The request body, read up to `limit` bytes; (what was read, whether there was more)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


Transform = Callable[[bytes], tuple[bytes, Rejected | None]]


def rewrite(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Transform:
    """A body that is a JSON object, changed by `change` (which may raise Rejected to refuse it); any other body is
    left as it is, for the gateway to say what is wrong with it."""

    def transform(body: bytes) -> tuple[bytes, Rejected | None]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return body, None
        if not isinstance(data, dict):
            return body, None
        try:
            return json.dumps(change(data)).encode(), None
        except Rejected as exc:
            return body, exc

    return transform


def _with_order_id(order_id: str) -> Transform:
    """The body with the path's order_id filled in; a different one in the body is refused."""

    def fill(data: dict[str, Any]) -> dict[str, Any]:
        named = data.setdefault("order_id", order_id)
        if named != order_id:
            raise PayloadError(f"the body names order {named!r} but the path names {order_id!r}",
                               hint="Leave order_id out of the body: the path names the order.",
                               order_id=order_id, errors=[{"loc": "order_id", "msg": "not the path's"}])
        return data

    return rewrite(fill)


async def submit(request: Request, who: Identity, topic: str | None, respond: Callable[[Handled], Reply], *,
                  limit: int, json_body: bool, key: str | None = None,
                  transform: Transform | None = None) -> Response:
    """Hand a write to the bridge as the message on `topic` it stands for, and answer what became of it."""
    ctx = context(request)
    if topic is None or not acl.may_publish(who, topic):
        raise _forbidden(f"{who} may not {request.method} {request.url.path}",
                         "See who may do what in docs/http.md.")
    if not ctx.bridge.running:
        raise HttpProblem(problem("unavailable", "the gateway's bridge is not running yet",
                                  hint="Retry in a few seconds; /readyz says when it is ready."), {"Retry-After": "5"})
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise HttpProblem(problem("bad-request", "Idempotency-Key must be 1 to 255 printable characters"))
    body, over = await _body(request, limit)
    refused: Rejected | None = None
    if over:
        refused = TooLarge(f"the body is more than the {limit} bytes allowed here",
                           hint="Send less; the limits are bridge.max_payload_bytes (JSON) and media.max_bytes "
                           "(files) in broker.yaml.")
    elif json_body and not _is_json(request.headers.get("content-type")):
        refused = UnsupportedType(f"Content-Type {request.headers.get('content-type')!r} is not JSON",
                                  hint="Send the body as application/json.")
    elif transform is not None:
        body, refused = transform(body)
    future = ctx.bridge.request(Inbound(topic, body), respond, refused=refused,
                                key=None if key is None else (who.username or str(who), key))
    try:
        status, content = await asyncio.wait_for(asyncio.wrap_future(future), WRITE_TIMEOUT_SECONDS)
    except TimeoutError:
        raise HttpProblem(problem("unavailable", f"the gateway did not answer within {WRITE_TIMEOUT_SECONDS:g} s",
                                  hint="It is overloaded or stopping; retry with the same Idempotency-Key."),
                          {"Retry-After": "5"}) from None
    return Response(content, status, media_type=problems.MEDIA_TYPE if status >= 400 else "application/json")


async def read(request: Request, work: Callable[[Queries], Any]) -> Any:
    """Run a read on a worker thread with the reader's store."""
    reader = context(request).reader

    def run() -> Any:
        with reader() as store:
            return work(store)

    return await asyncio.to_thread(run)


def _check_visible(who: Identity, order_id: str, record: OrderRecord | None) -> None:
    """404 for an unknown order, 403 for one the caller may not read."""
    if record is None:
        raise HttpProblem(problem("not-found", f"order {order_id} is unknown to the gateway", order_id=order_id))
    if not _visible(who, record):
        raise _forbidden(f"order {order_id} is not one of {who}'s orders")


async def _readable_order(request: Request, who: Identity, order_id: str) -> None:
    _check_visible(who, order_id, await read(request, lambda store: store.get_order(order_id)))


def _visible(who: Identity, record: OrderRecord) -> bool:
    if who.role in (Role.operator, Role.ordersys):
        return True
    if who.role == Role.shop:
        return record.order.shop_id == who.id
    return who.role == Role.courier and record.courier_id == who.id


def _cursor(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    try:
        created_at, order_id = json.loads(base64.urlsafe_b64decode(value.encode() + b"=="))
        datetime.fromisoformat(created_at)
        return str(created_at), str(order_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise HttpProblem(problem("bad-request", "the cursor is not one this API gave",
                                  hint="Pass next_cursor of the previous page as it is.")) from None


def _time(value: str | None, default: datetime, name: str) -> datetime:
    if value is None:
        return default
    try:
        at = datetime.fromtimestamp(float(value), UTC) if value.replace(".", "", 1).isdigit() \
            else datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise HttpProblem(problem("bad-request", f"{name}={value!r} is no time",
                                  hint="Give an ISO 8601 time (2026-11-22T09:00:00+08:00) or epoch seconds."),
                          ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def create_app() -> FastAPI:
    app = FastAPI(
        title="fieldgate", version=version("fieldgate"),
        summary="Orders in, signed webhooks out, the read API, health and metrics of a fieldgate gateway.",
        description="Every write is the MQTT message it stands for, handled on the same path; errors are RFC 9457 "
        "problems (`application/problem+json`). See docs/http.md.",
        docs_url=None, redoc_url=None,
    )
    _errors(app)
    _health(app)
    _writes(app)
    _reads(app)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.HTTP_REQUESTS.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _render(p: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(p.model_dump(mode="json"), p.status, headers=headers, media_type=problems.MEDIA_TYPE)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(HttpProblem)
    async def known(request: Request, exc: HttpProblem) -> JSONResponse:
        return _render(exc.problem, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldProblem(loc=".".join(str(p) for p in e["loc"]), msg=e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{e.loc}: {e.msg}" for e in errors)
        return _render(problem("bad-request", detail, hint="See /openapi.json for this route's parameters.",
                               errors=errors))

    @app.exception_handler(HTTPException)
    async def routing(request: Request, exc: HTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        return _render(problem(slug, f"{request.method} {request.url.path}: {exc.detail}",
                               hint="See /openapi.json for the routes."), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("HTTP request failed", extra={"ctx": {"path": request.url.path}})
        return _render(problem("internal", "the gateway failed on this request (internal error)",
                               hint="This is a fieldgate bug; the log has the details."))


def _health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> Health:
        """The process is up (no authentication)."""
        return Health(status="ok")

    @app.get("/readyz", tags=["health"], responses={503: {"model": Health}})
    def readyz(request: Request) -> Response:
        """The broker is listening, the databases are open and the bridge is attached (no authentication)."""
        checks = context(request).checks()
        ok = all(checks.values())
        body = Health(status="ok" if ok else "not ready", checks=checks)
        return Response(body.model_dump_json(), 200 if ok else 503, media_type="application/json")

    @app.get("/problems/{slug}", tags=["health"], response_class=PlainTextResponse, include_in_schema=False)
    def about(slug: str) -> str:
        kind = problems.KINDS.get(slug)
        if kind is None:
            raise HttpProblem(problem("not-found", f"no problem type {slug!r}"))
        return f"{kind.status} {kind.title}\n\n{kind.about}\n"


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {problems.MEDIA_TYPE: {}}, "description": title}
    for status, title in ((400, "not JSON, or a bad parameter"), (401, "no valid credentials"),
                          (403, "not allowed for this user, or not its order"), (404, "no such order"),
                          (409, "the order's state forbids it, or an Idempotency-Key reused"),
                          (413, "body too large"), (415, "not JSON, or not a photo or voice note"),
                          (422, "does not match the schema"), (429, "too many requests"),
                          (503, "the gateway is not ready"))
}


def _body_schema(ref: str, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


def _writes(app: FastAPI) -> None:
    @app.post("/api/v1/orders", status_code=202, tags=["orders"], response_model=OrderAccepted,
              responses={200: {"model": OrderAccepted, "description": "an identical order was accepted before"},
                         **_PROBLEMS}, openapi_extra=_body_schema("Order", "an order, as on orders/in"))
    async def post_order(
        request: Request, who: Caller,
        idempotency_key: Annotated[str | None, Header(description="answered the same for 24 hours")] = None,
    ) -> Response:
        """Place an order (or update it: the same order_id), as `orders/in` does: validated, committed and acked
        (to ordersys/acks and the `ack` webhooks) before the answer."""
        return await submit(request, who, contract.ORDERS_IN, _order_reply, json_body=True,
                             limit=context(request).settings.bridge.max_payload_bytes, key=idempotency_key)

    @app.post("/api/v1/orders/{order_id}/commands", tags=["orders"], response_model=CommandDone, responses=_PROBLEMS,
              openapi_extra=_body_schema("ShopCommand", "assign, packed or cancel; order_id may be left out "
                                         "(the path names the order)"))
    async def post_command(
        request: Request, who: Caller, order_id: OrderId,
        idempotency_key: Annotated[str | None, Header(description="answered the same for 24 hours")] = None,
    ) -> Response:
        """A shop's command on one of its orders (as `shops/{shop_id}/commands`), or an operator's on any (as
        `operator/commands`)."""
        topic = {Role.shop: contract.shop_topic(who.id or "-", "commands"),
                 Role.operator: contract.OPERATOR_COMMANDS}.get(who.role)
        return await submit(request, who, topic, _command_reply, json_body=True,
                             limit=context(request).settings.bridge.max_payload_bytes, key=idempotency_key,
                             transform=_with_order_id(order_id))

    @app.post("/api/v1/orders/{order_id}/media", status_code=201, tags=["orders"], response_model=MediaStored,
              responses=_PROBLEMS,
              openapi_extra={"requestBody": {"required": True, "description": "the file's own bytes",
                                             "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                         for t in _FILES}}})
    async def post_media(
        request: Request, who: Caller, order_id: OrderId,
        kind: Annotated[MediaKind, Query(description="what the file is")],
    ) -> Response:
        """A photo or voice note for one of the sender's orders, as the MQTT media topics take it (the type is
        read from the bytes, not from Content-Type)."""
        topic = _own_topic(who, f"media/{order_id}/{kind}")
        return await submit(request, who, topic, _media_reply, json_body=False,
                             limit=context(request).settings.media.max_bytes)


    @app.post("/api/v1/orders/{order_id}/chat", status_code=201, tags=["orders"], response_model=ChatPosted,
              responses={200: {"model": ChatPosted, "description": "the same msg_id was posted before"},
                         **_PROBLEMS},
              openapi_extra=_body_schema("ChatIn", "a message; order_id may be left out (the path names the order)"))
    async def post_chat(request: Request, who: Caller, order_id: OrderId) -> Response:
        """A message in one of the sender's orders' conversation, as `shops/{shop_id}/chat/in` or
        `couriers/{courier_id}/chat/in`."""
        return await submit(request, who, _own_topic(who, "chat/in"), _chat_reply, json_body=True,
                            limit=context(request).settings.bridge.max_payload_bytes,
                            transform=_with_order_id(order_id))


def _own_topic(who: Identity, leaf: str) -> str | None:
    """A shop's or courier's own topic for `leaf`; None for other roles (they may not send it)."""
    if who.role == Role.courier and who.id:
        return contract.courier_topic(who.id, leaf)
    if who.role == Role.shop and who.id:
        return contract.shop_topic(who.id, leaf)
    return None


def _reads(app: FastAPI) -> None:
    @app.get("/api/v1/orders", tags=["read"], responses=_PROBLEMS)
    async def list_orders(
        request: Request, who: Caller,
        status: Status | None = None,
        shop: Annotated[str | None, Query(pattern=contract.ID_PATTERN)] = None,
        courier: Annotated[str | None, Query(pattern=contract.ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> OrdersPage:
        """Orders, newest first, a page at a time. A shop sees its own orders, a courier those it has."""
        if who.role == Role.shop:
            if shop not in (None, who.id):
                raise _forbidden(f"shop {who.id} may not list shop {shop}'s orders")
            shop = who.id
        elif who.role == Role.courier:
            if courier not in (None, who.id):
                raise _forbidden(f"courier {who.id} may not list courier {courier}'s orders")
            courier = who.id
        after = _cursor(cursor)
        records, last = await read(request, lambda store: store.orders_page(
            status=status, shop_id=shop, courier_id=courier, after=after, limit=limit))
        next_cursor = None if last is None else base64.urlsafe_b64encode(json.dumps(last).encode()).decode()
        return OrdersPage(orders=[r.view() for r in records], next_cursor=next_cursor)

    @app.get("/api/v1/orders/{order_id}", tags=["read"], responses=_PROBLEMS)
    async def get_order(request: Request, who: Caller, order_id: OrderId) -> OrderDetail:
        """One order: as placed, its state now (status, courier, location, ETA) and its timeline."""

        def work(store: Queries) -> tuple[OrderRecord | None, list[dict[str, Any]]]:
            record = store.get_order(order_id)
            return record, [] if record is None or not _visible(who, record) else store.timeline(order_id)

        record, timeline = await read(request, work)
        _check_visible(who, order_id, record)
        assert record is not None
        return OrderDetail(order=record.view(), state=record.state(),
                           timeline=[TimelineEntry(**row) for row in timeline])

    @app.get("/api/v1/orders/{order_id}/chat", tags=["read"], responses=_PROBLEMS)
    async def get_chat(
        request: Request, who: Caller, order_id: OrderId,
        after_seq: Annotated[int, Query(ge=0, description="only messages after this seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ChatHistory:
        """An order's conversation, oldest first, a page at a time (`more`: ask again with the last seq)."""
        await _readable_order(request, who, order_id)
        messages, more = await read(request, lambda store: store.chat_page(order_id, after_seq, limit))
        return ChatHistory(order_id=order_id, messages=messages, more=more, at=datetime.now(UTC))

    @app.get("/api/v1/media/{media_id}", tags=["read"], response_class=Response, responses={
        200: {"content": {t: {} for t in _FILES}, "description": "the file's bytes"}, **_PROBLEMS})
    async def get_media(request: Request, who: Caller, media_id: Annotated[str, Path(pattern=contract.ID_PATTERN)],
                        ) -> Response:
        """A photo or voice note of an order the caller may read."""
        found = await read(request, lambda store: store.media(media_id))
        if found is None:
            raise HttpProblem(problem("not-found", f"no media {media_id}"))
        await _readable_order(request, who, found["order_id"])
        path = context(request).media.path(found["sha256"])
        return Response(await asyncio.to_thread(path.read_bytes), media_type=found["content_type"],
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})

    @app.get("/api/v1/couriers", tags=["read"], responses=_PROBLEMS)
    async def list_couriers(request: Request, who: Caller) -> Couriers:
        """Couriers with their presence, newest fix and active orders. A shop sees its registered couriers and
        those on its active orders; a courier itself."""
        if who.role not in (Role.operator, Role.shop, Role.courier):
            raise _forbidden(f"{who} may not list couriers")

        def work(store: Queries) -> list[dict[str, Any]]:
            if who.role == Role.operator:
                return store.couriers()
            return store.couriers(store.couriers_of_shop(who.id or "") if who.role == Role.shop else [who.id or ""])

        return Couriers(couriers=[_courier(row) for row in await read(request, work)])

    @app.get("/api/v1/couriers/{courier_id}/track", tags=["read"], responses={
        200: {"content": {"application/geo+json": {}, "application/gpx+xml": {}},
              "description": "format=json (default), geojson or gpx"}, **_PROBLEMS})
    async def get_track(
        request: Request, who: Caller, courier_id: CourierId,
        start: Annotated[str | None, Query(alias="from", description="ISO 8601 or epoch seconds; default 6 h "
                                           "before `to`")] = None,
        end: Annotated[str | None, Query(alias="to", description="ISO 8601 or epoch seconds; default now")] = None,
        format: Literal["json", "geojson", "gpx"] = "json",
    ) -> Response:
        """A courier's GPS fixes in a time range, oldest first, as JSON, GeoJSON (a LineString and the points) or
        GPX 1.1. Operators, and the courier itself."""
        if who.role != Role.operator and not (who.role == Role.courier and who.id == courier_id):
            raise _forbidden(f"{who} may not read courier {courier_id}'s track")
        until = _time(end, datetime.now(UTC), "to")
        since = _time(start, until - timedelta(hours=6), "from")
        if since > until:
            raise HttpProblem(problem("bad-request", "`from` is after `to`"))
        a, b = since.timestamp(), until.timestamp()
        fixes, truncated = await read(request, lambda store: store.fixes(courier_id, a, b, TRACK_MAX_FIXES))
        if format == "gpx":
            return Response(tracks.as_gpx(courier_id, a, b, fixes), media_type="application/gpx+xml")
        if format == "geojson":
            return JSONResponse(tracks.as_geojson(courier_id, a, b, fixes, truncated),
                                media_type="application/geo+json")
        return JSONResponse(tracks.as_json(courier_id, a, b, fixes, truncated))

    @app.get("/api/v1/stats", tags=["read"], responses=_PROBLEMS)
    async def stats(request: Request, who: Caller) -> dict[str, Any]:
        """What `fieldgate stats` shows: counts by status and kind, tasks, couriers, dead letters, and delivery
        performance per shop and courier. Operators."""
        _operator(who)
        return await read(request, lambda store: {**store.stats(), "performance": store.performance()})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def scrape(request: Request, who: Caller) -> Response:
        """Prometheus text exposition. Operators (give Prometheus a token of an operator user)."""
        _operator(who)
        return Response(await asyncio.to_thread(generate_latest, metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _operator(who: Identity) -> None:
    if who.role != Role.operator:
        raise _forbidden(f"{who} is no operator", "Use a user with the operator role.")


def _courier(row: dict[str, Any]) -> CourierSummary:
    return CourierSummary(
        courier_id=row["courier_id"], name=row["name"], registered=bool(row["registered"]),
        online=None if row["online"] is None else bool(row["online"]), last_seen_at=row["last_seen_at"],
        fix=None if row["fix_json"] is None else json.loads(row["fix_json"]),
        shops=(row["shops"] or "").split(), devices=[d for d in (row["devices"] or "").split(", ") if d],
        active_orders=(row["active_ids"] or "").split(), unreceived_tasks=row["unreceived_tasks"])


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the request bodies' schemas (the contract's models) among the components and the
    problems' media type."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                      routes=app.routes)
    for operation in (op for path in doc["paths"].values() for op in path.values()):
        for response in operation.get("responses", {}).values():
            content = response.get("content", {})
            if problems.MEDIA_TYPE in content and "application/json" in content:  # a problem is problem+json only
                content[problems.MEDIA_TYPE] = content.pop("application/json")
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Order, ShopCommand, ChatIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    doc["components"]["schemas"] = dict(sorted(components.items()))
    app.openapi_schema = doc
    return doc
