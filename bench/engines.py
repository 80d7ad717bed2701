"""The engines beyond one machine, started for the tests and `python -m bench scale`: Debian's PostgreSQL and
RabbitMQ (one node, or a cluster of several on loopback), each in a temporary folder, on free ports of 127.0.0.1.

RabbitMQ runs with the README's files: `contrib/rabbitmq.conf` (its listeners moved to free ports,
anonymous MQTT clients allowed for the test clients) and `contrib/enabled_plugins`, and the bridge's
user with the permissions the README gives it, read from the README's own `rabbitmqctl` command. A
cluster forms by classic peer discovery; its nodes share one Erlang cookie and one port mapper.
PostgreSQL runs `initdb` as the `postgres` user when run as root (it refuses root), with trust auth
for the user `fieldgate` and fsync off (these runs kill bridges, never the database).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.brokers import free_port

ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
BRIDGE_USER, BRIDGE_SECRET = "fieldgate-bridge", "a long secret"


class EngineMissing(Exception):
    """A Debian package the run needs is not installed (its name is the message's hint)."""


def wait_until(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll `condition` until it is truthy (its value) or `timeout` seconds pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def quiet_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): RabbitMQ takes seconds to open its listeners, and a
    port from `free_port` may meanwhile become some connection's source port or another listener."""
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port between 20000 and 32000")


# ---------------------------------------------------------------- PostgreSQL


def postgres_binary(name: str) -> str | None:
    """Debian's PostgreSQL binaries live in /usr/lib/postgresql/<version>/bin, off the PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


@contextmanager
def postgres(timeout: float = 60) -> Iterator[str]:
    """A PostgreSQL server in a temporary folder; yields its URL without a database name."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise EngineMissing("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fieldgate-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    port, data = free_port(), folder / "data"
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)  # noqa: E731
    run(initdb, "-D", str(data), "-U", "fieldgate", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "-t", str(int(timeout)), "start")
    try:
        yield f"postgresql://fieldgate@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server: str, name: str) -> str:
    """A fresh, empty database on a PostgreSQL server (named after `name`, made unique); its URL."""
    import psycopg

    unique = "t" + re.sub(r"[^a-z0-9]", "", name.lower())[-40:] + f"{os.getpid()}{time.monotonic_ns() % 10**9}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{unique}"')  # type: ignore[arg-type]  # our own name, not user input
    return f"{server}/{unique}"


# ---------------------------------------------------------------- RabbitMQ


def rabbitmq_definitions() -> dict[str, Any]:
    """RabbitMQ definitions: `guest` (what anonymous MQTT clients act as) may do anything; the bridge's user has the
    permissions the README gives it, read from the README's own command."""
    [(configure, write, read)] = re.findall(rf"rabbitmqctl set_permissions -p / {BRIDGE_USER} '([^']+)' '([^']+)' "
                                            r"'([^']+)'", (ROOT / "README.md").read_text())

    def user(name: str, password: str, tags: list[str]) -> dict[str, Any]:
        salt = os.urandom(4)  # rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))
        digest = base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
        return {"name": name, "password_hash": digest, "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": tags}

    return {"users": [user("guest", "guest", ["administrator"]), user(BRIDGE_USER, BRIDGE_SECRET, [])],
            "vhosts": [{"name": "/"}, {"name": "empty"}],  # empty: no bridge ever connects there
            "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
                            {"user": "guest", "vhost": "empty", "configure": ".*", "write": ".*", "read": ".*"},
                            {"user": BRIDGE_USER, "vhost": "/", "configure": configure, "write": write,
                             "read": read}]}


@dataclass
class RabbitNode:
    name: str  # its Erlang node name
    amqp_port: int
    mqtt_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        """The bridge's URL of this node (its user and password, the default vhost)."""
        return f"amqp://{BRIDGE_USER}:{BRIDGE_SECRET}@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class RabbitCluster:
    """RabbitMQ nodes on loopback, clustered when there are several."""

    folder: Path
    env: dict[str, str]
    nodes: list[RabbitNode] = field(default_factory=list)

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    def ctl(self, *args: str, node: RabbitNode | None = None) -> str:
        """`rabbitmqctl ARGS` against `node` (default: the first running one); its output."""
        target = node or next(n for n in self.nodes if n.running)
        done = subprocess.run([str(RABBITMQCTL), "-n", target.name, *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def leaders(self, prefix: str) -> dict[str, str]:
        """Quorum queue name -> the node its leader is on, for the queues whose names start with `prefix`."""
        rows = json.loads(self.ctl("list_queues", "name", "leader", "--formatter", "json", "--quiet"))
        return {r["name"]: r["leader"] for r in rows if r["name"].startswith(prefix)}

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL a node (and its Erlang runtime's helpers)."""
        assert node.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(60)


def _node_config(folder: Path, node: RabbitNode, cluster: list[RabbitNode]) -> Path:
    conf = (ROOT / "contrib" / "rabbitmq.conf").read_text()  # the README's, with test listeners and anonymity
    listeners = f"127.0.0.1:{node.amqp_port}", f"127.0.0.1:{node.mqtt_port}"
    for documented, here in [("listeners.tcp.default = 5672", f"listeners.tcp.1 = {listeners[0]}"),
                             ("mqtt.listeners.tcp.default = 1883", f"mqtt.listeners.tcp.1 = {listeners[1]}"),
                             ("mqtt.allow_anonymous = false", "mqtt.allow_anonymous = true")]:
        if documented not in conf:
            raise AssertionError(f"contrib/rabbitmq.conf no longer says {documented!r}")
        conf = conf.replace(documented, here)
    conf += f"loopback_users = none\nload_definitions = {folder / 'definitions.json'}\n"
    if len(cluster) > 1:
        conf += "cluster_formation.peer_discovery_backend = classic_config\n" + "".join(
            f"cluster_formation.classic_config.nodes.{i} = {n.name}\n" for i, n in enumerate(cluster, 1))
    path = folder / f"{node.name.split('@')[0]}.conf"
    path.write_text(conf)
    return path


@contextmanager
def rabbitmq(nodes: int = 1, timeout: float = 180) -> Iterator[RabbitCluster]:
    """`nodes` RabbitMQ nodes (a cluster when more than one), started and, at the end, killed with their port mapper.
    Their listeners, distribution ports and port mapper are on 127.0.0.1 only."""
    if not RABBITMQ_SERVER.exists():
        raise EngineMissing("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    folder = Path(tempfile.mkdtemp(prefix="fieldgate-rabbitmq-"))
    epmd = quiet_port()
    env = {**os.environ, "HOME": str(folder), "ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
           "ERL_CRASH_DUMP": str(folder / "erl_crash.dump")}  # a node that fails to start dumps there, not here
    shutil.copy(ROOT / "contrib" / "enabled_plugins", folder / "enabled_plugins")  # the README's plugins
    (folder / "definitions.json").write_text(json.dumps(rabbitmq_definitions()))
    cluster = RabbitCluster(folder, env)
    cluster.nodes = [RabbitNode(f"fieldgate{epmd}n{i}@localhost", quiet_port(), quiet_port()) for i in range(nodes)]
    try:
        for node in cluster.nodes:  # one after the other: each later one joins the first's cluster
            short = node.name.split("@")[0]
            node_env = {**env, "RABBITMQ_CONFIG_FILE": str(_node_config(folder, node, cluster.nodes)),
                        "RABBITMQ_MNESIA_BASE": str(folder / "db"), "RABBITMQ_LOG_BASE": str(folder / "log" / short),
                        "RABBITMQ_NODENAME": node.name, "RABBITMQ_DIST_PORT": str(quiet_port()),
                        "RABBITMQ_PID_FILE": str(folder / f"{short}.pid"),
                        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
            output = folder / f"{short}.out"
            with output.open("wb") as out:
                node.proc = subprocess.Popen([str(RABBITMQ_SERVER)], env=node_env, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            wait_until(lambda n=node: not n.running or (accepts(n.amqp_port) and accepts(n.mqtt_port)),
                  f"RabbitMQ node {node.name} listening", timeout)
            if not node.running:
                raise RuntimeError("RabbitMQ did not start:\n" + output.read_text(errors="replace")[-3000:])
        if nodes > 1:
            cluster.ctl("await_online_nodes", str(nodes), "--timeout", str(int(timeout)))
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.running:
                cluster.kill(node)
        # The port mapper refuses to stop while a dying node is still registered with it: ask until it has.
        wait_until(lambda: b"not allowed" not in subprocess.run(["epmd", "-port", str(epmd), "-kill"],
                                                           capture_output=True, env=env).stdout,
              "RabbitMQ's port mapper stopped", 60)
        shutil.rmtree(folder, ignore_errors=True)
