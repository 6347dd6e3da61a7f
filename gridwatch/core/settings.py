"""Settings: one commented YAML file, overridden by env vars and CLI flags.

Why a flat dataclass per section: the rest of the code reads typed attributes, and ``--help`` /
error messages can name the exact YAML key or env var an operator has to change.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from gridwatch.core.yaml_files import read_yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_CONFIG = CONFIG_DIR / "gridwatch.yaml"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("GRIDWATCH_STATE_DIR", PROJECT_ROOT / "var"))
STACK_FILE = STATE_DIR / "stack.json"


def embedded_store_path(prefix: str, state: Path = STATE_DIR) -> Path:
    """The embedded SQLite store of topic prefix ``prefix`` (``store.url`` empty) under the state folder."""
    return state / f"store-{prefix}.db"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the key to fix."""


@dataclass
class KafkaSettings:
    url: str = "embedded"
    topic_prefix: str = "gw"
    partitions: int = 8
    replication_factor: int = 1
    tansu_quirks: str = "auto"
    # Producers (bridges and workers) with enable_idempotence: a retried produce is not written twice
    # (real Kafka only).
    idempotent: bool = False

    def quirks_enabled(self) -> bool:
        """Work-arounds for the Tansu broker: on when forced, or (auto) when the embedded stack runs
        Tansu. A worker given a URL detects Tansu itself (gridwatch.compat.detect_tansu)."""
        if self.tansu_quirks in ("on", "true", "1"):
            return True
        if self.tansu_quirks in ("off", "false", "0"):
            return False
        return self.url == "embedded" and stack_engine() == "tansu"


@dataclass
class MqttSettings:
    url: str = "embedded"
    username: str = ""
    password: str = ""  # better from the environment: GRIDWATCH_MQTT_PASSWORD
    ca_file: str = ""  # CA certificate for mqtts:// (TLS)
    alert_prefix: str = "gridwatch/alerts"
    stats_prefix: str = "gridwatch/stats"
    # Per-device publish limit of the embedded Mosquitto (plugin deploy/mosquitto/gw_ratelimit.c):
    # token buckets per username on messages and payload bytes; denied this long -> banned this long.
    publish_limit: bool = True
    publish_limit_msgs_per_s: float = 50.0
    publish_limit_msgs_burst: int = 500
    publish_limit_bytes_per_s: int = 1_048_576
    publish_limit_bytes_burst: int = 8_388_608
    publish_limit_ban_after_s: float = 5.0
    publish_limit_ban_s: float = 300.0
    publish_limit_exempt: str = ""  # usernames never limited besides the service accounts, comma-separated

    def publish_limit_exempt_users(self) -> list[str]:
        return [u.strip() for u in self.publish_limit_exempt.split(",") if u.strip()]


@dataclass
class CitySettings:
    path: str = "sample"


@dataclass
class BridgeSettings:
    client_id: str = "gridwatch-bridge-1"
    share_group: str = ""
    max_batch_messages: int = 2000
    linger_ms: int = 10
    max_payload_bytes: int = 262144
    max_future_skew_s: int = 600
    stats_interval_s: float = 1.0
    max_record_bytes: int = 0  # a Kafka record's value at most (0 = the topic's max.message.bytes, else 1 MB)
    deadletter_payload_bytes: int = 65536  # head of a bad payload kept in its dead letter
    deadletter_rate_per_s: float = 1.0  # dead letters per sender (device / gateway id), token bucket
    deadletter_burst: int = 20
    deadletter_total_rate_per_s: float = 100.0  # ... and for all senders together
    deadletter_total_burst: int = 1000
    deadletter_alarm_share: float = 0.5  # log an error when more than this share of messages is dead-lettered
    drain_s: float = 5.0  # on SIGTERM/SIGINT: wait this long for Kafka to confirm, then stop without acking
    qos0_queue_max: int = 20000  # QoS 0 messages waiting for Kafka at most (more are dropped and counted)


@dataclass
class WorkerSettings:
    app_id: str = "gridwatch"
    rules: str = "rules.yaml"
    allowed_lateness_s: float = 5
    offline_scan_s: float = 10
    presence_checkpoint_s: float = 30
    # Event-time merge of grid events (agents/watermarks.py, agents/event_order.py): how often (wall
    # clock) the telemetry agent announces its partitions' watermarks, and after how long without
    # readings a partition is announced idle so it does not hold the incident agent back.
    watermark_interval_s: float = 0.1
    upstream_idle_s: float = 1.0
    wall_clock_advance_slack_s: float = 0.2  # 0 = off (replay workers); else the slack's ceiling
    wall_clock_advance_slack_min_s: float = 0.02  # its floor: between them it follows how late inputs come
    # The alerts agent forgets which (event, phase) it published once that is this much older (event
    # time) than the newest event of its partition.
    alert_dedupe_retention_s: float = 604800
    log_level: str = "info"
    shutdown_s: float = 10.0  # SIGTERM/SIGINT: exit at most this long after (uncommitted input is redelivered)
    # Agents this worker runs: "" = the defaults (all but opt-in ones such as vision), "+vision" = the
    # defaults plus vision, "all", or an explicit list "vision" / "telemetry,alerts".
    agents: str = ""
    # Kafka consumer-group session timeout of the Faust worker; 0 = by engine (6 s on Tansu, 30 s on Kafka).
    session_timeout_s: float = 0
    # Worker, bridge and api processes: each full garbage collection freezes its survivors (short pauses,
    # core/gc_policy.py); this often one full collection walks everything once (0 = never).
    gc_full_every_s: float = 900
    # The agents' counters (readings, incident changes, dead letters, ...) to the log and to MQTT
    # <stats_prefix>/worker/<worker> this often, when they moved (agents/worker_stats.py); 0 = never.
    stats_interval_s: float = 30.0
    # Records each agent's channel holds before fetching its partitions pauses (Faust's stream buffer).
    stream_buffer: int = 4096
    # Faust's Kafka consumer in the worker's own event loop (true) or in a thread of its own, as Faust ships it.
    consumer_in_loop: bool = True


@dataclass
class VisionSettings:
    """Cameras: the capture service (`gridwatch cameras`) and the vision agent."""

    cameras: str = "cameras.yaml"  # camera list, zones, rules, detector (config folder or absolute path)


@dataclass
class WebSettings:
    """The web side (`gridwatch api`): Open311 API, operator console, live stream."""

    host: str = "127.0.0.1"
    port: int = 8080
    services: str = "services.yaml"  # Open311 service catalogue + chat keyword rules (config folder or absolute)
    operators: str = "operators.yaml"  # console accounts with role and tier scope
    jurisdiction_id: str = ""  # "" = accept any jurisdiction_id; else only this one
    require_api_key: bool = False
    api_keys: str = ""  # comma-separated keys accepted on POST requests when require_api_key is true
    rate_per_min: float = 30.0  # public POST token bucket per api_key / client IP
    rate_burst: int = 10
    # Reverse proxies (addresses / CIDRs, comma-separated) whose X-Forwarded-For is believed; "" = none
    trusted_proxies: str = ""
    session_secret: str = ""  # HMAC key of console tokens; "" = random per process
    session_ttl_s: int = 43200
    # Failed console logins: a bucket per client address and one per account name
    login_rate_per_min: float = 20.0
    login_burst: int = 10
    login_account_rate_per_min: float = 30.0
    login_account_burst: int = 30
    audit_log: str = ""  # JSON lines of logins and operator actions ("" = <state dir>/audit.log)
    ready_timeout_s: float = 2.0  # readiness: Kafka metadata / MQTT CONNACK round trip
    dedupe_window_s: int = 600  # an identical POST (or the same Idempotency-Key) within this window: same id
    max_body_bytes: int = 1048576
    chat_import_max: int = 500  # records per chat import call
    evidence_dir: str = ""  # snapshot pictures of vision events ("" = <state dir>/evidence)


@dataclass
class StatsSettings:
    """Statistics of the console (``GET /api/stats``), as offices count them."""

    satisfied_min_rating: int = 4  # an evaluation rated at least this (of 5) counts as satisfied


@dataclass
class HotlineSettings:
    """The 12345 citizen hotline link: inbound work orders (``POST /api/hotline/orders``)."""

    token_env: str = "GRIDWATCH_HOTLINE_TOKENS"  # env var with the accepted bearer tokens, comma-separated
    token_file: str = ""  # ... or a file with one token per line


@dataclass
class InfluxSettings:
    """Time-series sink (InfluxDB 2 write API): readings, grid events, incident changes, presence."""

    enabled: bool = False  # the influx_sink agent does nothing unless this is true
    url: str = "http://127.0.0.1:8086"
    org: str = "gridwatch"
    bucket: str = "gridwatch"
    token: str = ""  # better from the environment: GRIDWATCH_INFLUX_TOKEN
    batch_size: int = 5000  # points per write request
    flush_interval_ms: int = 1000  # a partial batch is written after this long
    max_pending_points: int = 100000  # bounded queue: producers wait when this many are unwritten
    writers: int = 2  # concurrent write requests
    max_retries: int = 10  # per batch, on 429 / 5xx / connection errors (then the batch is dropped)
    retry_base_s: float = 0.5  # back-off: base * 2^attempt, capped, with jitter
    retry_max_s: float = 30.0
    timeout_s: float = 10.0
    device_tag: bool = True  # tag readings with the device id (one series per device and field)
    presence_interval_s: int = 60  # event-time period of the device_presence points


@dataclass
class StoreSettings:
    """System of record (gridwatch/store): incidents, their versions, reports, actions, grid events."""

    url: str = ""  # SQLAlchemy URL; "" = embedded SQLite at <state dir>/store-<topic prefix>.db
    batch_size: int = 500  # Kafka records per store write (one transaction)
    within_s: float = 1.0  # a partial batch is written after this long
    retention_years: int = 10  # case files older than this many years are purged (`gridwatch store purge`)


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    city: CitySettings = field(default_factory=CitySettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    hotline: HotlineSettings = field(default_factory=HotlineSettings)
    # The sink plug-ins (agents/sinks/) a worker runs: one entry each, ``type`` picks the plug-in. A list,
    # not a section: a user file replaces it whole. Read in the agents layer, which knows the plug-ins.
    sinks: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "influx"}, {"type": "store"}])
    source: str = str(DEFAULT_CONFIG)

    # -- resolved endpoints -------------------------------------------------------------------
    def kafka_bootstrap(self) -> str:
        """host:port[,host:port] for aiokafka, resolving "embedded" through var/stack.json."""
        url = self.kafka.url
        if url == "embedded":
            url = _stack_value("kafka", "kafka.url")
        return url.removeprefix("kafka://")

    def mqtt_endpoint(self) -> tuple[str, int, str | None, str | None]:
        """(host, port, username, password) of the MQTT broker; user/password settings win over the URL."""
        url = self.mqtt.url
        if url == "embedded":
            url = _stack_value("mqtt", "mqtt.url")
        host, port, user, password = parse_mqtt_url(url)
        return host, port, self.mqtt.username or user, self.mqtt.password or password

    def mqtt_tls(self) -> bool:
        url = self.mqtt.url if self.mqtt.url != "embedded" else _stack_value("mqtt", "mqtt.url")
        return url.startswith("mqtts://")

    def topic(self, name: str) -> str:
        return f"{self.kafka.topic_prefix}.{name}"

    def config_path(self, name: str) -> Path:
        """A config file named in a setting: absolute, beside the user's config file, or shipped."""
        p = Path(name)
        if not p.is_absolute():
            base = Path(self.source).parent
            p = base / p if (base / p).exists() else CONFIG_DIR / p
        return p

    def rules_path(self) -> Path:
        return self.config_path(self.worker.rules)


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None]:
    from urllib.parse import urlparse

    if "://" not in url:
        url = "mqtt://" + url
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp", "mqtts"):
        raise SettingsError(f"mqtt url {url!r}: scheme must be mqtt:// or mqtts:// (e.g. mqtt://127.0.0.1:1883)")
    return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883), u.username, u.password


def stack_engine() -> str:
    """The Kafka engine of the running embedded stack ("tansu" for a state file older than the engine key)."""
    try:
        return str(json.loads(STACK_FILE.read_text()).get("engine", "tansu"))
    except (OSError, ValueError, AttributeError):
        return "tansu"


def _stack_value(key: str, setting: str) -> str:
    try:
        data = json.loads(STACK_FILE.read_text())
        return str(data[key])
    except (OSError, ValueError, KeyError):
        raise SettingsError(
            f"{setting} is 'embedded' but no embedded stack is running ({STACK_FILE} missing). "
            f"Start one with `gridwatch stack`, or pass --{key} URL / set GRIDWATCH_{key.upper()}_URL."
        ) from None


def _coerce(value: str, like: Any, name: str) -> Any:
    try:
        if isinstance(like, bool):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(like, int):
            return int(value)
        if isinstance(like, float):
            return float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a valid {type(like).__name__}") from None
    return value


def _apply(section_obj: Any, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(section_obj)}
    for key, value in (data or {}).items():
        if key not in known:
            raise SettingsError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(section_obj, key)
        setattr(section_obj, key, _checked(value, current, f"{where}.{key}"))


def fill(section_obj: Any, data: dict[str, Any], where: str) -> None:
    """Set a dataclass's fields from a mapping, each checked against its default's type (a plug-in's own
    typed config: the same rules as a settings section)."""
    _apply(section_obj, data, where)


# Top-level keys that hold a list of plug-in entries instead of a section of settings.
LISTS = ("sinks",)


def _entries(values: Any, where: str) -> list[dict[str, Any]]:
    """A list of mappings, each with a string ``type`` (the plug-in layer checks the rest)."""
    if not isinstance(values, list):
        raise SettingsError(f"{where}: a list of entries, e.g. - type: store")
    for i, entry in enumerate(values):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise SettingsError(f"{where}[{i}]: a mapping with a type, e.g. - type: store; got {entry!r}")
    return [dict(e) for e in values]


def _checked(value: Any, like: Any, name: str) -> Any:
    """``value`` if it has the type of the default ``like`` (an int is a fine float); else SettingsError.

    Why strict: YAML turns ``partitions:`` into None and ``port: yes`` into True; either would only
    fail later, far from the file, as a TypeError. bool is not accepted as a number.
    """
    kind = type(like).__name__
    example = f" (e.g. {like!r})" if like not in ("", None) else ""
    if value is None:
        raise SettingsError(f"{name}: empty value; give a {kind}{example} or remove the key for the default")
    ok = isinstance(value, type(like)) and not (isinstance(value, bool) and not isinstance(like, bool))
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise SettingsError(f"{name}: expected {kind}{example}, got {value!r}")
    return value


# Allowed ranges of numeric settings, (low, high, low_is_exclusive); a number not named here must be
# finite and >= 0. The check runs after the files, the environment and the flags are merged.
RANGES: dict[str, tuple[float, float, bool]] = {
    "kafka.partitions": (1, 10_000, False), "kafka.replication_factor": (1, 100, False),
    "bridge.max_batch_messages": (1, 10_000_000, False), "bridge.max_payload_bytes": (1, 1 << 31, False),
    "bridge.stats_interval_s": (0, math.inf, True), "web.port": (0, 65_535, False),
    "web.rate_per_min": (0, math.inf, True), "web.rate_burst": (1, 10_000_000, False),
    "web.login_rate_per_min": (0, math.inf, True), "web.login_burst": (1, 1_000_000, False),
    "web.login_account_rate_per_min": (0, math.inf, True), "web.login_account_burst": (1, 1_000_000, False),
    "web.ready_timeout_s": (0, 60, True),
    "web.session_ttl_s": (1, 366 * 86_400, False), "web.max_body_bytes": (1, 1 << 31, False),
    "web.chat_import_max": (1, 1_000_000, False), "worker.offline_scan_s": (0, math.inf, True),
    "worker.presence_checkpoint_s": (0, math.inf, True), "worker.watermark_interval_s": (0, math.inf, True),
    "worker.upstream_idle_s": (0, math.inf, True), "worker.wall_clock_advance_slack_s": (0, 60, False),
    "worker.wall_clock_advance_slack_min_s": (0, 60, False), "worker.shutdown_s": (0, 3600, True),
    "worker.gc_full_every_s": (0, math.inf, False), "worker.stats_interval_s": (0, math.inf, False),
    "worker.stream_buffer": (1, 1_000_000, False), "influx.batch_size": (1, 10_000_000, False),
    "influx.flush_interval_ms": (1, math.inf, False), "influx.max_pending_points": (1, 1 << 40, False),
    "influx.writers": (1, 1_000, False), "influx.timeout_s": (0, math.inf, True),
    "influx.presence_interval_s": (1, math.inf, False),
    "store.batch_size": (1, 1_000_000, False), "store.within_s": (0, math.inf, True),
    "store.retention_years": (1, 1000, False),
    "mqtt.publish_limit_msgs_per_s": (0, 1e9, True), "mqtt.publish_limit_msgs_burst": (1, 1e9, False),
    "mqtt.publish_limit_bytes_per_s": (0, 1e15, True), "mqtt.publish_limit_bytes_burst": (1, 1e15, False),
    "mqtt.publish_limit_ban_after_s": (0, 86_400, False), "mqtt.publish_limit_ban_s": (0, 366 * 86_400, False),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "kafka.tansu_quirks": ("auto", "on", "off", "true", "false", "1", "0"),
    "worker.log_level": ("debug", "info", "warning", "error", "critical"),
}


def validate(s: Settings) -> None:
    """Every setting has its type and lies in its range; a SettingsError names the first key that does not."""
    for sect in fields(s):
        obj = getattr(s, sect.name)
        if not is_dataclass(obj):
            continue
        for fl in fields(obj):
            key = f"{sect.name}.{fl.name}"
            factory = fl.default_factory
            default = fl.default if fl.default is not MISSING else factory() if callable(factory) else None
            value = _checked(getattr(obj, fl.name), default, key)
            setattr(obj, fl.name, value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                lo, hi, strict = RANGES.get(key, (0, math.inf, False))
                if not math.isfinite(value) or value < lo or (strict and value == lo) or value > hi:
                    bound = f"> {lo:g}" if strict else f">= {lo:g}"
                    bound += f" and <= {hi:g}" if math.isfinite(hi) else ""
                    raise SettingsError(f"{key} must be {bound}, got {value!r}")
            if key in CHOICES and value.lower() not in CHOICES[key]:
                raise SettingsError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    _validate_publish_limit(s)


def _validate_publish_limit(s: Settings) -> None:
    """Checks across keys: a byte burst below the largest accepted payload would deny every such message."""
    m = s.mqtt
    if m.publish_limit_bytes_burst < s.bridge.max_payload_bytes:
        raise SettingsError(f"mqtt.publish_limit_bytes_burst ({m.publish_limit_bytes_burst}) must be >= "
                            f"bridge.max_payload_bytes ({s.bridge.max_payload_bytes}): a device could never "
                            "publish a payload of the largest accepted size")
    for user in m.publish_limit_exempt_users():
        if any(c.isspace() for c in user):
            raise SettingsError(f"mqtt.publish_limit_exempt: username {user!r} has white space")


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from the default file, an optional user file, env vars and overrides.

    ``overrides`` uses dotted keys (``{"kafka.url": "kafka://h:9092"}``); None values are ignored so
    argparse namespaces can be passed straight through.
    """
    s = Settings()
    files = [DEFAULT_CONFIG] + ([Path(path)] if path else [])
    for f in files:
        data = read_yaml(f, SettingsError, "config file") or {}
        if not isinstance(data, dict):
            raise SettingsError(f"config file {f}: top level must be a mapping of sections")
        for section, values in data.items():
            if section in LISTS:
                setattr(s, section, _entries(values, f"{f}:{section}"))
                continue
            obj = getattr(s, section, None)
            if not is_dataclass(obj):
                raise SettingsError(f"{f}: unknown section {section!r}")
            if not isinstance(values, dict):
                raise SettingsError(f"{f}: section {section!r} must be a mapping")
            _apply(obj, values, f"{f}:{section}")
        s.source = str(f)
    for sect in fields(s):
        obj = getattr(s, sect.name)
        if not is_dataclass(obj):
            continue
        for fl in fields(obj):
            env = f"GRIDWATCH_{sect.name}_{fl.name}".upper()
            if env in os.environ:
                setattr(obj, fl.name, _coerce(os.environ[env], getattr(obj, fl.name), env))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        sect_name, _, key = dotted.partition(".")
        obj = getattr(s, sect_name, None)
        if not is_dataclass(obj) or not hasattr(obj, key):
            raise SettingsError(f"unknown setting {dotted}")
        setattr(obj, key, value)
    validate(s)
    return s


def with_prefix(s: Settings, prefix: str) -> Settings:
    """A copy of the settings writing to another topic namespace (replays, tests)."""
    return replace(s, kafka=replace(s.kafka, topic_prefix=prefix))
