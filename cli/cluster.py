"""fieldgate cluster check: the RabbitMQ nodes the bridges run on, as the bridges see them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from cli.common import Column, JsonOpt, show_rows

app = typer.Typer(help="The RabbitMQ cluster beyond one machine.", no_args_is_help=True)


@app.command("check")
def check_cmd(
    engine: Annotated[list[str], typer.Option(help="a RabbitMQ node, as the bridges are given it: "
                                              "amqp://USER:PASS@HOST:5672/VHOST; repeat for each node")],
    as_json: JsonOpt = False,
) -> None:
    """Reach each RabbitMQ node and show the bridges' inbound queue there: whether it is declared, how many bridges
    consume it (one active, the others waiting to take over) and how many messages wait. Exit code 1 if a node is
    unreachable or the queue is missing.

    Example:

        fieldgate cluster check --engine amqp://fg:secret@10.0.0.1/shops --engine amqp://fg:secret@10.0.0.2/shops
    """
    from gateway.bridge.amqp import EngineUrl, check_node

    checks = [check_node(EngineUrl.parse(url)) for url in engine]
    show_rows([asdict(c) for c in checks], [
        Column("node", lambda r: r["node"]),
        Column("up", lambda r: "[green]yes[/]" if r["reachable"] else "[red]no[/]"),
        Column("queue", lambda r: "yes" if r["queue_declared"] else "[red]no[/]"),
        Column("bridges", lambda r: "-" if r["consumers"] is None else str(r["consumers"]), justify="right"),
        Column("backlog", lambda r: "-" if r["backlog"] is None else f"{r['backlog']:,}", justify="right"),
        Column("problem", lambda r: r["problem"] or ""),
    ], title="RabbitMQ nodes", empty="no nodes", as_json=as_json)
    if any(c.problem for c in checks):
        raise typer.Exit(1)
