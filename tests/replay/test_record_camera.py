"""`gridwatch record --camera`: a real RTSP stream (GStreamer RTSP server serving OpenCV's vtest.avi) is
stored as H.264 MP4 segments without re-encoding, each indexed in the recording with its wall-clock span."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import cv2
import pytest

from gridwatch.core.procs import Proc
from gridwatch.pipeline.recordreplay.recording import scan
from gridwatch.pipeline.sources.rtsp_server import check_available, serve
from gridwatch.stack import free_port
from tests.harness import ARTIFACTS

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")

pytestmark = pytest.mark.slow


def test_camera_segments_are_recorded_without_re_encoding_and_indexed(stack, tmp_path):
    why = check_available()
    if why is not None or not VTEST.exists():
        pytest.fail(f"GStreamer RTSP server or footage missing ({why}); ./run setup installs them")
    out = tmp_path / "cam.mcap"
    with serve([VTEST], port=free_port(), names=["gate"]) as srv:
        rec = Proc(f"recorder-camera-{uuid.uuid4().hex[:8]}", ["record", str(out), "--mqtt", stack.mqtt_url, "--camera",
                                       f"gate={srv.url('gate')}", "--segment-s", "2"], ARTIFACTS)
        rec.start()
        rec.wait_log("recorder subscribed", 30)
        t0 = time.time_ns()
        time.sleep(7)
        assert rec.stop(signal.SIGINT) == 0, rec.log()[-2000:]
        t1 = time.time_ns()
    rep = scan(out)
    assert rep.complete and not rep.problems, rep.problems
    segs = sorted(rep.segments, key=lambda s: s["start_ns"])
    assert len(segs) >= 2, segs
    for a, b in zip(segs, segs[1:], strict=False):
        assert a["end_ns"] <= b["start_ns"] + 50_000_000  # contiguous, in order
    assert t0 - 5e9 < segs[0]["start_ns"] and segs[-1]["end_ns"] < t1 + 1e9
    for s in segs:
        assert s["camera"] == "gate" and s["codec"] == "h264"
        f = out.parent / s["file"]
        assert f.is_file() and f.stat().st_size == s["bytes"] > 0
        cap = cv2.VideoCapture(str(f))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace").lower()
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape[:2] == (576, 768)  # vtest.avi's size: the camera's own stream, not re-scaled
        assert fourcc in ("avc1", "h264"), fourcc
