"""MQTT doors: per-device logins, ACLs, a gateway speaking only for its own devices, and TLS.

Each door is tried without the key and with someone else's key against a real Mosquitto configured
by gridwatch's own credential tooling; readings that get through are checked in Kafka.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gridwatch.devices.registry import load_city
from gridwatch.security.certs import make_test_ca
from gridwatch.security.mqtt_auth import device_password, service_accounts, write_broker_files
from gridwatch.stack import EmbeddedStack, MqttSecurity
from tests.faults.test_faults_telemetry import readings_in_kafka
from tests.harness import Pipeline, read_topic, wait_for

REG = load_city().registry
BASE = 1_763_600_000_000
DOORS: list[str] = []


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[tuple[EmbeddedStack, bytes]]:
    secret = secrets.token_bytes(24)
    d = tmp_path_factory.mktemp("mqtt-auth")
    clients = [dev.id for dev in REG] + REG.gateways()
    passwd, acl = write_broker_files(d, secret, clients)
    certs = make_test_ca(d / "tls")
    with EmbeddedStack(mqtt_security=MqttSecurity(passwd, acl, certs)) as s:
        s.certs = certs  # type: ignore[attr-defined]
        yield s, secret


def connect(stack: EmbeddedStack, user: str | None, password: str | None, *, tls: bool = False,
            ca: str | None = None) -> tuple[mqtt.Client, object]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    done = threading.Event()
    result: list = []
    c.on_connect = lambda cl, u, f, rc, p=None: (result.append(rc), done.set())
    if user:
        c.username_pw_set(user, password)
    port = stack.mqtt_port
    if tls:
        c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        port = stack.mqtt_security.tls_port  # type: ignore[union-attr]
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(10)
    return c, (result[0] if result else None)


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def test_logins_acls_and_gateway_ownership(secure):
    stack, secret = secure
    bridge_acc = next(a for a in service_accounts(secret) if a.user == "gridwatch-bridge")
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url,
                    env={"GRIDWATCH_MQTT_USERNAME": bridge_acc.user, "GRIDWATCH_MQTT_PASSWORD": bridge_acc.password})
    pipe.bridge.start()
    pipe.bridge.wait_log("bridge running")
    a, b = [d for d in REG if d.kind == "manhole" and not d.gateway][:2]
    gw = REG.gateways()[0]
    foreign = next(d for d in REG if d.gateway and d.gateway != gw)
    try:
        # 1. no credentials, wrong password, someone else's password: refused
        for user, pw, door in ((None, None, "anonymous"), (a.id, "wrong", "wrong password"),
                               (a.id, device_password(secret, b.id), "another device's password")):
            c, rc = connect(stack, user, pw)
            DOORS.append(door)
            assert rc is not None and rc.is_failure, f"{door}: {rc}"
            close(c)
        # 2. a device with its own key publishes on its own topic -> reaches Kafka
        c, rc = connect(stack, a.id, device_password(secret, a.id))
        assert not rc.is_failure
        c.publish(f"v1/devices/{a.id}/telemetry", json.dumps({"ts": BASE, "values": {"tilt_deg": 1}}), qos=1).wait_for_publish(5)
        close(c)
        # 3. ... but not on another device's topic, nor a gateway's. Mosquitto drops such a message and
        # may also drop the connection, so each attempt gets its own connection; either way the reading
        # must never reach Kafka (checked below).
        for topic, body in ((f"v1/devices/{b.id}/telemetry", {"ts": BASE + 1, "values": {"tilt_deg": 1}}),
                            (f"v1/gateway/{gw}/telemetry", {b.id: [{"ts": BASE + 2, "values": {"tilt_deg": 1}}]})):
            c, rc = connect(stack, a.id, device_password(secret, a.id))
            assert not rc.is_failure
            with contextlib.suppress(RuntimeError):  # "not currently connected": the broker hung up on it
                c.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
            close(c)
        DOORS.extend(["device -> other device's topic", "device -> gateway topic"])
        c, rc = connect(stack, a.id, device_password(secret, a.id))
        assert not rc.is_failure
        # 4. a device may not read the operators' alerts: subscribe, then the worker account publishes one
        got: list = []
        c.on_message = lambda cl, u, m: got.append(m.topic)
        c.subscribe("gridwatch/alerts/#", qos=1)
        operator = next(x for x in service_accounts(secret) if x.user == "gridwatch-operator")
        o, rc = connect(stack, operator.user, operator.password)  # positive control: operators do read it
        op_got: list = []
        o.on_message = lambda cl, u, m: op_got.append(m.topic)
        o.subscribe("gridwatch/alerts/#", qos=1)
        time.sleep(0.5)
        worker = next(x for x in service_accounts(secret) if x.user == "gridwatch-worker")
        w, rc = connect(stack, worker.user, worker.password)
        assert not rc.is_failure
        w.publish("gridwatch/alerts/330100/x", b"{}", qos=1).wait_for_publish(5)
        close(w)
        time.sleep(1.5)
        DOORS.append("device -> read the alerts")
        assert op_got == ["gridwatch/alerts/330100/x"] and got == []
        close(o)
        close(c)
        # 5. a gateway with its own key, reporting for a device it does not own -> dead letter
        g, rc = connect(stack, gw, device_password(secret, gw))
        assert not rc.is_failure
        g.publish(f"v1/gateway/{gw}/telemetry", json.dumps({foreign.id: [{"ts": BASE, "values": {"lamp_on": True}}]}),
                  qos=1).wait_for_publish(5)
        DOORS.append("gateway -> a device it does not own")
        close(g)

        seen = wait_for(lambda: (lambda s: s if (a.id, BASE) in s else None)(
            readings_in_kafka(stack.kafka_url, pipe.topic("readings"))), 30, "the legitimate reading")
        assert (b.id, BASE + 1) not in seen and (b.id, BASE + 2) not in seen
        dlq = wait_for(lambda: [r for r in read_topic(stack.kafka_url, pipe.topic("deadletter"))
                                if r.get("device_id") == foreign.id], 30, "gateway-ownership dead letter")
        assert dlq[0]["reason"] == "unknown_device" and gw in dlq[0]["detail"]
    finally:
        pipe.bridge.stop()


def test_each_service_publishes_only_its_own_stats(secure):
    """The worker may publish the vision agent's stats and its own figures (agents/vision.py's and
    agents/worker_stats.py's topic forms); a device may not,
    and no service may publish another's stats. An operator subscribed to all stats is the witness."""
    stack, secret = secure
    acc = {a.user: a for a in service_accounts(secret)}
    dev = next(d for d in REG if d.kind == "manhole")
    op, rc = connect(stack, acc["gridwatch-operator"].user, acc["gridwatch-operator"].password)
    assert not rc.is_failure
    got: list[str] = []
    op.on_message = lambda cl, u, m: got.append(m.topic)
    op.subscribe("gridwatch/stats/#", qos=1)
    time.sleep(0.5)
    vision = "gridwatch/stats/vision/gridwatch-host-1234"
    worker = "gridwatch/stats/worker/gridwatch-incidents-host-1234"  # agents/worker_stats.py's topic form
    tries = [  # (user, password, topic, door or None for an allowed publish)
        ("gridwatch-worker", acc["gridwatch-worker"].password, vision, None),
        ("gridwatch-worker", acc["gridwatch-worker"].password, worker, None),
        (dev.id, device_password(secret, dev.id), worker + "-device", "device -> a worker's figures"),
        ("gridwatch-bridge", acc["gridwatch-bridge"].password, "gridwatch/stats/bridge/gridwatch-bridge-1", None),
        (dev.id, device_password(secret, dev.id), vision + "-device", "device -> the vision stats"),
        ("gridwatch-worker", acc["gridwatch-worker"].password, "gridwatch/stats/bridge/fake", "worker -> the bridge's stats"),
        ("gridwatch-bridge", acc["gridwatch-bridge"].password, vision + "-bridge", "bridge -> the vision stats"),
    ]
    for user, pw, topic, _door in tries:  # each on its own connection: Mosquitto may hang up on a denied one
        c, rc = connect(stack, user, pw)
        assert not rc.is_failure, user
        with contextlib.suppress(RuntimeError):
            c.publish(topic, b"{}", qos=1).wait_for_publish(5)
        close(c)
    allowed = {t for _u, _p, t, door in tries if door is None}
    wait_for(lambda: allowed <= set(got), 10, "the allowed stats at the operator")
    time.sleep(1)
    close(op)
    assert set(got) == allowed, got
    DOORS.extend(door for *_, door in tries if door)


def test_tls_listener(secure):
    stack, secret = secure
    a = next(d for d in REG if d.kind == "water_gauge")
    c, rc = connect(stack, a.id, device_password(secret, a.id), tls=True, ca=str(stack.certs["ca"]))  # type: ignore[attr-defined]
    assert rc is not None and not rc.is_failure
    close(c)
    DOORS.append("TLS with an untrusted CA")
    with pytest.raises(ssl.SSLError):
        connect(stack, a.id, device_password(secret, a.id), tls=True, ca=None)  # system CAs do not know ours
    print(f"MQTT doors tried: {len(DOORS) + 1}: {DOORS + ['TLS with our CA (opens)']}")


def test_secrets_stay_out_of_logs(secure, tmp_path):
    stack, secret = secure
    acc = next(a for a in service_accounts(secret) if a.user == "gridwatch-bridge")
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url,
                    env={"GRIDWATCH_MQTT_USERNAME": acc.user, "GRIDWATCH_MQTT_PASSWORD": "not-the-password"})
    pipe.bridge.start()
    try:
        wait_for(lambda: "refused the bridge" in pipe.bridge.log(), 30, "a clear refusal in the bridge log")
        time.sleep(0.5)
        log = pipe.bridge.log()
        assert "not-the-password" not in log and acc.password not in log
        assert "GRIDWATCH_MQTT_PASSWORD" in log  # says what to fix
    finally:
        pipe.bridge.stop()
    assert os.environ.get("GRIDWATCH_MQTT_SECRET") is None  # the tests never needed a secret in the environment
