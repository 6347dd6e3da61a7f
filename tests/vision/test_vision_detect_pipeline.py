"""The detector pipeline (models/detect_pipeline.py): frames at the detector while the caller plans the next
and applies the finished ones give exactly the results of batches in turn, in the same order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gridwatch.models.detect_pipeline import DetectPipeline
from gridwatch.models.detectors import create_detector
from gridwatch.models.detectors.base import Detection
from gridwatch.models.regions import RegionConfig, RegionPlanner
from gridwatch.models.scene_rules import SceneEngine
from gridwatch.pipeline.schemas.frame_wire import Frame
from gridwatch.pipeline.sources.capture import CameraCapture

from .conftest import SHIPPED_DETECTOR

SCENE = {"zones": {"area": {"polygon": [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]], "kind": "crowd"}},
         "rules": [{"id": "crowd", "type": "crowd", "zone": "area", "min_count": 3, "min_duration_s": 1},
                   {"id": "flow", "type": "line_crossing", "line": [[0.0, 0.6], [1.0, 0.6]]}]}


@pytest.fixture(scope="module")
def cameras(vtest_path: Path) -> list[list[Frame]]:
    """Three fixed cameras: vtest at 5 fps from three starting points (a camera's frames keep their seq)."""
    frames = list(CameraCapture({"camera_id": "c", "source": str(vtest_path), "detect_fps": 5,
                                 "start_ts": 1.7e9}).frames())
    return [[dataclasses.replace(f, camera_id=f"cam{k}") for f in frames[start:start + 30]]
            for k, start in enumerate((0, 100, 200))]


def run(detector: Any, in_flight: int, rounds: list[list[Frame]]) -> tuple[list[Any], list[Any]]:
    """(per applied frame: camera, time, plan, detections; the scene events) of one pipeline run."""
    planner = RegionPlanner(RegionConfig())
    engines: dict[str, SceneEngine] = {}
    applied: list[Any] = []
    events: list[Any] = []

    def tracks_at(cam: str, ts: float) -> list[Any]:
        return engines[cam].tracker.boxes_at(ts) if cam in engines else []

    def apply(f: Frame, dets: Any, plan: Any) -> None:
        assert not isinstance(dets, Exception), dets
        applied.append((f.camera_id, f.ts, plan, [(d.label, d.box, d.score) for d in dets]))
        engine = engines.setdefault(f.camera_id, SceneEngine.from_config(f.camera_id, SCENE))
        events.extend((e.event_id, e.type, e.ts) for e in engine.update(dets, f.ts, f.size).events)

    pipeline = DetectPipeline(detector, planner, in_flight)
    try:
        pipeline.run(rounds, tracks_at, apply)
    finally:
        pipeline.close()
    return applied, events


def test_in_flight_gives_the_results_of_batches_in_turn(cameras: list[list[Frame]]) -> None:
    """The shipped detector (int8, dynamic input, 2 shards) with motion regions on three cameras: batches in
    turn, frames in flight, and other batch cuts apply the same detections, crops and scene events in the
    same order — and the regions did crop (the tracks steer the next frame's crops)."""
    detector = create_detector(dict(SHIPPED_DETECTOR))
    try:
        rounds = [[cam[i] for cam in cameras] for i in range(len(cameras[0]))]  # one frame per camera each
        turn = run(detector, 0, rounds)
        assert turn == run(detector, 8, rounds)
        assert turn == run(detector, 2, [[f] for r in rounds for f in r])  # one frame per batch, 2 ahead
        assert turn == run(detector, 0, [part for r in rounds for part in (r[:2], r[2:])])  # other batch cuts
    finally:
        detector.close()
    applied, events = turn
    assert [a[:2] for a in applied] == [(f.camera_id, f.ts) for r in rounds for f in r]
    assert sum(a[2] is not None for a in applied) > len(applied) // 2  # most frames searched in crops
    assert events  # the rules fired on the way


class _Flaky:
    """A detector that fails on pictures whose first pixel is 1 (one frame), whole frames only."""

    dynamic_input = False
    workers = 2

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        if any(int(im[0, 0, 0]) == 1 for im in images):
            raise RuntimeError("model blew up")
        return [[Detection("person", 0.9, (1.0, 1.0, 5.0, 9.0), 0)] for _ in images]


@pytest.mark.parametrize("in_flight", [0, 4])
def test_a_failed_frame_is_reported_in_its_turn(in_flight: int) -> None:
    frames = [Frame(f"cam{i % 3}", i // 3, 1.7e9 + i, np.full((8, 8, 3), 1 if i == 4 else 90, np.uint8))
              for i in range(9)]
    got: list[tuple[str, float, str]] = []
    pipeline = DetectPipeline(_Flaky(), None, in_flight)
    pipeline.run([frames[i:i + 3] for i in range(0, 9, 3)], lambda _c, _t: [],
                 lambda f, dets, _p: got.append((f.camera_id, f.ts, type(dets).__name__)))
    pipeline.close()
    assert [(c, t) for c, t, _ in got] == [(f.camera_id, f.ts) for f in frames]
    assert [k for _, _, k in got] == ["list"] * 4 + ["RuntimeError"] + ["list"] * 4
