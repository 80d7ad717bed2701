"""The embedded broker is amqtt at the exact version gateway/broker/embedded.py was written against."""

from __future__ import annotations

from importlib.metadata import version

from conftest import ROOT

from gateway.broker.embedded import AMQTT_VERSION


def test_amqtt_is_the_pinned_version():
    assert version("amqtt") == AMQTT_VERSION, (
        f"amqtt {version('amqtt')} is installed but gateway/broker/embedded.py corrects amqtt {AMQTT_VERSION}'s "
        "internals: re-read them before changing the pin"
    )
    assert f'"amqtt=={AMQTT_VERSION}"' in (ROOT / "pyproject.toml").read_text()
