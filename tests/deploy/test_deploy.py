"""deploy/ validated as far as this machine can (no Docker engine, no cluster here): files parse,
manifests are well-formed and consistent with each other, every container command is a real `gridwatch`
sub-command with real flags, every GRIDWATCH_* variable is a real setting, the dashboards are up to date
and only query what the InfluxDB sink writes, and the package list covers every package (the image
runs a non-editable `pip install .`)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwatch.cli import build_parser
from gridwatch.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "secrets.example.yaml")
# Variables the image's entrypoint reads (deploy/docker-entrypoint.sh) or mqtt-credentials reads.
ENTRYPOINT_VARS = {"GRIDWATCH_MQTT_ACCOUNT", "GRIDWATCH_MQTT_HOST", "GRIDWATCH_MQTT_PORT", "GRIDWATCH_MQTT_SECRET",
                   "GRIDWATCH_MQTT_SECRET_FILE", "GRIDWATCH_STATE_DIR", "GRIDWATCH_MODEL_CACHE"}
# Operator-provided (documented in deploy/README.md), not generated here.
EXTERNAL_CONFIGMAPS = {"gridwatch-cameras"}
SINK_MEASUREMENTS = {"reading", "grid_event", "incident", "device_presence"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def setting_env_names() -> set[str]:
    s = Settings()
    out = set()
    for sect in fields(s):
        obj = getattr(s, sect.name)
        if is_dataclass(obj):
            out |= {f"GRIDWATCH_{sect.name}_{f.name}".upper() for f in fields(obj)}
    return out


def check_gridwatch_argv(argv: list[str], where: str) -> None:
    """Parse a container's argv with the real CLI parser: unknown sub-commands or flags fail."""
    assert argv, f"{where}: empty command"
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `gridwatch {' '.join(argv)}` is not a valid gridwatch command line")
    assert callable(getattr(args, "func", None)), where
    if getattr(args, "agents", None):
        from gridwatch.app import resolve_agents

        resolve_agents(args.agents)  # unknown agent names raise


def argv_of_container(c: dict[str, Any], where: str) -> list[str] | None:
    """The gridwatch argv a container runs (image entrypoint + args, or a shell line calling the entrypoint)."""
    command, args = c.get("command"), c.get("args")
    if command is None:
        return list(args or [])
    line = " ".join(command + (args or []))
    m = re.search(r"gridwatch-entrypoint (.+)$", line)
    if m is None:
        return None
    words = shlex.split(m.group(1).replace("${HOSTNAME##*-}", "0"))
    return words


# -- compose ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def gridwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if "gridwatch" in str(s.get("image", ""))}


def test_compose_is_well_formed(compose):
    services = compose["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "mosquitto", "mqtt-auth", "influxdb", "grafana", "bridge", "worker",
            "sink", "cameras", "vision", "api", "recorder"} <= set(services)
    volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), name
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for v in svc.get("volumes") or []:
            src = v.split(":")[0]
            if src.startswith("./"):
                if src in ("./city", "./config", "./recordings"):
                    continue  # the operator's city, camera list and recordings (deploy/README.md)
                assert (DEPLOY / src).exists(), f"{name}: bind mount {src} does not exist"
            else:
                assert src in volumes, f"{name}: volume {src} is not declared"
    assert (DEPLOY / services["mqtt-auth"]["build"]["context"] / services["mqtt-auth"]["build"]["dockerfile"]).is_file()


def test_compose_kafka_is_kraft_with_replicated_topics(compose):
    brokers = [compose["services"][f"kafka-{i}"] for i in (1, 2, 3)]
    ids = {b["environment"]["KAFKA_NODE_ID"] for b in brokers}
    assert ids == {"1", "2", "3"}
    for b in brokers:
        env = b["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    env = compose["services"]["worker"]["environment"]
    assert env["GRIDWATCH_KAFKA_REPLICATION_FACTOR"] == "3" and env["GRIDWATCH_KAFKA_TANSU_QUIRKS"] == "off"
    assert env["GRIDWATCH_KAFKA_URL"].count("kafka-") == 3


def test_compose_commands_are_real_gridwatch_commands(compose):
    services = gridwatch_services(compose)
    assert len(services) >= 8
    for name, svc in services.items():
        check_gridwatch_argv(svc["command"], f"compose service {name}")


def test_compose_env_vars_are_real_settings(compose):
    known = setting_env_names() | ENTRYPOINT_VARS
    for name, svc in gridwatch_services(compose).items():
        for var in svc.get("environment") or {}:
            if var.startswith("GRIDWATCH_"):
                assert var in known, f"compose service {name}: {var} is not a gridwatch setting"


def test_mosquitto_requires_authentication_and_acl(compose):
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    directives = dict(line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert directives["allow_anonymous"] == "false"
    assert directives["password_file"] == "/mosquitto/auth/passwd" and directives["acl_file"] == "/mosquitto/auth/acl"
    auth = compose["services"]["mqtt-auth"]
    assert auth["command"][:3] == ["mqtt-credentials", "--out", "/mosquitto/auth"]
    assert "mqtt-auth:/mosquitto/auth:ro" in compose["services"]["mosquitto"]["volumes"]


# -- kubernetes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for p in K8S_FILES:
        for d in load_all(p):
            d["_file"] = p.name
            docs.append(d)
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def test_k8s_manifests_are_well_formed(k8s):
    assert k8s
    names = set()
    for d in k8s:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d.get("_file")
        key = (d["kind"], d["metadata"]["name"])
        assert key not in names, f"duplicate {key}"
        names.add(key)
        if d["kind"] in ("Deployment", "StatefulSet"):
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= labels.items(), f"{key}: selector does not match the pod labels"
            if d["kind"] == "StatefulSet":
                assert d["spec"]["serviceName"]
    workload_labels = [d["spec"]["template"]["metadata"]["labels"] for d in k8s if pod_spec(d) is not None]
    for svc in (d for d in k8s if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= lb.items() for lb in workload_labels), f"service {svc['metadata']['name']} selects nothing"
    for hpa in (d for d in k8s if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in names


def test_k8s_kafka_statefulset_is_kraft_with_three_voters(k8s):
    [sts] = [d for d in k8s if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka"]
    assert sts["spec"]["replicas"] == 3
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@")[0] for v in voters] == ["0", "1", "2"]  # = pod ordinals (KAFKA_NODE_ID)
    assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"


def test_k8s_commands_are_real_gridwatch_commands_and_refs_resolve(k8s):
    secrets = yaml.safe_load((DEPLOY / "k8s" / "secrets.example.yaml").read_text())["stringData"]
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    configmaps = {g["name"] for g in kust["configMapGenerator"]} | EXTERNAL_CONFIGMAPS
    configmaps |= {d["metadata"]["name"] for d in k8s if d["kind"] == "ConfigMap"}
    pvcs = {d["metadata"]["name"] for d in k8s if d["kind"] == "PersistentVolumeClaim"}
    known_env = setting_env_names() | ENTRYPOINT_VARS
    checked = 0
    for d in k8s:
        spec = pod_spec(d)
        if spec is None:
            continue
        where = f"{d['kind']}/{d['metadata']['name']}"
        claim_templates = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])} | claim_templates
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{where}: configMap {v['configMap']['name']}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, f"{where}: pvc"
        for c in spec.get("initContainers", []) + spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{where}/{c['name']}: mount of unknown volume {m['name']}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "gridwatch-secrets" and ref["key"] in secrets, f"{where}: secret {ref}"
                if e["name"].startswith("GRIDWATCH_") and c["image"] == "gridwatch":
                    assert e["name"] in known_env, f"{where}: {e['name']} is not a gridwatch setting"
            for ef in c.get("envFrom", []):
                assert ef["configMapRef"]["name"] in configmaps
            if c["image"] == "gridwatch":
                argv = argv_of_container(c, where)
                assert argv is not None, f"{where}/{c['name']}: runs no gridwatch command"
                check_gridwatch_argv(argv, f"{where}/{c['name']}")
                checked += 1
    assert checked >= 8
    [env_cm] = [d for d in k8s if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gridwatch-env"]
    for var in env_cm["data"]:
        assert var in known_env, f"gridwatch-env: {var} is not a gridwatch setting"


def test_kustomization_references_existing_files():
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for r in kust["resources"]:
        assert (DEPLOY / r).is_file(), r
    assert {Path(r).name for r in kust["resources"]} == {p.name for p in K8S_FILES}
    for g in kust["configMapGenerator"]:
        for f in g["files"]:
            assert (DEPLOY / f).is_file(), f


# -- grafana ----------------------------------------------------------------------------------------
def test_dashboards_are_generated_from_the_code_and_query_what_the_sink_writes(tmp_path):
    dash_dir = DEPLOY / "grafana" / "dashboards"
    files = sorted(dash_dir.glob("*.json"))
    assert files
    before = {p.name: p.read_text() for p in files}
    subprocess.run([sys.executable, str(DEPLOY / "grafana" / "build_dashboards.py")], check=True)
    after = {p.name: p.read_text() for p in sorted(dash_dir.glob("*.json"))}
    assert before == after, "dashboards are stale: run python deploy/grafana/build_dashboards.py"
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["jsonData"]["version"] == "Flux"
    titles = []
    for p in files:
        d = json.loads(p.read_text())
        for panel in d["panels"]:
            titles.append(panel["title"].lower())
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == uid
                used = set(re.findall(r'_measurement == "([a-z_]+)"', t["query"]))
                assert used and used <= SINK_MEASUREMENTS, (panel["title"], used)
                assert 'r.ns == "${ns}"' in t["query"]  # every panel shows one namespace: live or a replay
    for wanted in ("readings per second", "online rate", "by level", "closure"):
        assert any(wanted in t for t in titles), wanted


def test_sink_measurement_names_match_the_dashboards():
    from gridwatch.pipeline.outputs import influx

    src = Path(influx.__file__).read_text()
    for m in SINK_MEASUREMENTS:
        assert f'"{m}' in src, m


# -- image --------------------------------------------------------------------------------------------
def test_dockerfile_copies_what_exists_and_the_entrypoint_is_valid_shell():
    text = (DEPLOY / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert 'ENTRYPOINT ["tini", "--", "gridwatch-entrypoint"]' in text
    script = DEPLOY / "docker-entrypoint.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_every_python_package_is_listed_for_a_non_editable_install():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if any(part.startswith((".", "__")) or part in ("cache", "node_modules") for part in rel.parts):
                continue
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            assert name in listed, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"


# -- no demo credentials ----------------------------------------------------------------------------
def test_the_api_never_loads_the_shipped_demo_accounts(compose, k8s):
    """The deployments point web.operators at the operator's own file; the shipped one is demo only."""
    api = compose["services"]["api"]
    path = api["environment"]["GRIDWATCH_WEB_OPERATORS"]
    assert path.startswith("/config/") and any(v.endswith(":/config:ro") for v in api["volumes"]), api
    [dep] = [d for d in k8s if d["kind"] == "Deployment" and d["metadata"]["name"] == "api"]
    spec = pod_spec(dep)
    [c] = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    [vol] = [n for n, m in mounts.items() if env["GRIDWATCH_WEB_OPERATORS"].startswith(m + "/")]
    assert volumes[vol]["secret"]["secretName"] == "gridwatch-operators"  # the operator's, not the image's
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/health/live"
    for f in [DEPLOY / "compose.yaml", *K8S_FILES]:
        assert "gridwatch/config/operators.yaml" not in f.read_text(), f


def test_example_secrets_are_refused_at_start_up(monkeypatch):
    """A deployment that copied deploy/.env.example (or secrets.example.yaml) unchanged does not start."""
    from gridwatch.core.settings import SettingsError, load_settings
    from gridwatch.web import demo_guard

    env_example = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                       if line.strip() and not line.startswith("#"))
    secrets = yaml.safe_load((DEPLOY / "k8s" / "secrets.example.yaml").read_text())["stringData"]
    monkeypatch.delenv(demo_guard.ALLOW_ENV, raising=False)
    for example in (env_example, secrets):
        monkeypatch.setenv("GRIDWATCH_WEB_SESSION_SECRET", example["GRIDWATCH_WEB_SESSION_SECRET"])
        with pytest.raises(SettingsError, match="session_secret"):
            demo_guard.refuse_demo_credentials(load_settings(), [])
    monkeypatch.setenv("GRIDWATCH_MQTT_SECRET", env_example["GRIDWATCH_MQTT_SECRET"])
    from gridwatch.security.mqtt_auth import CredentialError, load_secret

    with pytest.raises(CredentialError, match="placeholder"):
        load_secret()
