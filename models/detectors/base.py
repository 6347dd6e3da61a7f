"""Detector plug-in interface (after Frigate's ``frigate/detectors/detection_api.py``, written anew).

A plug-in is a :class:`DetectionApi` subclass with a ``type_key`` and a config dataclass whose ``type``
field carries the same literal; subclassing registers it (see :mod:`gridwatch.models.detectors`).
``detect`` takes a batch of BGR frames — typically one per camera — and returns one list of
:class:`Detection` per frame, boxes in that frame's own pixels.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gridwatch.core.options import check_keys


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: class name, score in 0..1 and box ``(x1, y1, x2, y2)`` in source pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int = -1

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom centre of the box: where the object touches the ground (used for zones)."""
        return ((self.box[0] + self.box[2]) / 2.0, self.box[3])

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(float(self.score), 4),
                "box": [round(float(v), 1) for v in self.box], "class_id": int(self.class_id)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Detection:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        return cls(str(d["label"]), float(d["score"]), (x1, y1, x2, y2), int(d.get("class_id", -1)))


@dataclass(kw_only=True)
class DetectorConfig:
    """Settings common to all detectors.  Plug-ins subclass it and pin ``type`` to their literal key."""

    type: str
    score_threshold: float = 0.25  # candidates below are dropped before NMS
    nms_iou: float = 0.45
    max_detections: int = 100  # per frame, after NMS
    class_filter: list[str] | None = None  # keep only these labels (None: all)
    min_box_area: float = 0.0  # in source pixels²
    threads: int = 2  # onnxruntime intra-op threads (per batch shard when batch_workers > 1)
    batch_workers: int = 1  # split each batch across this many threads sharing the model (sharding.py)
    inter_op_threads: int = 1
    allow_spinning: bool = False  # onnxruntime busy-waits between ops when True (bad on shared cores)
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("score_threshold must be in 0..1")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError("nms_iou must be in (0, 1]")
        if self.threads < 1 or self.inter_op_threads < 1 or self.batch_workers < 1:
            raise ValueError("threads, inter_op_threads and batch_workers must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        check_keys(cls, data, "detector", f" for type {data.get('type')!r}")
        kwargs = dict(data)
        for f in dataclasses.fields(cls):
            if f.name in kwargs and isinstance(kwargs[f.name], tuple):
                kwargs[f.name] = list(kwargs[f.name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DetectionApi(ABC):
    """A loaded detector.  ``detect`` is synchronous and CPU-bound: call it off the event loop."""

    type_key: ClassVar[str] = ""
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("type_key"):
            from gridwatch.models.detectors import registry

            registry.register(cls)

    def __init__(self, config: DetectorConfig):
        self.config = config

    @property
    @abstractmethod
    def labels(self) -> list[str]:
        """Class names, index = class id."""

    @abstractmethod
    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detect objects in a batch of BGR ``uint8`` frames (any sizes); one result list per frame."""

    def detect_one(self, frame: np.ndarray) -> list[Detection]:
        return self.detect([frame])[0]

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release the runtime session."""

    def __enter__(self) -> DetectionApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
