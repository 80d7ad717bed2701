"""The README stays true: its test command is CI's, it names every topic and config key."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import httpx
from conftest import ROOT, eventually, free_port, keys

from bench import engines
from gateway.config import Settings
from gateway.core.acl import USER_ROLES, Identity, patterns
from gateway.core.contract import TOPICS
from gateway.core.models import SCHEMAS
from gateway.http.webhooks import signed_headers
from gateway.store.tables import Delivery

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```sh\n# 2\. [^\n]*\n([^\n]+)\n```", README)
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci


def test_readme_serve_command_installs_and_serves():
    [serve] = re.findall(r"```sh\n# 1\. [^\n]*\n([^\n]+)\n```", README)
    assert serve.endswith("fieldgate serve") and "pip install" in serve


def test_readme_documents_every_topic_schema_and_config_key():
    table = README[README.index("## The topic contract"):README.index("### The order lifecycle")]
    for topic in TOPICS:
        if not topic.internal:
            assert f"`{topic.pattern}`" in table, f"README's topic table lacks {topic.pattern}"
    for name in SCHEMAS:
        assert f"`{name}.json`" in README
    for key in keys(Settings):
        assert f"`{key}`" in README


def test_readme_acl_table_is_the_code_s():
    for role in USER_ROLES:
        [row] = [line for line in README.splitlines() if line.startswith(f"| {role.value} |")]
        _, publish, read = (cell.strip() for cell in row.strip("|").split("|"))
        identity = Identity(role, "%i")
        assert set(re.findall(r"`([^`]+)`", publish)) == set(patterns(identity, publish=True)), role
        assert set(re.findall(r"`([^`]+)`", read)) >= set(patterns(identity, publish=False)), role


def test_every_file_the_docs_name_exists():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"\b((?:gateway|cli|bench|tests|contrib|docs|schemas)/[\w./@-]*\w)", doc.read_text()):
            assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"


def test_the_readme_webhook_receiver_verifies_what_fieldgate_signs(tmp_path):
    [code] = re.findall(r"```python\n(.*?)```", README[README.index("receiver.py"):], re.S)
    assert len(code.strip().splitlines()) <= 11
    port, secret = free_port(), "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
    script = tmp_path / "receiver.py"
    script.write_text(code.replace("9000", str(port)))
    receiver = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "FIELDGATE_SECRET": secret},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: engines.accepts(port), "the receiver listening")
        body = json.dumps({"type": "ack", "timestamp": "2026-11-22T09:00:00Z",
                           "data": {"kind": "accepted", "order_id": "A1002"}}).encode()
        delivery = Delivery(1, "ep_1", "msg_1", body, 0, datetime.now(UTC), f"http://127.0.0.1:{port}/", secret)
        answer = httpx.post(delivery.url, content=body, headers=signed_headers(delivery, datetime.now(UTC)))
        assert answer.status_code == 204
        assert receiver.stdout is not None and receiver.stdout.readline().split() == ["ack", "A1002", "accepted"]
    finally:
        receiver.kill()
        receiver.wait()


def test_no_test_file_imports_another():
    """Shared test helpers live in conftest.py (one way to start a gateway, one to run the CLI, …)."""
    importing = [f"{p.name}: {line}" for p in sorted((ROOT / "tests").glob("test_*.py"))
                 for line in p.read_text().splitlines() if re.match(r"(from|import) test_\w+", line)]
    assert importing == []
