"""The capture service (`gridwatch cameras`) stops within its shutdown time, also with Kafka frozen.

Real processes on a private embedded stack: vtest.avi served over the GStreamer RTSP server, the capture
service as an operator starts it, the Kafka protocol broker (frozen with SIGSTOP). While Kafka is frozen
the service waits on the broker for the frame it has in flight, and its producer's stop flushes to the
same broker: only the shared shutdown watchdog (gridwatch/core/shutdown.py) ends it, ``capture.shutdown_s``
after the signal. Frames are not acknowledged input (the cameras send newer ones), so nothing has to be
redelivered: after the thaw a restarted service sends frames again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import yaml

from gridwatch.core.procs import Proc
from gridwatch.core.shutdown import EXIT_WATCHDOG
from gridwatch.models import footage
from gridwatch.pipeline.recordreplay.compare import read_topic_all
from gridwatch.pipeline.schemas.frames import peek_header
from gridwatch.pipeline.sources.rtsp_server import check_available, serve
from gridwatch.stack import free_port
from tests.faults.test_faults_telemetry import own_stack as own_stack  # the fixture: a private stack per test
from tests.harness import ARTIFACTS, wait_for
from tests.replay.runs import settings_for

CAM = "33010200001320000001"  # a camera of the sample city's registry (grid code, position)
SHUTDOWN_S = 3


def frames_sent_after(settings, topic: str, t0: float) -> list[dict]:
    """Headers of the frame records on ``topic`` encoded after ``t0`` (wall clock of the capture service)."""
    raws = asyncio.run(read_topic_all(settings, topic, idle_s=1.0, timeout=30))
    return [h for h in map(peek_header, raws) if h is not None and h.get("sent", 0) > t0]


def test_cameras_sigterm_with_kafka_frozen_exits_within_its_shutdown_time_and_a_restart_sends_frames(
        own_stack, tmp_path: Path) -> None:
    reason = check_available()
    if reason:
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")
    try:
        video = footage.vtest_avi()
    except footage.FootageUnavailable as exc:
        pytest.skip(str(exc))
    prefix = f"cs{int(time.time() * 1000) % 10**8:08d}"
    port = free_port()
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({
        "capture": {"shutdown_s": SHUTDOWN_S, "send_skipped": True, "stats_interval_s": 1},
        "cameras": {CAM: {
            "source": f"rtsp://127.0.0.1:{port}/plaza", "detect_fps": 5, "reconnect_initial_s": 0.25,
            "reconnect_max_s": 1.0, "open_timeout_s": 5, "read_timeout_s": 5, "stall_timeout_s": 5}}}))
    settings = settings_for(own_stack, prefix)
    topic = settings.topic("frames")
    capture = Proc(f"{prefix}-cameras", ["cameras", "--kafka", own_stack.kafka_url, "--mqtt", own_stack.mqtt_url,
                                         "--prefix", prefix, "--cameras", str(cameras)], ARTIFACTS / "faults")
    kafka = own_stack.procs["kafka"].proc
    server = serve([video], port=port, names=["plaza"])
    try:
        capture.start()
        capture.wait_log("capture service running", 90)
        wait_for(lambda: len(frames_sent_after(settings, topic, 0)) >= 5, 60, "frames from the RTSP camera in Kafka",
                 interval=1)
        kafka.send_signal(signal.SIGSTOP)
        time.sleep(2)  # the camera goes on at 5 fps: its next frame is in flight to the frozen broker
        rc = capture.stop(signal.SIGTERM, timeout=60)
        log = capture.log()
        # the premise: the clean stop was stuck on the frozen broker, only the watchdog ended it
        assert rc == EXIT_WATCHDOG and f"still running {SHUTDOWN_S}s after SIGTERM" in log, log[-2000:]
        assert "capture service stopped" not in log.rsplit("==== start", 1)[-1]
        kafka.send_signal(signal.SIGCONT)
        restarted = time.time()
        capture.start()
        wait_for(lambda: capture.log().count("capture service running") == 2 or capture.dead(), 90,
                 "the restarted capture service")
        fresh = wait_for(lambda: frames_sent_after(settings, topic, restarted) or None, 90,
                         "frames from the restarted capture service", interval=1)
        print(f"after the thaw: {len(fresh)} frames from the restarted capture service")
        assert server.alive, "the RTSP server died: the frames above would not be live"
        # with the broker answering, the same signal is a clean stop, inside the watchdog's time
        assert capture.stop(signal.SIGTERM, timeout=60) == 0, capture.log()[-2000:]
        assert "capture service stopped" in capture.log().rsplit("==== start", 1)[-1]
    finally:
        kafka.send_signal(signal.SIGCONT)
        capture.stop(signal.SIGKILL)
        server.stop()
