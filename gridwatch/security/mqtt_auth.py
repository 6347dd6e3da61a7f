"""Per-device MQTT credentials and ACLs for Mosquitto.

Every device and gateway logs in with its own id as the username. Passwords are derived from one
master secret (HMAC-SHA256(secret, id)), so a provisioning tool and the broker agree without a table of
100k passwords to ship around; the secret comes from an environment variable or a file, never the repo.
The ACL lets a device publish only on its own telemetry topic and a gateway only on its own gateway
topic; that a gateway only speaks for devices it owns is checked by the bridge against the registry
(a foreign device's reading becomes a dead letter).

    gridwatch mqtt-credentials --out DIR      # writes passwd + acl for the configured city
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gridwatch.pipeline.schemas.mqtt_topics import (
    ALERT_PREFIX,
    INCIDENTS_PREFIX,
    LEDGER_PREFIX,
    STATS_PREFIX,
    TELEMETRY_ACL_PATTERNS,
    TELEMETRY_PATTERNS,
    replay_prefix,
)

from .placeholders import demo_allowed, is_placeholder

SECRET_ENV = "GRIDWATCH_MQTT_SECRET"
SECRET_FILE_ENV = "GRIDWATCH_MQTT_SECRET_FILE"
ITERATIONS = 101  # what mosquitto_passwd 2.0 uses for $7$ (PBKDF2-SHA512)


class CredentialError(ValueError):
    """The master secret is missing or unusable; the message says where to put it."""


def load_secret() -> bytes:
    """The master secret from GRIDWATCH_MQTT_SECRET or the file named by GRIDWATCH_MQTT_SECRET_FILE."""
    if os.environ.get(SECRET_ENV):
        if is_placeholder(os.environ[SECRET_ENV]) and not demo_allowed():
            raise CredentialError(f"{SECRET_ENV} is the placeholder of an example file; set 16+ random bytes, "
                                  f"e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return os.environ[SECRET_ENV].encode()
    path = os.environ.get(SECRET_FILE_ENV)
    if path:
        try:
            data = Path(path).read_bytes().strip()
        except OSError as e:
            raise CredentialError(f"{SECRET_FILE_ENV}={path}: {e.strerror}") from None
        if len(data) >= 16:
            return data
        raise CredentialError(f"{SECRET_FILE_ENV}={path}: the secret must be at least 16 bytes")
    raise CredentialError(f"no MQTT master secret: set {SECRET_ENV} or {SECRET_FILE_ENV} (16+ random bytes)")


def device_password(secret: bytes, client: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(secret, client.encode(), hashlib.sha256).digest()[:18]).decode()


def passwd_line(user: str, password: str, salt: bytes | None = None) -> str:
    """One line of a Mosquitto 2.0 password file ($7$ = PBKDF2-SHA512, as mosquitto_passwd writes)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"{user}:$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class ServiceAccount:
    user: str
    password: str
    acl: tuple[str, ...]  # Mosquitto ACL lines for this user ("topic read x", "topic write y")


def service_accounts(secret: bytes, alert_prefix: str = ALERT_PREFIX, stats_prefix: str = STATS_PREFIX,
                     incidents_prefix: str = INCIDENTS_PREFIX) -> list[ServiceAccount]:
    """The pipeline's own MQTT users, each allowed exactly the topics its service uses.

    bridge (also ``gridwatch record``): reads device telemetry, publishes ``<stats>/bridge/<client id>``.
    worker: publishes alerts (and reads and writes the publish ledgers, ``gridwatch/ledger/#``), incident changes (the MQTT channel's ``topic_prefix``), the vision
    agent's ``<stats>/vision/<worker>`` and its own figures, ``<stats>/worker/<worker>``; a replay's worker (``gridwatch replay``) publishes the same under
    ``replay/<ns>/`` (:func:`gridwatch.pipeline.schemas.mqtt_topics.replay_prefix`). operator: reads all of it.
    simulator: publishes any device's telemetry and ``<stats>/simulator``.
    """
    pw = lambda name: device_password(secret, "service:" + name)  # noqa: E731
    # a replay's worker: the replay namespace as a single-level wildcard
    worker_writes = (f"{alert_prefix}/#", f"{incidents_prefix}/#", f"{stats_prefix}/vision/#", f"{stats_prefix}/worker/#",
                     f"{replay_prefix('+', ALERT_PREFIX)}/#", f"{replay_prefix('+', STATS_PREFIX)}/vision/#",
                     f"{replay_prefix('+', STATS_PREFIX)}/worker/#")
    return [
        ServiceAccount("gridwatch-bridge", pw("gridwatch-bridge"),
                       (*(f"topic read {t}" for t in TELEMETRY_PATTERNS),
                        f"topic write {stats_prefix}/bridge/#")),
        ServiceAccount("gridwatch-worker", pw("gridwatch-worker"),
                       (*(f"topic write {t}" for t in worker_writes), f"topic readwrite {LEDGER_PREFIX}/#")),
        ServiceAccount("gridwatch-operator", pw("gridwatch-operator"),
                       (f"topic read {alert_prefix}/#", f"topic read {incidents_prefix}/#", f"topic read {stats_prefix}/#")),
        ServiceAccount("gridwatch-simulator", pw("gridwatch-simulator"),
                       (*(f"topic write {t}" for t in TELEMETRY_PATTERNS),
                        f"topic write {stats_prefix}/simulator")),
    ]


def service_usernames() -> list[str]:
    """The service accounts' usernames: the broker's publish limit never applies to them."""
    return [acc.user for acc in service_accounts(b"")]


def services_passwd(out: Path) -> Path:
    """The password file of the services listener, written beside ``passwd`` by :func:`write_broker_files`.

    Why two listeners: on the device listener Mosquitto replaces every client id by the username
    (``use_username_as_clientid``), so a device can hold no session but its own, the bridge's least of
    all. The services listener (internal network only) lets several workers or bridges share one account
    with distinct client ids, and no device can log in there.
    """
    return out / "passwd-services"


def write_broker_files(out: Path, secret: bytes, clients: Iterable[str], **prefixes: str) -> tuple[Path, Path]:
    """Write Mosquitto `passwd` and `acl` files for these device/gateway ids plus the service accounts
    (and `passwd-services`, service accounts only: :func:`services_passwd`)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    acl = ["# service accounts"]
    for acc in service_accounts(secret, **prefixes):
        lines.append(passwd_line(acc.user, acc.password))
        acl += [f"user {acc.user}", *acc.acl, ""]
    # Hashing 100k passwords with PBKDF2 takes a while; one salt per file keeps it O(n) but fast enough.
    for client in clients:
        lines.append(passwd_line(client, device_password(secret, client)))
    acl += ["# every device and gateway: only its own telemetry topic (%u = the username)",
            *(f"pattern write {t}" for t in TELEMETRY_ACL_PATTERNS), ""]
    passwd = out / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    passwd.chmod(0o600)
    services = services_passwd(out)  # the pipeline's own listener: service accounts only
    services.write_text("\n".join(lines[: len(service_accounts(secret, **prefixes))]) + "\n")
    services.chmod(0o600)
    aclf = out / "acl"
    aclf.write_text("\n".join(acl))
    return passwd, aclf
