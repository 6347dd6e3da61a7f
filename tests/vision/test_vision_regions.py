"""Motion regions (models/regions.py): the planner's choices, the motion boxes the gate sends, the merge of
crop detections — and, on real footage through the real dynamic-input model, that detecting in crops finds
what detecting whole frames finds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gridwatch.agents.vision import camera_rounds
from gridwatch.models.detectors.base import Detection
from gridwatch.models.regions import Crop, RegionConfig, RegionPlanner, merge_detections, plan_crops
from gridwatch.pipeline.schemas.frame_wire import Frame, pack_frame, unpack_frame, with_header
from gridwatch.pipeline.sources.capture import MotionGate, motion_boxes

W, H = 416, 320  # the detector's canvas for a 640×480 camera: scaled by 0.65, padded to the 32-px grid
CFG = RegionConfig()


def _covers(crop: Crop, box: tuple[float, float, float, float]) -> bool:
    return crop.x1 <= box[0] and crop.y1 <= box[1] and crop.x2 >= box[2] and crop.y2 >= box[3]


def test_two_far_apart_walkers_get_two_small_crops() -> None:
    a, b = (26.0, 39.0, 52.0, 110.0), (338.0, 195.0, 364.0, 273.0)
    crops = plan_crops((W, H), [a, b], CFG)
    assert crops is not None and len(crops) == 2
    for box in (a, b):
        assert any(_covers(c, box) for c in crops), (box, crops)
    for c in crops:  # on the model's grid, inside the canvas: the same cells as a whole-frame pass
        assert 0 <= c.x1 < c.x2 <= W and 0 <= c.y1 < c.y2 <= H
        assert all(v % 32 == 0 for v in (c.x1, c.y1, c.x2, c.y2))
    pixels = sum(c.width * c.height for c in crops)
    assert pixels < 0.35 * W * H  # the point: far less than the whole frame


def test_close_boxes_merge_into_one_crop() -> None:
    head, feet = (195.0, 130.0, 215.0, 156.0), (192.0, 162.0, 218.0, 195.0)  # one walker, two motion blobs
    crops = plan_crops((W, H), [head, feet], CFG)
    assert crops is not None and len(crops) == 1
    assert _covers(crops[0], head) and _covers(crops[0], feet)


def test_motion_all_over_the_frame_runs_the_whole_frame() -> None:
    corners = [(0.0, 0.0, 78.0, 78.0), (338.0, 0.0, 416.0, 78.0), (0.0, 234.0, 78.0, 320.0),
               (338.0, 234.0, 416.0, 320.0), (169.0, 117.0, 247.0, 195.0)]
    assert plan_crops((W, H), corners, CFG) is None  # a moving camera, a crowd: no saving to make
    assert plan_crops((W, H), [], CFG) is None


def test_margin_keeps_context_around_each_box() -> None:
    box = (195.0, 130.0, 208.0, 156.0)
    (crop,) = plan_crops((W, H), [box], CFG) or [None]
    m = CFG.margin_px
    assert crop.x1 <= box[0] - m and crop.x2 >= box[2] + m and crop.y1 <= box[1] - m and crop.y2 >= box[3] + m


def test_merge_keeps_one_copy_of_an_object_seen_by_two_crops() -> None:
    left, right = Crop(0, 0, 200, 200), Crop(150, 0, 350, 200)
    person_left = Detection("person", 0.9, (160.0, 20.0, 190.0, 120.0), 0)  # frame x 160..190
    person_right = Detection("person", 0.7, (10.0, 22.0, 41.0, 121.0), 0)  # the same one, seen from right
    car = Detection("car", 0.8, (100.0, 100.0, 190.0, 160.0), 2)  # frame x 250..340, only in the right crop
    merged = merge_detections([[person_left], [person_right, car]], [left, right], nms_iou=0.45)
    assert sorted((d.label, d.score) for d in merged) == [("car", 0.8), ("person", 0.9)]
    (moved_car,) = [d for d in merged if d.label == "car"]
    assert moved_car.box == (250.0, 100.0, 340.0, 160.0)


def test_planner_runs_whole_frames_when_it_must() -> None:
    p = RegionPlanner(RegionConfig(full_frame_interval_s=2.0))
    walker = [(40.0, 30.0, 62.0, 96.0)]
    assert p.plan("c", (W, H), 100.0, "first", None) is None  # first frame of the camera
    assert p.plan("c", (W, H), 100.2, "motion", walker) is not None  # crops around the motion
    assert p.plan("c", (W, H), 100.4, "keyframe", []) is None  # nothing moved: look everywhere
    assert p.plan("c", (W, H), 100.6, "motion", None) is None  # boxes unknown (older recording)
    assert p.plan("c", (W, H), 101.0, "motion", walker + [(325.0, 195.0, 351.0, 260.0)]) is not None
    assert p.plan("c", (W, H), 102.7, "motion", walker) is None  # 2 s since the last whole frame
    p.forget("c")
    assert p.plan("c", (W, H), 102.9, "motion", walker) is None  # a camera seen anew starts whole
    assert RegionPlanner(RegionConfig(enabled=False)).plan("d", (W, H), 1.0, "motion", walker) is None
    # with capture sequence numbers: a gap (frames shed for lag) means motion the boxes do not cover
    q = RegionPlanner(RegionConfig())
    assert q.plan("e", (W, H), 10.0, "first", None, seq=0) is None
    assert q.plan("e", (W, H), 10.2, "motion", walker, seq=1) is not None
    assert q.plan("e", (W, H), 11.2, "motion", walker, seq=6) is None  # seq 2..5 never analysed
    assert q.plan("e", (W, H), 11.4, "motion", walker, seq=7) is not None
    # a short gap (max_gap_frames, default 2: frames superseded while the agent was behind) keeps the crops,
    # so an overloaded agent does not search every frame whole; with 0 any gap means the whole frame
    assert RegionConfig().max_gap_frames == 2
    tolerant, strict = RegionPlanner(RegionConfig()), RegionPlanner(RegionConfig(max_gap_frames=0))
    for planner in (tolerant, strict):
        planner.full_ts["g"], planner.last_seq["g"] = 11.0, 7
    assert tolerant.plan("g", (W, H), 12.0, "motion", walker, seq=10) is not None  # seq 8, 9 missing
    assert strict.plan("g", (W, H), 12.0, "motion", walker, seq=10) is None
    state = q.export("e")
    r = RegionPlanner(RegionConfig())
    r.restore("e", state)  # a restarted worker continues the same choices
    assert r.plan("e", (W, H), 11.6, "motion", walker, seq=8) == q.plan("e", (W, H), 11.6, "motion", walker, seq=8)
    assert r.full_ts == q.full_ts and r.last_seq == q.last_seq


def test_gate_boxes_beyond_the_limit_are_kept_as_one() -> None:
    """More changed areas than ``max_boxes``: the rest joins into one last box, so no change goes uncovered."""
    mask = np.zeros((120, 160), bool)
    for i in range(6):
        mask[10 + 18 * i:14 + 18 * i, 10 + 24 * i:14 + 24 * i] = True  # six separate specks
    boxes = motion_boxes(mask, 3)
    assert len(boxes) == 3
    for i in range(6):  # every speck lies in some box
        x, y = (12 + 24 * i) / 160, (12 + 18 * i) / 120
        assert any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes), i
    assert len(motion_boxes(mask, 16)) == 6


def test_detector_rounds_keep_each_camera_in_order_and_once_per_batch() -> None:
    class F:
        def __init__(self, cam: str, i: int) -> None:
            self.camera_id, self.i = cam, i

    class R:
        def __init__(self, cam: str, i: int) -> None:
            self.frame = F(cam, i)

    recs = [R("a", 1), R("a", 2), R("b", 1), R("a", 3), R("c", 1), R("b", 2)]
    rounds = camera_rounds(recs, max_batch=2)
    assert [[(r.frame.camera_id, r.frame.i) for r in chunk] for chunk in rounds] == [
        [("a", 1), ("b", 1)], [("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]


def test_malformed_motion_boxes_mean_unknown() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    for bad in ("x", [[0.1, 0.2, 0.3]], [[0.1, "a", 0.3, 0.4]], [None], {"a": 1}):
        data = with_header(pack_frame(Frame("cam", 1, 1.0, img)), {"camera_id": "cam", "seq": 1, "ts": 1.0,
                                                                     "motion_boxes": bad})
        assert unpack_frame(data)[0].motion_boxes is None, bad
    ok = with_header(pack_frame(Frame("cam", 1, 1.0, img)), {"camera_id": "cam", "seq": 1, "ts": 1.0,
                                                              "motion_boxes": [[-1, 0.2, 2, 0.5], [0.5, 0.5, 0.5, 0.6]]})
    assert unpack_frame(ok)[0].motion_boxes == ((0.0, 0.2, 1.0, 0.5),)  # clamped; the empty one dropped


def test_region_config_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="margin"):
        RegionConfig.from_dict({"margin": 3})
    with pytest.raises(ValueError, match="max_share"):
        RegionConfig.from_dict({"max_share": 0})


def test_gate_sends_motion_boxes_where_the_picture_changed() -> None:
    gate = MotionGate()
    base = np.full((480, 640, 3), 90, np.uint8)
    gate.check(base, 1.0)
    assert gate.last_boxes is None  # first frame: nothing to compare with
    moved = base.copy()
    cv2.rectangle(moved, (400, 300), (460, 420), (250, 250, 250), -1)
    detect, _, reason = gate.check(moved, 1.2)
    assert detect and reason == "motion"
    (box,) = gate.last_boxes
    assert box[0] <= 400 / 640 and box[2] >= 460 / 640 and box[1] <= 300 / 480 and box[3] >= 420 / 480
    assert box[2] - box[0] < 0.2 and box[3] - box[1] < 0.4  # around the change, not the whole picture
    frame = Frame("cam", 1, 1.2, moved, True, 0.02, "motion", gate.last_boxes)
    back, header = unpack_frame(pack_frame(frame))
    assert back.motion_boxes == gate.last_boxes and header["motion_boxes"] == [list(box)]
    bad = pack_frame(Frame("cam", 2, 1.4, moved))  # no boxes: unknown, the detector looks everywhere
    assert unpack_frame(bad)[0].motion_boxes is None
