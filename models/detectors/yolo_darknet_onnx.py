"""Our yolov3-tiny (Darknet → ONNX, built by :mod:`gridwatch.models.build`) as a detector plug-in.

``{"type": "yolo_darknet_onnx"}`` is enough: the model is built into the cache on first use when the
set-up step has not done it yet.  ``"variant": "int8"`` selects the statically quantised model (about
2.8 times as fast on CPUs with AVX512-VNNI, ~95 % of the float model's detections; see MODEL_CARD.md).
``input_width`` / ``input_height`` (multiples of 32) select the same weights converted for that input:
416×320 sees a 4:3 or 16:9 camera at the same scale as 416×416 (less letterbox padding) for ~75 % of the
CPU time; 320×320 costs ~58 % but shrinks the picture and misses small, far people (see MODEL_CARD.md).
``"dynamic": true`` selects the build with a symbolic input size (``yolov3-tiny-dyn[.int8].onnx``): a frame is
scaled to fit ``input_width × input_height`` and padded only up to the next multiple of 32 (640×360 runs as
416×256, not 416×416), and ``detect_scaled`` runs crops around motion at the frame's scale.
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
    dynamic: bool = False  # the build with a symbolic input size (any multiple of 32; see the module doc)
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
        if self.model_path is None:  # our build: sides that are multiples of 32
            from gridwatch.models.build import check_size

            check_size((self.input_width or 416, self.input_height or 416))
        if self.disabled_optimizers is None and self.variant == "int8":
            from gridwatch.models.build import INT8_DISABLED_OPTIMIZERS

            self.disabled_optimizers = list(INT8_DISABLED_OPTIMIZERS)


class YoloDarknetOnnxDetector(OnnxYoloDetector):
    type_key: ClassVar[str] = "yolo_darknet_onnx"
    config_class: ClassVar[type[DetectorConfig]] = YoloDarknetOnnxConfig
    config: YoloDarknetOnnxConfig

    def _model_path(self) -> str:
        if self.config.model_path:
            return str(self.config.model_path)
        from gridwatch.models.build import build

        if self.config.dynamic:
            return str(build(quiet=True, variant=self.config.variant, size="dynamic"))
        size = (int(self.config.input_width or 416), int(self.config.input_height or 416))
        return str(build(quiet=True, variant=self.config.variant, size=size))

    def describe(self) -> dict:
        return super().describe() | {"variant": self.config.variant}
