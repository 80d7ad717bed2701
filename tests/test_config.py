"""broker.yaml, docs/config.md and gateway.config agree; precedence of flags, environment and file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, keys

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError


def flatten(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        out += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return out


def test_checked_in_broker_yaml_is_exactly_the_defaults():
    raw = yaml.safe_load((ROOT / "broker.yaml").read_text())
    assert Settings.model_validate(raw) == Settings()
    assert sorted(flatten(raw)) == sorted(keys(Settings))


def test_every_key_is_documented_in_broker_yaml_and_docs():
    text = (ROOT / "broker.yaml").read_text()
    docs = (ROOT / "docs" / "config.md").read_text()
    for key in keys(Settings):
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"^\s*# {leaf} \(", text, re.M), f"broker.yaml lacks a comment entry for {key}"
        assert f"### `{key}`" in docs, f"docs/config.md lacks an entry for {key}"
        default = Settings()
        for part in key.split("."):
            default = getattr(default, part)
        shown = f"{default:g}" if isinstance(default, float) else (str(default) or '""')
        assert f"default `{shown}`" in docs, f"docs/config.md gives the wrong default for {key}"


def test_precedence_flag_over_environment_over_file(tmp_path, monkeypatch):
    config = tmp_path / "conf" / "broker.yaml"
    config.parent.mkdir()
    config.write_text("storage:\n  data_dir: here\nmqtt:\n  port: 1999\n")
    monkeypatch.delenv("FIELDGATE_DATA_DIR", raising=False)
    assert load_settings(config).data_dir == config.parent / "here"  # relative to the file
    assert load_settings(config).mqtt.port == 1999
    monkeypatch.setenv("FIELDGATE_DATA_DIR", str(tmp_path / "env"))
    assert load_settings(config).data_dir == tmp_path / "env"
    assert load_settings(config, data_dir=tmp_path / "flag", port=0).data_dir == tmp_path / "flag"
    assert load_settings(config, port=0).mqtt.port == 0


def test_config_found_through_environment(tmp_path, monkeypatch):
    config = tmp_path / "other.yaml"
    config.write_text("log_level: DEBUG\n")
    monkeypatch.setenv("FIELDGATE_CONFIG", str(config))
    assert load_settings().log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt:\n  prot: 1\n", "mqtt.prot: Extra inputs are not permitted"),
        ("mqtt:\n  port: 70000\n", "mqtt.port"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("mqtt: [\n", "cannot read"),
    ],
)
def test_bad_config_says_what_is_wrong(tmp_path, text, message):
    config = tmp_path / "broker.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config)


def test_missing_config_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
