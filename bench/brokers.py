"""The three brokers a benchmark compares, each started fresh on 127.0.0.1 by the benchmark itself.

- fieldgate: `fieldgate serve` — embedded broker, durable (broker.db + fieldgate.db), bridge on;
- amqtt: stock amqtt 0.12.1 with its default configuration (default plugins), as a user would run it;
- mosquitto: Debian's mosquitto 2 (installed here when missing, if the machine allows; otherwise
  skipped with the reason), anonymous, in-memory (its default `persistence false`).

The cingest workload's publishers are Debian's `mosquitto_pub` (mosquitto-clients), found the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("fieldgate", "amqtt", "mosquitto")

STOCK_AMQTT = """
import asyncio, sys
from amqtt.broker import Broker

async def main(port):
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}})
    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[str]
    data_dir: Path | None = None
    log: list[str] = field(default_factory=list)

    def rss_bytes(self) -> int:
        """Resident memory of the broker process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_tried: set[str] = set()  # packages apt-get was asked for already (once per run is enough)


def _which(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def debian_binary(name: str, package: str) -> str | None:
    """`name`'s path; tries `apt-get install package` once when it is missing (the bench's setup step)."""
    found = _which(name)
    if found or os.geteuid() != 0 or not shutil.which("apt-get") or package in _tried:
        return found
    _tried.add(package)
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], capture_output=True,
                   timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return _which(name)


def mosquitto_binary() -> str | None:
    return debian_binary("mosquitto", "mosquitto")


def mosquitto_pub_binary() -> str | None:
    """The C load generator of the cingest workload (Debian's mosquitto-clients)."""
    return debian_binary("mosquitto_pub", "mosquitto-clients")


def _wait_port(port: int, proc: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not open its port in time")


def start(name: str, workdir: Path, *, fieldgate_config: str = "") -> Running | str:
    """Start one broker; a string instead says why it cannot run here."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = None
    if name == "fieldgate":
        data_dir = workdir / "data"
        config = workdir / "broker.yaml"
        config.write_text(fieldgate_config or "{}\n")
        cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--http-port", "0", "--data-dir",
               str(data_dir), "--config", str(config)]
    elif name == "amqtt":
        cmd = [sys.executable, "-c", STOCK_AMQTT, str(port)]
    else:
        binary = mosquitto_binary()
        if binary is None:
            return "mosquitto is not installed and could not be installed here (apt-get install mosquitto)"
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 20\nset_tcp_nodelay true\n")
        cmd = [binary, "-c", str(conf)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    running = Running(name, port, proc, data_dir)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.log.append(line.rstrip())
            if re.search(r"fieldgate ready|^ready", line):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    if name != "mosquitto" and not ready.wait(60):
        running.stop()
        return f"{name} did not start: " + " | ".join(running.log[-5:])
    _wait_port(port, proc, deadline)
    return running
