"""The bridge's batch acknowledgement against a real Mosquitto: what ``ack_all`` acknowledges is never
redelivered, and what it did not acknowledge is (the at-least-once premise of the bridge)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from gridwatch.pipeline.mqtt_client import Client


def _subscriber(host: str, port: int, got: list[tuple[int, bytes, bool]], ready: threading.Event) -> Client:
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-batch-acks", clean_session=False, manual_ack=True)
    c.max_inflight_messages_set(1000)

    def on_connect(client: mqtt.Client, u: object, flags: object, rc: object, props: object = None) -> None:
        client.subscribe("test/batch-acks/#", qos=1)

    def on_subscribe(*_: object) -> None:
        ready.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = lambda client, u, m: got.append((m.mid, m.payload, bool(m.dup)))
    c.connect(host, port)
    c.loop_start()
    return c


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert cond(), "timed out"  # type: ignore[operator]


def test_what_ack_all_acknowledged_is_not_redelivered_and_the_rest_is(stack):
    host, port = stack.mqtt_url.removeprefix("mqtt://").split(":")
    got: list[tuple[int, bytes, bool]] = []
    ready = threading.Event()
    sub = _subscriber(host, int(port), got, ready)
    assert ready.wait(10)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, int(port))
    pub.loop_start()
    try:
        infos = [pub.publish(f"test/batch-acks/{i}", str(i).encode(), qos=1) for i in range(300)]
        for info in infos:
            info.wait_for_publish(10)
        _wait(lambda: len(got) >= 300)
        first = list(got)
        assert sorted(int(p) for _, p, _ in first) == list(range(300))
        acked = [(mid, 1) for mid, p, _ in first if int(p) < 200]  # the first two thirds, in one batch
        sub.ack_all(acked)
        sub.ack_all([])  # an empty batch is nothing
        time.sleep(0.5)  # the PUBACKs leave with the one wake-up of the batch's last ack
        sub.disconnect()
        sub.loop_stop()

        got.clear()
        ready.clear()
        sub = _subscriber(host, int(port), got, ready)  # the same persistent session
        _wait(lambda: len(got) >= 100)
        time.sleep(1.0)  # anything acknowledged that came back would be here by now
        redelivered = sorted(int(p) for _, p, _ in got)
        assert redelivered == list(range(200, 300)), redelivered[:10]
        sub.ack_all([(mid, 1) for mid, _, _ in got])
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
