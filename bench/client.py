"""The benchmark's MQTT client: the same minimal asyncio MQTT 3.1.1 client against every broker.

Light on purpose (no threads, whole packets, gateway.broker.codec's encoders), so the brokers — not the
harness — are what the figures measure. Every payload starts with the send time in nanoseconds.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable

from gateway.broker import codec

PAYLOAD_BYTES = 200


def stamp() -> str:
    """The send time as text, put inside a string field so it survives a gateway re-wrapping the message."""
    return f"sent:{time.time_ns()}"


def padded(body: dict[str, object]) -> bytes:
    """`body` as JSON, padded with a "pad" field to PAYLOAD_BYTES."""
    raw = json.dumps(body)
    return (raw[:-1] + ', "pad": "' + "x" * max(0, PAYLOAD_BYTES - len(raw) - 11) + '"}').encode()


def sent_at(payload: bytes) -> int:
    """The send time (ns) stamped into a payload, wherever the gateway carried it."""
    start = payload.index(b"sent:") + 5
    stop = start
    while payload[stop:stop + 1].isdigit():
        stop += 1
    return int(payload[start:stop])


class Client:
    """One connection. `on_message(topic, payload)` sees every PUBLISH; QoS-1 ones are PUBACKed."""

    def __init__(self, on_message: Callable[[str, bytes], None] | None = None) -> None:
        self.on_message = on_message or (lambda topic, payload: None)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self._window: asyncio.Semaphore | None = None
        self._suback: asyncio.Future[list[int]] | None = None

    async def connect(self, port: int, client_id: str, *, clean: bool = True, window: int = 20,
                      username: str | None = None, password: str | None = None) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        flags = (0x02 if clean else 0) | (0x80 if username else 0) | (0x40 if password else 0)
        payload = _utf8(client_id) + (_utf8(username) if username else b"") + (_utf8(password) if password else b"")
        body = _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", 0) + payload
        self.writer.write(b"\x10" + codec.remaining_length(len(body)) + body)
        connack = await self.reader.readexactly(4)
        if connack[3] != 0:
            raise ConnectionError(f"CONNACK {connack[3]} for {client_id}")
        self._window = asyncio.Semaphore(window)
        self._reader_task = asyncio.create_task(self._read())

    async def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        body = struct.pack("!H", self._pid()) + b"".join(_utf8(f) + bytes((qos,)) for f in filters)
        self._suback = asyncio.get_running_loop().create_future()
        self.writer.write(b"\x82" + codec.remaining_length(len(body)) + body)
        return await self._suback

    async def publish(self, topic: str, payload: bytes, qos: int = 1, *, wait: bool = False) -> None:
        """QoS 1 waits for a slot in the in-flight window; `wait` also waits for this PUBACK."""
        if qos == 0:
            self.writer.write(codec.encode_publish(topic, payload, 0, False, False, None))
            return
        assert self._window is not None
        await self._window.acquire()
        pid = self._pid()
        done = self._acks[pid] = asyncio.get_running_loop().create_future()
        self.writer.write(codec.encode_publish(topic, payload, 1, False, False, pid))
        if wait:
            await done

    async def drain(self) -> None:
        """Wait until every QoS-1 publish so far is PUBACKed."""
        if self._acks:
            await asyncio.gather(*self._acks.values())

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")
        self._reader_task.cancel()
        self.writer.close()

    def _pid(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _read(self) -> None:
        reader = self.reader
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, mult = 0, 1
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length += (byte & 0x7F) * mult
                    mult *= 128
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length) if length else b""
                kind = first >> 4
                if kind == codec.PUBLISH:
                    p = codec.decode_publish(first & 0x0F, body)
                    if p.qos == 1:
                        self.writer.write(codec.encode_ack(codec.PUBACK, p.packet_id or 0))
                    self.on_message(p.topic, p.payload)
                elif kind == codec.PUBACK:
                    (pid,) = struct.unpack("!H", body)
                    future = self._acks.pop(pid, None)
                    if future is not None and not future.done():
                        future.set_result(None)
                        assert self._window is not None
                        self._window.release()
                elif kind == 9 and self._suback is not None:  # SUBACK
                    self._suback.set_result(list(body[2:]))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw
