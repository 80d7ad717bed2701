"""The README stays true: its test command is CI's, it names every topic and config key."""

from __future__ import annotations

import re

from conftest import ROOT
from test_config import keys

from gateway.config import Settings
from gateway.contract import INBOUND_FILTERS
from gateway.models import SCHEMAS

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```sh\n# 2\. [^\n]*\n([^\n]+)\n```", README)
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci


def test_readme_serve_command_installs_and_serves():
    [serve] = re.findall(r"```sh\n# 1\. [^\n]*\n([^\n]+)\n```", README)
    assert serve.endswith("fieldgate serve") and "pip install" in serve


def test_readme_documents_every_inbound_topic_schema_and_config_key():
    for f in INBOUND_FILTERS:
        spelled = f.replace("+/+", "{courier_id}/{device}").replace("shops/+", "shops/{shop_id}")
        spelled = spelled.replace("couriers/+", "couriers/{courier_id}")
        assert f"`{spelled}`" in README, f"README's topic table lacks {spelled}"
    for name in SCHEMAS:
        assert f"`{name}.json`" in README
    for key in keys(Settings):
        assert f"`{key}`" in README
