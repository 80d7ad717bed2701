"""MQTT 3.1.1 packets after CONNECT: decode what clients send, encode what the broker sends.

amqtt parses and validates CONNECT (`BrokerProtocolHandler.init_from_connect`); everything after
it goes through these functions, which work on whole packet bodies in memory instead of amqtt's
field-by-field awaited reads. Every malformed packet raises `ProtocolViolation`, and the
connection is closed (MQTT 3.1.1 §4.8). tests/test_codec.py cross-checks them against amqtt's
own packet classes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 3, 4, 5, 6, 7
CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 8, 10, 12, 14

_H = struct.Struct("!H")
MAX_REMAINING_LENGTH = 268_435_455


class ProtocolViolation(Exception):
    """The client broke MQTT 3.1.1; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise ProtocolViolation("truncated string length")
    (n,) = _H.unpack_from(data, pos)
    end = pos + 2 + n
    if end > len(data):
        raise ProtocolViolation("truncated string")
    try:
        text = data[pos + 2 : end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("string is not valid UTF-8 [MQTT-1.5.3-1]") from exc
    if "\x00" in text:
        raise ProtocolViolation("string contains U+0000 [MQTT-1.5.3-2]")
    return text, end


def _packet_id(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise ProtocolViolation("truncated packet identifier")
    (pid,) = _H.unpack_from(data, pos)
    if pid == 0:
        raise ProtocolViolation("packet identifier 0 [MQTT-2.3.1-1]")
    return pid


def check_topic_name(topic: str) -> None:
    if not topic:
        raise ProtocolViolation("empty topic name [MQTT-4.7.3-1]")
    if "+" in topic or "#" in topic:
        raise ProtocolViolation("wildcard in a topic name [MQTT-3.3.2-2]")


def check_topic_filter(topic_filter: str) -> bool:
    """True if the filter is valid MQTT (the SUBACK for an invalid one is 0x80)."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def decode_publish(flags: int, body: bytes) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    dup = bool(flags & 0x08)
    if qos == 0 and dup:
        raise ProtocolViolation("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
    topic, pos = _string(body, 0)
    check_topic_name(topic)
    packet_id = None
    if qos:
        packet_id = _packet_id(body, pos)
        pos += 2
    return Publish(topic, bytes(body[pos:]), qos, bool(flags & 0x01), dup, packet_id)


def decode_packet_id(flags: int, expected_flags: int, body: bytes, name: str) -> int:
    if flags != expected_flags or len(body) != 2:
        raise ProtocolViolation(f"malformed {name}")
    return _packet_id(body, 0)


def _filter_list(flags: int, body: bytes, name: str, rule: str, with_qos: bool) -> tuple[int, list[tuple[str, int]]]:
    """Packet id and (filter, requested QoS) pairs of a SUBSCRIBE, or (filter, 0) of an UNSUBSCRIBE."""
    if flags != 0x02:
        raise ProtocolViolation(f"{name} flags must be 0010 [{rule}]")
    pid = _packet_id(body, 0)
    pos, topics = 2, []
    while pos < len(body):
        topic, pos = _string(body, pos)
        qos = 0
        if with_qos:
            if pos >= len(body):
                raise ProtocolViolation("SUBSCRIBE topic without QoS byte")
            qos, pos = body[pos], pos + 1
            if qos > 2:
                raise ProtocolViolation("SUBSCRIBE requested QoS > 2 [MQTT-3.8.3-4]")
        topics.append((topic, qos))
    if not topics:
        raise ProtocolViolation(f"{name} without topic filters")
    return pid, topics


def decode_subscribe(flags: int, body: bytes) -> tuple[int, list[tuple[str, int]]]:
    return _filter_list(flags, body, "SUBSCRIBE", "MQTT-3.8.1-1", with_qos=True)


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    pid, topics = _filter_list(flags, body, "UNSUBSCRIBE", "MQTT-3.10.1-1", with_qos=False)
    return pid, [topic for topic, _ in topics]


def split(packet: bytes) -> tuple[int, bytes]:
    """(first byte, body) of one whole encoded packet."""
    pos = 1
    while packet[pos] & 0x80:
        pos += 1
    return packet[0], packet[pos + 1 :]


def publish_head(topic: str, size: int, qos: int, retain: bool, dup: bool) -> bytes:
    """A PUBLISH up to its packet id: the fixed header and the topic name. What follows is the packet id (QoS 1 and
    2, `encode_packet_id`) and the `size` bytes of payload; a message fanned out to many subscribers has one head."""
    name = topic.encode("utf-8")
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return bytes((first,)) + remaining_length(2 + len(name) + (2 if qos else 0) + size) + _H.pack(len(name)) + name


def encode_packet_id(packet_id: int) -> bytes:
    return _H.pack(packet_id)


def encode_publish(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int | None) -> bytes:
    """A whole PUBLISH; `packet_id` is required for QoS 1 and 2."""
    pid = _H.pack(packet_id) if qos else b""
    return publish_head(topic, len(payload), qos, retain, dup) + pid + payload


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBCOMP or UNSUBACK (PUBREL has flags 0010)."""
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    return bytes((first, 2)) + _H.pack(packet_id)


def encode_suback(packet_id: int, codes: list[int]) -> bytes:
    return bytes((0x90,)) + remaining_length(2 + len(codes)) + _H.pack(packet_id) + bytes(codes)


def encode_connack(session_present: bool, code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present and code == 0 else 0, code))


UNSUBACK = 11
PINGRESP = b"\xd0\x00"
