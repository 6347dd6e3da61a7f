"""The camera half wired end to end, and its pieces one at a time.

End to end (nothing faked): ``vtest.avi`` served by the GStreamer RTSP server → ``gridwatch cameras``
(capture process) → Kafka ``<prefix>.frames`` on the embedded broker → ``gridwatch worker --agents
alerts,vision`` (real Faust worker: batched ONNX detection, tracker, zone rule, evidence) → ``<prefix>.events``
→ alerts agent → real Mosquitto, watched by an MQTT subscriber.

The rule: "vehicle parked in the bay > 2 s". The white van stands still in the bay for the whole clip (the
hand check in test_vision_scene_real.py), so the rule fires a few seconds after the stream starts, for a
vehicle track inside the bay; then

* malformed records on the frames topic go to the dead-letter topic (stage ``vision``) and the agent keeps
  going (it still ends the parked event and fires again after the restart);
* killing the RTSP server raises ``camera_offline`` (new) on MQTT and ends the open parked event
  (``camera_offline`` reason), and restarting the server clears it (``camera_offline`` end, same id).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gridwatch.agents.vision import VisionProcessor, describe
from gridwatch.app import resolve_agents
from gridwatch.core.procs import Proc
from gridwatch.devices.registry import load_city
from gridwatch.models.detectors.base import Detection
from gridwatch.pipeline.outputs.evidence import MemoryEvidenceStore
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent, event_id
from gridwatch.pipeline.schemas.frame_wire import Frame
from gridwatch.pipeline.schemas.frames import CameraStatusRecord, FrameRecord, decode, encode_frame
from gridwatch.pipeline.sources.camera_service import (
    CameraConfigError,
    offline_event,
    parse_camera_config,
    redact,
    resolve_sites,
)
from gridwatch.pipeline.sources.rtsp_server import check_available, serve
from tests.harness import ARTIFACTS, MqttWatcher, read_topic, uncommitted, wait_for
from tests.vision.conftest import SHIPPED_DETECTOR

CAM = "33010200001320000001"  # a camera of the sample city
BAY = [[640, 60], [725, 60], [725, 110], [640, 110]]
VAN = (652, 44, 723, 98)  # hand box of the white van (test_vision_scene_real.py)


@pytest.fixture(scope="module")
def city() -> Any:
    return load_city()


# ----------------------------------------------------------------------------------------------- pieces


def test_frames_schema_roundtrip_and_rejects() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 10:30] = 200
    raw = encode_frame(Frame(CAM, 3, 1.7e9, img, True, 0.5, "motion"), sent=1.7e9 + 0.1)
    rec = decode(raw)
    assert isinstance(rec, FrameRecord) and rec.camera_id == CAM and rec.frame.seq == 3
    assert rec.frame.size == (64, 48) and rec.header["v"] == 1 and rec.sent == pytest.approx(1.7e9 + 0.1)
    st = decode(CameraStatusRecord(CAM, False, 1.7e9, "read_failed").encode())
    assert isinstance(st, CameraStatusRecord) and not st.online and st.reason == "read_failed"
    head = b'{"camera_id":"x","seq":0,"ts":1.0}'
    packed_head = b"GWF1" + struct.pack(">I", len(head)) + head
    bad = [b"", b"garbage", raw[:40], packed_head, packed_head + b"not a jpeg", b"GWF1\x00\x00\x00\x02{}",
           b'{"record":"camera_status","v":2,"camera_id":"x","online":true,"ts":1}',
           b'{"record":"camera_status","v":1,"camera_id":"x","online":"yes","ts":1}', b"{nope"]
    for b in bad:
        with pytest.raises(SchemaError):
            decode(b)


def test_camera_config_validation(city) -> None:
    ok = parse_camera_config({"cameras": {int(CAM): {"source": "rtsp://u:secret@10.0.0.7/main", "detect_fps": 2}}})
    assert list(ok.cameras) == [CAM] and ok.cameras[CAM].capture.detect_fps == 2  # unquoted id: same camera
    assert not ok.cameras[CAM].has_rules
    site = resolve_sites(ok, city.registry, city.gridmap)[CAM]
    dev = city.registry[CAM]
    assert (site.grid_code, site.lat, site.lon) == (dev.grid_code, dev.lat, dev.lon)
    assert [t.tier for t in site.tiers] == ["city", "district", "street", "community", "grid"]
    assert redact("rtsp://u:secret@10.0.0.7/main") == "rtsp://u:***@10.0.0.7/main"
    ev = offline_event(site, "new", 100.0, 100.0, level="yellow", reason="open_failed", source="rtsp://u:secret@h/x")
    assert ev.id == event_id("camera_offline", CAM, 100000) and "secret" not in ev.encode().decode()
    for bad, word in [({"cameras": {CAM: {"detect_fps": 5}}}, "source"),
                      ({"cameras": {CAM: {"source": "x", "colour": 1}}}, "colour"),
                      ({"vision": {"max_batch": "8"}}, "max_batch"),
                      ({"capture": {"shutdown_s": 0}}, "shutdown_s"), ({"capture": {"shutdown_s": None}}, "shutdown_s"),
                      ({"cameras": {CAM: {"source": "x", "rules": [{"id": "r", "type": "nope", "zone": "z"}]}}}, CAM),
                      ({"detector": {"type": "magic"}}, "detector")]:
        with pytest.raises(CameraConfigError, match=word):
            parse_camera_config(bad)
    with pytest.raises(CameraConfigError, match="registry"):
        resolve_sites(parse_camera_config({"cameras": {"cam-x": {"source": "x"}}}), city.registry, city.gridmap)
    assert resolve_agents("") == tuple(a for a in resolve_agents("all") if a != "vision")
    assert resolve_agents("+vision")[-1] == "vision" and resolve_agents("alerts,vision") == ("alerts", "vision")
    with pytest.raises(ValueError, match="unknown agent"):
        resolve_agents("+visoin")


class StubDetector:
    """A parked car in the bay on every frame (what the real detector sees there, see the e2e test)."""

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        return [[Detection("car", 0.9, (655.0, 50.0, 720.0, 96.0), 2)] for _ in images]


def test_processor_lifecycle_dead_letters_and_order(city) -> None:
    cfg = parse_camera_config({"vision": {"plates": "off"}, "cameras": {CAM: {
        "source": "rtsp://x/y", "zones": {"bay": {"polygon": BAY}},
        "rules": [{"id": "bay", "type": "vehicle_parked", "zone": "bay", "min_duration_s": 2}]}}})
    store = MemoryEvidenceStore()
    proc = VisionProcessor(cfg, resolve_sites(cfg, city.registry, city.gridmap), store, detector=StubDetector())
    img = np.full((576, 768, 3), 90, np.uint8)
    t0 = 1.7e9

    def rec(i: int, detect: bool = True) -> tuple[int, str, bytes, bytes]:
        return (3, "p.frames", CAM.encode(), encode_frame(Frame(CAM, i, t0 + i * 0.2, img, detect)))

    items = [rec(i) for i in range(15)]
    items.insert(4, (3, "p.frames", CAM.encode(), b"junk"))
    items.insert(6, rec(2))  # re-delivered: at or before the engine's last frame time -> skipped
    items.append(rec(15, detect=False))  # the motion gate said still: not detected
    items.append((3, "p.frames", CAM.encode(), encode_frame(Frame(CAM, 16, t0 + 3.2, img), sent=time.time() - 10)))
    items.append((3, "p.frames", b"cam-x", encode_frame(Frame("cam-x", 0, t0, img))))
    out = proc.process(items)
    assert [d[0] for d in out.dead] == ["bad_frame", "unknown_camera"]
    assert [(e.type, e.phase) for e in out.events] == [("vehicle_parked", "new")]
    new = out.events[0]
    assert new.grid_code == city.registry[CAM].grid_code and new.subject == CAM and new.source == "vision"
    assert 2.0 <= (new.ts - new.start_ts) / 1000 <= 2.5 and new.level == "yellow"
    ref = new.evidence[0]["snapshot"]
    assert ref == f"{CAM}/{new.id}.jpg" and store.get(ref)[:2] == b"\xff\xd8"
    assert GridEvent.decode(new.encode()).evidence[0]["box"] == [655.0, 50.0, 720.0, 96.0]
    assert proc.stats["skipped_stale"] == 1 and proc.stats["skipped_still"] == 1 and proc.stats["frames"] == 15
    assert proc.stats["skipped_lagging"] == 1  # waited 10 s > vision.max_lag_s: the agent catches up instead

    # the capture service lost the camera: the open event ends, referencing the first snapshot
    out = proc.process([(3, "p.frames", CAM.encode(), CameraStatusRecord(CAM, False, t0 + 5, "read_failed").encode())])
    assert [(e.phase, e.id) for e in out.events] == [("end", new.id)]
    end = out.events[0]
    assert end.end_ts == int((t0 + 5) * 1000) and end.evidence[0]["reason"] == "camera_offline"
    assert end.evidence[0]["snapshot"] == ref and "camera_offline" in describe_end(end)
    assert proc.engines == {}

    # a replay of the same frames gives the same event id (deterministic by event time)
    again = VisionProcessor(cfg, proc.sites, MemoryEvidenceStore(), detector=StubDetector())
    assert [e.id for e in again.process([rec(i) for i in range(15)]).events] == [new.id]


def test_processor_failure_parks_only_the_culprit(city) -> None:
    class Flaky(StubDetector):
        def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
            if any(int(im[0, 0, 0]) == 1 for im in images):
                raise RuntimeError("model blew up")
            return super().detect(images)

    cfg = parse_camera_config({"vision": {"plates": "off"}, "cameras": {CAM: {
        "source": "rtsp://x/y", "zones": {"bay": {"polygon": BAY}},
        "rules": [{"id": "bay", "type": "vehicle_parked", "zone": "bay", "min_duration_s": 0.5}]}}})
    proc = VisionProcessor(cfg, resolve_sites(cfg, city.registry, city.gridmap), MemoryEvidenceStore(),
                           detector=Flaky())
    items = [(0, "p.frames", CAM.encode(), encode_frame(Frame(CAM, i, 1.7e9 + i * 0.2,
                                                             np.full((576, 768, 3), 1 if i == 2 else 90, np.uint8))))
             for i in range(8)]
    # the batch with the bad frame fails; its frames are retried one by one, earlier frames keep their events
    out = proc.process(items)
    assert [d[0] for d in out.dead] == ["vision_error"] and "model blew up" in out.dead[0][1]
    assert json.loads(out.dead[0][3])["seq"] == 2  # the culprit's header is parked, not the others
    assert [e.phase for e in out.events] == ["new"] and proc.stats["frames"] == 7
    # the agent's fallback when process() itself raises (one record at a time) parks the same
    proc = VisionProcessor(cfg, proc.sites, MemoryEvidenceStore(), detector=Flaky())
    out = proc.process_each(items)
    assert [d[0] for d in out.dead] == ["vision_error"] and "model blew up" in out.dead[0][1]
    assert [e.phase for e in out.events] == ["new"] and proc.stats["frames"] == 7


def describe_end(ev: GridEvent) -> str:
    return ev.message


def test_describe_messages() -> None:
    from gridwatch.models.scene_rules import SceneEvent

    ev = SceneEvent("id", "k", "new", "crowd", CAM, "r", "plaza", "yellow", 0.0, 10.0, track_ids=[1, 2, 3],
                    data={"count": 7, "peak": 7})
    assert describe(ev) == "crowd of 7 in plaza (peak 7)"


def test_capture_service_files_and_offline(stack, vtest_path: Path, city, tmp_path: Path) -> None:
    """In process against the real broker: a file camera delivers every sampled frame (files wait for their
    slot; live cameras would keep only the newest) and then an "ended" status; a camera that cannot be opened
    raises camera_offline with its grid code after the grace, once."""
    import threading

    from gridwatch.core.settings import load_settings
    from gridwatch.pipeline.sources.camera_service import CameraService

    other = city.registry.by_kind("camera")[1].id
    cfg = parse_camera_config({"capture": {"offline_after_s": 0.5}, "cameras": {
        CAM: {"source": str(vtest_path), "detect_fps": 2, "max_width": 320, "start_ts": 1.7e9},
        other: {"source": str(tmp_path / "missing.avi")}}})
    prefix = f"c{int(time.time() * 1000) % 10**8:08d}"
    settings = load_settings(None, {"kafka.url": stack.kafka_url, "kafka.topic_prefix": prefix})
    service = CameraService(settings, cfg, resolve_sites(cfg, city.registry, city.gridmap))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(service.run(stop),), daemon=True)
    runner.start()
    try:
        wait_for(lambda: service.stats["offline_events"] == 1 and not service._threads[0].is_alive()
                 and not service._pending and not service._status, 60, "the file to end and the offline event")
        time.sleep(0.5)
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(20)
    frames_, statuses = [], []
    for r in _read_raw(stack.kafka_url, f"{prefix}.frames"):
        rec = decode(r)
        (frames_ if isinstance(rec, FrameRecord) else statuses).append(rec)
    cap = service._captures[CAM]
    assert cap.sampled == 159  # 79.5 s at 2 fps; the motion gate let cap.detected of them through
    assert service.stats["superseded"] == 0 and len(frames_) == service.stats["sent"] == cap.detected >= 150
    seqs = [f.frame.seq for f in frames_]
    assert seqs == sorted(seqs) and frames_[0].frame.size == (320, 240)
    assert [(s.camera_id, s.online, s.reason) for s in statuses if s.camera_id == CAM] == [(CAM, False, "ended")]
    events = [GridEvent.from_dict(e) for e in read_topic(stack.kafka_url, f"{prefix}.events", 1.0)]
    assert [(e.type, e.phase, e.subject) for e in events] == [("camera_offline", "new", other)]
    assert events[0].grid_code == city.registry[other].grid_code and events[0].evidence[0]["reason"] == "open_failed"


def _read_raw(kafka_url: str, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    async def main() -> list[bytes]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=kafka_url.removeprefix("kafka://"),
                             auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
        await c.start()
        out: list[tuple[int, int, bytes]] = []
        try:
            idle = 0
            while idle < 3:
                got = await c.getmany(timeout_ms=300)
                idle = 0 if got else idle + 1
                out.extend((r.partition, r.offset, r.value) for recs in got.values() for r in recs)
        finally:
            await c.stop()
        return [v for _, _, v in sorted(out)]

    return asyncio.run(main())


# ----------------------------------------------------------------------------------------------- e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _produce(kafka_url: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    async def main() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_url.removeprefix("kafka://"))
        await p.start()
        try:
            for k, v in records:
                await p.send_and_wait(topic, v, key=k)
        finally:
            await p.stop()

    asyncio.run(main())


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = check_available()
    if reason:
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")


def test_rtsp_to_mqtt_alert_offline_and_dead_letters(stack, gstreamer, vtest_path: Path, city, tmp_path: Path) -> None:
    prefix = f"v{int(time.time() * 1000) % 10**8:08d}"
    port = _free_port()
    evidence = tmp_path / "evidence"
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({
        "detector": SHIPPED_DETECTOR,  # dynamic input: motion regions on, as shipped
        "vision": {"max_batch": 4, "batch_window_s": 0.05, "stats_interval_s": 2},
        "capture": {"offline_after_s": 1.0, "jpeg_quality": 80},
        "cameras": {CAM: {
            "source": f"rtsp://127.0.0.1:{port}/plaza", "detect_fps": 5,
            "reconnect_initial_s": 0.25, "reconnect_max_s": 1.0, "open_timeout_s": 3, "read_timeout_s": 3,
            "stall_timeout_s": 3,
            "zones": {"van_bay": {"polygon": BAY, "kind": "no_parking"}},
            "rules": [{"id": "bay-no-parking", "type": "vehicle_parked", "zone": "van_bay", "min_duration_s": 2,
                       "update_interval_s": 600, "level": "red"}]}}}))
    common = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url, "--prefix", prefix, "--cameras", str(cameras)]
    env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on", "GRIDWATCH_WEB_EVIDENCE_DIR": str(evidence)}
    logs = ARTIFACTS / "vision-e2e"
    worker = Proc(f"{prefix}-worker", ["worker", *common, "--agents", "alerts,vision"], logs, env)
    capture = Proc(f"{prefix}-cameras", ["cameras", *common], logs, env)
    watcher = MqttWatcher(stack.mqtt_url, ["gridwatch/alerts/#"])
    grid = city.registry[CAM].grid_code
    server = serve([vtest_path], port=port, names=["plaza"])

    def alerts(kind: str, phase: str) -> list[dict[str, Any]]:
        return [b for t, b in watcher.matching(lambda t, b: isinstance(b, dict) and b.get("subject") == CAM
                                               and b.get("type") == kind and b.get("phase") == phase)]

    try:
        worker.start()
        worker.wait_log("worker ready", 90)
        capture.start()
        capture.wait_log("capture service running", 60)

        # 1. RTSP -> capture -> Kafka -> vision agent -> grid event -> MQTT, with the camera's grid code
        parked = wait_for(lambda: alerts("vehicle_parked", "new"), 90, "the parked-van alert on MQTT")[0]
        topic = next(t for t, b in watcher.matching(lambda t, b: b is parked))
        assert topic.startswith("gridwatch/alerts/") and topic.endswith(f"/{grid}/vehicle_parked")
        assert parked["grid_code"] == grid and parked["device_kind"] == "camera" and parked["level"] == "red"
        assert parked["source"] == "vision" and parked["tiers"][-1]["code"] == grid
        ev = parked["evidence"][0]
        assert ev["label"] in ("car", "truck", "bus") and ev["zone"] == "van_bay"
        cx, cy = (ev["box"][0] + ev["box"][2]) / 2, (ev["box"][1] + ev["box"][3]) / 2
        assert VAN[0] <= cx <= VAN[2] and VAN[1] <= cy <= VAN[3], ev["box"]
        snap = evidence / ev["snapshot"]
        assert ev["snapshot"] == f"{CAM}/{parked['id']}.jpg" and snap.is_file() and snap.read_bytes()[:2] == b"\xff\xd8"
        (ARTIFACTS / "vision").mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "vision" / "e2e_parked_snapshot.jpg").write_bytes(snap.read_bytes())
        latency = time.time() - parked["ts"] / 1000  # frame time -> the alert in our hands (upper bound)
        assert latency < 10, latency
        # the shipped detector searched motion regions (the parked van, which never moves, was still found)
        wait_for(lambda: any(int(n) > 0 for n in re.findall(r"'region_frames': (\d+)", worker.log())), 30,
                 "vision stats with frames analysed in motion regions")

        # 2. malformed frame records: dead-lettered, the agent keeps going (steps 3-4 need it)
        _produce(stack.kafka_url, f"{prefix}.frames", [(CAM.encode(), b"not a frame"),
                                                         (CAM.encode(), b"GWF1\x00\x00\x00\x02{}")])
        dead = wait_for(lambda: [d for d in read_topic(stack.kafka_url, f"{prefix}.deadletter", 1.5)
                                 if d["stage"] == "vision"], 30, "vision dead letters")
        assert {d["reason"] for d in dead} == {"bad_frame"} and len(dead) == 2
        assert all(d["source"] == f"{prefix}.frames" for d in dead)

        # 3. the camera dies: camera_offline on MQTT; the open parked event ends
        server.kill()
        off = wait_for(lambda: alerts("camera_offline", "new"), 40, "camera_offline alert")[0]
        assert off["grid_code"] == grid and off["subject"] == CAM and off["source"] == "camera"
        assert off["evidence"][0]["source"] == f"rtsp://127.0.0.1:{port}/plaza"
        ended = wait_for(lambda: [b for b in alerts("vehicle_parked", "end") if b["id"] == parked["id"]], 30,
                         "the parked event to end when the camera went offline")[0]
        assert ended["evidence"][0]["reason"] == "camera_offline" and ended["end_ts"] >= parked["ts"]

        # 4. the camera comes back: camera_offline ends (same id), detection resumes
        time.sleep(1.0)
        server = serve([vtest_path], port=port, names=["plaza"])
        back = wait_for(lambda: alerts("camera_offline", "end"), 40, "camera_offline end")[0]
        assert back["id"] == off["id"] and back["end_ts"] >= off["start_ts"]
        again = wait_for(lambda: [b for b in alerts("vehicle_parked", "new") if b["id"] != parked["id"]], 60,
                         "a new parked event after the camera came back")[0]
        assert again["ts"] > back["ts"] - 1000
        assert len(alerts("camera_offline", "new")) == 1  # one event per outage, not one per reconnect try

        # 5. with the camera stopped, the worker's group commits every frame record, the bad ones too (nothing
        # taken is left unacked, so a restart resumes after the last frame)
        capture.stop()
        wait_for(lambda: uncommitted(stack.kafka_url, f"gridwatch-{prefix}", f"{prefix}.frames") == 0, 30,
                 "the vision worker to commit every frame record")
    finally:
        capture.stop()
        worker.stop()
        server.stop()
        watcher.close()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert "Traceback" not in capture.log(), capture.log()[-3000:]
