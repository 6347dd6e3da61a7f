"""Evidence store and rendering; the optional licence-plate reader (skips cleanly without agentclpr)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from gridwatch.models import footage, plates
from gridwatch.models.detectors import DetectionApi
from gridwatch.models.scene_rules import SceneEvent
from gridwatch.models.tracker import TrackState
from gridwatch.models.zones import Zone
from gridwatch.pipeline.outputs.evidence import (
    FileEvidenceStore,
    MemoryEvidenceStore,
    render_evidence,
    safe_name,
    save_evidence,
)

# Province abbreviations that open a civil Chinese plate: the one character of our real plate nobody can read.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# litealpr's intro1.png is a 4×4 grid of photos between white gutters (x, y 0-29, 493-521, …, 1971-1999 px):
# the top-left photo, by hand.
SALOON_CELL = (30, 30, 493, 493)


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
    """dog.jpg has no plate in view (hand check: the pickup is seen from the side), so the real model must
    report nothing there; a stubbed recogniser checks the mapping back to frame pixels."""
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


@pytest.fixture(scope="module")
def chinese_plate_picture() -> np.ndarray:
    try:
        path = footage.litealpr_plates_png()
    except footage.FootageUnavailable as exc:
        pytest.skip(str(exc))
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (2000, 2000, 3)
    return img


def _inside(points: list[tuple[float, float]], box: tuple[float, float, float, float]) -> bool:
    return all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in points)


def test_plate_reader_reads_a_real_chinese_plate(plate_reader, detector: DetectionApi,
                                                  chinese_plate_picture: np.ndarray) -> None:
    """A real photo nobody here made: the top-left cell of litealpr's intro1.png, a white Citroën saloon from
    behind with a blue plate.  Hand check (image viewer, cell and plate at 4×): "?A·B6335" — A, B, 6, 3, 3, 5
    are clear, the province character before them is a blur of a few pixels, so any province passes there
    (the model says 皖, which no one can confirm from this picture).  The plate lies between the tail lights
    at about x 178-298, y 318-365 of the figure."""
    img = chinese_plate_picture
    cell = [d for d in detector.detect_one(img) if d.label == "car"
            and _inside([((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2)], SALOON_CELL)]
    assert len(cell) == 1, cell  # yolov3-tiny: the saloon, box about (16, 35, 451, 441), score about 0.7
    car = cell[0].box

    reads = plate_reader.read(img, car)
    assert len(reads) == 1, reads  # the plates of the neighbouring photos lie outside this car's box
    plate = reads[0]
    assert len(plate.text) == 7 and plate.text[0] in PROVINCES and plate.text[1:] == "AB6335", plate
    assert plate.score >= plate_reader.min_score and len(plate.polygon) == 4
    assert _inside(list(plate.polygon), car)  # frame pixels, inside the vehicle box
    assert _inside(list(plate.polygon), (170, 305, 310, 380))  # on the plate found by hand

    # read on the whole figure (no crop), the same plate lands on the same pixels: the crop origin is undone
    whole = [r for r in plate_reader.read(img) if r.text == plate.text]
    assert len(whole) == 1, whole
    assert max(abs(a - b) for p, q in zip(whole[0].polygon, plate.polygon, strict=True)
               for a, b in zip(p, q, strict=True)) <= 4
