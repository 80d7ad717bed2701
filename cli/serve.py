"""fieldgate serve / fieldgate bridge."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import ConfigOpt, DataDirOpt, VerboseOpt, settings
from gateway import logs
from gateway.bridge.transport import BrokerUrl

HttpPortOpt = Annotated[int | None, typer.Option(help="TCP port of the HTTP listener; 0 picks a free one "
                                                 "[default: http.port in the config, 8088]")]


def serve_cmd(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="address of the MQTT listener; 0.0.0.0 for every interface "
                                             "[default: mqtt.host in the config, 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port of the MQTT listener; 0 picks a free one "
                                             "[default: mqtt.port in the config, 1883]")] = None,
    no_anonymous: Annotated[bool, typer.Option("--no-anonymous", help="demand credentials on every listener, "
                                               "loopback included (overrides allow_anonymous)")] = False,
    http_port: HttpPortOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the embedded MQTT broker, the bridge and the HTTP side until Ctrl-C or SIGTERM.

    Example:

        fieldgate serve --data-dir /var/lib/fieldgate --port 1883
    """
    from gateway.server import serve  # the broker (amqtt) is loaded only by the commands that run it

    s = settings(config, data_dir, verbose, port=port, host=host, no_anonymous=no_anonymous, http_port=http_port)
    logs.setup(s.log_level)
    serve(s)


def bridge_cmd(
    broker: Annotated[str | None, typer.Option(help="the MQTT broker to bridge: mqtt://[user:pass@]HOST:PORT")] = None,
    engine: Annotated[list[str] | None, typer.Option(
        help="a RabbitMQ node to bridge (its MQTT plugin serves the clients): amqp://USER:PASS@HOST:5672/VHOST; "
             "repeat for each node of a cluster (the bridge fails over between them)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    http_port: HttpPortOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run only the bridge (and the HTTP side), against an existing MQTT broker (Mosquitto, EMQX, …) or a
    RabbitMQ cluster. While the broker is down it retries with backoff, logging each attempt.

    Example:

        fieldgate bridge --broker mqtt://127.0.0.1:1883 --data-dir ./data

    On a RabbitMQ cluster, one --engine per node; any number of bridges share the work when they share a
    PostgreSQL store (storage.url, or $FIELDGATE_STORAGE_URL):

        FIELDGATE_STORAGE_URL=postgresql://fg:secret@10.0.0.5/fieldgate \\
            fieldgate bridge --engine amqp://fg:secret@10.0.0.1/shops --engine amqp://fg:secret@10.0.0.2/shops
    """
    from gateway.server import run_bridge

    if (broker is None) == (not engine):
        raise typer.BadParameter("give either --broker (an MQTT broker) or --engine (RabbitMQ nodes), not both",
                                 param_hint="--broker / --engine")
    s = settings(config, data_dir, verbose, http_port=http_port)
    logs.setup(s.log_level)
    if engine:
        from gateway.bridge.amqp import EngineUrl, amqp_transport
        from gateway.server import partition_ownership

        urls = [EngineUrl.parse(u) for u in engine]
        run_bridge(s, amqp_transport(urls, partition_ownership(s)), ", ".join(map(str, urls)))
    else:
        from gateway.bridge.worker import over_mqtt

        url = BrokerUrl.parse(broker or "")
        run_bridge(s, over_mqtt(s, lambda: url), str(url))
