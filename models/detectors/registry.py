"""Detector registry: pick the plug-in by the ``type`` key of a config dict.

Built-in plug-ins register themselves when their module is imported (subclassing ``DetectionApi``
with a ``type_key``); :func:`create_detector` imports the built-in modules on first use, and any other
module that defines a plug-in just has to be imported before the config is resolved.

    det = create_detector({"type": "yolo_darknet_onnx", "threads": 2, "score_threshold": 0.3})
    results = det.detect([frame_cam1, frame_cam2])
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridwatch.models.detectors.base import DetectionApi, DetectorConfig

BUILTIN_MODULES = (
    "gridwatch.models.detectors.onnx_yolo",
    "gridwatch.models.detectors.yolo_darknet_onnx",
)
DEFAULT_TYPE = "yolo_darknet_onnx"

_REGISTRY: dict[str, type[DetectionApi]] = {}
_loaded = False


def register(cls: type[DetectionApi]) -> type[DetectionApi]:
    key = cls.type_key
    if not key:
        raise ValueError(f"{cls.__name__} has no type_key")
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"detector type {key!r} registered twice ({existing.__name__}, {cls.__name__})")
    _REGISTRY[key] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        for mod in BUILTIN_MODULES:
            importlib.import_module(mod)
        _loaded = True


def detector_types() -> dict[str, type[DetectionApi]]:
    _load_builtin()
    return dict(_REGISTRY)


def parse_detector_config(config: Mapping[str, Any] | DetectorConfig | None) -> DetectorConfig:
    """Turn a config dict (``type`` selects the plug-in; default ``yolo_darknet_onnx``) into its dataclass."""
    from gridwatch.models.detectors.base import DetectorConfig

    if isinstance(config, DetectorConfig):
        return config
    data = dict(config or {})
    data.setdefault("type", DEFAULT_TYPE)
    types = detector_types()
    cls = types.get(data["type"])
    if cls is None:
        raise ValueError(f"unknown detector type {data['type']!r}; known: {sorted(types)}")
    return cls.config_class.from_dict(data)


def create_detector(config: Mapping[str, Any] | DetectorConfig | None = None) -> DetectionApi:
    cfg = parse_detector_config(config)
    detector = detector_types()[cfg.type](cfg)
    if cfg.batch_workers > 1:
        from gridwatch.models.detectors.sharding import ShardedDetector

        return ShardedDetector(detector, cfg.batch_workers)
    return detector
