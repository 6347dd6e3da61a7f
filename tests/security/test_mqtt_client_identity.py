"""A device cannot take the bridge's MQTT client id, and so not its persistent session.

On main a device that logged in with the bridge's client id kicked the bridge off and took over its
session: the readings queued for the bridge went to the device (6 of 6 lost). Here Mosquitto binds a
device's client id to its login (``use_username_as_clientid`` on the device listeners, plain and TLS)
and the pipeline's services connect on a listener of their own that no device can log in to.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gridwatch.devices.registry import load_city
from gridwatch.security.certs import make_test_ca
from gridwatch.security.mqtt_auth import (
    device_password,
    service_accounts,
    services_passwd,
    write_broker_files,
)
from gridwatch.stack import EmbeddedStack, MqttSecurity
from tests.faults.test_faults_telemetry import readings_in_kafka
from tests.harness import Pipeline, wait_for

REG = load_city().registry


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[tuple[EmbeddedStack, bytes]]:
    secret = secrets.token_bytes(24)
    d = tmp_path_factory.mktemp("mqtt-id")
    passwd, acl = write_broker_files(d, secret, [dev.id for dev in REG] + REG.gateways())
    certs = make_test_ca(d / "tls")
    with EmbeddedStack(mqtt_security=MqttSecurity(passwd, acl, certs, services_passwd=services_passwd(d))) as s:
        s.certs = certs  # type: ignore[attr-defined]
        yield s, secret


def session(port: int, client_id: str, user: str, password: str, *, ca: str | None = None,
            topics: tuple[str, ...] = ()) -> tuple[mqtt.Client, list, list]:
    """A persistent-session client; returns it, its CONNACK codes and the topics it received."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if user:
        c.username_pw_set(user, password)
    if ca:
        c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
    codes: list = []
    got: list = []
    done = threading.Event()

    def on_connect(cl, u, flags, rc, p=None) -> None:
        codes.append(rc)
        if topics and not rc.is_failure:
            cl.subscribe([(t, 1) for t in topics])
        done.set()

    c.on_connect = on_connect
    c.on_message = lambda cl, u, m: got.append(m.topic)
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(10)
    return c, codes, got


def test_a_device_cannot_take_the_bridges_client_id_nor_its_queued_readings(secure):
    stack, secret = secure
    acc = {a.user: a for a in service_accounts(secret)}["gridwatch-bridge"]
    pipe = Pipeline(stack.kafka_url, stack.services_mqtt_url,
                    env={"GRIDWATCH_MQTT_USERNAME": acc.user, "GRIDWATCH_MQTT_PASSWORD": acc.password})
    bridge_id = f"br-{pipe.prefix}"
    pipe.bridge.start()
    pipe.bridge.wait_log("bridge running")
    attacker, victim = [d for d in REG if d.kind == "manhole" and not d.gateway][5:7]
    base = int(time.time() * 1000) - 60_000
    try:
        pipe.bridge.stop()  # its persistent session queues what arrives meanwhile
        pub, codes, _ = session(stack.mqtt_port, f"pub-{victim.id}", victim.id, device_password(secret, victim.id))
        assert codes and not codes[0].is_failure
        for k in range(6):
            pub.publish(f"v1/devices/{victim.id}/telemetry",
                        json.dumps({"ts": base + k, "values": {"tilt_deg": 1}}), qos=1).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
        # the attacker logs in with its own password and the bridge's client id, on each device listener
        thieves = []
        for port, ca in ((stack.mqtt_port, None), (stack.mqtt_security.tls_port, str(stack.certs["ca"]))):  # type: ignore[union-attr,attr-defined]
            c, codes, got = session(port, bridge_id, attacker.id, device_password(secret, attacker.id), ca=ca,
                                    topics=("v1/devices/+/telemetry",))
            assert codes and not codes[0].is_failure
            thieves.append((c, got))
        time.sleep(2)
        assert all(got == [] for _, got in thieves), "a device received the bridge's queued readings"
        # ... and cannot log in on the services listener at all, not even with its own password
        c, codes, _ = session(stack.mqtt_security.services_port, bridge_id, attacker.id,  # type: ignore[union-attr]
                              device_password(secret, attacker.id))
        assert codes and codes[0].is_failure
        c.loop_stop()
        pipe.bridge.start()
        pipe.bridge.wait_log("session present: True")
        want = {(victim.id, base + k) for k in range(6)}
        wait_for(lambda: want <= readings_in_kafka(stack.kafka_url, pipe.topic("readings")), 60,
                 "the 6 queued readings in Kafka", interval=1)
        # the bridge was never kicked off (the two thief logins share one id, the attacker's own: they kick each other)
        time.sleep(1)
        assert pipe.bridge.log().count("MQTT connection lost") == 0
        assert all(got == [] for _, got in thieves)
        for c, _ in thieves:
            c.disconnect()
            c.loop_stop()
    finally:
        pipe.bridge.stop()
