"""fieldgate simulate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.common import ConfigOpt, DataDirOpt, JsonOpt, VerboseOpt, console, gateway_pid, progress, settings, write_store
from gateway.errors import FieldgateError


def simulate_cmd(
    shops: Annotated[int, typer.Option(min=1, max=10, help="shops around the city centre")] = 3,
    couriers: Annotated[int, typer.Option(min=1, max=200, help="couriers riding for them")] = 12,
    orders: Annotated[int, typer.Option(min=1, max=100_000, help="orders over the day")] = 150,
    broker: Annotated[str | None, typer.Option(help="the gateway's broker, mqtt://[user:pass@]HOST:PORT "
                                               "[default: mqtt.host:mqtt.port of the config]")] = None,
    seed: Annotated[int, typer.Option(help="the same seed plays the same day")] = 1,
    minutes: Annotated[float, typer.Option(min=0.1, help="real minutes over which orders arrive")] = 5.0,
    scale: Annotated[float, typer.Option(min=1, help="distances are this many times shorter than a real city's "
                                         "(couriers ride at real e-bike speeds)")] = 20.0,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Play a simulated day against the running gateway: shops registered around a city centre, couriers
    riding jittered routes and sending OwnTracks fixes, a few riding out of coverage, some refusing, some
    breaking down, customers changing addresses. Ends with a summary; exits 1 if anything was lost.

    Example:

        fieldgate simulate --shops 3 --couriers 12 --orders 150 --seed 7
    """
    from gateway.bridge.transport import BrokerUrl  # MQTT, loaded only by the commands that speak it
    from gateway.simulate import Day, make_plan, registry

    s = settings(config, data_dir, verbose)
    if gateway_pid(s) is None:
        raise FieldgateError(f"no gateway is running on data directory {s.data_dir}",
                             hint="Start `fieldgate serve` first (the day registers its shops and couriers there).")
    plan = make_plan(shops=shops, couriers=couriers, orders=orders, seed=seed, scale=scale, minutes=minutes)
    store = write_store(s)
    shop_list, courier_list = registry(plan)
    with store.transaction():
        for shop in shop_list:
            store.put_shop(shop, datetime.now(UTC))
        for courier in courier_list:
            store.put_courier(courier)
    store.close()
    host = "127.0.0.1" if s.mqtt.host in ("0.0.0.0", "::") else s.mqtt.host
    url = BrokerUrl.parse(broker) if broker else BrokerUrl(host, s.mqtt.port)
    with progress(disable=as_json) as bar:
        task = bar.add_task("simulated day: orders done", total=len(plan.orders))
        summary = Day(plan, url, progress=lambda done, total: bar.update(task, completed=done)).run()
    figures = summary.figures()
    if as_json:
        print(json.dumps(figures))
    else:
        table = Table("figure", "value", title=f"simulated day (seed {seed})")
        for key, value in figures.items():
            table.add_row(key.replace("_", " "), "-" if value is None else str(value))
        console.print(table)
        for what in summary.lost_what[:20]:
            console.print(f"[red]lost:[/] {what}")
    if summary.lost:
        raise typer.Exit(1)
