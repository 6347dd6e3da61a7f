"""paho-mqtt client construction shared by the bridge, the alert sink, the simulator and the demo."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings

log = logging.getLogger("gridwatch.mqtt")

# QoS 1/2 messages one client may have awaiting their PUBACK. paho numbers them with 16-bit ids and,
# since 2.2, refuses a publish whose id is still outstanding (MQTT_ERR_QUEUE_SIZE): a publisher that
# runs ahead of its acknowledgements by 65,535 messages would lose messages, so it waits below this.
MAX_OUTSTANDING = 30_000


def check_queued(info: mqtt.MQTTMessageInfo) -> mqtt.MQTTMessageInfo:
    """Raise when paho did not take the message (a full id space); "not connected" is fine for QoS 1:
    paho keeps the message and sends it after the reconnect."""
    if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
        raise RuntimeError(f"paho refused a publish ({mqtt.error_string(info.rc)}): more than "
                           f"{MAX_OUTSTANDING:,} messages await their PUBACK")
    return info


class Client(mqtt.Client):
    """paho's client, plus acknowledging a whole batch with one wake-up of its network thread.

    paho's ``ack`` queues the PUBACK and writes a byte to a socket pair to wake its network thread, which
    then sends that one PUBACK: two system calls and a loop turn per message, from the bridge's asyncio
    thread (7 % of the bridge's samples under py-spy). ``ack_all`` queues all but the last quietly and the
    last one the usual way, whose wake-up sends them all."""

    _quiet = False

    def ack_all(self, acks: Sequence[tuple[int, int]]) -> None:
        """``client.ack(mid, qos)`` for each (mid, qos), in order; one wake-up for all of them."""
        if not acks:
            return
        self._quiet = True
        try:
            for mid, qos in acks[:-1]:
                self.ack(mid, qos)
        finally:
            self._quiet = False
        self.ack(*acks[-1])

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> mqtt.MQTTErrorCode:
        if not self._quiet:
            return super()._packet_queue(command, packet, mid, qos, info)
        # What paho's own _packet_queue appends (paho-mqtt 2.1-2.2; tests/e2e/test_mqtt_batch_acks.py
        # fails if this layout stops being sent), minus the wake-up: the batch's last ack wakes the
        # network thread for all.
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def make_client(
    settings: Settings,
    client_id: str = "",
    *,
    clean_session: bool = True,
    manual_ack: bool = False,
    max_inflight: int = 1000,
) -> Client:
    host, port, user, password = settings.mqtt_endpoint()
    client = Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session if client_id else True,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.2, 5)
    if user:
        client.username_pw_set(user, password)
    if settings.mqtt_tls():
        client.tls_set(ca_certs=settings.mqtt.ca_file or None)
    client._gridwatch_endpoint = (host, port)  # type: ignore[attr-defined]
    return client


def connect(client: mqtt.Client, timeout: float = 30.0) -> None:
    """Connect with retries, so a component may start before its broker."""
    host, port = client._gridwatch_endpoint  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            rc = client.connect(host, port, keepalive=30)
            if rc != 0:
                raise ConnectionError(f"MQTT broker {host}:{port} refused the connection: {mqtt.error_string(rc)}")
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ConnectionError(f"cannot reach MQTT broker {host}:{port}: {e}. (--mqtt URL)") from None
            log.warning("waiting for MQTT broker %s:%d (%s)", host, port, e)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
