"""The HTTP side's thread: uvicorn serving `gateway.http.app`, and the webhook sender, on one event loop.

Its own thread and loop, apart from the broker's: a burst of HTTP reads, a slow webhook receiver
or a big GPX export never delays an MQTT packet. It reads fieldgate.db through its own read-only
connection (`Reader`) and writes only through the bridge (`Bridge.request`, `Bridge.call`).

The socket is bound before uvicorn starts, so a taken port is one clear error (`HttpStartError`)
rather than uvicorn's exit. Once listening, it writes `<data_dir>/local-http.json` (mode 0600:
the URL and a fresh operator token for the CLI on this machine, `fieldgate top`), removed at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn

from gateway.bridge.worker import Bridge
from gateway.config import Settings
from gateway.core.lifecycle import Outgoing
from gateway.errors import HttpStartError
from gateway.http.app import Context, create_app
from gateway.http.auth import HttpAuth
from gateway.http.reader import Reader
from gateway.http.webhooks import WebhookSender
from gateway.store.database import location_of
from gateway.store.datadir import secret_key
from gateway.store.media import MediaFiles
from gateway.store.queries import StoreFigures
from gateway.web.live import Hub
from gateway.web.pages import add_pages
from gateway.web.session import Sessions

log = logging.getLogger("fieldgate.http")

LOCAL_FILE = "local-http.json"
START_TIMEOUT_SECONDS = 15.0


def local_file(data_dir: Path) -> Path:
    """Where a running gateway leaves its HTTP address and operator token for the CLI."""
    return data_dir / LOCAL_FILE


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HttpStartError(f"the HTTP listener could not listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class HttpSide:
    def __init__(self, settings: Settings, bridge: Bridge, checks: Callable[[], dict[str, bool]]) -> None:
        self.settings = settings
        self.bridge = bridge
        self.reader = Reader(location_of(settings))
        self.token = secrets.token_urlsafe(32)
        http = settings.http
        sessions = Sessions(secret_key(settings.data_dir), timedelta(hours=settings.web.session_hours))
        self.auth = HttpAuth(self.reader, sessions, tls=http.tls, local_token=self.token,
                             rate=http.max_request_rate)
        self.hub = Hub()
        self.app = create_app()
        add_pages(self.app)
        self.app.state.ctx = Context(settings, bridge, self.reader, self.auth,
                                     lambda: {**checks(), "databases": self._readable()}, self.hub,
                                     MediaFiles(settings.data_dir))
        self._socket = _bind(http.host, http.port)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        bridge.gateway.public_url = settings.web.public_url or self.url
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fieldgate-http", daemon=True)

    @property
    def url(self) -> str:
        """The URL the CLI on this machine uses (loopback when bound to every interface)."""
        host = self.address[0]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.settings.http.tls else 'http'}://{host}:{self.address[1]}"

    def gauges(self) -> StoreFigures:
        """fieldgate.db's figures for a metrics scrape."""
        with self.reader() as store:
            return store.gauges()

    def _readable(self) -> bool:
        try:
            with self.reader() as store:
                store.conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except Exception:  # whatever the database says (SQLite or PostgreSQL), it is not readable now
            return False
        return True

    def start(self) -> None:
        """Serve (returns once requests are answered) and start sending webhooks."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or self._failure is not None:
            self.stop()
            raise HttpStartError(f"the HTTP listener did not start: {self._failure or 'timed out'}")
        self._write_local_file()
        log.info("HTTP listening", extra={"ctx": {"url": self.url, "tls": self.settings.http.tls}})

    def stop(self) -> None:
        """Finish the requests under way (at most 5 s), stop sending, close."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(START_TIMEOUT_SECONDS)
        local_file(self.settings.data_dir).unlink(missing_ok=True)
        self._socket.close()
        self.reader.close()

    def _write_local_file(self) -> None:
        path = local_file(self.settings.data_dir)
        content: dict[str, Any] = {"url": self.url, "token": self.token, "pid": os.getpid()}
        if self.settings.http.tls:
            content["cafile"] = str(self.settings.tls.certfile)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(content, f)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # uvicorn exits (SystemExit) on a startup failure such as bad TLS files
            self._failure = exc
            log.exception("the HTTP side failed")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tls = self.settings.tls
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=5,
            ssl_certfile=str(tls.certfile) if self.settings.http.tls else None,
            ssl_keyfile=str(tls.keyfile) if self.settings.http.tls else None,
        )
        server = uvicorn.Server(config)
        sender = WebhookSender(self.reader, self.bridge, self.settings.webhooks)
        loop = self._loop

        def committed(messages: list[Outgoing], deliveries: int) -> None:  # on the bridge's thread
            if deliveries:
                sender.wake()
            if self.hub.watched:  # a page is open: its stream looks at what changed
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(self.hub.publish, messages)

        self.bridge.gateway.on_commit = committed
        serving = asyncio.create_task(server.serve(sockets=[self._socket]))
        sending = asyncio.create_task(sender.run())
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise HttpStartError("uvicorn stopped while starting")
                await asyncio.sleep(0.01)
            self._ready.set()
            await self._stopping.wait()
        finally:
            self.bridge.gateway.on_commit = None
            self.hub.close()
            server.should_exit = True
            sending.cancel()
            await asyncio.gather(serving, sending, return_exceptions=True)
