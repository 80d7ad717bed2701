"""Shared test parts: a real gateway process, real paho clients, deadlines instead of sleeps."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench import engines
from bench.brokers import free_port
from gateway.core.acl import Role
from gateway.core.geo import offset
from gateway.core.models import Courier, Shop
from gateway.store.queries import Queries
from gateway.store.tables import Store, db_path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 15.0  # seconds any single wait may take before a test fails

ORDER = {
    "order_id": "A1001",
    "shop_id": "rose",
    "courier_id": "c7",
    "recipient": {"name": "Li Na", "phone": "+8613800000000"},
    "address": {"text": "Sunshine Estate 5-3-401", "lat": 31.2304, "lon": 121.4737},
    "items": [{"name": "pink roses", "qty": 11}],
    "window": {"start": "2026-11-22T09:00:00+08:00", "end": "2026-11-22T11:00:00+08:00"},
    "notes": "card: happy birthday",
    "priority": "normal",
}

_ids = itertools.count(1)


def order(**changes: Any) -> dict[str, Any]:
    """The acceptance-test order with some fields changed."""
    return {**ORDER, **changes}


def fix(lat: float = 31.2290, lon: float = 121.4701, *, ago: float = 0, **extra: Any) -> dict[str, Any]:
    """An OwnTracks location taken `ago` seconds before now (the gateway refuses fixes from the future and
    does not let week-old ones move a courier)."""
    return {"_type": "location", "lat": lat, "lon": lon, "tst": int(time.time() - ago), **extra}


@pytest.fixture
def ids(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique ids per test, so tests can share one gateway: ids('A') -> 'A-<n>-<test name>'."""
    n = next(_ids)
    stem = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-24:]
    return lambda prefix: f"{prefix}-{n}-{stem}"


def eventually(condition: Callable[[], Any], what: str, *, timeout: float = DEADLINE) -> Any:
    """Re-check `condition` (e.g. a query of the store) until it is truthy; return its value. Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


# ---------------------------------------------------------------- gateway processes


@dataclass
class GatewayProcess:
    """`fieldgate serve` (or `fieldgate bridge`) as a child process, logs kept for failure output."""

    args: list[str]
    data_dir: Path
    store: Path | str = ""  # its store: fieldgate.db in data_dir, or a PostgreSQL URL
    port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None
    _new_line: threading.Condition = field(default_factory=threading.Condition)
    _queries: Queries | None = None

    def __post_init__(self) -> None:
        self.store = self.store or db_path(self.data_dir)

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """`fieldgate ARGS` on this gateway's data directory and store (`fieldgate`, which takes `kw`)."""
        return fieldgate(*args, "--data-dir", str(self.data_dir), env=self.store_env, **kw)

    @property
    def store_env(self) -> dict[str, str]:
        """The environment that points a command at its store when that is not its data directory's."""
        return {"FIELDGATE_STORAGE_URL": self.store} if isinstance(self.store, str) else {}

    @property
    def queries(self) -> Queries:
        """A reader of its store, opened at the first use and kept (one PostgreSQL pool for all of a test's reads)."""
        if self._queries is None:
            self._queries = Queries(self.store)
        return self._queries

    def start(self, ready_pattern: str = r"fieldgate ready mqtt=[^ ]*:(\d+)") -> GatewayProcess:
        self._ready.clear()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("FIELDGATE_DATA_DIR", None)
        env.pop("FIELDGATE_CONFIG", None)
        env.pop("FIELDGATE_STORAGE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *self.args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc, re.compile(ready_pattern)), daemon=True)
        self._reader.start()
        if not self._ready.wait(DEADLINE):
            self.kill()
            raise AssertionError("gateway did not get ready:\n" + "\n".join(self.lines[-40:]))
        return self

    def _read(self, proc: subprocess.Popen[str], ready: re.Pattern[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._new_line:
                self.lines.append(line.rstrip())
                self._new_line.notify_all()
            if not self._ready.is_set() and (m := ready.search(line)):
                if m.groups():
                    self.port = int(m.group(1))
                if h := re.search(r" http=\S+:(\d+)", line):
                    self.http_port = int(h.group(1))
                self._ready.set()

    @property
    def url(self) -> str:
        """The base URL of its HTTP side."""
        assert self.http_port, "this gateway logged no http= address"
        return f"http://127.0.0.1:{self.http_port}"

    def log_has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_log(self, text: str, timeout: float = DEADLINE) -> str:
        """The first log line containing `text`, waiting for it up to `timeout` seconds."""
        with self._new_line:
            if self._new_line.wait_for(lambda: any(text in line for line in self.lines), timeout):
                return next(line for line in self.lines if text in line)
        raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(self.lines[-40:]))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(DEADLINE)
        assert self._reader is not None
        self._reader.join(DEADLINE)  # every line the process wrote is in self.lines
        return code

    def kill(self) -> None:
        if self._queries is not None:
            self._queries.close()
            self._queries = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def launch(tmp: Path, *extra: str, data_dir: Path | None = None, config: dict[str, Any] | None = None,
           command: str = "serve", port: int = 0, ready: str | None = None) -> GatewayProcess:
    """The one way tests start a gateway: `fieldgate serve` (or `bridge`) on `data_dir` (default tmp/data), with
    `config` written as a broker.yaml in `tmp`; returns once it logged its ready line."""
    data = data_dir or tmp / "data"
    args = [command, "--data-dir", str(data), "--http-port", "0"]
    if command == "serve":
        args += ["--port", str(port)]
    if config is not None:
        args += ["--config", str(write_config(tmp / f"broker-{next(_ids)}.yaml", **config))]
    gw = not_started(data, config, [*args, *extra])
    return gw.start(ready) if ready else gw.start()


def not_started(data: Path, config: dict[str, Any] | None = None, args: list[str] | None = None) -> GatewayProcess:
    """A gateway on `data` and the store `config` names, not (yet) started: what commands that need no running
    gateway are given (`gw.cli`, `add_user`)."""
    return GatewayProcess(args or [], data, ((config or {}).get("storage") or {}).get("url", ""))


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways in this test's temp dir (see `launch`); all are killed at the end."""
    started: list[GatewayProcess] = []

    def _spawn(*extra: str, **kw: Any) -> GatewayProcess:
        gw = launch(tmp_path, *extra, **kw)
        started.append(gw)
        return gw

    yield _spawn
    for gw in started:
        gw.kill()


TEST_CONFIG = {"bridge": {"task_retry_seconds": 1.0}, "log_level": "DEBUG"}


@pytest.fixture(scope="session")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One embedded gateway shared by the flow tests (each test uses its own ids), its tables in fieldgate.db."""
    gw = launch(tmp_path_factory.mktemp("shared-gateway"), config=TEST_CONFIG)
    yield gw
    gw.kill()


@pytest.fixture(scope="session")
def postgresql_gateway(tmp_path_factory: pytest.TempPathFactory, postgres_server: str) -> Iterator[GatewayProcess]:
    """`sqlite_gateway` with its tables in a PostgreSQL database (`storage.url`; its bridge joins over loopback
    MQTT)."""
    url = engines.new_database(postgres_server, "shared_gateway")
    gw = launch(tmp_path_factory.mktemp("shared-gateway-pg"), config={**TEST_CONFIG, "storage": {"url": url}})
    yield gw
    gw.kill()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request: pytest.FixtureRequest) -> GatewayProcess:
    """The session's shared gateway on each store in turn: a test taking it runs against both, so the two stores
    cannot drift. Reach its tables through `gw.store` and its CLI through `gw.cli`."""
    return request.getfixturevalue(f"{request.param}_gateway")


# ---------------------------------------------------------------- the command line

PASSWORD = "s3cret-Passw0rd"  # of the users tests add


def add_user(gw: GatewayProcess, name: str, role: str, user_id: str | None = None, *, password: str = PASSWORD) -> None:
    """A user in a gateway's store (created if it is not there yet), as `fieldgate users add --init` makes it (the
    CLI's own tests run that; here it is one insert, not a process start)."""
    gw.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(gw.store)
    try:
        store.users.add(name, Role(role), user_id, password)
    finally:
        store.close()


def fieldgate(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT,
              columns: int = 200, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The one way tests run the CLI: `fieldgate ARGS` in a subprocess, as an operator would, with a clean
    environment (no FIELDGATE_* of the caller; HOME and others only as `env` gives them)."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "COLUMNS": str(columns),
             "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=clean)


# ---------------------------------------------------------------- Debian's mosquitto, the second broker


@pytest.fixture
def mosquitto_at(tmp_path: Path) -> Callable[[int], AbstractContextManager[int]]:
    """`with mosquitto_at(port):` runs a fresh Debian mosquitto on 127.0.0.1:port for the block."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto package")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")

    @contextmanager
    def run(port: int) -> Iterator[int]:
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 100000\nlog_dest stderr\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            eventually(lambda: proc.poll() is not None or engines.accepts(port), "mosquitto listening")
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto did not start: {proc.stderr.read() if proc.stderr else ''}")
            yield port
        finally:
            proc.terminate()
            proc.wait(DEADLINE)

    return run


@pytest.fixture
def mosquitto(mosquitto_at: Callable[[int], AbstractContextManager[int]]) -> Iterator[int]:
    """A fresh mosquitto on 127.0.0.1; its port."""
    with mosquitto_at(free_port()) as port:
        yield port


@contextmanager
def _engine(started: AbstractContextManager[Any]) -> Iterator[Any]:
    """An engine of `bench.engines` for the session; its Debian package missing skips the tests that need it (fails
    them in CI, whose .ci/run installs it)."""
    try:
        with started as engine:
            yield engine
    except engines.EngineMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; .ci/run installs it")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One PostgreSQL server per test session (per xdist worker), `bench.engines.postgres`; its URL without a
    database name."""
    with _engine(engines.postgres(DEADLINE)) as url:
        yield url


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RabbitMQ tests run on one xdist worker (`--dist loadgroup`): one node is started, not one per worker."""
    for item in items:
        if item.get_closest_marker("rabbitmq"):
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[engines.RabbitCluster]:
    """One RabbitMQ node per test session, on the one xdist worker running its tests: `bench.engines.rabbitmq`, the
    README's config and plugins, the bridge's user with the README's permissions; anonymous MQTT clients act as the
    guest user. As a cluster of one, for `rabbitmqctl` (`.ctl`)."""
    with _engine(engines.rabbitmq(1)) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def rabbitmq(rabbitmq_cluster: engines.RabbitCluster) -> engines.RabbitNode:
    """The session's RabbitMQ node (`rabbitmq_cluster`)."""
    return rabbitmq_cluster.nodes[0]


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL server; its URL."""
    return engines.new_database(postgres_server, request.node.name)


def store_config(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    """The config that puts a gateway's tables where a test parametrised "sqlite"/"postgresql" asks: nothing (its
    data directory's fieldgate.db), or `storage.url` of a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return {}
    return {"storage": {"url": engines.new_database(request.getfixturevalue("postgres_server"), name)}}


@pytest.fixture(params=["sqlite", "postgresql"])
def on_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The config (`store_config`) of a test's own gateway on each store in turn: a test taking it runs on both."""
    return store_config(request, request.node.name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's store lives: a SQLite file in its tmp_path, or a fresh database on the session's PostgreSQL.
    A test taking it runs against both stores, so the two cannot drift."""
    if request.param == "sqlite":
        return tmp_path / "fieldgate.db"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------- MQTT peers


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.payload)


class Peer:
    """A real paho MQTT client that records what it receives; every wait has a deadline."""

    def __init__(self, port: int, client_id: str = "", *, clean_session: bool = True,
                 subscribe: tuple[str, ...] = (), will: tuple[str, bytes, bool] | None = None,
                 auto_ack: bool = True, keepalive: int = 30, auth: tuple[str, str] | None = None,
                 transport: str = "tcp", tls_ca: Path | None = None) -> None:
        self.port = port
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                                  protocol=paho.MQTTv311, manual_ack=not auto_ack, transport=transport)
        if auth:
            self.client.username_pw_set(*auth)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.session_present: bool | None = None
        self._connected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=will[2])
        self.client.connect("127.0.0.1", port, keepalive=keepalive)
        self.client.loop_start()
        assert self._connected.wait(DEADLINE), "peer did not connect"
        if subscribe:
            self.subscribe(*subscribe)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.session_present = flags.session_present
        if not reason.is_failure:
            self._connected.set()

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup)))
            self._cond.notify_all()

    def subscribe(self, *topics: str, qos: int = 1) -> list[int]:
        done = threading.Event()
        granted: list[int] = []

        def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            granted.extend(int(c.value) for c in codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(t, qos) for t in topics])
        assert done.wait(DEADLINE), f"no SUBACK for {topics}"
        return granted

    def publish(self, topic: str, payload: Any, *, qos: int = 1, retain: bool = False) -> None:
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(DEADLINE)
        assert info.is_published(), f"publish to {topic} got no PUBACK"

    def wait_for(self, topic: str, where: Callable[[Any], bool] = lambda d: True, *, timeout: float = DEADLINE,
                 count: int = 1) -> list[Any]:
        """Wait until `count` JSON messages on `topic` satisfy `where`; return their decoded payloads."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m.json() for m in self.messages if m.topic == topic and where(m.json())]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(f"{m.topic} {m.payload[:200]!r}" for m in self.messages[-20:])
                    raise AssertionError(f"wanted {count} on {topic}, got {len(found)}; last seen:\n{seen}")
                self._cond.wait(left)

    def wait_until(self, condition: Callable[[], bool], what: str, *, timeout: float = DEADLINE) -> None:
        """Wait until `condition()` (re-checked on every message) holds."""
        with self._cond:
            if not self._cond.wait_for(condition, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def on(self, topic: str, where: Callable[[Any], bool] = lambda d: True) -> list[Any]:
        """What arrived on `topic` so far (no waiting)."""
        with self._cond:
            return [m.json() for m in self.messages if m.topic == topic and where(m.json())]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def _peer(port: int, client_id: str = "", **kw: Any) -> Peer:
        p = Peer(port, client_id, **kw)
        made.append(p)
        return p

    yield _peer
    for p in made:
        p.close()


# ---------------------------------------------------------------- raw MQTT, for what paho will not do


def raw_connect(port: int, client_id: str, *, keepalive: int = 60, clean: bool = True,
                will: tuple[str, bytes, int, bool] | None = None, username: str | None = None,
                password: str | None = None) -> tuple[Any, bytes]:
    """A bare TCP MQTT 3.1.1 connection (no pings, no acks unless the test sends them); (socket, CONNACK)."""
    import struct

    from gateway.broker.codec import remaining_length

    def utf8(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("!H", len(raw)) + raw

    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
        payload += utf8(will[0]) + struct.pack("!H", len(will[1])) + will[1]
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    body = utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive) + payload
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(b"\x10" + remaining_length(len(body)) + body)
    return sock, recv_exactly(sock, 4)


def recv_exactly(sock: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------- shared by several test files


def keys(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            out += keys(sub, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


SHOP = (31.2304, 121.4737)


DOOR = offset(*SHOP, 3000, 0)  # the customer: 3 km north of the shop


def register(gw: GatewayProcess, shop: str, couriers: dict[str, str], **rule: Any) -> None:
    """Register a shop and its couriers in the running gateway's store (what `fieldgate shops add` and
    `fieldgate couriers add` write; test_the_registry_is_changed_from_the_cli_without_a_restart runs those)."""
    store = Store(gw.store)
    try:
        with store.transaction():
            store.put_shop(Shop(shop_id=shop, name=f"Shop {shop}", lat=SHOP[0], lon=SHOP[1], **rule), datetime.now(UTC))
            for courier_id, name in couriers.items():
                store.put_courier(Courier(courier_id=courier_id, name=name, shops=[shop], phone="+8613900001111"))
    finally:
        store.close()


def at(north_m: float, east_m: float = 0, *, ago: float = 0, vel: float | None = None) -> dict[str, Any]:
    lat, lon = offset(*SHOP, north_m, east_m)
    fix = {"_type": "location", "lat": lat, "lon": lon, "tst": int(datetime.now(UTC).timestamp() - ago)}
    return fix | ({"vel": vel} if vel is not None else {})


def shop_order(oid: str, shop: str, **changes: Any) -> dict[str, Any]:
    return order(**{"order_id": oid, "shop_id": shop, "courier_id": None,
                    "address": {"text": "Moon Bay 7", "lat": DOOR[0], "lon": DOOR[1]}, **changes})


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 8


def run_flow(port: int, peers, ids) -> None:
    """Order → shop + courier task → receipt → delivered ack → status → status ack."""
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    ordersys = peers(port, subscribe=("ordersys/acks",))
    terminal = peers(port, subscribe=(f"shops/{shop}/orders",))
    phone = peers(port, subscribe=(f"couriers/{courier}/tasks",))

    ordersys.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "accepted")
    terminal.wait_for(f"shops/{shop}/orders", lambda e: e["kind"] == "created")
    [task] = phone.wait_for(f"couriers/{courier}/tasks")
    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["kind"] == "delivered_to_courier")
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "picked_up"})
    ordersys.wait_for("ordersys/acks", lambda a: a["order_id"] == oid and a["status"] == "picked_up")


def barrier(peer: Peer, courier: str) -> None:
    """Wait until the bridge has processed everything `peer` published so far: one client's messages are
    handled in order, so the Rejection of a deliberately bad fix comes after all of them.
    `peer` must already subscribe to couriers/<courier>/errors."""
    errors = f"couriers/{courier}/errors"
    seen = len(peer.on(errors))
    peer.publish(f"couriers/{courier}/gps", {"_type": "location", "barrier": True})
    peer.wait_for(errors, count=seen + 1)
