"""Zone rules on a real clip: ``vtest.avi`` (opencv-doc), sampled at 5 fps, detector → tracker → rules →
evidence, with frame time starting at 2024-03-01 23:00 Asia/Shanghai.

Hand check (frames every 2 s saved as PNG and looked at; the track drawn over the frames 600–720):

* the west lawn (polygon x 0–180, y 330–480) is crossed by exactly one person during the clip: a woman with
  blond hair and a dark coat who walks up the lawn from the south-east and reaches the footpath at its
  north-west corner, inside the polygon from about 68.4 s to 71.8 s (frames 684–718).  A man in red walks
  on the lawn with her earlier (frames 500–600) but turns back east before x = 195.
* the white van in the bay at the top right (hand box x 652–723, y 44–98) stands still for the whole
  clip; a second parked car (x 733–768) is outside the bay polygon.

So "person on the lawn at night" must fire exactly once (new → end, one event id, one track) around
68.5 s and end when she leaves (≈ 72 s), and "parked in the bay > 30 s" exactly once, for the van, at
≈ 30.6 s (the van is still from the first frame), ending only when the stream closes.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from gridwatch.models.detectors import create_detector
from gridwatch.models.regions import RegionConfig, RegionPlanner, detect_frames
from gridwatch.models.scene_rules import SceneEngine
from gridwatch.models.zones import point_in_polygon
from gridwatch.pipeline.outputs.evidence import FileEvidenceStore, save_evidence
from gridwatch.pipeline.sources.capture import CameraCapture

T0 = datetime(2024, 3, 1, 23, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
SCENE = {
    "tz": "Asia/Shanghai",
    "zones": {"lawn_west": {"polygon": [[0, 330], [180, 330], [180, 480], [0, 480]], "kind": "restricted"},
              "van_bay": {"polygon": [[640, 60], [725, 60], [725, 110], [640, 110]], "kind": "no_parking"}},
    "rules": [{"id": "lawn-night", "type": "restricted_zone", "zone": "lawn_west", "hours": "22:00-06:00"},
              {"id": "bay-parking", "type": "vehicle_parked", "zone": "van_bay", "min_duration_s": 30,
               "update_interval_s": 20}],
}
VAN = (652, 44, 723, 98)


@pytest.fixture(scope="module")
def int8_dynamic_detector(int8_detector):
    """The shipped detector: int8, any input size (for motion-region crops), batches split over 2 shards."""
    det = create_detector({"type": "yolo_darknet_onnx", "variant": "int8", "dynamic": True, "threads": 1,
                           "batch_workers": 2})
    yield det
    det.close()


@pytest.mark.parametrize("variant", ["detector", "int8_detector", "int8_416x320_detector", "int8_dynamic_regions"])
def test_zone_rules_on_vtest(request, variant, vtest_path, tmp_path, artifacts) -> None:
    """The float model, the shipped int8 model, int8 at 416×320, and the dynamic-input int8 model looking
    only at motion regions (crops around what moved and what is tracked; the whole frame every 2 s) all
    give the hand-checked events — the parked van included, which never moves."""
    regions = variant == "int8_dynamic_regions"
    detector = request.getfixturevalue("int8_dynamic_detector" if regions else variant)
    planner = RegionPlanner(RegionConfig()) if regions else None
    engine = SceneEngine.from_config("vtest", SCENE)
    store = FileEvidenceStore(tmp_path / "evidence")
    capture = CameraCapture({"camera_id": "vtest", "source": str(vtest_path), "start_ts": T0, "detect_fps": 5})
    events, refs = [], {}
    cropped = 0
    for frame in capture.frames():
        (dets,), (plan,) = detect_frames(detector, planner, [frame], lambda _c, ts: engine.tracker.boxes_at(ts))
        cropped += plan is not None
        result = engine.update(dets, frame.ts, frame.size)
        for ev in result.events:
            events.append(ev)
            if ev.type in ("new", "end"):
                refs[(ev.event_id, ev.type)] = save_evidence(store, frame.image, ev, zones=engine.zones,
                                                             tracks=result.tracks, tz=engine.tz)
                (artifacts / f"scene_{variant}_{ev.rule_id}_{ev.type}.jpg").write_bytes(store.get(refs[(ev.event_id, ev.type)]))
    closing = engine.close()
    assert capture.sampled == 398  # 795 frames at 10 fps → every other frame
    if regions:  # the point of regions: most frames of a fixed camera are not searched whole
        assert cropped > 398 // 2, cropped

    lawn = [e for e in events if e.rule_id == "lawn-night"]
    assert [e.type for e in lawn] == ["new", "end"], [e.to_dict() for e in lawn]
    new, end = lawn
    assert new.event_id == end.event_id and new.track_id == end.track_id and new.label == "person"
    assert 67.0 <= new.ts - T0 <= 70.0 and new.level == "red"
    assert 70.5 <= end.end_ts - T0 <= 75.0 and end.reason in ("left_zone", "track_lost")
    zone = engine.membership.zones["lawn_west"].polygon_px()
    assert point_in_polygon(((new.box[0] + new.box[2]) / 2, new.box[3]), zone)

    bay = [e for e in events if e.rule_id == "bay-parking"]
    assert [e.type for e in bay if e.type != "update"] == ["new"], [e.to_dict() for e in bay]
    parked = bay[0]
    assert parked.label in ("car", "truck", "bus") and 29.5 <= parked.ts - T0 <= 33.0
    cx, cy = (parked.box[0] + parked.box[2]) / 2, (parked.box[1] + parked.box[3]) / 2
    assert VAN[0] <= cx <= VAN[2] and VAN[1] <= cy <= VAN[3] and parked.box[2] < 733
    assert [(e.rule_id, e.type, e.reason) for e in closing] == [("bay-parking", "end", "closed")]
    assert len({e.event_id for e in events}) == 2  # one event per rule episode, never one per frame

    ref = refs[(new.event_id, "new")]
    assert ref == f"vtest/{new.event_id}.jpg" and (tmp_path / "evidence" / ref).is_file()
    img = cv2.imdecode(np.frombuffer(store.get(ref), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (576, 768, 3)
