"""The pages, served by the HTTP listener: the shop terminal (/shop/) and the customer's tracking page (/t/{token}).

    route                          who                      what
    GET  /shop/login, POST         anyone                   the login form; sets the session cookie
    POST /shop/logout              the session              clears it
    GET  /shop/[?shop=ID]          a shop, or an operator   the terminal: board, map, actions, details
    GET  /shop/api/board?shop=ID   the same                 the board as JSON (cards, couriers, the shop)
    GET  /shop/api/events?shop=ID  the same                 its live updates (Server-Sent Events)
    GET  /t/{token}                whoever has the link     the tracking page (a plain 404 page if the link
    GET  /t/{token}/events                                  is wrong, purged or expired); its live updates;
    POST /t/{token}/chat, /rating                           the customer's message and rating
    GET  /static/…                 anyone                   CSS, JS, the vendored Leaflet (gzip)

The terminal's actions go to /api/v1 (`gateway.http.app`) with the session cookie and its CSRF token:
the same ShopCommands, messages and reads as an MQTT terminal's, on the same path. The customer's
message and rating are the order system's `ordersys/chat/in` and `ordersys/ratings/in` messages,
made here for the one order the link names. What each page shows is decided by the pure
`gateway.core.board` and `gateway.core.tracking`; `gateway.web.live` says when to show it again.
"""

from __future__ import annotations

import functools
import html
import json
import secrets
import string
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from gateway.bridge.service import Handled, Reply
from gateway.core import board, contract, tracking
from gateway.core.acl import Identity, Role
from gateway.http import problems
from gateway.http.app import Caller, Context, Transform, context, read, rewrite, submit
from gateway.http.auth import RateLimit
from gateway.http.problems import HttpProblem, problem
from gateway.store.queries import Queries
from gateway.web import live
from gateway.web.session import COOKIE

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: Messages and ratings per second one tracking link may send (bursts of two seconds' worth).
CUSTOMER_RATE = 5.0
#: Seconds between the couriers' refresh (presence, age of fix) on a terminal, and keep-alives on a tracking page.
EVERY_SECONDS = 10.0

WORDS: dict[str, dict[str, str]] = {
    "en": {"login": "Shop terminal login", "user": "User name", "password": "Password", "submit": "Log in",
           "logout": "Log out", "board": "Orders", "map": "Couriers", "go": "Show", "track": "Your delivery",
           "not_found": "No such delivery", "not_found_text": "This tracking link is wrong or has expired. The "
           "shop can send you a new one.", "not_for_you": "This page is for shops and operators."},
    "zh-CN": {"login": "门店终端登录", "user": "用户名", "password": "密码", "submit": "登录", "logout": "退出",
              "board": "订单", "map": "骑手", "go": "查看", "track": "您的配送", "not_found": "找不到该配送",
              "not_found_text": "此跟踪链接有误或已过期，请联系门店获取新链接。",
              "not_for_you": "此页面仅供门店和运营人员使用。"},
}


def _locale(request: Request, shop_locale: str | None = None) -> str:
    if shop_locale in WORDS:
        return str(shop_locale)
    return "zh-CN" if request.headers.get("accept-language", "").lower().startswith("zh") else "en"


def _security_headers(ctx: Context) -> dict[str, str]:
    """No external requests but the map tiles' host: CSP says so to the browser."""
    tiles = urlsplit(ctx.settings.web.tile_url.replace("{s}", "a"))
    tile_origin = f" {tiles.scheme}://{tiles.netloc}" if tiles.netloc else ""
    policy = (f"default-src 'self'; img-src 'self' data:{tile_origin}; style-src 'self'; script-src 'self'; "
              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


@functools.cache
def _template(name: str) -> str:
    return (HERE / "templates" / f"{name}.html").read_text(encoding="utf-8")


def _page(request: Request, name: str, status: int = 200, raw: dict[str, str] | None = None,
          **values: str) -> HTMLResponse:
    """A template of templates/ with `values` escaped (and `raw` as it is: markup made here)."""
    text = _template(name)
    filled = {k: html.escape(v) for k, v in values.items()} | (raw or {})
    return HTMLResponse(string.Template(text).substitute(filled), status,
                        headers=_security_headers(context(request)))


def _map_config(ctx: Context) -> dict[str, str]:
    return {"tile_url": ctx.settings.web.tile_url, "tile_attribution": ctx.settings.web.tile_attribution}


def add_pages(app: FastAPI) -> None:
    app.mount("/static", GZipMiddleware(StaticFiles(directory=STATIC), minimum_size=1024), name="static")
    _terminal(app)
    _tracking(app)


# ---------------------------------------------------------------------- the shop terminal


def _session(request: Request) -> Identity | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    try:
        return context(request).auth.session_user(cookie)
    except HttpProblem:
        return None


def _shop_of(store: Queries, who: Identity, asked: str | None) -> str | None:
    """Which shop a terminal shows: a shop user's own; for an operator the one asked for, else the first."""
    if who.role == Role.shop:
        if asked not in (None, who.id):
            raise HttpProblem(problem("forbidden", f"shop {who.id} may not see shop {asked}'s board"))
        return who.id
    if who.role != Role.operator:
        raise HttpProblem(problem("forbidden", f"{who} is no shop or operator",
                                  hint="The terminal is for shop and operator users."))
    if asked is not None:
        return asked
    shops = store.shops()
    return shops[0].shop_id if shops else None


def _board(store: Queries, ctx: Context, shop_id: str, now: datetime) -> dict[str, Any]:
    shop = store.get_shop(shop_id)
    zone = shop.timezone if shop else "UTC"
    rows = store.board(shop_id, board.start_of_day(now, zone))
    pins = _pins(store, ctx, shop_id)
    online = {p.courier_id: p.online for p in pins}
    cards = [board.card(r, since, online.get(r.courier_id or ""), now) for r, since in rows]
    if shop is not None:
        face = {"shop_id": shop.shop_id, "name": shop.name, "lat": shop.lat, "lon": shop.lon, "timezone": zone,
                "locale": shop.locale}
    else:
        first = next((c for c in cards if c.lat is not None), None)
        face = {"shop_id": shop_id, "name": shop_id, "lat": first.lat if first else 0.0,
                "lon": first.lon if first else 0.0, "timezone": zone, "locale": "en"}
    return {"shop": face, "config": _map_config(ctx), "cards": [c.model_dump(mode="json") for c in cards],
            "couriers": [p.model_dump(mode="json") for p in pins], "now": now.isoformat()}


def _pins(store: Queries, ctx: Context, shop_id: str, only: Collection[str] | None = None) -> list[board.Pin]:
    """The shop's couriers: registered for it or on its active orders (of them, those in `only`)."""
    shop = store.get_shop(shop_id)
    ids = store.couriers_of_shop(shop_id)
    at = (shop.lat, shop.lon) if shop else None
    return [board.pin(row, at, ctx.settings.assignment.default_max_active)
            for row in store.couriers(ids if only is None else ids & set(only))]


def _terminal(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    @app.get("/shop", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/shop/", 303)

    @app.get("/shop/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/shop/") -> HTMLResponse:
        return _login_page(request, next, "")

    @app.post("/shop/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body())[:4096].decode(errors="replace"))
        user, password = form.get("username", [""])[0], form.get("password", [""])[0]
        target = form.get("next", ["/shop/"])[0]
        target = target if target.startswith("/shop/") and "//" not in target else "/shop/"
        peer = request.client.host if request.client else None
        try:
            cookie = context(request).auth.login(user, password, peer)
        except HttpProblem as exc:
            return _login_page(request, target, exc.problem.detail, exc.problem.status)
        response = RedirectResponse(target, 303)
        ctx = context(request)
        response.set_cookie(COOKIE, cookie, max_age=int(ctx.settings.web.session_hours * 3600), httponly=True,
                            samesite="strict", secure=ctx.settings.http.tls, path="/")
        return response

    @app.post("/shop/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE, "")
        form = parse_qs((await request.body())[:4096].decode(errors="replace"))
        if cookie and form.get("csrf", [""])[0] != context(request).auth.sessions.csrf(cookie):
            raise HttpProblem(problem("forbidden", "logout without the page's CSRF token"))
        response = RedirectResponse("/shop/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/shop/", include_in_schema=False)
    async def terminal(request: Request, shop: Annotated[str | None, Query(pattern=contract.ID_PATTERN)] = None,
                       ) -> Response:
        who = _session(request)
        if who is None:
            return RedirectResponse("/shop/login", 303)
        ctx = context(request)
        if who.role not in (Role.shop, Role.operator):
            words = WORDS[_locale(request)]
            return _page(request, "notfound", 403, lang=_locale(request), title=words["not_for_you"], text="")
        shop_id, shops = await read(request, lambda store: (_shop_of(store, who, shop), store.shops()))
        registered = next((s for s in shops if s.shop_id == shop_id), None)
        lang = _locale(request, registered.locale if registered else None)
        words = WORDS[lang]
        chooser = ""
        if who.role == Role.operator:
            options = "".join(f'<option value="{html.escape(s.shop_id)}"{" selected" if s.shop_id == shop_id else ""}>'
                              f"{html.escape(s.name)}</option>" for s in shops)
            chooser = (f'<form method="get" action="/shop/"><label class="sr" for="shop-choice">shop</label>'
                       f'<select id="shop-choice" name="shop">{options}</select> '
                       f'<button class="quiet" type="submit">{html.escape(words["go"])}</button></form>')
        cookie = request.cookies.get(COOKIE, "")
        return _page(request, "shop", raw={"chooser": chooser}, lang=lang,
                     title=registered.name if registered else (shop_id or "fieldgate"), shop_id=shop_id or "",
                     role=who.role.value, user=who.username or "", csrf=ctx.auth.sessions.csrf(cookie),
                     logout=words["logout"], board_label=words["board"], map_label=words["map"])

    @app.get("/shop/api/board", include_in_schema=False)
    async def board_json(request: Request, who: Caller,
                         shop: Annotated[str | None, Query(pattern=contract.ID_PATTERN)] = None) -> JSONResponse:
        ctx = context(request)

        def work(store: Queries) -> dict[str, Any]:
            shop_id = _shop_of(store, who, shop)
            if shop_id is None:
                raise HttpProblem(problem("not-found", "no shop is registered",
                                          hint="Register one with `fieldgate shops add`."))
            return _board(store, ctx, shop_id, datetime.now(UTC))

        return JSONResponse(await read(request, work))

    @app.get("/shop/api/events", include_in_schema=False)
    async def board_events(request: Request, who: Caller,
                           shop: Annotated[str | None, Query(pattern=contract.ID_PATTERN)] = None) -> Response:
        ctx = context(request)
        shop_id = await read(request, lambda store: _shop_of(store, who, shop))
        watcher = live.Watcher(shop_id=shop_id)

        watcher.couriers = await read(request, lambda store: store.couriers_of_shop(shop_id or ""))

        async def first(_: live.Changes | None) -> list[str]:
            return [": hello\n\n"]

        async def then(changes: live.Changes | None) -> list[str]:
            return await read(request, lambda store: _board_events(store, ctx, watcher, changes))

        return _stream(ctx, watcher, first, then)


def _board_events(store: Queries, ctx: Context, watcher: live.Watcher, changes: live.Changes | None) -> list[str]:
    """The events of a board's changes; with none, every courier again (presence, age of fix)."""
    shop_id, now = watcher.shop_id or "", datetime.now(UTC)
    out: list[str] = []
    found = [found for order_id in sorted(changes.orders) if (found := store.board_card(order_id))] if changes else []
    assigned = {r.courier_id for r, _ in found if r.courier_id}
    pins = _pins(store, ctx, shop_id, None if changes is None else changes.couriers | assigned)
    if changes is None:  # the periodic refresh: every courier of the shop, as it is now
        watcher.couriers = {p.courier_id for p in pins}
    watcher.couriers |= assigned
    online = {p.courier_id: p.online for p in pins}
    for record, since in found:
        if record.order.shop_id == shop_id:
            card = board.card(record, since, online.get(record.courier_id or ""), now)
            out.append(live.event("card", card.model_dump_json()))
    out += [live.event("courier", p.model_dump_json()) for p in pins]
    out += [live.event("chat", json.dumps({"order_id": o})) for o in sorted(changes.chats)] if changes else []
    return out


def _stream(ctx: Context, watcher: live.Watcher, first: live.Step, then: live.Step) -> StreamingResponse:
    return StreamingResponse(live.stream(ctx.hub, watcher, first, then, EVERY_SECONDS),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _login_page(request: Request, target: str, error: str, status: int = 200) -> HTMLResponse:
    lang = _locale(request)
    words = WORDS[lang]
    return _page(request, "login", status, lang=lang, title=words["login"], next=target, error=error,
                 user_label=words["user"], password_label=words["password"], submit=words["submit"])


# ---------------------------------------------------------------------- the customer's tracking page


def _tracked(store: Queries, ctx: Context, token: str) -> tracking.Facts | None:
    """What a tracking link shows, or None for a wrong, purged or expired link."""
    found = store.tracked_order(tracking.digest(token))
    if found is None:
        return None
    record, since = found
    if tracking.expired(record, since, ctx.settings.web.tracking, datetime.now(UTC)):
        return None
    chat, _ = store.chat_page(record.order_id, 0, 200)
    return tracking.Facts(record=record, shop=store.get_shop(record.order.shop_id), chat=chat,
                          rated=store.rated(record.order_id))


def _not_found(request: Request) -> HTMLResponse:
    words = WORDS[_locale(request)]
    return _page(request, "notfound", 404, lang=_locale(request), title=words["not_found"],
                 text=words["not_found_text"])


def _customer(facts: tracking.Facts, make: Callable[[dict[str, Any]], dict[str, Any]]) -> Transform:
    """The customer's body made into the order system's message for this order (only the fields it may set)."""
    return rewrite(lambda data: {"order_id": facts.record.order_id, **make(data)})


def _accepted(handled: Handled) -> Reply:
    if handled.refused is not None:
        p = problems.for_rejected(handled.refused)
        return p.status, p.model_dump_json().encode()
    return 200, b"{}"


def _tracking(app: FastAPI) -> None:
    customers = RateLimit(CUSTOMER_RATE)
    async def facts_of(request: Request, token: str) -> tracking.Facts | None:
        if not 16 <= len(token) <= 64:
            return None
        ctx = context(request)
        return await read(request, lambda store: _tracked(store, ctx, token))

    @app.get("/t/{token}", include_in_schema=False)
    async def track_page(request: Request, token: str) -> HTMLResponse:
        facts = await facts_of(request, token)
        if facts is None:
            return _not_found(request)
        lang = _locale(request, facts.shop.locale if facts.shop else None)
        return _page(request, "track", lang=lang, title=WORDS[lang]["track"])

    @app.get("/t/{token}/events", include_in_schema=False)
    async def track_events(request: Request, token: str) -> Response:
        ctx = context(request)
        facts = await facts_of(request, token)
        if facts is None:
            return _not_found(request)
        watcher = live.Watcher(order_id=facts.record.order_id)

        async def first(_: live.Changes | None) -> list[str]:
            return [live.event("view", tracking.view(facts, _map_config(ctx)).model_dump_json())]

        async def then(changes: live.Changes | None) -> list[str]:
            if changes is None:
                return []
            now = await facts_of(request, token)
            if now is None:
                watcher.close()
                return []
            return [live.event("view", tracking.view(now, _map_config(ctx)).model_dump_json())]

        return _stream(ctx, watcher, first, then)

    async def customer_write(request: Request, token: str, topic: str,
                             make: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
        ctx = context(request)
        facts = await facts_of(request, token)
        if facts is None:
            raise HttpProblem(problem("not-found", "no such delivery", hint="The link is wrong or has expired."))
        allowed, wait = customers.take(tracking.digest(token))
        if not allowed:
            raise HttpProblem(problem("rate-limited", "too many messages", hint=f"Retry after {wait} s."),
                              {"Retry-After": str(wait)})
        who = Identity(Role.ordersys, username=f"customer of {facts.record.order_id}")
        answer = await submit(request, who, topic, _accepted, json_body=True,
                              limit=ctx.settings.bridge.max_payload_bytes, transform=_customer(facts, make))
        if answer.status_code >= 300:
            return answer
        fresh = await facts_of(request, token)
        assert fresh is not None
        return JSONResponse(tracking.view(fresh, _map_config(ctx)).model_dump(mode="json"))

    @app.post("/t/{token}/chat", include_in_schema=False)
    async def track_chat(request: Request, token: str) -> Response:
        return await customer_write(request, token, "ordersys/chat/in", lambda data: {
            "msg_id": str(data.get("msg_id") or secrets.token_hex(8)), "kind": "text", "text": data.get("text"),
            "from": "customer"})

    @app.post("/t/{token}/rating", include_in_schema=False)
    async def track_rating(request: Request, token: str) -> Response:
        return await customer_write(request, token, "ordersys/ratings/in", lambda data: {
            "stars": data.get("stars"), "comment": data.get("comment")})

