"""Our yolov3-tiny (Darknet → ONNX, built by :mod:`gridwatch.models.build`) as a detector plug-in.

``{"type": "yolo_darknet_onnx"}`` is enough: the model is built into the cache on first use when the
set-up step has not done it yet.  ``"variant": "int8"`` selects the statically quantised model (about
twice as fast on CPUs with AVX512-VNNI / AVX2, ~95 % of the float model's detections; see MODEL_CARD.md).
The graph decodes its YOLO heads itself and emits the YOLOv5 layout, so this is the generic
:class:`OnnxYoloDetector` with fixed pre/post-processing defaults (416×416 letterbox on grey, RGB 0..1,
80 COCO classes, nested same-class boxes suppressed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from gridwatch.models.detectors.base import DetectorConfig
from gridwatch.models.detectors.onnx_yolo import OnnxYoloConfig, OnnxYoloDetector


@dataclass(kw_only=True)
class YoloDarknetOnnxConfig(OnnxYoloConfig):
    type: Literal["yolo_darknet_onnx"] = "yolo_darknet_onnx"  # type: ignore[assignment]
    variant: Literal["fp32", "int8"] = "fp32"
    model_path: str | None = None  # None: the cached build (models/cache/yolov3-tiny[.int8].onnx)
    input_width: int | None = 416
    input_height: int | None = 416
    labels: list[str] | str | None = "coco80"
    output_format: Literal["auto", "yolov5", "yolov8", "end2end"] = "yolov5"
    pad_value: int = 127  # Darknet letterboxes on grey 0.5
    suppress_contained: float | None = 0.85  # the 13×13 and 26×26 heads often box a body and its torso

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("fp32", "int8"):
            raise ValueError("variant must be fp32 or int8")


class YoloDarknetOnnxDetector(OnnxYoloDetector):
    type_key: ClassVar[str] = "yolo_darknet_onnx"
    config_class: ClassVar[type[DetectorConfig]] = YoloDarknetOnnxConfig
    config: YoloDarknetOnnxConfig

    def _model_path(self) -> str:
        if self.config.model_path:
            return str(self.config.model_path)
        from gridwatch.models.build import build

        return str(build(quiet=True, variant=self.config.variant))

    def describe(self) -> dict:
        return super().describe() | {"variant": self.config.variant}
