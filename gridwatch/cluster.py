"""A three-broker Apache Kafka cluster with bridges and workers, each on its own "host" (a Linux network
namespace on this machine), for the cluster fault tests (tests/cluster) and the scale-out bench.

Hosts hang off one Linux bridge by veth links; every address is in a private /24 that exists only
inside this machine (nothing leaves it). Kafka runs from the jars the set-up step fetched
(gridwatch.kafka_server): three combined broker+controller nodes, a static three-voter quorum,
replication 3, ``min.insync.replicas=2``, unclean election off. The bridges' producers are ``acks=all``
and idempotent (``kafka.idempotent``), the Faust workers' producers too.

Two bridges share one MQTT 5-style shared subscription (``$share/<group>/...``, Mosquitto honours it
for 3.1.1 clients too): either takes any message, a dead one's un-acknowledged messages stay in its
persistent session and come back when it reconnects, and no bridge needs to know the device set.
Per-device order between the two bridges is not guaranteed, and needs not be: every rule runs in
event time with a watermark and allowed lateness (agents/watermarks.py).

Faults: ``kill``/``restart`` a node, ``cut``/``heal`` a host's link (``ip link set … down``),
``impair`` a host's link. This kernel has no netem qdisc (and no modules to load one), so "delay +
loss" is a tbf bandwidth cap with a queue on both directions of the link (queueing delay) plus random
loss from iptables' ``statistic`` match on the host's INPUT and OUTPUT (TCP retransmits add the rest
of the delay). Needs root, iproute2 and iptables.

Everything is torn down by :meth:`Cluster.close` (also via ``with``), and :func:`sweep_stale` removes the
namespaces and bridges of a run whose process died without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridwatch.core.procs import Proc, wait_for
from gridwatch.core.settings import load_settings
from gridwatch.kafka_server import KafkaNode, kafka_properties, random_cluster_id, wait_brokers
from gridwatch.stack import PublishLimit, mosquitto_binary, mosquitto_config

log = logging.getLogger("gridwatch.cluster")

NS_PREFIX = "gwc"  # namespaces gwc<pid>-<host>, bridges gwb<pid>: a dead pid's leftovers are swept
KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
MQTT_PORT = 1883
HOSTS = {"k1": 11, "k2": 12, "k3": 13, "mq": 5, "b1": 21, "b2": 22, "w1": 31, "w2": 32, "w3": 33}
PARTITIONS = 4


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return _ip("netns", "exec", ns, *cmd, check=check) if cmd[0] != "ip" else _ip("-n", ns, *cmd[1:], check=check)


def sweep_stale() -> list[str]:
    """Delete namespaces and bridges left by cluster runs whose process is gone; returns what went."""
    gone: list[str] = []
    names = _ip("netns", "list", check=False).stdout.split()
    for ns in names:
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\w+", ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_ns_pids(ns)
            _ip("netns", "del", ns, check=False)
            gone.append(ns)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.search(r"\d+: (gwb(\d+)):", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            _ip("link", "del", m.group(1), check=False)
            gone.append(m.group(1))
    return gone


def _kill_ns_pids(ns: str) -> None:
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Net:
    """One bridge and a namespace per host; the test process reaches every host through the bridge's
    own address (``.1``)."""

    subnet: str  # e.g. "10.231.7" (a /24)
    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"gwb{self.tag}"[:15]

    def ns(self, host: str) -> str:
        return f"{NS_PREFIX}{self.tag}-{host}"

    def veth(self, host: str) -> str:
        return f"gv{self.tag}{host}"[:15]

    def addr(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS[host]}"

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, host: str) -> None:
        ns, veth = self.ns(host), self.veth(host)
        _ip("netns", "add", ns)
        self.hosts.append(host)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, host: str) -> None:
        """The host's cable out: its link goes down (no traffic either way, nothing reset)."""
        _ip("link", "set", self.veth(host), "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", self.veth(host), "up")

    def impair(self, host: str, loss: float = 0.05, rate: str = "2mbit", queue_ms: int = 200) -> None:
        """Loss and delay on the host's link both ways: tbf (rate cap, ``queue_ms`` of queue) on each end of
        the veth, and iptables ``statistic`` random drops of ``loss`` on the host's INPUT and OUTPUT."""
        for args in (("tc", "qdisc", "replace", "dev", self.veth(host), "root"),
                     ("ip", "netns", "exec", self.ns(host), "tc", "qdisc", "replace", "dev", "eth0", "root")):
            subprocess.run([*args, "tbf", "rate", rate, "burst", "32kbit", "latency", f"{queue_ms}ms"],
                           check=True, capture_output=True)
        for chain in ("INPUT", "OUTPUT"):
            _in_ns(self.ns(host), "iptables", "-A", chain, "-m", "statistic", "--mode", "random",
                   "--probability", str(loss), "-j", "DROP")

    def unimpair(self, host: str) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.veth(host), "root"], check=False, capture_output=True)
        _in_ns(self.ns(host), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        _in_ns(self.ns(host), "iptables", "-F", check=False)

    def destroy(self) -> None:
        for host in self.hosts:
            _kill_ns_pids(self.ns(host))
        for host in self.hosts:
            _ip("netns", "del", self.ns(host), check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts.clear()


def in_netns(proc: Proc, ns: str) -> Proc:
    """Run a gridwatch sub-command inside a namespace (``ip netns exec`` execs it: same pid)."""
    proc.argv = ["ip", "netns", "exec", ns, *proc.argv]
    return proc


def wait_tcp(host: str, port: int, timeout: float, what: str) -> None:
    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
            return True
        return False

    wait_for(up, timeout, what, 0.1)


class Cluster:
    """Three Kafka nodes and Mosquitto on their own hosts; bridges and workers come and go per run."""

    def __init__(self, workdir: Path, subnet: str = "10.231.7", heap: str = "256m") -> None:
        self.workdir = Path(workdir)
        self.net = Net(subnet)
        self.heap = heap
        self.nodes: dict[int, KafkaNode] = {}
        self.mosquitto: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.net.addr(f'k{i}')}:{KAFKA_PORT}" for i in (1, 2, 3))

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.net.addr('mq')}:{MQTT_PORT}"

    def start(self, timeout: float = 150) -> Cluster:
        for tool in ("ip", "tc", "iptables", "java"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"the cluster harness needs {tool} (./run setup installs it) and root")
        sweep_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.net.create()
        for host in HOSTS:
            self.net.add_host(host)
        self._start_mosquitto()
        voters = {i: f"{self.net.addr(f'k{i}')}:{CONTROLLER_PORT}" for i in (1, 2, 3)}
        extra = {
            "default.replication.factor": 3, "min.insync.replicas": 2, "offsets.topic.replication.factor": 3,
            "transaction.state.log.replication.factor": 3, "transaction.state.log.min.isr": 2,
            "share.coordinator.state.topic.replication.factor": 3, "share.coordinator.state.topic.min.isr": 2,
            "num.partitions": PARTITIONS, "offsets.topic.num.partitions": PARTITIONS,
            # A dead broker is fenced after 3 s (default ~9 s): acks=all produces pause that long.
            "broker.session.timeout.ms": 3000, "broker.heartbeat.interval.ms": 500,
            "num.network.threads": 1, "num.io.threads": 2, "log.retention.hours": 2,
        }
        cluster_id = random_cluster_id()
        for i in (1, 2, 3):
            addr = self.net.addr(f"k{i}")
            props = kafka_properties(i, {"PLAINTEXT": f"{addr}:{KAFKA_PORT}", "CONTROLLER": f"{addr}:{CONTROLLER_PORT}"},
                                     f"{addr}:{KAFKA_PORT}", voters, self.workdir / f"k{i}" / "data", extra)
            node = KafkaNode(self.workdir / f"k{i}", i, props, f"{addr}:{KAFKA_PORT}", heap=self.heap,
                             netns=self.net.ns(f"k{i}"), jvm_opts=["-XX:TieredStopAtLevel=1", "-Xss512k"])
            node.prepare(cluster_id)
            self.nodes[i] = node
        for node in self.nodes.values():
            node.launch()
        self.wait_ready(timeout)
        return self

    def _start_mosquitto(self) -> None:
        data = self.workdir / "mosquitto"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        limit = PublishLimit.from_settings(load_settings().mqtt)
        conf.write_text(mosquitto_config(MQTT_PORT, data, limit=limit).replace(f"listener {MQTT_PORT} 127.0.0.1",
                                                                  f"listener {MQTT_PORT} {self.net.addr('mq')}"))
        with open(self.workdir / "mosquitto.log", "ab") as out:
            self.mosquitto = subprocess.Popen(["ip", "netns", "exec", self.net.ns("mq"), mosquitto_binary(), "-c",
                                               str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
        wait_tcp(self.net.addr("mq"), MQTT_PORT, 15, "Mosquitto")

    def wait_ready(self, timeout: float = 90, nodes: set[int] | None = None) -> float:
        """Every node of ``nodes`` (default: all running) is an unfenced broker and every partition has a
        leader, asked through those nodes only (a cut one would hang the client); returns the seconds taken."""
        t0 = time.monotonic()
        nodes = nodes or {i for i, n in self.nodes.items() if n.alive()}
        wait_brokers(",".join(self.nodes[i].bootstrap for i in sorted(nodes)), nodes, timeout)
        return time.monotonic() - t0

    def leader_of(self, topic: str, partition: int = 0) -> int:
        async def main() -> int:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            await admin.start()
            try:
                for t in await admin.describe_topics([topic]):
                    for p in t.get("partitions") or []:
                        if p["partition"] == partition:
                            return int(p["leader"])
            finally:
                await admin.close()
            raise RuntimeError(f"no leader for {topic}[{partition}]")

        return asyncio.run(main())

    def kill(self, node_id: int) -> None:
        self.nodes[node_id].kill()

    def restart(self, node_id: int) -> None:
        self.nodes[node_id].launch()

    def component(self, kind: str, host: str, prefix: str, extra: list[str], env: dict[str, str]) -> Proc:
        """A bridge or worker of run ``prefix`` on ``host`` (its log in the cluster's folder)."""
        argv = [kind, "--kafka", self.kafka_url, "--mqtt", self.mqtt_url, "--prefix", prefix, *extra]
        if kind == "bridge":
            argv += ["--client-id", f"br-{prefix}-{host}"]
        state = self.workdir / "state" / f"{prefix}-{host}"
        state.mkdir(parents=True, exist_ok=True)
        return in_netns(Proc(f"{prefix}-{host}", argv, self.workdir / "logs",
                             {**CLUSTER_ENV, "GRIDWATCH_STATE_DIR": str(state),
                              "GRIDWATCH_BRIDGE_SHARE_GROUP": f"gw-{prefix}", **env}), self.net.ns(host))

    def close(self) -> None:
        nodes = [n for n in self.nodes.values() if n.proc is not None]
        for n in nodes:  # SIGTERM all together: one by one, the last would hang without a quorum
            n.signal(signal.SIGCONT)
            n.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for n in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            if n.alive():
                n.kill()
        if self.mosquitto is not None and self.mosquitto.poll() is None:
            self.mosquitto.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.mosquitto.wait(5)
            if self.mosquitto.poll() is None:
                self.mosquitto.kill()
        self.net.destroy()

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# Every component of a cluster run: replication 3 topics (4 partitions), idempotent bridge producers, no
# Tansu work-arounds, a worker that loses its partitions after 10 s of silence (a frozen one is fenced).
CLUSTER_ENV = {
    "GRIDWATCH_KAFKA_REPLICATION_FACTOR": "3", "GRIDWATCH_KAFKA_PARTITIONS": str(PARTITIONS),
    "GRIDWATCH_KAFKA_IDEMPOTENT": "true", "GRIDWATCH_KAFKA_TANSU_QUIRKS": "off",
    "GRIDWATCH_WORKER_SESSION_TIMEOUT_S": "10", "GRIDWATCH_WORKER_LOG_LEVEL": "info",
}


@dataclass
class Run:
    """One pipeline (topic prefix) on the cluster: ``bridges`` bridges and ``workers`` workers."""

    cluster: Cluster
    prefix: str
    bridges: int = 2
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)  # more GRIDWATCH_... settings for every component
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = {"GRIDWATCH_MQTT_ALERT_PREFIX": self.alert_prefix, **self.env}  # runs share Mosquitto, not their alerts
        for i in range(1, self.bridges + 1):
            self.procs[f"b{i}"] = self.cluster.component("bridge", f"b{i}", self.prefix, [], env)
        for i in range(1, self.workers + 1):
            self.procs[f"w{i}"] = self.cluster.component("worker", f"w{i}", self.prefix, [], env)

    @property
    def alert_prefix(self) -> str:
        return f"gridwatch/{self.prefix}/alerts"

    def start(self, timeout: float = 180) -> Run:
        for name, p in self.procs.items():
            if name.startswith("w"):
                p.start()
        for name, p in self.procs.items():
            if name.startswith("b"):
                p.start()
        for name, p in self.procs.items():
            p.wait_log("bridge running" if name.startswith("b") else "worker ready", timeout)
        return self

    def topic(self, family: str) -> str:
        return f"{self.prefix}.{family}"

    def stop(self) -> None:
        for p in self.procs.values():  # a frozen (SIGSTOPped) one must wake to hear SIGTERM
            if p.proc is not None and p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGCONT)
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.stop(timeout=15)
