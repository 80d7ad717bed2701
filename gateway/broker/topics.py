"""MQTT topic filters: matching and the index of who is subscribed to what. Pure: no I/O, no state but the
index itself."""

from __future__ import annotations


def topic_matches(levels_filter: list[str], levels_topic: list[str]) -> bool:
    """MQTT topic filter matching, level by level ('+' one level, '#' the rest, including none)."""
    for i, level in enumerate(levels_filter):
        if level == "#":
            return True
        if i >= len(levels_topic) or (level != "+" and level != levels_topic[i]):
            return False
    return len(levels_filter) == len(levels_topic)


#: Most topics whose matches `SubscriptionIndex` remembers between changes of the subscriptions.
MATCH_CACHE_SIZE = 10_000


class SubscriptionIndex:
    """Who is subscribed to what: exact filters by dict lookup, wildcard filters by scan. What a topic matched is
    remembered until the subscriptions change (a courier's phone publishes on the same topic all day)."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, int]] = {}
        self._wild: dict[str, tuple[list[str], dict[str, int]]] = {}
        self._matched: dict[str, dict[str, int]] = {}

    def add(self, topic_filter: str, client_id: str, qos: int) -> None:
        self._matched = {}
        if "+" in topic_filter or "#" in topic_filter:
            self._wild.setdefault(topic_filter, (topic_filter.split("/"), {}))[1][client_id] = qos
        else:
            self._exact.setdefault(topic_filter, {})[client_id] = qos

    def remove(self, topic_filter: str, client_id: str) -> None:
        self._matched = {}
        subs = self._exact.get(topic_filter)
        if subs is None and topic_filter in self._wild:
            subs = self._wild[topic_filter][1]
        if subs is not None:
            subs.pop(client_id, None)
            if not subs:
                self._exact.pop(topic_filter, None)
                self._wild.pop(topic_filter, None)

    def match(self, topic: str) -> dict[str, int]:
        """client_id → the highest QoS among that client's matching subscriptions (one copy per client). The caller
        must not change the dict."""
        found = self._matched.get(topic)
        if found is None:
            if len(self._matched) >= MATCH_CACHE_SIZE:
                self._matched = {}
            found = self._matched[topic] = self._scan(topic)
        return found

    def _scan(self, topic: str) -> dict[str, int]:
        found = dict(self._exact.get(topic, ()))
        if self._wild:
            levels = topic.split("/")
            dollar = topic.startswith("$")  # [MQTT-4.7.2-1]: wildcards at the first level never match $ topics
            for flevels, subs in self._wild.values():
                if dollar and flevels[0] in ("+", "#"):
                    continue
                if topic_matches(flevels, levels):
                    for client_id, qos in subs.items():
                        if qos > found.get(client_id, -1):
                            found[client_id] = qos
        return found
