"""Split one batch across threads that share a detector: more frames/s per CPU than intra-op threads.

On this machine kind (2 cores, quiet run of ``python -m gridwatch.bench vision``, ``model.*.sharded``), the
whole ``detect()`` of a batch of 8 with yolov3-tiny int8 ran 93.7 frames/s at 416×416 as two one-thread
shards against 84.7 on 2 onnxruntime intra-op threads (416×320: 118.7 against 104.8): each shard spends the
one-thread CPU time per frame, none is lost to intra-op hand-offs between yolov3-tiny's many small layers.
Not for fp32 (33.6 against 35.1: its big convolutions use two threads well).
onnxruntime's ``InferenceSession.run`` is thread-safe, so the shards share the session and its weights.

``detector.batch_workers: 2`` turns it on (with ``threads: 1``); a batch of one frame runs as is.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gridwatch.models.detectors.base import Detection, DetectionApi


class ShardedDetector(DetectionApi):
    """Wraps any detector whose ``detect`` may be called from several threads at once."""

    def __init__(self, inner: DetectionApi, workers: int) -> None:
        super().__init__(inner.config)
        if workers < 1:
            raise ValueError("batch_workers must be >= 1")
        self.inner = inner
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="detect-shard") if workers > 1 else None

    @property
    def labels(self) -> list[str]:
        return self.inner.labels

    @property
    def dynamic_input(self) -> bool:
        """The wrapped detector's: True when its model takes any input size (see ``detect_scaled``)."""
        return bool(getattr(self.inner, "dynamic_input", False))

    def input_scale(self, w: int, h: int) -> float:
        return self.inner.input_scale(w, h)  # type: ignore[attr-defined]

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return self._sharded(self.inner.detect, frames)

    def detect_scaled(self, frames: list[np.ndarray], scale: float, clip: bool = True) -> list[list[Detection]]:
        """Crops at a fixed scale (dynamic-input models only), sharded like :meth:`detect`."""
        if not hasattr(self.inner, "detect_scaled"):
            raise ValueError(f"{type(self.inner).__name__} has no detect_scaled (needs a dynamic-input model)")
        return self._sharded(lambda part: self.inner.detect_scaled(part, scale, clip), frames)

    def _sharded(self, fn: Callable[[list[np.ndarray]], list[list[Detection]]],
                 frames: list[np.ndarray]) -> list[list[Detection]]:
        """Run ``fn`` on up to ``workers`` contiguous slices of ``frames`` at once; results in input order."""
        n = min(self.workers, len(frames))
        if n <= 1 or self._pool is None:
            return fn(frames)
        cuts = [round(i * len(frames) / n) for i in range(n + 1)]
        shards = [frames[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        out: list[list[Detection]] = []
        for part in self._pool.map(fn, shards):
            out.extend(part)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # input_width, describe(), model_path... of the wrapped one
        return getattr(self.inner, name)
