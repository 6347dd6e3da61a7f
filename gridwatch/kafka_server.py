"""Run one Apache Kafka node (KRaft) from the jars the set-up step fetched: config, storage format, process.

Serves both a single combined node (`gridwatch stack --engine kafka`, tests) and a node of a static
three-voter quorum (the cluster harness): ``kafka_properties`` takes the listeners and voters as data.
No Java of ours: ``kafka.tools.StorageTool`` formats the log folder, ``kafka.Kafka`` runs the node.

Traps this module handles (checked with Kafka 4.1.1 on Java 17):
* a heap of 256 MB or less dies at start unless ``log.cleaner.dedupe.buffer.size`` is lowered from its
  128 MB default, so it is always set to 16 MB (a changelog-sized cleaner needs no more);
* ``group.initial.rebalance.delay.ms=0``, or every new consumer group waits 3 s before its first join;
* ``--standalone`` only goes with ``controller.quorum.bootstrap.servers``; a static ``voters`` list is
  formatted without it;
* SIGTERM usually stops a node in 2-5 s, but one holding thousands of partitions can ignore it for
  a minute: ``stop`` waits a bounded time and then kills.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("gridwatch.kafka_server")

ROOT = Path(__file__).resolve().parent.parent
LIBS_ENV = "GRIDWATCH_KAFKA_LIBS"
DEFAULT_HEAP = "512m"


class KafkaServerError(RuntimeError):
    """The Kafka node could not be set up or started; the message says what to fix."""


def kafka_libs() -> Path:
    """The folder of Kafka's jars: $GRIDWATCH_KAFKA_LIBS, else build/kafka/libs of the checkout."""
    libs = Path(os.environ.get(LIBS_ENV) or ROOT / "build" / "kafka" / "libs")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaServerError(
            f"Apache Kafka's jars are not in {libs}: run ./run setup (it fetches them from Maven Central "
            f"with deploy/kafka/pom.xml), or point {LIBS_ENV} at a folder holding kafka_2.13-*.jar and its "
            "dependencies. Or pass --kafka kafka://HOST:9092 to use an existing cluster.")
    return libs


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaServerError("java is not installed: run ./run setup (apt-get install openjdk-17-jre-headless)")
    return java


def kafka_version(libs: Path | None = None) -> str:
    """The Kafka version of the jars, from the broker jar's name (e.g. 4.1.1)."""
    for jar in (libs or kafka_libs()).glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return "unknown"


def _hostport(value: str) -> str:
    return value.split("://", 1)[-1]


def kafka_properties(node_id: int, listeners: Mapping[str, str], advertised: Mapping[str, str] | str,
                     voters: Mapping[int, str], log_dir: Path | str,
                     extra: Mapping[str, object] | None = None) -> str:
    """A KRaft ``server.properties`` for a combined broker+controller node.

    ``listeners``: listener name -> host:port, one of them named ``CONTROLLER`` (the quorum's), e.g.
    ``{"PLAINTEXT": "10.0.0.1:9092", "CONTROLLER": "10.0.0.1:9093"}``.
    ``advertised``: what clients are told, name -> host:port (or a host:port for ``PLAINTEXT``).
    ``voters``: node id -> controller host:port for every voter of the static quorum (just this node
    for a single one). ``extra`` overrides or adds any key (e.g. replication factors of a cluster).
    Defaults are for one node (replication 1); a cluster passes its factors in ``extra``.
    """
    if "CONTROLLER" not in listeners:
        raise KafkaServerError("kafka_properties: listeners needs a CONTROLLER entry (the quorum listener)")
    if isinstance(advertised, str):
        advertised = {"PLAINTEXT": advertised}
    if node_id not in voters:
        raise KafkaServerError(f"kafka_properties: node {node_id} must be one of the voters {sorted(voters)}")
    client = [name for name in listeners if name != "CONTROLLER"]
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": ",".join(f"{i}@{_hostport(a)}" for i, a in sorted(voters.items())),
        "listeners": ",".join(f"{n}://{_hostport(a)}" for n, a in listeners.items()),
        "advertised.listeners": ",".join(f"{n}://{_hostport(a)}" for n, a in advertised.items()),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client[0] if client else "PLAINTEXT",
        "listener.security.protocol.map": ",".join(f"{n}:PLAINTEXT" for n in listeners),
        "log.dirs": str(log_dir),
        # One node: every internal topic with one replica.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.num.partitions": 8,
        "num.partitions": 8,
        # A new consumer group joins at once (the 3 s default delays every worker start).
        "group.initial.rebalance.delay.ms": 0,
        # The cleaner's dedupe buffer comes out of the heap (128 MB by default): a small heap dies at start.
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        # Topics are created by gridwatch with their partition counts and retention (pipeline.kafka_io);
        # an auto-created one would get one partition and the Faust worker would ignore the rest.
        "auto.create.topics.enable": "false",
        "log.retention.hours": 168,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 2,
        "unclean.leader.election.enable": "false",
    }
    props.update(extra or {})
    lines = [f"# written by gridwatch.kafka_server for node {node_id}"]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def log4j2_config(log_file: Path) -> str:
    """log4j2 XML: the node logs to ``log_file`` (rolled at 20 MB, 3 kept), state changes and requests quiet."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- written by gridwatch.kafka_server: the broker's own log, beside its data -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="{log_file}" filePattern="{log_file}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""


def _tool(libs: Path, *args: str, timeout: float = 60) -> str:
    cmd = [java_binary(), "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", "kafka.tools.StorageTool",
           *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise KafkaServerError(f"kafka StorageTool {args[0]} failed ({res.returncode}): "
                               f"{(res.stderr or res.stdout).strip()[-1500:]}")
    return res.stdout


def random_cluster_id(libs: Path | None = None) -> str:
    """A new cluster id (``StorageTool random-uuid``); every node of one cluster is formatted with it."""
    return _tool(libs or kafka_libs(), "random-uuid").strip().splitlines()[-1]


def stored_cluster_id(log_dir: Path) -> str | None:
    """The cluster id a formatted log folder holds (its meta.properties), or None if never formatted."""
    meta = Path(log_dir) / "meta.properties"
    with contextlib.suppress(OSError):
        m = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.M)
        if m:
            return m.group(1)
    return None


def format_storage(config: Path, log_dir: Path, cluster_id: str | None = None,
                   libs: Path | None = None) -> str:
    """Format ``log_dir`` once (``StorageTool format``); a formatted folder is kept as it is.

    Returns the cluster id in use. Reformatting would throw the data away, so an existing folder of
    another cluster is an error rather than silently replaced.
    """
    existing = stored_cluster_id(log_dir)
    if existing is not None:
        if cluster_id is not None and cluster_id != existing:
            raise KafkaServerError(f"{log_dir} belongs to Kafka cluster {existing}, not {cluster_id}: "
                                   "remove the folder to start afresh")
        return existing
    libs = libs or kafka_libs()
    cluster_id = cluster_id or random_cluster_id(libs)
    _tool(libs, "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted")
    return cluster_id


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
        return True
    return False


async def _registered(bootstrap: str, node_ids: set[int], timeout_s: float) -> bool:
    """The nodes are unfenced brokers, and every partition already on disk answers as led (after a
    restart a broker is listed a moment before it has taken the leadership of its partitions back:
    a read then gets NotLeaderForPartition)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    if not _port_open(bootstrap):  # (and spares the log aiokafka's connection errors)
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    consumer = None
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "Failed fetch offsets ... NotLeaderForPartition" is the point here
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        info = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        if not node_ids <= {b["node_id"] for b in info.get("brokers", [])}:
            return False
        topics = await asyncio.wait_for(admin.describe_topics(), timeout_s)
        parts = [(t["topic"], p) for t in topics for p in t.get("partitions") or []]
        if any(p.get("leader", -1) < 0 for _, p in parts):
            return False
        if parts:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                        request_timeout_ms=int(timeout_s * 1000))
            await asyncio.wait_for(consumer.start(), timeout_s)
            tps = [TopicPartition(t, p["partition"]) for t, p in parts]
            await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        return True
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        quiet.setLevel(level)


def wait_brokers(bootstrap: str, node_ids: set[int], timeout: float, alive=None) -> None:  # type: ignore[no-untyped-def]
    """Wait until the cluster's metadata lists every node in ``node_ids`` as a broker (unfenced: it takes
    produces). ``alive``: a callable that turns False when waiting is pointless (the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise KafkaServerError("the Kafka node exited while starting")
        if asyncio.run(_registered(bootstrap, node_ids, 5.0)):
            return
        time.sleep(0.25)
    raise KafkaServerError(f"Kafka brokers {sorted(node_ids)} not ready at {bootstrap} within {timeout:.0f}s")


@dataclass
class KafkaNode:
    """One Kafka node in its own folder: ``server.properties``, ``log4j2.xml``, ``data/``, ``server.log``.

    ``properties``: from ``kafka_properties`` (its log.dirs should be ``data_dir``). ``bootstrap``: the
    host:port this process can reach it on, to wait for readiness. ``netns``: run it inside a network
    namespace (``ip netns exec``), for the cluster harness.
    """

    workdir: Path
    node_id: int
    properties: str
    bootstrap: str
    heap: str = DEFAULT_HEAP
    netns: str | None = None
    jvm_opts: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def prepare(self, cluster_id: str | None = None) -> str:
        """Write the config files and format the log folder if new; returns the cluster id."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.properties)
        (self.workdir / "log4j2.xml").write_text(log4j2_config(self.log_path))
        return format_storage(self.config_path, self.data_dir, cluster_id)

    def argv(self) -> list[str]:
        libs = kafka_libs()
        cmd = [java_binary(), f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
               "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.xml'}",
               f"-Dkafka.logs.dir={self.workdir}", *self.jvm_opts,
               "-cp", f"{libs}/*", "kafka.Kafka", str(self.config_path)]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def launch(self) -> None:
        """Start the process without waiting (a cluster starts all nodes, then waits for all)."""
        from gridwatch.core.procs import die_with_parent

        if stored_cluster_id(self.data_dir) is None:
            raise KafkaServerError(f"{self.data_dir} is not formatted: call prepare() first")
        with open(self.workdir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def start(self, timeout: float = 60.0, cluster_id: str | None = None) -> KafkaNode:
        """Prepare, launch and wait until this node takes produces (it is an unfenced broker)."""
        self.prepare(cluster_id)
        self.launch()
        try:
            wait_brokers(self.bootstrap, {self.node_id}, timeout, self.alive)
        except KafkaServerError as e:
            self.stop(timeout=5)
            raise KafkaServerError(f"{e}\n--- {self.log_path} ---\n{self.log_tail()}") from None
        return self

    def log_tail(self, chars: int = 2500) -> str:
        text = ""
        for p in (self.workdir / "stdout.log", self.log_path):
            with contextlib.suppress(OSError):
                text += p.read_text(errors="replace")[-chars:]
        return text[-chars:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal to the node (SIGSTOP/SIGCONT for fault tests)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # type: ignore[union-attr]

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean shutdown that flushes the log), a bounded wait, then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Kafka node %d ignored SIGTERM for %.0fs: killing it", self.node_id, timeout)
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def single_node(workdir: Path, port: int, controller_port: int, host: str = "127.0.0.1",
                extra: Mapping[str, object] | None = None, heap: str = DEFAULT_HEAP) -> KafkaNode:
    """A one-node KRaft Kafka (broker and controller in one process) in ``workdir``."""
    props = kafka_properties(1, {"PLAINTEXT": f"{host}:{port}", "CONTROLLER": f"{host}:{controller_port}"},
                             f"{host}:{port}", {1: f"{host}:{controller_port}"}, workdir / "data", extra)
    return KafkaNode(workdir, 1, props, f"{host}:{port}", heap=heap)
