"""Storm benchmark: a city-wide failure burst, timed until every incident is in the console's live stream.

2,000 manhole covers open and 50 lamp circuits go dark within 60 s of event time (one MQTT message per
failing reading, from the simulated city: generated larger when the sample city has too few), and 500
residents report the same spots through the Open311 POST API. Measured in one run, on one stack:

  * console   first publish -> every failing manhole, circuit and report is a source of an incident in
              the console's SSE stream (/api/stream, city account); per-incident lag p50/p95/max
              (earliest publish or POST of its sources -> its first appearance in the stream)
  * baseline  the same readings -> their grid alerts on MQTT (manhole_open per cover, circuit_dark per
              circuit): the time until every alert arrived, so the console figure reads as a ratio

Publishing: by default as fast as the pipeline takes the messages (QoS 1, the ledger's PUBACK window),
the reports POSTed by 8 clients at the same time: the whole minute of event time arrives at once, which
is the worst case (a storm front, or gateways flushing after an outage) and measures the drain. With
--pace the readings go out at their event-time pace (60 s) and each report 2 s after its spot failed:
then the total is bounded by the minute and the per-incident lag is the figure to read.

    python -m gridwatch.bench storm [--scale 1.0] [--pace] [--shared] [--timeout 600] [--out FILE]

Exits non-zero, naming what is missing, when any expected source is not in the stream within --timeout.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridwatch.agents.rules.lamp import sun
from gridwatch.bench.console import StreamClock, login, start_api
from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import AlertClock, client, percentile, publish_all, reading
from gridwatch.core.procs import Pipeline, cpu_s, late_events
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.citygen import generate
from gridwatch.devices.registry import SAMPLE_CITY_DIR, load_city
from gridwatch.devices.simulator import build_messages
from gridwatch.stack import EmbeddedStack

MANHOLES, CIRCUITS, REPORTS = 2000, 50, 500
SPREAD_MS = 60_000  # every failure within this minute of event time
REPORT_CLIENTS = 8  # residents' POSTs in flight at once
REPORT_DELAY_S = 2.0  # --pace: a resident reports this long after the spot failed
NIGHT_BELOW_DEG = -8.0  # circuit_dark counts only at night (sun below -6 deg): a margin under it
GENERATED_DEVICES = 6000  # a generated city of this size has 2,280 manholes and 96 lamp circuits
# The circuit_dark rule's defaults (config/rules.yaml): the lamp whose dark reading makes the circuit dark.
DARK_RATIO, MIN_LAMPS = 0.6, 3


@dataclass
class Storm:
    """What fails when (event time), the MQTT messages in publish order, and the resident reports."""

    t0: int  # event time of the first failure (ms)
    manholes: list[Any]
    circuits: dict[str, list[Any]]  # circuit -> its lamps
    msgs: list[tuple[str, bytes]] = field(default_factory=list)  # one message per failing reading
    ts: list[int] = field(default_factory=list)  # event time of each message
    subject_msg: dict[str, int] = field(default_factory=dict)  # manhole / circuit -> index of its alerting message
    reports: list[tuple[str, Any]] = field(default_factory=list)  # (subject it reports, the device at the spot)


def pick_city(manholes: int, circuits: int) -> tuple[Any, Path | None]:
    """The sample city when it has enough manholes and lamp circuits, else a generated larger one (cached
    in the state folder, the same as `bench telemetry` makes for that size)."""
    city = load_city()
    if _enough(city, manholes, circuits):
        return city, None
    city_dir = STATE_DIR / f"bench-city-{GENERATED_DEVICES}"
    if not (city_dir / "devices.csv").exists():
        generate(city_dir, n_devices=GENERATED_DEVICES, seed=11)
    city = load_city(city_dir)
    if not _enough(city, manholes, circuits):
        raise SystemExit(f"storm: even the {GENERATED_DEVICES}-device city has too few manholes or circuits")
    return city, city_dir


def _enough(city: Any, manholes: int, circuits: int) -> bool:
    have_c = {d.circuit for d in city.registry if d.kind == "streetlight" and d.circuit}
    return sum(d.kind == "manhole" for d in city.registry) >= manholes and len(have_c) >= circuits


def night_start(lamps: list[Any], now_ms: int) -> int:
    """The latest minute start, at least 90 s ago, at which every lamp has night for the whole minute:
    now when the city is dark, else last night (the lamp rules only judge at night)."""
    t = (now_ms - 90_000) // 60_000 * 60_000
    for _ in range(24 * 12):
        if all(sun(d, t) < NIGHT_BELOW_DEG and sun(d, t + SPREAD_MS) < NIGHT_BELOW_DEG for d in lamps):
            return t
        t -= 300_000
    raise RuntimeError("no night in the last 24 h at the chosen lamps")


def plan(city: Any, manholes: int, circuits: int, reports: int, now_ms: int, seed: int = 7) -> Storm:
    rnd = random.Random(seed)
    mh = rnd.sample(sorted((d for d in city.registry if d.kind == "manhole"), key=lambda d: d.id), manholes)
    by_circuit: dict[str, list[Any]] = {}
    for d in sorted(city.registry, key=lambda d: d.id):
        if d.kind == "streetlight" and d.circuit:
            by_circuit.setdefault(d.circuit, []).append(d)
    chosen = {c: by_circuit[c] for c in rnd.sample(sorted(by_circuit), circuits)}
    lamps = [d for ds in chosen.values() for d in ds]
    t0 = night_start(lamps, now_ms)
    storm = Storm(t0, mh, chosen)
    rows: list[tuple[int, str, Any, dict[str, Any]]] = []  # (ts, subject, device, values)
    for d in mh:
        rows.append((t0 + rnd.randrange(SPREAD_MS), d.id, d, reading(d, 0, fault=True)))
    for c, ds in chosen.items():
        # a circuit goes dark lamp after lamp, 1 ms apart, starting somewhere in the minute
        start = t0 + rnd.randrange(SPREAD_MS - len(ds))
        rows += [(start + i, c, d, {"lamp_on": False, "current_a": 0.0, "voltage_v": 221.0, "lux": 0.5})
                 for i, d in enumerate(ds)]
    rows.sort(key=lambda r: (r[0], r[2].id))
    dark_seen: dict[str, int] = {}
    tipping: dict[str, Any] = {}
    for i, (ts, subject, d, values) in enumerate(rows):
        storm.msgs += build_messages([(d, ts, values)])
        storm.ts.append(ts)
        if d.kind == "manhole":
            storm.subject_msg[subject] = i
            tipping[subject] = d
        else:
            # the circuit's alert comes with the reading that makes enough of its lamps dark
            dark_seen[subject] = dark_seen.get(subject, 0) + 1
            if dark_seen[subject] == max(MIN_LAMPS, math.ceil(DARK_RATIO * len(chosen[subject]))):
                storm.subject_msg[subject] = i
                tipping[subject] = d
    # reports on the failing spots (the circuit's: where its alert places it, the lamp that tipped it)
    subjects = [d.id for d in mh] + list(chosen)
    storm.reports = [(s, tipping[s]) for s in rnd.sample(subjects, min(reports, len(subjects)))]
    return storm


def post_report(url: str, subject: str, dev: Any, n: int) -> str:
    """One resident report through Open311 at the device's spot; returns its service_request_id."""
    code, text = (("manhole_cover", "井盖被掀开 / manhole cover open") if dev.kind == "manhole"
                  else ("streetlight_out", "整条路的路灯不亮 / the street's lamps are all dark"))
    body = {"service_code": code, "lat": dev.lat, "long": dev.lon, "description": f"{text} #{n}",
            "attribute": {"asset_id": dev.id}}
    req = urllib.request.Request(url + "/open311/v2/requests.json", method="POST",
                                 headers={"Content-Type": "application/json"}, data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback only
        return str(json.loads(r.read())[0]["service_request_id"])


class IncidentStream(StreamClock):
    """The console stream as incidents: when each first came, and which incident each source is in now."""

    def __init__(self, url: str, token: str) -> None:
        self.first: dict[str, float] = {}  # incident id -> first arrival
        self.kinds: dict[str, set[str]] = {}  # incident id -> kinds of its sources (latest document)
        self.where: dict[str, str] = {}  # source key -> incident id (latest)
        self.lock = threading.Lock()
        super().__init__(url, token)

    def record(self, inc: dict[str, Any], now: float) -> None:
        with self.lock:
            self.first.setdefault(inc["id"], now)
            srcs = inc.get("sources", [])
            self.kinds[inc["id"]] = {s.get("kind", "") for s in srcs}
            for s in srcs:
                key = s["id"] if s.get("kind") == "report" else s.get("subject", "")
                self.arrived.setdefault(key, now)
                self.where[key] = inc["id"]


@contextmanager
def pipeline(stack: EmbeddedStack, city_dir: Path | None, split: bool) -> Iterator[tuple[Pipeline, Any, str]]:
    """Bridge + worker(s) + api over one topic prefix; yields the pipeline, the incident agent's worker and
    the api's URL. The api's per-client POST limit is lifted: every resident posts from this one client."""
    logs = STATE_DIR / "bench-logs"
    extra = ["--city", str(city_dir)] if city_dir else []
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url, logs, extra=extra, split=split)
    fusion = pipe.incident_worker
    try:
        pipe.start()
        api, url = start_api(stack, pipe, logs, extra, {"GRIDWATCH_WEB_RATE_PER_MIN": "1000000",
                                                        "GRIDWATCH_WEB_RATE_BURST": "100000"})
        try:
            yield pipe, fusion, url
        finally:
            api.stop()
    finally:
        pipe.stop()


def lag_stats(xs: list[float]) -> dict[str, int]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": round(percentile(xs, 50)), "p95": round(percentile(xs, 95)), "max": round(max(xs))}


def run(out: Path | None, scale: float = 1.0, pace: bool = False, split: bool = True, timeout: float = 600,
        manholes: int = MANHOLES, circuits: int = CIRCUITS, reports: int = REPORTS,
        stack: EmbeddedStack | None = None) -> dict[str, Any]:
    """The storm; ``stack``: run on this one (a test's) instead of a new embedded stack. Raises
    RuntimeError naming what is missing when the stream lacks any expected source after ``timeout``."""
    n_mh, n_c, n_r = (max(1, round(x * scale)) for x in (manholes, circuits, reports))
    city, city_dir = pick_city(n_mh, n_c)
    storm = plan(city, n_mh, n_c, n_r, int(time.time() * 1000))
    if stack is None:
        with EmbeddedStack() as own:
            return run_on(own, out, city, city_dir, storm, pace, split, timeout)
    return run_on(stack, out, city, city_dir, storm, pace, split, timeout)


def run_on(stack: EmbeddedStack, out: Path | None, city: Any, city_dir: Path | None, storm: Storm, pace: bool,
           split: bool, timeout: float) -> dict[str, Any]:
    with pipeline(stack, city_dir, split) as (pipe, fusion, url):
        sse = IncidentStream(url, login(url))
        alerts = AlertClock(stack.mqtt_url)
        pub = client(stack.mqtt_url, client_id=f"storm-pub-{pipe.prefix}")
        stamps: list[float] = []
        posted: dict[str, tuple[str, float]] = {}  # report id -> (subject, POST sent)
        c0 = cpu_s(fusion.pid)
        t_start = time.time()
        at = [t_start + (ts - storm.t0) / 1000 for ts in storm.ts] if pace else None
        errors: list[BaseException] = []

        def publish() -> None:
            try:
                publish_all(pub, storm.msgs, at=at, stamps=stamps)
            except Exception as e:  # noqa: BLE001 - raised below, in the bench's thread
                errors.append(e)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()

        def due(k: int) -> float:
            return t_start + (storm.ts[storm.subject_msg[storm.reports[k][0]]] - storm.t0) / 1000 + REPORT_DELAY_S

        def one(k: int) -> None:
            subject, dev = storm.reports[k]
            if pace:
                time.sleep(max(0.0, due(k) - time.time()))
            sent = time.time()
            try:
                posted[post_report(url, subject, dev, k)] = (subject, sent)
                post_ms.append((time.time() - sent) * 1000)
            except Exception as e:  # noqa: BLE001 - collected and raised below, with the others
                errors.append(e)

        post_ms: list[float] = []
        # paced: in the order they fall due, so that no client sleeps on a late report while earlier ones queue
        order = sorted(range(len(storm.reports)), key=due) if pace else range(len(storm.reports))
        with ThreadPoolExecutor(REPORT_CLIENTS) as pool:
            list(pool.map(one, order))
        t_posted = time.time()
        publisher.join()
        if errors:
            raise RuntimeError(f"storm FAILED: {len(errors)} publishes or Open311 POSTs failed, the first: {errors[0]!r}")
        expected = {**{s: "manhole" for s in (d.id for d in storm.manholes)}, **{c: "circuit" for c in storm.circuits},
                    **{r: "report" for r in posted}}
        alert_keys = [(d.id, "new", "manhole_open") for d in storm.manholes] + \
                     [(c, "new", "circuit_dark") for c in storm.circuits]
        deadline = t_start + timeout
        while time.time() < deadline and not sse.ended:
            if all(k in sse.arrived for k in expected) and all(k in alerts.arrived for k in alert_keys):
                break
            time.sleep(0.2)
        worker_cpu = cpu_s(fusion.pid) - c0
        pub.disconnect()
        pub.loop_stop()
        alerts.close()
        missing = [k for k in expected if k not in sse.arrived]
        if missing or sse.ended:
            kinds = {k: sum(1 for m in missing if expected[m] == k) for k in ("manhole", "circuit", "report")}
            why = "the console closed the stream (it drops a client whose queue is full)" if sse.ended \
                else f"not within {timeout:.0f} s"
            raise RuntimeError(f"storm FAILED: {len(missing)} of {len(expected)} expected sources never reached the "
                               f"console stream ({why}): missing {kinds}, e.g. {missing[:5]}")
        no_alert = [k for k in alert_keys if k not in alerts.arrived]
        if no_alert:
            raise RuntimeError(f"storm FAILED: {len(no_alert)} of {len(alert_keys)} MQTT alerts never arrived (baseline), "
                               f"e.g. {no_alert[:5]}")

    # publish time of each expected source, and the incident each ended in
    sent = {s: stamps[i] for s, i in storm.subject_msg.items()}
    sent.update({r: t for r, (_, t) in posted.items()})
    incidents: dict[str, list[str]] = {}
    for k in expected:
        incidents.setdefault(sse.where[k], []).append(k)
    inc_lag = [(sse.first[i] - min(sent[k] for k in ks)) * 1000 for i, ks in incidents.items()]
    merged = sum(1 for r in posted if "event" in sse.kinds[sse.where[r]])
    console_s = max(sse.arrived[k] for k in expected) - t_start
    alert_s = max(alerts.arrived[k] for k in alert_keys) - t_start
    alert_lag = [(alerts.arrived[(s, "new", t)] - sent[s]) * 1000 for s, _, t in alert_keys]
    res: dict[str, Any] = {
        "city_devices": len(city.registry), "city": str(city_dir or SAMPLE_CITY_DIR.name),
        "mode": "paced at event time" if pace else "as fast as the pipeline takes it",
        "incident_worker": "own process" if split else "shared with every agent",
        "manholes": len(storm.manholes), "circuits": len(storm.circuits),
        "lamps": sum(len(ds) for ds in storm.circuits.values()), "messages": len(storm.msgs),
        "reports": len(posted), "event_time_start_ms": storm.t0,
        "publish_seconds": round(stamps[-1] - t_start, 2), "post_seconds": round(t_posted - t_start, 2),
        "post_ms": lag_stats(post_ms),
        "console": {"seconds_to_all": round(console_s, 2),
                    # which kind of source came last: the sensors' events or the residents' reports
                    "seconds_to_all_by_kind": {kind: round(max(sse.arrived[k] for k, v in expected.items() if v == kind)
                                                           - t_start, 2) for kind in ("manhole", "circuit", "report")},
                    "incidents": len(incidents),
                    "incidents_with_reports": sum(1 for ks in incidents.values() if any(expected[k] == "report" for k in ks)),
                    "reports_merged_with_sensor_events": merged, "incident_lag_ms": lag_stats(inc_lag)},
        "baseline_mqtt_alerts": {"seconds_to_all": round(alert_s, 2), "alerts": len(alert_keys),
                                 "alert_lag_ms": lag_stats(alert_lag)},
        "ratio_console_to_alerts": round(console_s / alert_s, 2),
        "incident_worker_cpu_seconds": round(worker_cpu, 2),
        "late_grid_events": late_events(fusion.log()),  # applied out of event-time order by the merge
    }
    print(json.dumps(res, indent=2, ensure_ascii=False), flush=True)
    write_results(out, res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("storm", __doc__)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of 2,000 manholes, 50 circuits, 500 reports")
    p.add_argument("--pace", action="store_true", help="publish at event-time pace (60 s) instead of at once")
    p.add_argument("--shared", action="store_true",
                   help="one worker runs every agent (default: the incident agent in a worker of its own)")
    p.add_argument("--timeout", type=float, default=600, help="seconds from the first publish to wait for the stream")
    a = p.parse_args(argv)
    try:
        run(a.out, a.scale, a.pace, not a.shared, a.timeout)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
