"""Keep the detector busy while the vision thread plans the next frames and applies the last ones' rules.

Done in turns — plan a batch, wait for the detector, then track and apply rules — the detector stands idle
whenever the vision thread runs Python (JPEG hand-off, region planning, tracker, zones, rules), and that
thread waits for the detector the rest of the time.  Profiled on 16 live cameras (``python -m
gridwatch.bench vision --live-only``, py-spy): the thread was busy all the time, three quarters of it
waiting for the detector or the JPEG decoder, while the detector's two shards idled half the time and
the process used about half of the 2 cores.

:class:`DetectPipeline` streams instead: each frame is planned on the calling thread and its pictures
(whole canvas or crops) go to the detector's threads at once, up to ``in_flight`` frames ahead; results
are applied in the frames' order as they come back, so planning and rules overlap inference.

**Same results in the same order.**  A frame is planned only after every earlier frame of its camera has
been applied (its motion regions follow that camera's tracks), frames are applied in the order given, and
the detector's work on a frame depends on nothing but the frame's pictures.  The scene results are those
of batches in turn, whatever the timing; ``in_flight: 0`` runs batches in turn.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from gridwatch.models.regions import Crop, PlannedFrame, RegionPlanner, detect_planned, plan_frame

log = logging.getLogger("gridwatch.vision")

# per frame: the frame, its detections in frame pixels (or why it failed), its plan (None: whole frame)
Apply = Callable[[Any, "list[Any] | Exception", "list[Crop] | None"], None]
TracksAt = Callable[[str, float], Iterable[Sequence[float]]]


class DetectPipeline:
    """Frames → detector → ``apply`` in order, the detector working while the caller's thread plans and
    applies.  One thread (the caller's) owns the planner and the trackers ``tracks_at`` reads."""

    def __init__(self, detector: Any, planner: RegionPlanner | None, in_flight: int) -> None:
        if in_flight < 0:
            raise ValueError("in_flight must be >= 0")
        self.detector = detector
        self.planner = planner
        self.in_flight = in_flight
        # a sharded detector's shards each take whole frames here (its own split would cut one frame's
        # crops across threads that are busy with other frames already)
        self._runner = getattr(detector, "inner", detector)
        workers = max(1, int(getattr(detector, "workers", 1)))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vision-detect") if in_flight else None

    def run(self, rounds: Sequence[Sequence[Any]], tracks_at: TracksAt, apply: Apply) -> None:
        """``rounds``: detector batches (at most one frame per camera each, each camera's frames in order);
        ``apply(frame, detections or exception, plan)`` is called once per frame, in this order."""
        if self._pool is None:
            for chunk in rounds:
                self._batch(chunk, tracks_at, apply)
        else:
            self._stream([f for chunk in rounds for f in chunk], tracks_at, apply)

    def _plan(self, frame: Any, tracks_at: TracksAt) -> PlannedFrame | Exception:
        try:
            return plan_frame(self.detector, self.planner, frame, tracks_at)
        except Exception as e:  # noqa: BLE001 - this frame fails, the others go on
            return e

    def _batch(self, chunk: Sequence[Any], tracks_at: TracksAt, apply: Apply) -> None:
        """One batch in turn: plan all, one detector call, apply all; a failed call is retried per frame."""
        planned = [self._plan(f, tracks_at) for f in chunk]
        ok = [p for p in planned if isinstance(p, PlannedFrame)]
        try:
            found = iter(detect_planned(self.detector, ok))
            results: list[Any] = [p if isinstance(p, Exception) else next(found) for p in planned]
        except Exception:  # noqa: BLE001 - isolate the culprit
            log.exception("vision: a detector batch failed; retrying its frames one by one")
            results = [p if isinstance(p, Exception) else self._one(p) for p in planned]
        for f, p, r in zip(chunk, planned, results, strict=True):
            apply(f, r, p.plan if isinstance(p, PlannedFrame) else None)

    def _one(self, p: PlannedFrame, detector: Any = None) -> list[Any] | Exception:
        try:
            return detect_planned(detector or self.detector, [p])[0]
        except Exception as e:  # noqa: BLE001 - reported to apply, in the frame's turn
            return e

    def _stream(self, frames: list[Any], tracks_at: TracksAt, apply: Apply) -> None:
        pool = self._pool
        assert pool is not None
        pending: deque[tuple[Any, PlannedFrame | Exception, Future[Any]]] = deque()

        def finish() -> None:
            f, p, fut = pending.popleft()
            apply(f, fut.result(), p.plan if isinstance(p, PlannedFrame) else None)

        for f in frames:
            # its camera's earlier frames applied first (its tracks steer its crops); at most in_flight ahead
            while pending and (len(pending) >= self.in_flight
                               or any(q[0].camera_id == f.camera_id for q in pending)):
                finish()
            p = self._plan(f, tracks_at)
            if isinstance(p, Exception):
                fut: Future[Any] = Future()
                fut.set_result(p)
            else:
                fut = pool.submit(self._one, p, self._runner)
            pending.append((f, p, fut))
            while pending and pending[0][2].done():
                finish()  # apply what is back while the detector works on the rest
        while pending:
            finish()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
