"""Console update latency: a sensor reading published over MQTT -> the incident visible in the
operator console's live stream (SSE), beside the telemetry baseline (same reading -> MQTT grid alert)
measured in the same run.

    python -m gridwatch.bench console [--probes 60] [--interval 0.5] [--warmup 8]

Path measured: MQTT -> bridge -> Kafka readings -> telemetry agent -> events -> incident agent (fusion,
lifecycle) -> incidents topic -> `gridwatch api` view -> /api/stream (logged in as the city account).
``console_stages_ms`` splits it at the records each stage produced (their Kafka CreateTime), so the
result says where the time goes; ``ratio_p95`` is console p95 / alert p95 (the target is 2 or less).
The first ``--warmup`` readings (on other grids) go before the probes and count for neither path; their
console latencies are in ``warmup_probes_ms``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import (
    AlertClock,
    client,
    new_events_of,
    percentile,
    produce_times,
    readings_of,
)
from gridwatch.core.procs import Pipeline, Proc, late_events, wait_for
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.registry import load_city
from gridwatch.stack import EmbeddedStack


class StreamClock:
    """Reads the console's SSE stream and records when each device first shows up in an incident."""

    def __init__(self, url: str, token: str) -> None:
        self.arrived: dict[str, float] = {}
        self.ended = False  # the server closed the stream (e.g. it dropped this client as stalled)
        req = urllib.request.Request(url + "/api/stream", headers={"Authorization": f"Bearer {token}"})
        self.resp = urllib.request.urlopen(req, timeout=120)  # noqa: S310 - loopback only
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event = ""
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "incident":
                    self.record(json.loads(line[6:])["incident"], time.time())
        finally:
            self.ended = True

    def record(self, inc: dict[str, Any], now: float) -> None:
        """One incident document as the stream sent it, at ``now`` (wall time)."""
        for src in inc.get("sources", []):
            self.arrived.setdefault(src.get("subject", ""), now)


def start_api(stack: EmbeddedStack, pipe: Pipeline, logs: Path, extra: list[str] | None = None,
              env: dict[str, str] | None = None) -> tuple[Proc, str]:
    """`gridwatch api` on a free port over the pipeline's topics; returns it and its base URL. It accepts
    the shipped demo accounts: a bench logs in as the city account, on loopback only."""
    env = {**pipe.env, "GRIDWATCH_DEMO_CREDENTIALS": "allow", **(env or {})}
    api = Proc(f"{pipe.prefix}-api", ["api", "--kafka", stack.kafka_url, "--prefix", pipe.prefix, "--port", "0",
                                      *(extra or [])], logs, env).start()
    api.wait_log("api listening on", 60)
    url = re.search(r"api listening on (http://\S+)", api.log()).group(1)  # type: ignore[union-attr]
    return api, url


def login(url: str, user: str = "city", password: str = "city-demo") -> str:  # noqa: S107 - the demo account
    """A console bearer token for ``user`` (the city account sees every grid)."""
    req = urllib.request.Request(url + "/api/login", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"user": user, "password": password}).encode())
    with urllib.request.urlopen(req, timeout=15) as r:  # noqa: S310 - loopback only
        return str(json.loads(r.read())["token"])


def incidents_of(subjects: set[str]) -> Any:
    """Keys for :func:`produce_times` over the incidents topic: the probe devices among the sources of each
    change record."""

    def keys(raw: bytes) -> list[str]:
        return [s["subject"] for s in json.loads(raw)["incident"]["sources"] if s.get("subject") in subjects]
    return keys


def stages_ms(sent: dict[str, float], *marks: dict[str, float]) -> list[dict[str, Any]]:
    """Per stage of the path (publish -> first mark, mark -> next mark, ...), p50 / p95 in ms over the probes
    every mark saw: where the console's latency goes."""
    both = [k for k in sent if all(k in m for m in marks)]
    points = [sent, *marks]
    out = []
    for a, b in zip(points, points[1:], strict=False):
        d = [(b[k] - a[k]) * 1000 for k in both]
        out.append({"n": len(d), "p50": round(percentile(d, 50), 1), "p95": round(percentile(d, 95), 1)})
    return out


def run(out: Path | None, probes: int = 60, interval: float = 0.5, warmup: int = 8) -> dict[str, Any]:
    city = load_city()
    manholes = [d for d in city.registry if d.kind == "manhole" and not d.gateway]
    # one probe per grid, so each makes a new incident rather than joining another probe's
    by_grid: dict[str, Any] = {}
    for d in manholes:
        by_grid.setdefault(d.grid_code, d)
    devs = list(by_grid.values())[:probes + warmup]
    first, devs = devs[:warmup], devs[warmup:]
    logs = STATE_DIR / "bench-logs"
    with EmbeddedStack() as stack:
        pipe = Pipeline(stack.kafka_url, stack.mqtt_url, logs).start()
        api, url = start_api(stack, pipe, logs)
        try:
            sse = StreamClock(url, login(url))
            alerts = AlertClock(stack.mqtt_url)
            pub = client(stack.mqtt_url, client_id="bench-console-pub")
            warm: dict[str, float] = {}
            sent: dict[str, float] = {}
            ts = int(time.time() * 1000) - 600_000
            first_ts = ts + warmup * int(interval * 1000)
            for d in [*first, *devs]:
                (warm if d in first else sent)[d.id] = time.time()
                pub.publish(f"v1/devices/{d.id}/telemetry", json.dumps({"ts": ts, "values": {"cover_open": True}}), qos=1)
                ts += int(interval * 1000)
                time.sleep(interval)
            wait_for(lambda: all(k in sse.arrived for k in [*warm, *sent]), 60, "every probe in the console stream")
            # when each stage's producer made its record (Kafka CreateTime, this machine's clock)
            probes_set = set(sent)
            bridged = produce_times(stack.kafka_url, pipe.topic("readings"), readings_of(probes_set, first_ts))
            raised = produce_times(stack.kafka_url, pipe.topic("events"), new_events_of(probes_set))
            fused = produce_times(stack.kafka_url, pipe.topic("incidents"), incidents_of(probes_set))
            pub.disconnect()
            pub.loop_stop()
            alerts.close()
        finally:
            api.stop()
            pipe.stop()
    console = [(sse.arrived[k] - t) * 1000 for k, t in sent.items() if k in sse.arrived]
    alert = [(at - t) * 1000 for k, t in sent.items() if (at := alerts.opened(k)) is not None]
    res = {
        "probes": len(sent),
        # the first readings after the workers started, not counted: a fresh worker's merge waits up to
        # worker.upstream_idle_s for readings partitions that have had no input yet, and the slack starts high
        "warmup_probes_ms": [round((sse.arrived[k] - t) * 1000) for k, t in warm.items() if k in sse.arrived],
        "console_stream_ms": {"n": len(console), "p50": round(percentile(console, 50), 1),
                              "p95": round(percentile(console, 95), 1), "max": round(max(console), 1)},
        "baseline_mqtt_alert_ms": {"n": len(alert), "p50": round(percentile(alert, 50), 1),
                                   "p95": round(percentile(alert, 95), 1), "max": round(max(alert), 1)},
    }
    names = ("publish -> readings record (bridge)", "-> grid event record (telemetry agent)",
             "-> incident change record (event-time merge, incident agent)", "-> console stream (api feed, SSE)")
    res["console_stages_ms"] = dict(zip(names, stages_ms(sent, bridged, raised, fused, sse.arrived), strict=True))
    res["ratio_p95"] = round(res["console_stream_ms"]["p95"] / res["baseline_mqtt_alert_ms"]["p95"], 2)
    res["late_grid_events"] = late_events(pipe.incident_worker.log())  # what the lower wait cost, if anything
    print(json.dumps(res, indent=2), flush=True)
    write_results(out, res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("console", __doc__)
    p.add_argument("--probes", type=int, default=60)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=8, help="readings sent first and not counted (default 8)")
    a = p.parse_args(argv)
    run(a.out, a.probes, a.interval, a.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
