"""JSON Schema for every payload of the topic contract, generated from gateway.models.

The models are the source; `schemas/<name>.json` is their export, checked in so clients in
other languages can validate without Python. tests/test_schemas.py fails when they drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.contract import TOPICS
from gateway.core.models import SCHEMAS

#: Payloads the gateway publishes: their schema describes what it sends (serialisation mode).
_OUTBOUND = {stem for t in TOPICS if not t.inbound for stem in t.schemas}


def render() -> dict[str, str]:
    """File name → JSON text, for every exported model."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema(mode="serialization" if name in _OUTBOUND else "validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{name}.json", **schema}
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(directory: Path) -> list[Path]:
    """Write every schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
