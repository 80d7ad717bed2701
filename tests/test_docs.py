"""The README stays true: its test command is CI's, it names every topic and config key."""

from __future__ import annotations

import re

from conftest import ROOT
from test_config import keys

from gateway.config import Settings
from gateway.core.acl import USER_ROLES, Identity, patterns
from gateway.core.contract import TOPICS
from gateway.core.models import SCHEMAS

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
        for path in re.findall(r"\b((?:gateway|cli|bench|tests|contrib|docs|schemas)/[\w./-]*\w)", doc.read_text()):
            assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"
