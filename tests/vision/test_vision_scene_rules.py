"""Tracker, zones and scene rules on synthetic detections (exact, fast)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gridwatch.models.detectors import Detection
from gridwatch.models.scene_rules import (
    CrowdRule,
    LineCrossingRule,
    SceneEngine,
    event_id_for,
    event_key,
)
from gridwatch.models.tracker import Tracker
from gridwatch.models.zones import Zone, ZoneMembership, point_in_polygon

FPS = 5.0
T0 = datetime(2024, 3, 1, 23, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def box_at(x: float, y_bottom: float, w: float = 40, h: float = 80) -> tuple[float, float, float, float]:
    return (x - w / 2, y_bottom - h, x + w / 2, y_bottom)


def det(label: str, x: float, y: float, score: float = 0.9, w: float = 40, h: float = 80) -> Detection:
    return Detection(label, score, box_at(x, y, w, h))


# ----------------------------------------------------------------------------------------- tracker


def test_tracker_keeps_ids_through_motion_and_gaps() -> None:
    trk = Tracker({"max_age_s": 1.0})
    ids = set()
    for i in range(20):
        ts = i / FPS
        dets = [det("person", 100 + 12 * i, 300), det("car", 600 - 15 * i, 200, w=120, h=60)]
        if 8 <= i <= 10:  # the person is missed for 3 frames (0.6 s < max_age)
            dets = dets[1:]
        tracks = trk.update(dets, ts)
        ids |= {t.track_id for t in tracks}
        if i >= 1:
            assert {t.label for t in tracks} == {"person", "car"}
    assert len(ids) == 2
    person = next(t for t in trk.tracks if t.label == "person")
    assert person.hits == 17 and person.start_ts == 0.0
    # now the car disappears for longer than max_age: it is dropped; when it comes back it gets a new id
    for i in range(20, 28):
        trk.update([det("person", 100 + 12 * i, 300)], i / FPS)
    assert {t.label for t in trk.tracks} == {"person"}
    trk.update([det("car", 300, 200, w=120, h=60)], 28 / FPS)
    tracks = trk.update([det("car", 300, 200, w=120, h=60)], 29 / FPS)
    assert max(t.track_id for t in tracks) > max(ids)


def test_tracker_byte_style_low_scores_and_tentative_tracks() -> None:
    trk = Tracker()
    trk.update([det("person", 100, 300)], 0.0)
    tracks = trk.update([det("person", 104, 300)], 0.2)
    (tid,) = [t.track_id for t in tracks]
    # a partly occluded frame: only a low-score box — it keeps the track (second association)
    tracks = trk.update([det("person", 108, 300, score=0.2)], 0.4)
    assert [(t.track_id, t.matched) for t in tracks] == [(tid, True)]
    # a one-frame false positive never becomes a confirmed track; a low-score box never starts one
    trk.update([det("person", 112, 300), det("dog", 500, 500, score=0.9), det("person", 300, 100, score=0.3)], 0.6)
    tracks = trk.update([det("person", 116, 300)], 0.8)
    assert [t.track_id for t in tracks] == [tid]


def test_tracker_tolerates_car_truck_flips() -> None:
    trk = Tracker()
    labels = ["car", "truck", "car", "car", "truck", "car"]
    for i, lab in enumerate(labels):
        tracks = trk.update([det(lab, 200 + 3 * i, 200, w=120, h=60)], i / FPS)
    assert len(tracks) == 1 and tracks[0].label == "car" and tracks[0].hits == len(labels)


def test_tracker_rejects_time_going_back() -> None:
    trk = Tracker()
    trk.update([], 5.0)
    with pytest.raises(ValueError):
        trk.update([], 4.0)


# ----------------------------------------------------------------------------------------- zones


def test_point_in_polygon_and_relative_zone() -> None:
    sq = [(0, 0), (10, 0), (10, 10), (0, 10)]
    import numpy as np

    poly = np.array(sq, float)
    assert point_in_polygon((5, 5), poly) and point_in_polygon((10, 5), poly)  # edge counts as inside
    assert not point_in_polygon((11, 5), poly)
    z = Zone.from_dict("half", {"polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]})
    assert z.contains((320, 300), (640, 360)) and not z.contains((320, 100), (640, 360))
    frigate_style = Zone.from_dict("f", {"coordinates": "0,0,100,0,100,100", "objects": ["car"]})
    assert frigate_style.labels == frozenset({"car"}) and len(frigate_style.polygon) == 3


def test_zone_inertia_enter_and_leave() -> None:
    zone = Zone("z", ((0, 0), (100, 0), (100, 100), (0, 100)), inertia=3)
    trk = Tracker({"min_hits": 1})
    mem = ZoneMembership([zone])
    # anchor y: outside, 3× inside, 1 outside (stray box), 3× outside
    ys = [150, 90, 90, 90, 150, 90, 150, 150, 150]
    states = []
    for i, y in enumerate(ys):
        tracks = trk.update([det("person", 50, y)], i / FPS)
        states.append("z" in mem.update(tracks)[tracks[0].track_id])
    assert states == [False, False, False, True, True, True, True, True, False]


# ----------------------------------------------------------------------------------------- rules


PARK_CFG = {
    "zones": {"fire_lane": {"polygon": [[100, 100], [500, 100], [500, 300], [100, 300]], "kind": "fire_lane"}},
    "rules": [{"id": "fire-lane", "type": "vehicle_parked", "zone": "fire_lane", "min_duration_s": 10,
               "update_interval_s": 5, "level": "red"}],
}


def _run_parking(frames: int = 150):
    eng = SceneEngine.from_config("cam1", PARK_CFG)
    events = []
    for i in range(frames):
        ts = T0 + i / FPS
        if i < 20:  # drives in from the left
            x = 20 + 14 * i
        elif i < 120:  # parks (with detector jitter of ±2 px)
            x = 300 + (2 if i % 2 else -2)
        else:  # drives away
            x = 300 + 20 * (i - 119)
        events += eng.update([det("car", x, 250, w=120, h=60), det("person", 50, 50)], ts).events
    return eng, events + eng.close()


def test_vehicle_parked_lifecycle_and_deterministic_ids() -> None:
    _, events = _run_parking()
    # still from frame 20 (4 s) to 119: new 10 s later (14 s), update every 5 s (19 s), end when it drives
    # off at frame 120 (24 s) — the update that was due then is not sent, the end is
    assert [e.type for e in events] == ["new", "update", "end"]
    new, *_, end = events
    assert len({e.event_id for e in events}) == 1
    assert new.kind == "vehicle_parked" and new.level == "red" and new.label == "car"
    assert new.start_ts == pytest.approx(T0 + 20 / FPS, abs=0.25)  # stationary since it stopped
    assert new.ts - new.start_ts == pytest.approx(10, abs=0.25)
    assert end.reason in ("moved", "left_zone") and end.end_ts == pytest.approx(T0 + 120 / FPS, abs=0.5)
    assert [e.update_seq for e in events] == [0, 1, 2]
    assert new.key == event_key("cam1", "fire-lane", "fire_lane", new.track_start_ts, new.track_id, 0)
    assert new.event_id == event_id_for(new.key)
    _, again = _run_parking()  # a replay of the same frames gives the same ids
    assert [e.event_id for e in again] == [e.event_id for e in events]


def test_parked_event_ends_at_last_sighting_when_track_is_lost() -> None:
    eng = SceneEngine.from_config("cam1", PARK_CFG)
    events = []
    for i in range(80):
        events += eng.update([det("car", 300, 250, w=120, h=60)], T0 + i / FPS).events
    for i in range(80, 120):  # the car is no longer detected at all
        events += eng.update([], T0 + i / FPS).events
    assert [e.type for e in events if e.type != "update"] == ["new", "end"]
    assert events[-1].reason == "track_lost" and events[-1].end_ts == pytest.approx(T0 + 79 / FPS)


def test_crowd_rule() -> None:
    zone = Zone("square", ((0, 0), (1000, 0), (1000, 1000), (0, 1000)), inertia=1)
    eng = SceneEngine("cam2", [zone], [CrowdRule("crowd", "square", min_count=4, min_duration_s=3,
                                                 end_after_s=2, update_interval_s=60)], {"min_hits": 1})
    events = []
    for i in range(60):
        n = 3 if i < 10 else (5 if i < 30 else (6 if i < 40 else 2))
        dets = [det("person", 100 + 120 * k, 500) for k in range(n)]
        events += eng.update(dets, T0 + i / FPS).events
    assert [e.type for e in events] == ["new", "update", "end"]
    new, grew, end = events
    assert new.track_id is None and len(new.track_ids) == 5 and new.data["count"] == 5
    assert new.ts - new.start_ts == pytest.approx(3, abs=0.25)
    assert grew.data["peak"] == 6  # a bigger crowd is news at once, whatever update_interval_s says
    # four people vanish at frame 40: they stop counting after max_unseen_s (1 s); the event ends
    # end_after_s (2 s) later, dated to the last frame the crowd was still counted
    assert end.reason == "dispersed" and T0 + 39 / FPS <= end.end_ts <= T0 + 45 / FPS


def test_restricted_zone_hours_in_local_time() -> None:
    cfg = {"tz": "Asia/Shanghai",
           "zones": {"yard": {"polygon": [[0, 0], [400, 0], [400, 400], [0, 400]], "inertia": 1}},
           "rules": [{"id": "yard-night", "type": "restricted_zone", "zone": "yard", "hours": ["22:00-06:00"],
                      "min_duration_s": 1}]}

    def run(start: float) -> list:
        eng = SceneEngine.from_config("cam3", cfg)
        out = []
        for i in range(40):
            x = 600 - 20 * i if i < 25 else 120 + 40 * (i - 24)  # walks into the yard, then out again
            out += eng.update([det("person", x, 200)], start + i / FPS).events
        return out

    night = run(T0)  # 23:00 local
    assert [e.type for e in night] == ["new", "end"] and night[0].level == "red"
    assert night[1].reason == "left_zone"
    assert run(T0 - 3 * 3600) == []  # 20:00 local: not restricted
    # walking in at 05:59:58 local: the event ends when the restricted hours end
    edge = run(datetime(2024, 3, 2, 5, 59, 56, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp())
    assert [e.type for e in edge] == ["new", "end"] and edge[1].reason == "outside_hours"


def test_line_crossing_direction_counts_and_jitter() -> None:
    rule = LineCrossingRule("gate", line=[[100, 300], [500, 300]], direction="any", labels=["person"])
    eng = SceneEngine("cam4", [], [rule], {"min_hits": 1})
    ys = [250, 270, 290, 299, 301, 299, 301, 320, 340, 360, 340, 310, 290, 270]  # down, jitter, down, back up
    events = []
    for i, y in enumerate(ys):
        events += eng.update([det("person", 300, y), det("person", 700, 250 + 10 * i)], T0 + i / FPS).events
    # the second walker crosses the infinite line but beyond the segment's end: not counted
    assert rule.counts == {"left_to_right": 1, "right_to_left": 1}
    assert [(e.type, e.data["direction"]) for e in events] == [("new", "left_to_right"), ("update", "right_to_left")]
    assert rule.counts_by_label == {"person": {"left_to_right": 1, "right_to_left": 1}}
    down_only = LineCrossingRule("gate-in", line=[[100, 300], [500, 300]], direction="left_to_right")
    eng2 = SceneEngine("cam4", [], [down_only], {"min_hits": 1})
    for i, y in enumerate(ys):
        eng2.update([det("person", 300, y)], T0 + i / FPS)
    assert down_only.counts == {"left_to_right": 1, "right_to_left": 0}


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="zone 'nowhere' not defined"):
        SceneEngine.from_config("c", {"rules": [{"type": "crowd", "zone": "nowhere"}]})
    with pytest.raises(ValueError, match="unknown scene rule type"):
        SceneEngine.from_config("c", {"rules": [{"type": "loitering"}]})
    with pytest.raises(ValueError, match="unknown option"):
        SceneEngine.from_config("c", {"zones": {"z": {"polygon": [[0, 0], [1, 0], [1, 1]]}},
                                      "rules": [{"type": "crowd", "zone": "z", "min_people": 3}]})
