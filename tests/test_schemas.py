"""schemas/ is generated from gateway.core.models; this fails when they drift."""

from __future__ import annotations

import json

from conftest import ORDER, ROOT

from gateway import schemas
from gateway.core.contract import TOPICS
from gateway.core.models import SCHEMAS, Order


def test_checked_in_schemas_match_the_models():
    rendered = schemas.render()
    on_disk = {p.name: p.read_text() for p in (ROOT / "schemas").glob("*.json")}
    assert set(on_disk) == set(rendered), "run: fieldgate schemas export"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"schemas/{name} is stale; run: fieldgate schemas export"


def test_one_schema_file_per_payload_of_the_contract():
    assert set(SCHEMAS) == {stem for t in TOPICS for stem in t.schemas} == {
        n.removesuffix(".json") for n in schemas.render() if n != schemas.OPENAPI}


def test_the_acceptance_order_is_valid_by_model_and_the_schema_names_its_fields():
    Order.model_validate(ORDER)
    schema = json.loads((ROOT / "schemas" / "order.json").read_text())
    assert set(ORDER) <= set(schema["properties"])
    assert set(schema["required"]) == {"order_id", "shop_id", "recipient", "address", "items"}
