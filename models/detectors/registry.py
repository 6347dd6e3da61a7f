"""Detector registry: pick the plug-in by the ``type`` key of a config dict.

A plug-in registers itself when its module is imported (subclassing ``DetectionApi`` with a
``type_key``); the first look-up imports every module of this package (gridwatch.core.plugins), so a
new detector is one file here; one elsewhere just has to be imported before the config is resolved.

    det = create_detector({"type": "yolo_darknet_onnx", "threads": 2, "score_threshold": 0.3})
    results = det.detect([frame_cam1, frame_cam2])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gridwatch.core.plugins import Plugins

if TYPE_CHECKING:
    from gridwatch.models.detectors.base import DetectionApi, DetectorConfig

DEFAULT_TYPE = "yolo_darknet_onnx"

# The detector plug-ins: one file each in models/detectors/ (found by pkgutil), keyed by their type_key.
DETECTORS: Plugins[type[DetectionApi]] = Plugins("detector", "gridwatch.models.detectors", ValueError)


def register(cls: type[DetectionApi]) -> type[DetectionApi]:
    if not cls.type_key:
        raise ValueError(f"{cls.__name__} has no type_key")
    return DETECTORS.add(cls.type_key, cls)


def detector_types() -> dict[str, type[DetectionApi]]:
    return DETECTORS.types()


def parse_detector_config(config: Mapping[str, Any] | DetectorConfig | None) -> DetectorConfig:
    """Turn a config dict (``type`` selects the plug-in; default ``yolo_darknet_onnx``) into its dataclass."""
    from gridwatch.models.detectors.base import DetectorConfig

    if isinstance(config, DetectorConfig):
        return config
    data = dict(config or {})
    data.setdefault("type", DEFAULT_TYPE)
    return DETECTORS.get(data["type"]).config_class.from_dict(data)


def create_detector(config: Mapping[str, Any] | DetectorConfig | None = None) -> DetectionApi:
    cfg = parse_detector_config(config)
    detector = DETECTORS.get(cfg.type)(cfg)
    if cfg.batch_workers > 1:
        from gridwatch.models.detectors.sharding import ShardedDetector

        return ShardedDetector(detector, cfg.batch_workers)
    return detector
