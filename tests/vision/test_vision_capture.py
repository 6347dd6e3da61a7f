"""Capture: sampling by frame time, motion gate, image folders, frame packing, and a real RTSP stream from
our GStreamer server — including the offline callback when the server is killed and the online callback
when it comes back (reconnect with back-off)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gridwatch.pipeline.schemas.frame_wire import Frame, decode_jpeg, encode_jpeg, pack_frame, unpack_frame
from gridwatch.pipeline.sources.capture import (
    CameraCapture,
    CameraStatus,
    MotionGate,
    MotionGateConfig,
    downscale,
)
from gridwatch.pipeline.sources.rtsp_server import check_available, serve

T0 = 1_709_305_200.0


def test_downscale_sizes_and_picture(vtest_path: Path) -> None:
    """2× INTER_AREA steps then bilinear: the size of a one-step resize, nearly its pixels."""
    src = cv2.VideoCapture(str(vtest_path)).read()[1]
    for w, h in ((768, 576), (1280, 720), (1920, 1080), (641, 480)):
        big = cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
        out = downscale(big, 640)
        ref = cv2.resize(big, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
        assert out.shape == ref.shape
        assert float(np.abs(out.astype(np.int16) - ref).mean()) < 1.5  # grey levels
    assert downscale(src, 800) is src and downscale(src, None) is src


def test_file_sampling_by_frame_time(vtest_path: Path) -> None:
    cap = CameraCapture({"camera_id": "v", "source": str(vtest_path), "detect_fps": 2.5, "start_ts": T0})
    frames = list(cap.frames())
    ts = np.array([f.ts for f in frames])
    assert ts[0] == T0 and len(frames) == 199  # 79.5 s of 10 fps video at 2.5 fps
    np.testing.assert_allclose(np.diff(ts), 0.4, atol=1e-6)
    assert [f.seq for f in frames] == list(range(199)) and frames[0].size == (768, 576)
    assert frames[0].reason == "first" and all(f.detect for f in frames[:1])


def test_image_folder_source_and_max_width(tmp_path: Path, vtest_path: Path) -> None:
    src = cv2.VideoCapture(str(vtest_path))
    for i in range(10):
        ok, img = src.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.jpg"), img)
    (tmp_path / "notes.txt").write_text("not an image")
    cap = CameraCapture({"camera_id": "dir", "source": str(tmp_path), "folder_fps": 10, "detect_fps": 5,
                         "start_ts": T0, "max_width": 384})
    frames = list(cap.frames())
    assert [round(f.ts - T0, 3) for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert frames[0].size == (384, 288)


def test_motion_gate_skips_static_scenes_but_keeps_keyframes() -> None:
    gate = MotionGate(MotionGateConfig(keyframe_interval_s=2.0))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (9, 9), 0)
    verdicts = []
    for i in range(25):  # 5 s at 5 fps of a static scene with sensor noise
        noisy = cv2.add(base, rng.integers(0, 4, base.shape, dtype=np.uint8))
        verdicts.append(gate.check(noisy, i / 5)[2])
    assert verdicts[0] == "first" and verdicts.count("keyframe") == 2 and verdicts.count("motion") == 0
    assert gate.skip_ratio == pytest.approx(22 / 25)
    moving = base.copy()
    cv2.rectangle(moving, (100, 100), (160, 220), (255, 255, 255), -1)  # an object appears
    detect, changed, reason = gate.check(moving, 5.2)
    assert detect and reason == "motion" and changed > 0.01


def test_pack_unpack_roundtrip() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 10:30] = (0, 0, 255)
    frame = Frame("cam-7", 42, T0 + 1.5, img, detect=False, motion=0.0012, reason="still")
    data = pack_frame(frame, quality=90, extra={"grid_code": "110101001001001"})
    back, header = unpack_frame(data)
    assert (back.camera_id, back.seq, back.ts, back.detect, back.reason) == ("cam-7", 42, T0 + 1.5, False, "still")
    assert header["grid_code"] == "110101001001001" and back.size == (64, 48)
    assert np.abs(back.image.astype(int) - img.astype(int)).mean() < 3
    assert decode_jpeg(encode_jpeg(img)).shape == img.shape
    for bad in (b"", b"JPEG" + data[4:], data[:10]):
        with pytest.raises(ValueError):
            unpack_frame(bad)


# ------------------------------------------------------------------------------------------- RTSP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _consume(cap: CameraCapture) -> tuple[queue.Queue[Frame], threading.Thread]:
    """The capture's frames put on a queue by a daemon thread, as a consumer slower than the stream reads them."""
    frames: queue.Queue[Frame] = queue.Queue()

    def consume() -> None:
        for f in cap.frames():
            frames.put(f)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    return frames, worker


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = check_available()
    if reason:
        pytest.skip(f"GStreamer RTSP server unavailable: {reason}")


def test_rtsp_capture_offline_and_back_online(gstreamer, vtest_path: Path) -> None:
    port = _free_port()
    server = serve([vtest_path], port=port, names=["plaza"])
    statuses: list[CameraStatus] = []
    cap = CameraCapture({"camera_id": "plaza", "source": server.url("plaza"), "detect_fps": 5,
                         "reconnect_initial_s": 0.25, "reconnect_max_s": 2.0, "open_timeout_s": 3,
                         "read_timeout_s": 3}, on_status=statuses.append)
    frames, worker = _consume(cap)
    try:
        first = frames.get(timeout=20)
        assert first.size == (768, 576) and first.camera_id == "plaza"
        assert first.image.mean() > 30  # a real picture, not a grey/black decoder placeholder
        assert _wait_for(lambda: frames.qsize() >= 5, 10)
        assert [s.online for s in statuses] == [True]

        # a consumer slower than the stream gets the newest frame, not a backlog
        reader = cap.reader
        assert reader is not None
        time.sleep(1.0)
        assert reader.frames_dropped > 0

        server.kill()  # the camera dies
        assert _wait_for(lambda: len(statuses) >= 2, 15), statuses
        off = statuses[1]
        assert not off.online and off.reason in ("read_failed", "stalled", "open_failed")

        time.sleep(1.5)  # a few failed reconnects with growing back-off
        server = serve([vtest_path], port=port, names=["plaza"])
        assert _wait_for(lambda: len(statuses) >= 3, 20), statuses
        assert statuses[2].online and reader.reconnects >= 2
        while not frames.empty():
            frames.get_nowait()
        again = frames.get(timeout=10)
        assert again.ts > off.ts and again.size == (768, 576)
        assert [s.online for s in statuses] == [True, False, True]  # one report per transition
    finally:
        cap.close()
        server.stop()
        worker.join(10)


def test_rtsp_25fps_sampled_at_5fps_converts_only_what_it_needs(gstreamer, vtest_path: Path) -> None:
    """A 25 fps camera sampled at 5 fps: every frame is decoded (H.264 needs it), but frames that a newer one
    will replace before the next due time are not converted to BGR nor downscaled; the sampled frames still
    come every 0.2 s, downscaled to max_width."""
    port = _free_port()
    server = serve([vtest_path], port=port, names=["plaza"], fps=25)
    cap = CameraCapture({"camera_id": "plaza", "source": server.url("plaza"), "detect_fps": 5, "max_width": 320,
                         "open_timeout_s": 5, "read_timeout_s": 5})
    frames, worker = _consume(cap)
    try:
        first = frames.get(timeout=20)
        assert first.size == (320, 240)
        reader = cap.reader
        assert reader is not None
        read0, conv0 = reader.frames_read, reader.frames_converted
        got = [frames.get(timeout=5) for _ in range(15)]  # 3 s of sampling
        read, converted = reader.frames_read - read0, reader.frames_converted - conv0
        assert read >= 50, read  # the stream runs at 25 fps
        assert converted <= 0.75 * read, (converted, read)
        assert 0.15 <= float(np.median(np.diff([f.ts for f in got]))) <= 0.25
    finally:
        cap.close()
        server.stop()
        worker.join(10)
