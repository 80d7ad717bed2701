"""Logging: one line per event, human-readable, with structured context as key=value pairs.

Call sites pass context as `extra={"ctx": {...}}`; the formatter appends it, so
`log.info("order created", extra={"ctx": {"order_id": "A1001"}})` prints
`2026-11-22T09:00:00.123Z INFO  fieldgate.gateway order created order_id=A1001`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

#: A phone number in international form: '+' and at least 8 more digits, maybe spaced.
_PHONE = re.compile(r"\+\d[\d ()-]{6,}\d")


def mask_phones(text: str) -> str:
    """'+8613800000000' → '+861*******00': customers' phone numbers never reach a log in full."""
    return _PHONE.sub(lambda m: m.group()[:4] + "*" * (len(m.group()) - 6) + m.group()[-2:], text)


def _value(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or "=" in text or not text) else text


class ContextFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = getattr(record, "ctx", None)
        if ctx:
            pairs = " ".join(f"{key}={_value(value)}" for key, value in ctx.items() if value is not None)
            head, sep, trace = line.partition("\n")
            line = f"{head} {pairs}{sep}{trace}"
        return mask_phones(line)


def setup(level: str) -> None:
    """Log to stderr at `level`; amqtt's own log only when level is DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ContextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # amqtt's own log only at DEBUG: every amqtt failure we care about is translated and logged by
    # gateway.broker.embedded (amqtt would print a traceback before our one clear line).
    quiet = logging.DEBUG if level == "DEBUG" else logging.CRITICAL
    for name in ("amqtt", "transitions", "websockets"):
        logging.getLogger(name).setLevel(quiet)
    # uvicorn's start and stop lines repeat ours (fieldgate.http logs where it listens); its errors stay.
    logging.getLogger("uvicorn.error").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
