"""Scene state across a restart: an engine restored from a checkpoint continues exactly.

Real detections (vtest.avi at 5 fps through the ONNX detector) drive every rule type; the engine is
checkpointed after frame k (through JSON, as the Faust table stores it), a fresh engine is restored from
it and fed the rest.  Its events must be the events of an engine that never stopped: same ids, phases,
update counters, timers, counts — for every k tried.  Then the vision agent's side: it checkpoints
about once a second of event time (and at every new / end), a restored processor skips frames at or
before the checkpoint, ends the open event with its original id; a lagging live camera is thinned to a
frame per second of event time (not dropped) and replayed frames are never shed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest

from gridwatch.agents.vision import VisionProcessor
from gridwatch.devices.registry import load_city
from gridwatch.models.detectors.base import Detection
from gridwatch.models.scene_rules import SceneEngine
from gridwatch.pipeline.outputs.evidence import MemoryEvidenceStore
from gridwatch.pipeline.schemas.frame_wire import Frame
from gridwatch.pipeline.schemas.frames import CameraStatusRecord, encode_frame
from gridwatch.pipeline.sources.camera_service import parse_camera_config, resolve_sites
from gridwatch.pipeline.sources.capture import CameraCapture

T0 = 1_709_305_200.0  # 2024-03-01 23:00 Asia/Shanghai: the night-time rule is active
SCENE = {
    "tz": "Asia/Shanghai",
    "zones": {"van_bay": {"polygon": [[640, 60], [725, 60], [725, 110], [640, 110]]},
              "plaza": {"polygon": [[0, 200], [768, 200], [768, 576], [0, 576]]},
              "lawn": {"polygon": [[0, 330], [300, 330], [300, 576], [0, 576]]}},
    "rules": [{"id": "bay", "type": "vehicle_parked", "zone": "van_bay", "min_duration_s": 2, "update_interval_s": 3},
              {"id": "crowd", "type": "crowd", "zone": "plaza", "min_count": 4, "min_duration_s": 1,
               "end_after_s": 1, "update_interval_s": 2},
              {"id": "lawn", "type": "restricted_zone", "zone": "lawn", "hours": "22:00-06:00", "min_duration_s": 1},
              {"id": "walk", "type": "line_crossing", "line": [[0, 330], [768, 330]], "labels": ["person"]}],
}
FRAMES = 150  # 30 s at 5 fps


@pytest.fixture(scope="module")
def detections(detector, vtest_path) -> list[tuple[float, tuple[int, int], list[Detection]]]:
    cap = CameraCapture({"camera_id": "vtest", "source": str(vtest_path), "start_ts": T0, "detect_fps": 5})
    out = []
    for frame in cap.frames():
        out.append((frame.ts, frame.size, detector.detect_one(frame.image)))
        if len(out) == FRAMES:
            break
    cap.close()
    return out


def _run(engine: SceneEngine, frames: list[Any]) -> list[dict[str, Any]]:
    return [ev.to_dict() for ts, size, dets in frames for ev in engine.update(dets, ts, size).events]


def test_restored_engine_continues_exactly(detections) -> None:
    whole = SceneEngine.from_config("vtest", SCENE)
    expected = _run(whole, detections)
    expected_close = [ev.to_dict() for ev in whole.close()]
    kinds = {(e["kind"], e["type"]) for e in expected}
    assert {("vehicle_parked", "update"), ("crowd", "new"), ("line_crossing", "new")} <= kinds, kinds
    for k in (1, 13, 37, 64, 90, 121, FRAMES - 1):
        first = SceneEngine.from_config("vtest", SCENE)
        got = _run(first, detections[:k])
        saved = json.loads(json.dumps(first.export_state()))  # what the Faust table keeps
        assert saved["ts"] == detections[k - 1][0]
        restored = SceneEngine.from_config("vtest", SCENE)
        assert restored.import_state(saved)
        got += _run(restored, detections[k:])
        assert got == expected, f"restored after frame {k}: events differ"
        assert [ev.to_dict() for ev in restored.close()] == expected_close


def test_state_survives_config_changes_and_refuses_other_versions(detections) -> None:
    first = SceneEngine.from_config("vtest", SCENE)
    _run(first, detections[:60])
    saved = json.loads(json.dumps(first.export_state()))
    fewer = {**SCENE, "rules": [r for r in SCENE["rules"] if r["id"] != "crowd"]}
    engine = SceneEngine.from_config("vtest", fewer)
    assert engine.import_state(saved) and [r.rule_id for r in engine.rules] == ["bay", "lawn", "walk"]
    assert engine.open_events == [e for e in first.open_events if e.rule_id != "crowd"]
    fresh = SceneEngine.from_config("vtest", SCENE)
    assert not fresh.import_state({**saved, "v": 999}) and fresh.last_ts is None and not fresh.open_events


# ----------------------------------------------------------------------------------------- the agent side
CAM = "33010200001320000001"
BAY = [[640, 60], [725, 60], [725, 110], [640, 110]]


class ParkedCar:
    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        return [[Detection("car", 0.9, (655.0, 50.0, 720.0, 96.0), 2)] for _ in images]


@pytest.fixture(scope="module")
def processor_parts() -> tuple[Any, Any]:
    city = load_city()
    cfg = parse_camera_config({"vision": {"plates": "off", "max_lag_s": 1.0}, "cameras": {CAM: {
        "source": "rtsp://x/y", "zones": {"bay": {"polygon": BAY}},
        "rules": [{"id": "bay", "type": "vehicle_parked", "zone": "bay", "min_duration_s": 2,
                   "update_interval_s": 600}]}}})
    return cfg, resolve_sites(cfg, city.registry, city.gridmap)


def _item(i: int, *, sent: float | None = None, replayed: bool = False) -> tuple[int, str, bytes, bytes]:
    img = np.full((576, 768, 3), 90, np.uint8)
    extra = {"replayed": True} if replayed else {}
    return (3, "p.frames", CAM.encode(), encode_frame(Frame(CAM, i, T0 + i * 0.2, img), sent=sent, **extra))


def test_agent_checkpoints_and_a_restarted_one_ends_the_open_event(processor_parts) -> None:
    cfg, sites = processor_parts
    proc = VisionProcessor(cfg, sites, MemoryEvidenceStore(), detector=ParkedCar())
    out = proc.process([_item(i) for i in range(16)])  # 3 s: parked after 2 s
    new = next(e for e in out.events if e.phase == "new")
    part, saved = out.writes[CAM]
    assert part == 3 and saved["ts"] == T0 + 15 * 0.2  # written with the "new", covering the whole batch
    out = proc.process([_item(i) for i in range(16, 19)])  # 0.6 s later: no event, under a second
    assert not out.writes
    out = proc.process([_item(i) for i in range(19, 22)])  # 1.2 s after the last checkpoint
    part, saved = out.writes[CAM]
    assert saved["ts"] == T0 + 21 * 0.2
    table = {CAM: json.loads(json.dumps(saved))}

    # the worker dies; a new one recovers the table and gets the frames since the last commit again
    again = VisionProcessor(cfg, sites, MemoryEvidenceStore(), detector=ParkedCar())
    out = again.process([_item(i) for i in range(18, 26)], restore=table)
    assert again.stats["skipped_stale"] == 4 and again.stats["frames"] == 4  # 18..21 covered by the checkpoint
    assert not [e for e in out.events if e.phase == "new"]  # no second event for the same car
    out = again.process([(3, "p.frames", CAM.encode(), CameraStatusRecord(CAM, False, T0 + 6, "read_failed").encode())],
                        restore=table)
    assert [(e.phase, e.id) for e in out.events] == [("end", new.id)]
    assert out.writes[CAM][1] == {"v": 1, "ts": T0 + 6, "reset": True}
    # without the checkpoint the restarted worker would have raised a new event with a new id
    blank = VisionProcessor(cfg, sites, MemoryEvidenceStore(), detector=ParkedCar())
    assert {e.id for e in blank.process([_item(i) for i in range(18, 36)]).events} - {new.id}


def test_replayed_frames_are_never_dropped_as_lagging(processor_parts) -> None:
    cfg, sites = processor_parts
    old = time.time() - 3600
    proc = VisionProcessor(cfg, sites, MemoryEvidenceStore(), detector=ParkedCar())
    proc.process([_item(i, sent=old) for i in range(11)])  # 2 s of frames at 5 fps, an hour late
    # live: thinned to one frame per second of event time (0.0, 1.0, 2.0 s) to catch up, tracks carry on
    assert proc.stats["skipped_lagging"] == 8 and proc.stats["frames"] == 3
    proc = VisionProcessor(cfg, sites, MemoryEvidenceStore(), detector=ParkedCar())
    proc.process([_item(i, sent=old, replayed=True) for i in range(11)])
    assert proc.stats["skipped_lagging"] == 0 and proc.stats["frames"] == 11
