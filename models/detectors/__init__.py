"""Detector plug-ins: ``create_detector({"type": ..., ...})`` → :class:`DetectionApi`."""

from gridwatch.models.detectors.base import Detection, DetectionApi, DetectorConfig
from gridwatch.models.detectors.registry import (
    create_detector,
    detector_types,
    parse_detector_config,
    register,
)

__all__ = [
    "Detection",
    "DetectionApi",
    "DetectorConfig",
    "create_detector",
    "detector_types",
    "parse_detector_config",
    "register",
]
