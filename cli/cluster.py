"""fieldgate cluster check: the RabbitMQ nodes the bridges run on, as the bridges see them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from cli.common import Column, ConfigOpt, JsonOpt, settings, show_rows

app = typer.Typer(help="The RabbitMQ cluster beyond one machine.", no_args_is_help=True)


@app.command("check")
def check_cmd(
    engine: Annotated[list[str], typer.Option(help="a RabbitMQ node, as the bridges are given it: "
                                              "amqp://USER:PASS@HOST:5672/VHOST; repeat for each node")],
    store: Annotated[str | None, typer.Option(help="the bridges' PostgreSQL store, as storage.url gives it "
                                              "[default: storage.url of --config, or $FIELDGATE_STORAGE_URL]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reach each RabbitMQ node and show the bridges' inbound partition queues there: how many are declared, how
    many consumers the bridges have on them, and how many messages wait; and the PostgreSQL store they share: its
    schema, how many bridges run on it and how many partitions they own. Exit code 1 if a node or the store is
    unreachable, a queue is missing or a partition has no bridge.

    Example:

        fieldgate cluster check --engine amqp://fg:secret@10.0.0.1/shops --engine amqp://fg:secret@10.0.0.2/shops \\
            --store postgresql://fg:secret@10.0.0.5/fieldgate
    """
    from gateway.bridge.amqp import PARTITIONS, EngineUrl, check_node

    checks = [check_node(EngineUrl.parse(url)) for url in engine]
    show_rows([asdict(c) for c in checks], [
        Column("node", lambda r: r["node"]),
        Column("up", lambda r: "[green]yes[/]" if r["reachable"] else "[red]no[/]"),
        Column("queues", lambda r: f"{r['partitions']}/{PARTITIONS}", justify="right"),
        Column("consumers", lambda r: "-" if r["consumers"] is None else str(r["consumers"]), justify="right"),
        Column("backlog", lambda r: "-" if r["backlog"] is None else f"{r['backlog']:,}", justify="right"),
        Column("problem", lambda r: r["problem"] or ""),
    ], title="RabbitMQ nodes", empty="no nodes", as_json=as_json)
    url = store or settings(config, None).storage.url
    stored = None
    if url is not None:
        from gateway.store.postgres import check_store

        stored = check_store(url, PARTITIONS)
        show_rows([asdict(stored)], [
            Column("store", lambda r: r["store"]),
            Column("up", lambda r: "[green]yes[/]" if r["reachable"] else "[red]no[/]"),
            Column("schema", lambda r: "-" if r["schema_version"] is None else str(r["schema_version"])),
            Column("bridges", lambda r: "-" if r["bridges"] is None else str(r["bridges"]), justify="right"),
            Column("owned", lambda r: "-" if r["partitions_owned"] is None else f"{r['partitions_owned']}/{PARTITIONS}",
                   justify="right"),
            Column("problem", lambda r: r["problem"] or ""),
        ], title="PostgreSQL store", empty="", as_json=as_json)
    if any(c.problem for c in checks) or (stored is not None and stored.problem):
        raise typer.Exit(1)
