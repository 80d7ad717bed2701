"""Validating a payload against its model, with an error that says exactly what is wrong. Pure."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import NotJson, PayloadError, TooLarge

M = TypeVar("M", bound=BaseModel)


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]


def parse(model: type[M], payload: bytes, *, max_bytes: int) -> M:
    """Validate a payload against its model, or raise PayloadError saying exactly what is wrong."""
    if len(payload) > max_bytes:
        raise TooLarge(
            f"payload is {len(payload)} bytes, more than the {max_bytes} allowed",
            hint="Send smaller messages; the limit is bridge.max_payload_bytes in broker.yaml.",
        )
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise NotJson(
                f"payload is not valid JSON ({errors[0]['msg'].removeprefix('Invalid JSON: ')})",
                hint="Send one UTF-8 JSON object per message.",
                errors=_problems(exc),
            ) from None
        fields = "; ".join(f"{p['loc'] or '(payload)'}: {p['msg']}" for p in _problems(exc))
        raise PayloadError(
            f"payload is not a valid {model.__name__}: {fields}",
            hint=f"See schemas/ for the {model.__name__} JSON Schema.",
            errors=_problems(exc),
        ) from None
