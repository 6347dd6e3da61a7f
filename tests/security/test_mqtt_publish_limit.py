"""The broker's per-device publish limit (deploy/mosquitto/gw_ratelimit.c) against a real Mosquitto.

A device that floods is denied, then disconnected and refused at login, while other devices' readings
still become alerts; a service account is never limited; the city's simulated traffic, each gateway and
device under its own login, is never limited by the shipped settings; bad settings name their key.
The flood tests use small limits (settings overrides) so that a short flood is enough.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gridwatch.bench.telemetry import reading
from gridwatch.core.settings import SettingsError, load_settings
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import Fleet, Publisher, device_topic
from gridwatch.security.mqtt_auth import device_password, service_accounts, write_broker_files
from gridwatch.stack import EmbeddedStack, MqttSecurity, StackError, ratelimit_plugin
from tests.harness import Pipeline, wait_for

REG = load_city().registry
STANDALONE = [d for d in REG if d.kind == "manhole" and not d.gateway]
JUNK = b"\x00junk" * (65_536 // 5)  # not JSON; 64 KB: well over the test's byte rate at 100 a second
SMALL = {"mqtt.publish_limit_msgs_per_s": 5, "mqtt.publish_limit_msgs_burst": 20,
         "mqtt.publish_limit_bytes_per_s": 65_536, "mqtt.publish_limit_bytes_burst": 262_144,
         "mqtt.publish_limit_ban_after_s": 1, "mqtt.publish_limit_ban_s": 3600}
NOT_AUTHORISED = 135  # MQTT 5 reason code of a denied PUBLISH and of a refused login


class Client:
    """An MQTT 5 client that keeps its CONNACK, PUBACK and DISCONNECT reason codes."""

    def __init__(self, port: int, user: str | None, password: str | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, password)
        self.connacks: list[int] = []
        self.pubacks: list[int] = []
        self.disconnected = threading.Event()
        self.got: list[tuple[str, bytes]] = []
        self._connack = threading.Event()
        self.c.on_connect = lambda cl, u, f, rc, p: (self.connacks.append(rc.value), self._connack.set())
        self.c.on_publish = lambda cl, u, mid, rc, p: self.pubacks.append(rc.value)
        self.c.on_disconnect = lambda cl, u, f, rc, p: self.disconnected.set()
        self.c.on_message = lambda cl, u, m: self.got.append((m.topic, m.payload))
        self.c.reconnect_delay_set(3600, 3600)  # one login per client: a test logs in again explicitly
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self._connack.wait(10), "no CONNACK"

    @property
    def accepted(self) -> bool:
        return bool(self.connacks) and self.connacks[0] < 128

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def limit_lines(stack: EmbeddedStack, user: str) -> list[str]:
    assert stack.workdir is not None
    log = (stack.workdir / "mosquitto.log").read_text(errors="replace")
    return [ln for ln in log.splitlines() if "gridwatch-ratelimit" in ln and f" {user} " in ln]


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[tuple[EmbeddedStack, bytes]]:
    secret = secrets.token_bytes(24)
    d = tmp_path_factory.mktemp("mqtt-limit")
    passwd, acl = write_broker_files(d, secret, [dev.id for dev in REG] + REG.gateways())
    with EmbeddedStack(mqtt_security=MqttSecurity(passwd, acl), mqtt_settings=load_settings(overrides=SMALL).mqtt) as s:
        yield s, secret


def flood(dev: Client, topic: str, until: threading.Event) -> None:
    """Publish junk at QoS 1, about 100 a second, until disconnected (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while not dev.disconnected.is_set() and not until.is_set() and time.monotonic() < deadline:
        dev.c.publish(topic, JUNK, qos=1)
        time.sleep(0.01)


def test_a_flooding_device_is_denied_then_banned_while_others_still_raise_alerts(secure):
    stack, secret = secure
    acc = {a.user: a for a in service_accounts(secret)}
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url,
                    env={"GRIDWATCH_MQTT_USERNAME": "gridwatch-bridge", "GRIDWATCH_MQTT_PASSWORD": acc["gridwatch-bridge"].password})
    pipe.worker.env.update({"GRIDWATCH_MQTT_USERNAME": "gridwatch-worker",
                            "GRIDWATCH_MQTT_PASSWORD": acc["gridwatch-worker"].password})
    flooder, during, after = STANDALONE[10], STANDALONE[11], STANDALONE[12]
    operator = Client(stack.mqtt_port, "gridwatch-operator", acc["gridwatch-operator"].password)
    operator.c.subscribe("gridwatch/alerts/#", qos=1)
    stop = threading.Event()
    try:
        pipe.start()
        dev = Client(stack.mqtt_port, flooder.id, device_password(secret, flooder.id))
        assert dev.accepted
        t = threading.Thread(target=flood, args=(dev, device_topic(flooder.id), stop), daemon=True)
        t.start()
        wait_for(lambda: NOT_AUTHORISED in dev.pubacks, 30, "a denied PUBLISH (PUBACK 'not authorised')")
        probe(stack, secret, during)  # another device, while the flood is being denied
        assert dev.disconnected.wait(60), "the flooding device was not disconnected"
        t.join(10)
        again = Client(stack.mqtt_port, flooder.id, device_password(secret, flooder.id))
        assert again.connacks == [NOT_AUTHORISED], "a banned device logged in again"
        again.c.loop_stop()
        probe(stack, secret, after)  # and after the ban
        for d in (during, after):
            wait_for(lambda d=d: any(alert_for(p, d.id) for _, p in operator.got), 90, f"the alert of {d.id}")
        lines = limit_lines(stack, flooder.id)
        assert any("over its publish limit" in ln for ln in lines)
        assert any("stayed over" in ln and "logins refused" in ln for ln in lines)
        assert any("login refused" in ln for ln in lines)
        assert not limit_lines(stack, during.id) and not limit_lines(stack, after.id)
    finally:
        stop.set()
        operator.close()
        pipe.stop()


def probe(stack: EmbeddedStack, secret: bytes, dev: Any) -> None:
    """The device opens its manhole cover (a reading the worker raises a manhole_open alert for)."""
    c = Client(stack.mqtt_port, dev.id, device_password(secret, dev.id))
    assert c.accepted
    ts = int(time.time() * 1000) - 30_000
    c.c.publish(device_topic(dev.id), json.dumps({"ts": ts, "values": reading(dev, 0, True)}), qos=1).wait_for_publish(10)
    assert c.pubacks and c.pubacks[-1] < 128
    c.close()


def alert_for(payload: bytes, device_id: str) -> bool:
    body = json.loads(payload)
    return body.get("type") == "manhole_open" and body.get("phase") == "new" and body.get("subject") == device_id


def test_a_service_account_is_not_limited(secure):
    """The simulator's account publishes far beyond a device's limit, on the device listener: all accepted."""
    stack, secret = secure
    acc = {a.user: a for a in service_accounts(secret)}["gridwatch-simulator"]
    sim = Client(stack.mqtt_port, acc.user, acc.password)
    assert sim.accepted
    dev = STANDALONE[20]
    for _ in range(200):  # 12.8 MB back to back: 200x the device byte rate, 40x the message rate
        info = sim.c.publish(device_topic(dev.id), JUNK, qos=1)
    info.wait_for_publish(60)
    wait_for(lambda: len(sim.pubacks) == 200, 30, "200 PUBACKs")
    assert all(rc < 128 for rc in sim.pubacks)
    assert not sim.disconnected.is_set()
    assert not limit_lines(stack, acc.user)
    sim.close()


def test_the_citys_simulated_traffic_is_never_limited_by_the_shipped_settings():
    """Five simulated minutes of every gateway's and the busiest devices' readings, each under its own login,
    sent back to back (faster than real): no PUBLISH denied, nobody disconnected, no limit logged."""
    pub = Publisher(Fleet(REG))
    per_login: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    start = 1_763_600_000
    for s in range(start, start + 300):
        for topic, payload in pub.messages_for(s, s)[0]:
            per_login[topic.split("/")[2]].append((topic, payload))  # v1/devices/<id>/..., v1/gateway/<id>/...
    gateways = set(REG.gateways())
    busiest = sorted(per_login, key=lambda k: (k not in gateways, -sum(len(p) for _, p in per_login[k])))[:40]
    assert gateways <= set(busiest)
    with EmbeddedStack(with_kafka=False, mqtt_settings=load_settings().mqtt) as stack:
        watcher = Client(stack.mqtt_port, None)
        watcher.c.subscribe("v1/#", qos=1)
        time.sleep(0.5)
        total = 0
        for login in busiest:
            c = Client(stack.mqtt_port, login)  # this broker checks no passwords: the username is the login
            assert c.accepted
            for topic, payload in per_login[login]:
                info = c.c.publish(topic, payload, qos=1)
            info.wait_for_publish(30)
            n = len(per_login[login])
            wait_for(lambda c=c, n=n: len(c.pubacks) == n, 30, f"PUBACKs of {login}")
            assert all(rc < 128 for rc in c.pubacks), f"{login}: a PUBLISH was denied"
            assert not c.disconnected.is_set()
            total += n
            c.close()
        wait_for(lambda: len(watcher.got) == total, 30, f"all {total} messages delivered")
        assert not any("gridwatch-ratelimit" in ln for ln in
                       (stack.workdir / "mosquitto.log").read_text(errors="replace").splitlines())  # type: ignore[operator]
        watcher.close()


@pytest.mark.parametrize(("key", "value"), [
    ("publish_limit_msgs_per_s", 0), ("publish_limit_msgs_burst", 0), ("publish_limit_bytes_per_s", -1),
    ("publish_limit_bytes_burst", 1000), ("publish_limit_ban_after_s", -1), ("publish_limit_ban_s", float("inf")),
    ("publish_limit_exempt", "a b"), ("publish_limit", "yes"),
])
def test_bad_limit_settings_name_their_key(key, value):
    with pytest.raises(SettingsError, match=f"mqtt.{key}"):
        load_settings(overrides={f"mqtt.{key}": value})


def test_bad_limit_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("GRIDWATCH_MQTT_PUBLISH_LIMIT_BAN_S", "soon")
    with pytest.raises(SettingsError, match="GRIDWATCH_MQTT_PUBLISH_LIMIT_BAN_S"):
        load_settings()


def test_the_stack_says_what_to_run_when_the_plugin_is_not_built(monkeypatch, tmp_path):
    monkeypatch.setattr("gridwatch.stack.RATELIMIT_PLUGIN", tmp_path / "gw_ratelimit.so")
    with pytest.raises(StackError, match=r"not built: run \./run setup"):
        ratelimit_plugin()
