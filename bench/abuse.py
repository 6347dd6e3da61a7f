"""Abuse benchmark: one device floods max-size junk at full speed while the city's normal traffic flows.

In one run, on one machine, beside each other (the same bridge, worker and brokers):
  * baseline  normal city traffic at a fixed rate, with probe manholes opening their covers:
              publish -> alert on MQTT latency of the probes (p50/p99)
  * abuse     the same traffic and probes while one device publishes 256 KB junk payloads (QoS 1) as fast
              as the broker takes them: the other devices' latency beside the baseline's (target p99 <= 2x)
  * memory    bridge and Mosquitto RSS (current and peak) after each phase: bounded
  * the bridge's own figures: junk in, dead-letter bytes out (amplification), messages suppressed by
              the dead-letter quota, and the share of the flood it took in (below 1: Mosquitto's queue for
              the bridge's session is at its bound and the broker drops messages, other devices' too)
  * probes lost: probes whose alert never came (the p99 ratio is over the ones that came)
  * the broker's publish limit (mqtt.publish_limit, a Mosquitto plugin): whether it denied the flooding
              device, disconnected and banned it, and refused its logins (from Mosquitto's log)

The flooding device logs in with its device id as the username, as on the production device listener;
the city's traffic comes from one client without a username, as the simulator's exempt service account.
Run with GRIDWATCH_MQTT_PUBLISH_LIMIT=false to measure without the limit.

    python -m gridwatch.bench abuse [--seconds 20] [--rate 1000] [--repeat 3] [--abuse-mbps 0] [--out FILE]

Each repeat runs a fresh bridge and worker (new topic namespace) on the same embedded brokers.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import client, percentile, reading
from gridwatch.core.procs import Pipeline, rss_mb
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import build_messages, device_topic
from gridwatch.stack import EmbeddedStack

JUNK = b"\x00junk" * (262_144 // 5)  # just under bridge.max_payload_bytes, not JSON
PROBES_PER_S = 2
DROPPED = "$SYS/broker/publish/messages/dropped"  # each probe opens an incident too: keep the worker's share of the load small


class Alerts:
    """Wall time of each manhole_open 'new' alert, keyed by (subject, start_ts)."""

    def __init__(self, mqtt_url: str) -> None:
        self.arrived: dict[tuple[str, int], float] = {}
        self.c = client(mqtt_url, client_id="")
        self.c.on_message = self.on_message
        self.c.subscribe([("gridwatch/alerts/#", 1)])
        time.sleep(0.5)

    def on_message(self, c: Any, u: Any, m: Any) -> None:
        body = json.loads(m.payload)
        if body.get("type") == "manhole_open" and body.get("phase") == "new":
            self.arrived.setdefault((body["subject"], body["start_ts"]), time.time())

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class BridgeStats:
    def __init__(self, mqtt_url: str, topic: str) -> None:
        self.last: dict[str, Any] = {}
        self.dropped = 0  # Mosquitto's count of messages it dropped at a queue or in-flight bound ($SYS, every 10 s)
        self.c = client(mqtt_url, client_id="")
        self.c.on_message = self.on_message
        self.c.subscribe([(topic, 0), (DROPPED, 0)])

    def on_message(self, c: Any, u: Any, m: Any) -> None:
        if m.topic == DROPPED:
            self.dropped = int(m.payload)
        else:
            self.last = json.loads(m.payload)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Abuser:
    """One device publishing max-size junk at QoS 1 as fast as Mosquitto acknowledges it, or at most
    ``mbytes_per_s`` (what a device's uplink allows: on loopback the flood is bounded only by the CPU)."""

    def __init__(self, mqtt_url: str, device_id: str, mbytes_per_s: float = 0.0) -> None:
        self.c = client(mqtt_url, username=device_id, client_id=f"abuser-{device_id}")
        self.topic = device_topic(device_id)
        self.interval = len(JUNK) / (mbytes_per_s * 1e6) if mbytes_per_s > 0 else 0.0
        self.sent = 0
        self.cut_off = False
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pending: list[Any] = []
        t_next = time.monotonic()
        while not self._stop.is_set():
            pending.append(self.c.publish(self.topic, JUNK, qos=1))
            self.sent += 1
            if self.interval:
                t_next += self.interval
                time.sleep(max(0.0, t_next - time.monotonic()))
            if len(pending) >= 200:
                for info in pending[:100]:
                    if not self._acked(info):  # disconnected (the broker's limit banned it): stop flooding
                        self.cut_off = True
                        return
                del pending[:100]

    def _acked(self, info: Any) -> bool:
        """Wait for this PUBACK while connected (at most 30 s); False once the broker cut the device off."""
        deadline = time.monotonic() + 30
        try:
            while not info.is_published() and time.monotonic() < deadline:
                if not self.c.is_connected():
                    return False
                info.wait_for_publish(0.5)
        except (RuntimeError, ValueError):  # published while disconnected
            return False
        return True

    def start(self) -> Abuser:
        self.t0 = time.time()
        self.thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.thread.join(30)
        secs = time.time() - self.t0
        self.c.disconnect()
        self.c.loop_stop()
        return {"messages": self.sent, "mbytes": round(self.sent * len(JUNK) / 1e6, 1),
                "mbytes_per_s": round(self.sent * len(JUNK) / 1e6 / secs, 1), "cut_off": self.cut_off}


def limit_log(log: Path, device_id: str) -> dict[str, bool]:
    """What the broker's publish limit did to this device, from the plugin's lines in Mosquitto's log."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "gridwatch-ratelimit" in ln and f" {device_id} " in ln]
    return {"denied": any("over its publish limit" in ln for ln in lines),
            "banned": any("stayed over" in ln for ln in lines),
            "logins_refused": any("login refused" in ln for ln in lines)}


def traffic_phase(pub: Any, devs: list[Any], probes: list[Any], alerts: Alerts, seconds: float,
                  rate: int) -> dict[str, Any]:
    """Normal traffic at ``rate`` readings/s plus PROBES_PER_S probe covers opening; their latency."""
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    sent: dict[tuple[str, int], float] = {}
    cursor = 0
    t_next = time.time()
    probe_every = max(1, int(1 / (PROBES_PER_S * tick)))
    for i in range(int(seconds / tick)):
        ts = int(time.time() * 1000) - 30_000  # event time behind the wall clock
        batch = [(d, ts, reading(d, 0)) for d in (devs[(cursor + j) % len(devs)] for j in range(per_tick))]
        cursor += per_tick
        for topic, payload in build_messages(batch):
            pub.publish(topic, payload, qos=1)
        if i % probe_every == 0 and probes:
            probe = probes.pop()
            sent[(probe.id, ts)] = time.time()
            pub.publish(device_topic(probe.id), json.dumps({"ts": ts, "values": reading(probe, 0, True)}), qos=1)
        t_next += tick
        time.sleep(max(0.0, t_next - time.time()))
    deadline = time.time() + 60
    while time.time() < deadline and not all(k in alerts.arrived for k in sent):
        time.sleep(0.2)
    lat = [(alerts.arrived[k] - t) * 1000 for k, t in sent.items() if k in alerts.arrived]
    if not lat:
        return {"samples": 0, "expected": len(sent), "p50": None, "p99": None, "max": None}
    return {"samples": len(lat), "expected": len(sent), "p50": round(percentile(lat, 50), 1),
            "p99": round(percentile(lat, 99), 1), "max": round(max(lat), 1)}


def one_run(stack: EmbeddedStack, city: Any, seconds: float, rate: int, logs: Path,
            abuse_mbps: float = 0.0, k: int = 0) -> dict[str, Any]:
    reg = city.registry
    standalone = [d for d in reg if d.kind == "manhole" and not d.gateway]
    # a new flooding device each run: the one before is still banned on this broker
    abuser_dev, probes_a, probes_b = standalone[-1 - k], standalone[1:1 + 240], standalone[241:481]
    traffic = [d for d in reg if d.kind in ("streetlight", "water_gauge") or (d.kind == "manhole" and d.gateway)]
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url, logs).start()
    stats = BridgeStats(stack.mqtt_url, f"gridwatch/stats/bridge/br-{pipe.prefix}")
    alerts = Alerts(stack.mqtt_url)
    pub = client(stack.mqtt_url, client_id="")
    mqtt_pid = stack.procs["mqtt"].proc.pid  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    try:
        warm = traffic_phase(pub, traffic, list(probes_a[-20:]), alerts, 8, rate)  # the worker's first join
        print(f"warm-up: {warm}", flush=True)
        out["baseline"] = traffic_phase(pub, traffic, list(probes_a[:-20]), alerts, seconds, rate)
        out["rss_mb_baseline"] = {"bridge": round(rss_mb(pipe.bridge.pid)[0]), "mosquitto": round(rss_mb(mqtt_pid)[0])}
        before = dict(stats.last)
        dropped_before = stats.dropped
        abuser = Abuser(stack.mqtt_url, abuser_dev.id, abuse_mbps).start()
        time.sleep(2)
        out["abuse"] = traffic_phase(pub, traffic, list(probes_b), alerts, seconds, rate)
        out["abuser"] = abuser.stop()
        drained = stats.last.get("input_bytes", 0) - before.get("input_bytes", 0)
        # what of the flood the bridge took in while it lasted: below 1, Mosquitto's queue for the bridge's
        # session fills to its bound and the broker drops what comes next, the other devices' messages too
        out["bridge_took_share_of_flood"] = round(drained / 1e6 / out["abuser"]["mbytes"], 2) if out["abuser"]["mbytes"] else None
        b_cur, b_peak = rss_mb(pipe.bridge.pid)
        m_cur, m_peak = rss_mb(mqtt_pid)
        out["rss_mb_abuse"] = {"bridge": round(b_cur), "bridge_peak": round(b_peak), "mosquitto": round(m_cur),
                               "mosquitto_peak": round(m_peak)}
        time.sleep(3)
        after = stats.last
        inp = after.get("input_bytes", 0) - before.get("input_bytes", 0)
        dl = after.get("dead_letter_bytes", 0) - before.get("dead_letter_bytes", 0)
        out["bridge"] = {"input_mbytes": round(inp / 1e6, 1), "dead_letter_mbytes": round(dl / 1e6, 3),
                         "amplification": round(dl / inp, 4) if inp else None,
                         "suppressed": after.get("suppressed", 0) - before.get("suppressed", 0),
                         "dead_letter_records": after.get("dead_letter_records", 0) - before.get("dead_letter_records", 0),
                         "alarm": after.get("alarm", "")}
        out["broker_dropped_messages"] = stats.dropped - dropped_before
        assert stack.workdir is not None
        out["publish_limit"] = limit_log(stack.workdir / "mosquitto.log", abuser_dev.id)
        out["probes_lost"] = {k: out[k]["expected"] - out[k]["samples"] for k in ("baseline", "abuse")}
        p99a, p99b = out["abuse"]["p99"], out["baseline"]["p99"]
        out["p99_ratio"] = round(p99a / p99b, 2) if p99a and p99b else None
    finally:
        pub.disconnect()
        pub.loop_stop()
        alerts.close()
        stats.close()
        pipe.stop()
        drop_session(stack.mqtt_url, f"br-{pipe.prefix}")
    return out


def drop_session(mqtt_url: str, client_id: str) -> None:
    """End the stopped bridge's persistent session, so its queued junk does not stay in the next run's broker."""
    c = client(mqtt_url, client_id=client_id, clean_session=True)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def run(out: Path | None, seconds: float = 20.0, rate: int = 1000, repeat: int = 3,
        abuse_mbps: float = 0.0) -> dict[str, Any]:
    city = load_city()
    logs = STATE_DIR / "bench-logs"
    runs = []
    with EmbeddedStack() as stack:
        for k in range(repeat):
            r = one_run(stack, city, seconds, rate, logs, abuse_mbps, k)
            runs.append(r)
            print(f"run {k + 1}/{repeat}: baseline p99 {r['baseline']['p99']} ms, abuse p99 {r['abuse']['p99']} ms "
                  f"(x{r['p99_ratio']}), probes lost {r['probes_lost']}, Mosquitto dropped {r['broker_dropped_messages']}, "
                  f"publish limit {r['publish_limit']}, abuser {r['abuser']}, bridge took "
                  f"{r['bridge_took_share_of_flood']} of it, bridge {r['bridge']}, RSS {r['rss_mb_abuse']}",
                  flush=True)
    ratios = [r["p99_ratio"] for r in runs if r["p99_ratio"] is not None]
    results = {
        "seconds_per_phase": seconds, "rate_readings_per_s": rate, "probes_per_s": PROBES_PER_S,
        "abuse_mbytes_per_s_cap": abuse_mbps or None,
        "publish_limit": os.environ.get("GRIDWATCH_MQTT_PUBLISH_LIMIT", "true"),
        "junk_payload_bytes": len(JUNK), "load_average_at_end": list(os.getloadavg()), "runs": runs,
        "spread": {
            "baseline_p99_ms": [r["baseline"]["p99"] for r in runs], "abuse_p99_ms": [r["abuse"]["p99"] for r in runs],
            "p99_ratio": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)} if ratios else None,
            # the ratio is over the probes whose alert came: a lost probe is worse than any latency
            "probes_lost_abuse": [r["probes_lost"]["abuse"] for r in runs],
            "probes_expected_abuse": [r["abuse"]["expected"] for r in runs],
            "bridge_took_share_of_flood": [r["bridge_took_share_of_flood"] for r in runs],
            "bridge_peak_rss_mb": max(r["rss_mb_abuse"]["bridge_peak"] for r in runs),
            "mosquitto_peak_rss_mb": max(r["rss_mb_abuse"]["mosquitto_peak"] for r in runs),
            "broker_dropped_messages": [r["broker_dropped_messages"] for r in runs],
        },
        "targets": {"p99_ratio": 2.0, "deadletter_amplification": 1.2, "probes_lost_abuse": 0},
    }
    print(f"spread over {repeat} runs: {results['spread']}", flush=True)
    write_results(out, results)
    if out is not None:
        print(f"wrote {out}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("abuse", __doc__)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase (baseline, abuse)")
    p.add_argument("--rate", type=int, default=1000, help="normal traffic, readings/s")
    p.add_argument("--repeat", type=int, default=3, help="runs, each with a fresh bridge and worker")
    p.add_argument("--abuse-mbps", type=float, default=0.0,
                   help="cap the flood at this many MB/s (a device's uplink); 0 = as fast as the broker takes it")
    a = p.parse_args(argv)
    run(a.out, a.seconds, a.rate, a.repeat, a.abuse_mbps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
