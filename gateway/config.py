"""Configuration: the only place a broker.yaml key is read.

`Settings` mirrors broker.yaml key for key; its defaults are the embedded defaults, and
tests/test_config.py fails if the checked-in broker.yaml or docs/config.md disagree with them.
Precedence, highest first: command-line flags, environment (FIELDGATE_CONFIG,
FIELDGATE_DATA_DIR), the config file, these defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

CONFIG_ENV = "FIELDGATE_CONFIG"
DATA_DIR_ENV = "FIELDGATE_DATA_DIR"
DEFAULT_CONFIG_NAME = "broker.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttListener(_Section):
    host: str = Field(default="127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(default=1883, ge=0, le=65535, description="TCP port; 0 picks a free one")


class TlsListener(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=0, le=65535)
    certfile: Path | None = None
    keyfile: Path | None = None


class WebSocketListener(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class BrokerSettings(_Section):
    max_inflight_messages: int = Field(default=20, ge=0, le=65535)
    retry_interval_seconds: float = Field(default=20.0, gt=0)
    max_queued_messages: int = Field(default=10000, ge=0)
    max_queued_bytes: int = Field(default=16_777_216, ge=0)
    queue_full_policy: Literal["reject_new", "drop_oldest"] = "reject_new"
    session_expiry_seconds: int = Field(default=604_800, ge=0)
    max_packet_bytes: int = Field(default=1_048_576, ge=64, le=268_435_455)
    max_topic_length: int = Field(default=256, ge=16, le=65535)
    max_topic_levels: int = Field(default=16, ge=2, le=1000)
    max_publish_rate: float = Field(default=100.0, ge=0)
    publish_burst: int = Field(default=1000, ge=1)
    max_connections: int = Field(default=20_000, ge=0)


class BridgeSettings(_Section):
    client_id: str = Field(default="fieldgate-bridge", min_length=1, max_length=64)
    in_process: bool = True
    task_retry_seconds: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=65536, ge=256)
    dead_letter_keep_bytes: int = Field(default=4096, ge=0)
    keepalive: int = Field(default=30, ge=5, le=3600)


class StorageSettings(_Section):
    data_dir: Path = Path("data")
    synchronous: Literal["full", "normal"] = "full"
    retention_days: int = Field(default=180, ge=0)


class Settings(_Section):
    mqtt: MqttListener = MqttListener()
    tls: TlsListener = TlsListener()
    websocket: WebSocketListener = WebSocketListener()
    allow_anonymous: bool = True
    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    bridge: BridgeSettings = BridgeSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir


def find_config(explicit: Path | None) -> Path | None:
    """The config file to read: --config, else $FIELDGATE_CONFIG, else ./broker.yaml if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist", hint="Check the --config path.")
        return explicit
    if env := os.environ.get(CONFIG_ENV):
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={env} names no file", hint=f"Unset {CONFIG_ENV} or fix the path.")
        return path
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a YAML mapping of keys to values")
    return data


def load_settings(
    config: Path | None = None, *, data_dir: Path | None = None, port: int | None = None,
    no_anonymous: bool = False,
) -> Settings:
    """Settings from file + environment + overrides. Relative data_dir is relative to the config file."""
    path = find_config(config)
    raw = read_config(path) if path else {}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path or 'configuration'} is invalid: {problems}") from exc
    storage = settings.storage
    if data_dir is None and (env := os.environ.get(DATA_DIR_ENV)):
        data_dir = Path(env)
    if data_dir is not None:
        storage = storage.model_copy(update={"data_dir": data_dir})
    elif path is not None and not storage.data_dir.is_absolute():
        storage = storage.model_copy(update={"data_dir": path.parent / storage.data_dir})
    mqtt = settings.mqtt if port is None else settings.mqtt.model_copy(update={"port": port})
    tls = settings.tls
    if path is not None:
        tls = tls.model_copy(update={k: path.parent / v for k in ("certfile", "keyfile")
                                     if (v := getattr(tls, k)) is not None and not v.is_absolute()})
    if tls.enabled and (tls.certfile is None or tls.keyfile is None):
        raise ConfigError("tls.enabled needs tls.certfile and tls.keyfile",
                          hint="`fieldgate certs dev` makes a self-signed pair for trying it.")
    anonymous = settings.allow_anonymous and not no_anonymous
    return settings.model_copy(update={"storage": storage, "mqtt": mqtt, "tls": tls, "allow_anonymous": anonymous})
