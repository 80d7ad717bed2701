"""JSON Schema for every payload of the topic contract, generated from gateway.core.models, and the
OpenAPI document of the HTTP side, generated from gateway.http.app.

The models and routes are the source; `schemas/<name>.json` and `schemas/openapi.json` are their
export, checked in so clients in other languages can validate (or generate a client) without
Python. tests/test_schemas.py fails when they drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.core.contract import TOPICS
from gateway.core.models import SCHEMAS

OPENAPI = "openapi.json"
#: Payloads the gateway publishes: their schema describes what it sends (serialisation mode).
_OUTBOUND = {stem for t in TOPICS if not t.inbound for stem in t.schemas}


def render() -> dict[str, str]:
    """File name → JSON text, for every exported model."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema(mode="serialization" if name in _OUTBOUND else "validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{name}.json", **schema}
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    out[OPENAPI] = json.dumps(openapi(), indent=2, sort_keys=True) + "\n"
    return out


def openapi() -> dict[str, Any]:
    """The HTTP side's OpenAPI document, as /openapi.json serves it."""
    from gateway.http.app import create_app

    return create_app().openapi()


def export(directory: Path) -> list[Path]:
    """Write every schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
