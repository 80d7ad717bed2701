"""gateway.broker.codec against amqtt's own packet classes, and topic matching rules."""

from __future__ import annotations

import asyncio

import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import codec
from gateway.broker.topics import SubscriptionIndex, topic_matches


def amqtt_decode(data: bytes):
    async def go():
        reader = BufferReader(data)
        header = await MQTTFixedHeader.from_stream(reader)
        cls = {3: PublishPacket, 9: SubackPacket}[header.packet_type]
        return await cls.from_stream(reader, fixed_header=header)

    return asyncio.run(go())


topics = st.text(alphabet=st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)), min_size=1,
                 max_size=40)


@given(topic=topics, payload=st.binary(max_size=300), qos=st.integers(0, 1), retain=st.booleans(),
       dup=st.booleans(), pid=st.integers(1, 65535))
def test_our_publish_is_amqtts_publish(topic, payload, qos, retain, dup, pid):
    dup = dup and qos > 0
    packet = amqtt_decode(codec.encode_publish(topic, payload, qos, retain, dup, pid if qos else None))
    assert (packet.topic_name, packet.data, packet.qos, packet.retain_flag, packet.dup_flag) == (
        topic, payload, qos, retain, dup)
    if qos:
        assert packet.packet_id == pid
    raw = PublishPacket.build(topic, payload, pid if qos else None, dup, qos, retain).to_bytes()
    first, body = raw[0], raw[1 + len(codec.remaining_length(len(raw) - 2)) :]
    ours = codec.decode_publish(first & 0x0F, body)
    assert (ours.topic, ours.payload, ours.qos, ours.retain, ours.dup) == (topic, payload, qos, retain, dup)


def test_subscribe_and_suback_match_amqtt():
    raw = SubscribePacket.build([("a/+/c", 1), ("#", 0)], 42).to_bytes()
    assert codec.decode_subscribe(raw[0] & 0x0F, raw[2:]) == (42, [("a/+/c", 1), ("#", 0)])
    suback = amqtt_decode(codec.encode_suback(7, [1, 0x80]))
    assert suback.variable_header.packet_id == 7 and suback.payload.return_codes == [1, 0x80]


@pytest.mark.parametrize(
    ("flags", "body", "why"),
    [
        (0x06, b"\x00\x01a", "QoS 3"),
        (0x08, b"\x00\x01a", "DUP set on a QoS 0"),
        (0x02, b"\x00\x01a\x00\x00", "packet identifier 0"),
        (0x00, b"\x00\x05ab", "truncated string"),
        (0x00, b"\x00\x00", "empty topic name"),
        (0x00, b"\x00\x03a\x00b", r"U\+0000"),
    ],
)
def test_malformed_publish_is_a_protocol_violation(flags, body, why):
    with pytest.raises(codec.ProtocolViolation, match=why):
        codec.decode_publish(flags, body)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/#", "sport", True),
        ("sport/#", "sport/tennis/player1", True),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("+", "/finance", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
    ],
)
def test_topic_matching_follows_the_specification(topic_filter, topic, expected):
    assert topic_matches(topic_filter.split("/"), topic.split("/")) is expected


def test_index_gives_one_entry_per_client_at_its_highest_qos_and_skips_dollar_topics_for_wildcards():
    index = SubscriptionIndex()
    index.add("a/#", "c1", 0)
    index.add("a/b", "c1", 1)
    index.add("+/b", "c2", 0)
    index.add("$SYS/x", "c3", 1)
    index.add("#", "c4", 1)
    assert index.match("a/b") == {"c1": 1, "c2": 0, "c4": 1}
    assert index.match("$SYS/x") == {"c3": 1}
    index.remove("a/b", "c1")
    assert index.match("a/b") == {"c1": 0, "c2": 0, "c4": 1}
