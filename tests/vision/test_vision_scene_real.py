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

from gridwatch.models.scene_rules import SceneEngine
from gridwatch.models.zones import point_in_polygon
from gridwatch.pipeline.capture import CameraCapture
from gridwatch.pipeline.evidence import FileEvidenceStore, save_evidence

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


@pytest.mark.parametrize("variant", ["detector", "int8_detector", "int8_416x320_detector"])
def test_zone_rules_on_vtest(request, variant, vtest_path, tmp_path, artifacts) -> None:
    """The float model, the shipped int8 model, and int8 at 416×320 all give the hand-checked events."""
    detector = request.getfixturevalue(variant)
    engine = SceneEngine.from_config("vtest", SCENE)
    store = FileEvidenceStore(tmp_path / "evidence")
    capture = CameraCapture({"camera_id": "vtest", "source": str(vtest_path), "start_ts": T0, "detect_fps": 5})
    events, refs = [], {}
    for frame in capture.frames():
        result = engine.update(detector.detect_one(frame.image), frame.ts, frame.size)
        for ev in result.events:
            events.append(ev)
            if ev.type in ("new", "end"):
                refs[(ev.event_id, ev.type)] = save_evidence(store, frame.image, ev, zones=engine.zones,
                                                             tracks=result.tracks, tz=engine.tz)
                (artifacts / f"scene_{variant}_{ev.rule_id}_{ev.type}.jpg").write_bytes(store.get(refs[(ev.event_id, ev.type)]))
    closing = engine.close()
    assert capture.sampled == 398  # 795 frames at 10 fps → every other frame

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
