"""Mosquitto bounds what it queues for an absent persistent session (main: 0 = without bound)."""

from __future__ import annotations

import time
from pathlib import Path

from gridwatch.stack import (
    MAX_QUEUED_BYTES,
    MAX_QUEUED_MESSAGES,
    ManagedProcess,
    free_port,
    mosquitto_binary,
    mosquitto_config,
)
from tests.harness import MqttPublisher
from tests.security.test_mqtt_client_identity import session


def test_the_embedded_and_deployed_brokers_bound_session_queues():
    conf = mosquitto_config(1883, Path("/tmp"))
    assert f"max_queued_messages {MAX_QUEUED_MESSAGES}" in conf and f"max_queued_bytes {MAX_QUEUED_BYTES}" in conf
    assert MAX_QUEUED_MESSAGES > 0 and MAX_QUEUED_BYTES > 0


def test_an_absent_sessions_queue_stops_at_the_bound(tmp_path):
    port = free_port()
    (tmp_path / "data").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, tmp_path / "data", max_queued_messages=100))
    broker = ManagedProcess("mosquitto", [mosquitto_binary(), "-c", str(conf)], port, tmp_path / "mosquitto.log")
    broker.start()
    try:
        c, codes, got = session(port, "slow-subscriber", "", "", topics=("q/#",))
        time.sleep(0.5)
        c.disconnect()
        c.loop_stop()
        pub = MqttPublisher(f"mqtt://127.0.0.1:{port}")
        for i in range(1000):  # while the subscriber is away
            pub.client.publish(f"q/{i}", b"x" * 100, qos=1)
        pub.publish("q/last", b"x")
        pub.close()
        c, codes, got = session(port, "slow-subscriber", "", "", topics=("q/#",))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < 100:
            time.sleep(0.1)
        time.sleep(1)
        c.disconnect()
        c.loop_stop()
        print(f"queued for the absent session: {len(got)} of 1001 (bound 100 + in flight)")
        assert 100 <= len(got) < 1001 - 500
    finally:
        broker.stop()
