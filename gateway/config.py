"""Configuration: the only place a broker.yaml key is read.

`Settings` mirrors broker.yaml key for key; its defaults are the embedded defaults, and
tests/test_config.py fails if the checked-in broker.yaml or docs/config.md disagree with them.
Precedence, highest first: command-line flags, environment (FIELDGATE_CONFIG,
FIELDGATE_DATA_DIR, FIELDGATE_STORAGE_URL), the config file, these defaults.

Where things are, resolved once here and never from the working directory alone:

- the config file: `--config`, else `$FIELDGATE_CONFIG`, else `./broker.yaml`, else
  `$XDG_CONFIG_HOME/fieldgate/broker.yaml` (`~/.config/...`), else `/etc/fieldgate/broker.yaml`;
- the data directory: `--data-dir`, else `$FIELDGATE_DATA_DIR`, else the config file's
  `storage.data_dir` (a relative one is relative to that file), else, with no config file at
  all, `$XDG_DATA_HOME/fieldgate` (`~/.local/share/fieldgate`). A per-user default rather than a
  refusal: `fieldgate serve` works out of the box from any folder, and every command run by the
  same user from any folder finds the same data. `Settings.data_dir_origin` says which rule won.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from gateway.core import notices
from gateway.errors import ConfigError

CONFIG_ENV = "FIELDGATE_CONFIG"
DATA_DIR_ENV = "FIELDGATE_DATA_DIR"
STORAGE_URL_ENV = "FIELDGATE_STORAGE_URL"
DEFAULT_CONFIG_NAME = "broker.yaml"
SYSTEM_CONFIG = Path("/etc/fieldgate") / DEFAULT_CONFIG_NAME


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value and Path(value).is_absolute() else Path.home() / fallback


def user_config() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "fieldgate" / DEFAULT_CONFIG_NAME


def user_data_dir() -> Path:
    """Where the data lives when no config file says otherwise."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "fieldgate"


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


class HttpListener(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    tls: bool = False
    max_request_rate: float = Field(default=50.0, ge=0)


class WebhookSettings(_Section):
    give_up_hours: float = Field(default=24.0, gt=0)
    first_retry_seconds: float = Field(default=5.0, gt=0)
    max_retry_seconds: float = Field(default=3600.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_in_flight_per_endpoint: int = Field(default=4, ge=1, le=100)

    @property
    def give_up(self) -> timedelta:
        return timedelta(hours=self.give_up_hours)


class WebSettings(_Section):
    public_url: str = Field(default="", pattern=r"^(https?://[^/?#\s]+(/[^?#\s]*)?)?$")
    tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    tile_attribution: str = "© OpenStreetMap contributors"
    tracking_hours: float = Field(default=48.0, ge=0)
    session_hours: float = Field(default=168.0, gt=0)

    @property
    def tracking(self) -> timedelta:
        return timedelta(hours=self.tracking_hours)


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
    gateway_backlog: int = Field(default=5000, ge=100)


class BridgeSettings(_Section):
    client_id: str = Field(default="fieldgate-bridge", min_length=1, max_length=64)
    in_process: bool = True
    task_retry_seconds: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=65536, ge=256)
    dead_letter_keep_bytes: int = Field(default=4096, ge=0)
    keepalive: int = Field(default=30, ge=5, le=3600)
    retain_final_seconds: int = Field(default=86_400, ge=0)


class GpsSettings(_Section):
    max_future_seconds: int = Field(default=300, ge=0)
    max_age_seconds: int = Field(default=604_800, ge=1)


class AssignmentSettings(_Section):
    max_fix_age_seconds: int = Field(default=300, ge=1)
    alert_after_seconds: int = Field(default=300, ge=1)
    accept_timeout_seconds: int = Field(default=120, ge=1)
    default_max_active: int = Field(default=3, ge=1)


class EtaSettings(_Section):
    detour_factor: float = Field(default=1.3, ge=1.0, le=3.0)
    min_speed_kmh: float = Field(default=8.0, gt=0)
    default_speed_kmh: float = Field(default=15.0, gt=0)
    delay_step_minutes: float = Field(default=10.0, ge=0)


class ChangesSettings(_Section):
    confirm_timeout_seconds: int = Field(default=300, ge=1)


class NoticesSettings(_Section):
    templates: dict[str, dict[str, str]] = Field(default={}, description="locale -> kind -> template")

    @field_validator("templates")
    @classmethod
    def _known_placeholders(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        problems = notices.check_templates(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class MediaSettings(_Section):
    max_bytes: int = Field(default=2_097_152, ge=1024, le=16_777_216)


class StorageSettings(_Section):
    data_dir: Path = Path("data")
    synchronous: Literal["full", "normal"] = "full"
    retention_days: int = Field(default=180, ge=0)
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _postgresql(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (postgresql://USER:PASSWORD@HOST:5432/DATABASE); "
                             "leave it out for the SQLite file in data_dir")
        return value


class Settings(_Section):
    """broker.yaml, key for key. `config_path` and `data_dir_origin` record where things came from."""

    mqtt: MqttListener = MqttListener()
    tls: TlsListener = TlsListener()
    websocket: WebSocketListener = WebSocketListener()
    http: HttpListener = HttpListener()
    allow_anonymous: bool = True
    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    bridge: BridgeSettings = BridgeSettings()
    gps: GpsSettings = GpsSettings()
    assignment: AssignmentSettings = AssignmentSettings()
    eta: EtaSettings = EtaSettings()
    changes: ChangesSettings = ChangesSettings()
    arrival_radius_m: float = Field(default=500.0, gt=0)
    notices: NoticesSettings = NoticesSettings()
    media: MediaSettings = MediaSettings()
    webhooks: WebhookSettings = WebhookSettings()
    web: WebSettings = WebSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    _config_path: Path | None = PrivateAttr(default=None)
    _data_dir_origin: str = PrivateAttr(default="default")

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    @property
    def config_path(self) -> Path | None:
        """The config file that was read, if any."""
        return self._config_path

    @property
    def data_dir_origin(self) -> str:
        """Which rule chose the data directory: '--data-dir', '$FIELDGATE_DATA_DIR', 'storage.data_dir in …'."""
        return self._data_dir_origin


def find_config(explicit: Path | None) -> Path | None:
    """The config file to read: --config, else $FIELDGATE_CONFIG, else the first of ./broker.yaml,
    the user's and the system's broker.yaml that exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist", hint="Check the --config path.")
        return explicit
    if env := os.environ.get(CONFIG_ENV):
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={env} names no file", hint=f"Unset {CONFIG_ENV} or fix the path.")
        return path
    return next((p for p in (Path(DEFAULT_CONFIG_NAME), user_config(), SYSTEM_CONFIG) if p.is_file()), None)


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
    host: str | None = None, no_anonymous: bool = False, http_port: int | None = None,
) -> Settings:
    """Settings from file + environment + overrides (validated like the file's own values)."""
    path = find_config(config)
    raw = read_config(path) if path else {}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'configuration'} is invalid: {_problems(exc)}") from exc
    storage = settings.storage
    if data_dir is not None:
        origin = "--data-dir"
    elif env := os.environ.get(DATA_DIR_ENV):
        data_dir, origin = Path(env), f"${DATA_DIR_ENV}"
    elif path is not None:
        data_dir, origin = path.parent / storage.data_dir, f"storage.data_dir in {path.absolute()}"
    else:
        data_dir, origin = user_data_dir(), "default for a user with no broker.yaml ($XDG_DATA_HOME/fieldgate)"
    storage = storage.model_copy(update={"data_dir": data_dir.absolute()})
    if url := os.environ.get(STORAGE_URL_ENV):
        try:
            storage = StorageSettings.model_validate({**storage.model_dump(), "url": url})
        except ValidationError as exc:
            raise ConfigError(f"${STORAGE_URL_ENV}: {_problems(exc)}") from exc
    try:
        mqtt = MqttListener.model_validate({**settings.mqtt.model_dump(),
                                            **({} if port is None else {"port": port}),
                                            **({} if host is None else {"host": host})})
    except ValidationError as exc:
        raise ConfigError(f"--port/--host: {_problems(exc)}", hint="A TCP port is 0 to 65535; 0 picks a free one.") \
            from exc
    try:
        http = HttpListener.model_validate({**settings.http.model_dump(),
                                            **({} if http_port is None else {"port": http_port})})
    except ValidationError as exc:
        raise ConfigError(f"--http-port: {_problems(exc)}", hint="A TCP port is 0 to 65535; 0 picks a free one.") \
            from exc
    tls = settings.tls
    if path is not None:
        tls = tls.model_copy(update={k: path.parent / v for k in ("certfile", "keyfile")
                                     if (v := getattr(tls, k)) is not None and not v.is_absolute()})
    if (tls.enabled or http.tls) and (tls.certfile is None or tls.keyfile is None):
        raise ConfigError("tls.enabled and http.tls need tls.certfile and tls.keyfile",
                          hint="`fieldgate certs dev` makes a self-signed pair for trying it.")
    anonymous = settings.allow_anonymous and not no_anonymous
    out = settings.model_copy(update={"storage": storage, "mqtt": mqtt, "http": http, "tls": tls,
                                      "allow_anonymous": anonymous})
    out._config_path = path.absolute() if path else None
    out._data_dir_origin = origin
    return out


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
