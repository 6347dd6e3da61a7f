"""Evidence store and rendering; the optional licence-plate reader (skips cleanly without agentclpr)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from gridwatch.models import plates
from gridwatch.models.scene_rules import SceneEvent
from gridwatch.models.tracker import TrackState
from gridwatch.models.zones import Zone
from gridwatch.pipeline.evidence import (
    FileEvidenceStore,
    MemoryEvidenceStore,
    render_evidence,
    safe_name,
    save_evidence,
)


def _event(**kw) -> SceneEvent:
    base = dict(event_id="e1/../x", key="k", type="new", kind="vehicle_parked", camera_id="cam 1", rule_id="r",
                zone="bay", level="red", start_ts=0.0, ts=60.0, label="car", track_id=3, box=(100, 100, 200, 160))
    base.update(kw)
    return SceneEvent(**base)


def test_file_store_paths_refs_and_overwrite(tmp_path) -> None:
    store = FileEvidenceStore(tmp_path / "ev", url_prefix="/evidence/")
    ref = store.put("cam 1", "e1/../x", b"first")
    cam, ev = safe_name("cam 1"), safe_name("e1/../x")
    assert ref == f"/evidence/{cam}/{ev}.jpg" and "/" not in ev and not ev.startswith(".")
    assert (tmp_path / "ev" / cam / f"{ev}.jpg").read_bytes() == b"first"
    store.put("cam 1", "e1/../x", b"second")  # a re-delivered event replaces its picture
    assert store.get(ref) == b"second" and store.exists(ref) and not store.exists("/evidence/../../etc/passwd")
    assert safe_name("34020000001320000001") == "34020000001320000001"  # GB/T 28181 ids stay as they are
    assert safe_name("摄像头-1") != safe_name("监控-1") and safe_name("..").startswith("_-")


def test_render_draws_zone_and_event_box() -> None:
    img = np.full((240, 320, 3), 128, np.uint8)
    zone = Zone("bay", ((80, 80), (240, 80), (240, 200), (80, 200)))
    other = TrackState(7, "person", (10, 10, 30, 60), 0.8, 0.8, 0.0, 60.0, 5, True, (0.0, 0.0))
    ghost = TrackState(8, "person", (280, 10, 300, 60), 0.8, 0.8, 0.0, 58.0, 5, False, (0.0, 0.0))
    out = render_evidence(img, _event(), zones=[zone], tracks=[other, ghost], tz="Asia/Shanghai")
    assert out.shape == img.shape and not np.array_equal(out, img)
    assert tuple(out[130, 100]) != (128, 128, 128)  # event box edge drawn (red)
    assert tuple(out[35, 10]) != (128, 128, 128)  # the other, matched track (grey box)
    assert tuple(out[35, 280]) == (128, 128, 128)  # an unmatched (predicted) track is not drawn
    store = MemoryEvidenceStore()
    ref = save_evidence(store, img, _event(), zones=[zone])
    decoded = cv2.imdecode(np.frombuffer(store.get(ref), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == img.shape


def test_plate_reader_absent_is_skipped_cleanly(monkeypatch) -> None:
    monkeypatch.setattr(plates, "REQUIRED", ("agentclpr_not_installed_here",))
    assert "agentclpr_not_installed_here" in plates.unavailable_reason()
    assert plates.create_plate_reader() is None
    with pytest.raises(RuntimeError, match="unavailable"):
        plates.PlateReader()


@pytest.fixture(scope="module")
def plate_reader():
    reason = plates.unavailable_reason()
    if reason:
        pytest.skip(f"agentclpr not installed ({reason})")
    return plates.create_plate_reader({"threads": 1})


def test_plate_reader_plumbing(plate_reader, darknet_images, caplog) -> None:
    """Our footage has no readable Chinese plate (hand check: the pickup in dog.jpg shows no plate), so
    the real model must report nothing there; a stubbed recogniser checks the mapping back to frame pixels."""
    img = cv2.imread(str(darknet_images["dog.jpg"]))
    with caplog.at_level(logging.INFO):
        assert plate_reader.read(img, (465, 74, 677, 172)) == []
    assert not [r for r in caplog.records if "agentocr" in r.pathname and r.levelno < logging.WARNING]

    class Stub:
        def __call__(self, crop):
            return [[[[30, 40], [90, 40], [90, 60], [30, 60]], ["京A12345", 0.97]], [[[0, 0], [1, 0], [1, 1], [0, 1]], ["", 0.9]]]

    original = plate_reader._clp
    plate_reader._clp = Stub()
    try:
        best = plate_reader.best(img, (100, 200, 200, 360))
    finally:
        plate_reader._clp = original
    assert best is not None and best.text == "京A12345"
    # crop origin (95, 192) minus the 24 px pad
    assert best.polygon[0] == (30 - 24 + 95, 40 - 24 + 192)
