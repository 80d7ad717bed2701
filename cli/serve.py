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
    broker: Annotated[str, typer.Option(help="the broker to bridge: mqtt://[user:pass@]HOST:PORT")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    http_port: HttpPortOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run only the bridge (and the HTTP side), against an existing broker (Mosquitto, EMQX, …). While the broker
    is down it retries with backoff, logging each attempt.

    Example:

        fieldgate bridge --broker mqtt://127.0.0.1:1883 --data-dir ./data
    """
    from gateway.server import run_bridge

    url = BrokerUrl.parse(broker)
    s = settings(config, data_dir, verbose, http_port=http_port)
    logs.setup(s.log_level)
    run_bridge(s, url)
