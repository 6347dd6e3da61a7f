"""A vision worker killed (SIGKILL) while a scene event is open, and restarted, continues the event.

Real components: vtest.avi over the GStreamer RTSP server → ``gridwatch cameras`` → Kafka → ``gridwatch worker
--agents vision`` (real detector).  The van stands in the bay for the whole clip, so "parked > 2 s" opens an
event.  The worker is killed, frames keep arriving (a backlog, which the restarted worker thins to one frame
per second of event time while it catches up), the worker restarts, restores the camera's scene state from
the ``vision-scene`` table, and when the camera goes offline the event ends **with its original id** — no
second event for the same parked van.  Without the checkpoint the restarted worker would raise a new event
(new track, new id) and the first one would never end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwatch.core.procs import Proc
from gridwatch.pipeline.sources.rtsp_server import check_available, serve
from gridwatch.stack import free_port
from tests.harness import ARTIFACTS, read_topic, wait_for
from tests.vision.conftest import SHIPPED_DETECTOR

CAM = "33010200001320000001"
BAY = [[640, 60], [725, 60], [725, 110], [640, 110]]

pytestmark = pytest.mark.slow


def test_killed_worker_continues_the_open_vision_event(stack, vtest_path: Path, tmp_path: Path) -> None:
    reason = check_available()
    if reason:
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")
    prefix = f"vr{int(time.time() * 1000) % 10**8:08d}"
    port = free_port()
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({
        "detector": SHIPPED_DETECTOR,  # dynamic input: motion regions on, as shipped
        "vision": {"max_batch": 4, "batch_window_s": 0.05, "stats_interval_s": 2, "plates": "off"},
        "capture": {"offline_after_s": 1.0},
        "cameras": {CAM: {
            "source": f"rtsp://127.0.0.1:{port}/plaza", "detect_fps": 5, "reconnect_initial_s": 0.25,
            "reconnect_max_s": 1.0, "open_timeout_s": 3, "read_timeout_s": 3, "stall_timeout_s": 3,
            "zones": {"van_bay": {"polygon": BAY}},
            "rules": [{"id": "bay", "type": "vehicle_parked", "zone": "van_bay", "min_duration_s": 2,
                       "update_interval_s": 600}]}}}))
    common = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url, "--prefix", prefix, "--cameras", str(cameras)]
    env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on", "GRIDWATCH_WEB_EVIDENCE_DIR": str(tmp_path / "evidence")}
    logs = ARTIFACTS / "vision-restart"
    worker = Proc(f"{prefix}-worker", ["worker", *common, "--agents", "vision"], logs, env)
    capture = Proc(f"{prefix}-cameras", ["cameras", *common], logs, env)
    server = serve([vtest_path], port=port, names=["plaza"])

    def parked() -> list[dict[str, Any]]:
        return [e for e in read_topic(stack.kafka_url, f"{prefix}.events", 1.0) if e["type"] == "vehicle_parked"]

    try:
        worker.start()
        worker.wait_log("worker ready", 120)
        capture.start()
        capture.wait_log("capture service running", 60)
        first = wait_for(lambda: [e for e in parked() if e["phase"] == "new"], 90, "the parked-van event")[0]
        time.sleep(3.5)  # the worker commits offsets (and checkpoints) meanwhile
        worker.kill()
        time.sleep(2.0)  # frames pile up in Kafka while no worker runs
        worker.start()
        wait_for(lambda: worker.log().count("scene state restored") >= 1, 120, "the restarted worker to restore the camera")
        time.sleep(4.0)  # it works through the backlog and on with live frames
        server.kill()  # the camera goes offline: the agent ends the camera's open events
        ended = wait_for(lambda: [e for e in parked() if e["phase"] == "end"], 60, "the parked event to end")[0]
    finally:
        capture.stop()
        worker.stop()
        server.stop()
    events = parked()
    assert ended["id"] == first["id"], [(e["id"], e["phase"], e.get("evidence", [{}])[0].get("reason")) for e in events]
    assert {e["id"] for e in events} == {first["id"]}, "a second parked event for the same van after the restart"
    assert ended["evidence"][0]["reason"] == "camera_offline" and ended["start_ts"] == first["start_ts"]
    log = worker.log()
    assert "Traceback" not in log, log[-3000:]
