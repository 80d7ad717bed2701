"""The operator CLI: help with examples everywhere, readable tables, errors with hints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import typer
from conftest import ROOT, barrier, fieldgate, fix, order

from cli.main import app, run
from gateway.core.models import SCHEMAS


def all_commands() -> list[tuple[str, Any]]:
    out = []

    def walk(cmd: Any, path: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), "")
    assert len(out) == 42, [p for p, _ in out]
    return out


@pytest.mark.parametrize(("path", "command"), all_commands(), ids=[p for p, _ in all_commands()])
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and "Example:" in command.help, f"`fieldgate {path}` needs help with an Example:"
    assert f"fieldgate {path}" in command.help.split("Example:")[1]


def test_commands_read_the_live_database_while_the_gateway_runs(gateway, peers, ids):
    oid, shop, courier = ids("A"), ids("shop"), ids("c")
    phone = peers(gateway.port, subscribe=(f"couriers/{courier}/tasks", f"couriers/{courier}/errors"))
    phone.publish("orders/in", order(order_id=oid, shop_id=shop, courier_id=courier))
    [task] = phone.wait_for(f"couriers/{courier}/tasks")
    phone.publish(f"couriers/{courier}/receipts", {"msg_ids": [task["msg_id"]]})
    phone.publish(f"couriers/{courier}/gps", fix(31.20, 121.44))  # 4.6 km from the door: not arriving yet
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "en_route"})
    barrier(phone, courier)
    listed = gateway.cli("orders", "list", "--shop", shop)
    assert listed.returncode == 0 and oid in listed.stdout and "en_route" in listed.stdout

    shown = gateway.cli("orders", "show", oid)
    assert shown.returncode == 0
    for kind in ("created", "assigned", "delivered_to_courier", "status"):
        assert kind in shown.stdout
    assert "Li Na" in shown.stdout

    couriers = fieldgate("couriers", "list", "--wide", env={"FIELDGATE_DATA_DIR": str(gateway.data_dir),
                                                                **gateway.store_env})
    assert couriers.returncode == 0
    line = next(line for line in couriers.stdout.splitlines() if courier in line)
    assert "yes" in line and "31.20000,121.44000" in line and oid in line

    stats = json.loads(gateway.cli("stats", "--json").stdout)
    assert stats["events_by_kind"]["delivered_to_courier"] >= 1 and stats["dead_letters"] >= 1

    follow = subprocess.Popen([sys.executable, "-m", "cli.main", "track", oid, "--timeout", "30", "--data-dir",
                               str(gateway.data_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **gateway.store_env})
    phone.publish(f"couriers/{courier}/status", {"order_id": oid, "status": "delivered"})
    out, _ = follow.communicate(timeout=60)
    assert follow.returncode == 0 and "en_route" in out and f"order {oid} is delivered" in out


def test_errors_print_message_and_hint_and_exit_1(tmp_path, capsys):
    assert run(["orders", "list", "--data-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "error: no fieldgate database at" in err and "hint:" in err
    assert run(["serve", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_schemas_export_writes_every_schema(tmp_path):
    assert run(["schemas", "export", "--dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.glob("*.json")} == {f"{name}.json" for name in SCHEMAS} | {"openapi.json"}


def test_unknown_command_is_a_usage_error():
    assert fieldgate("frobnicate").returncode == 2
