"""Generic ONNX YOLO detector plug-in (``type: onnx_yolo``).

Runs any YOLO-family ONNX export on onnxruntime with configurable pre- and post-processing, so a model a
city already has (YOLOv5 / v8 / v11 export, an end-to-end export with NMS inside) plugs in with a config
entry::

    {"type": "onnx_yolo", "model_path": "/models/yolov8n.onnx", "output_format": "yolov8",
     "labels": "coco80", "input_width": 640, "input_height": 640, "threads": 2}

Output layouts (``output_format``):

* ``yolov5``  — ``[N, boxes, 5 + C]``: ``cx, cy, w, h, objectness, class scores`` (YOLOv5, YOLOv7,
  our Darknet conversion); score = objectness × class score;
* ``yolov8``  — ``[N, 4 + C, boxes]`` (or its transpose): ``cx, cy, w, h, class scores``, no objectness
  (YOLOv8, YOLOv11, YOLOv9 exports);
* ``end2end`` — ``[N, K, 6]``: ``x1, y1, x2, y2, score, class`` with NMS already done (YOLOv10,
  ``nms=True`` exports); only thresholding and un-letterboxing happen here;
* ``auto``    — the ``output_format`` metadata entry of the model if present, else guessed from the shape.

Boxes are in input pixels unless ``normalized_boxes`` (0..1), scores are probabilities unless
``apply_sigmoid`` (raw logits).  Pre-processing: letterbox (keep aspect, pad with ``pad_value``) or
stretch, RGB or BGR, ``(pixel * scale - mean) / std``, NCHW or NHWC, float32 / float16 / uint8 input.
NMS is per class (or class-agnostic) greedy IoU suppression.

A model whose input height and width are symbolic (``dynamic_input``; e.g. ``yolov3-tiny-dyn``) is not
letterboxed into a fixed square: each frame is scaled by ``min(input_width / w, input_height / h)`` and
padded (centred) only up to the next multiple of ``stride``; frames that end up the same shape run as one
batch.  :meth:`OnnxYoloDetector.detect_scaled` runs crops at a given scale (the full frame's, from
:meth:`OnnxYoloDetector.input_scale`), so motion regions are searched at the same scale as the frame.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from gridwatch.models.detectors.base import Detection, DetectionApi, DetectorConfig
from gridwatch.models.labels import load_labels


@dataclass(kw_only=True)
class OnnxYoloConfig(DetectorConfig):
    type: Literal["onnx_yolo"] = "onnx_yolo"
    model_path: str | None = None
    input_width: int | None = None  # None: from the model's input shape (640 when dynamic)
    input_height: int | None = None
    labels: list[str] | str | None = None  # list, "coco80", a names file, or None: model metadata / coco80
    label_map: dict[str, str] | None = None  # rename labels, e.g. {"motorbike": "motorcycle"}
    output_format: Literal["auto", "yolov5", "yolov8", "end2end"] = "auto"
    output_index: int = 0
    normalized_boxes: bool = False
    apply_sigmoid: bool = False
    resize: Literal["letterbox", "stretch"] = "letterbox"
    pad_value: int = 114
    channel_order: Literal["rgb", "bgr"] = "rgb"
    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    layout: Literal["nchw", "nhwc"] = "nchw"
    max_batch: int | None = None  # None: the model's fixed batch size, else unlimited
    class_agnostic_nms: bool = False
    suppress_contained: float | None = None  # also drop a same-class box this much inside a better one
    disabled_optimizers: list[str] | None = None  # onnxruntime graph optimisers to skip (a model may need it)
    stride: int = 32  # dynamic-input models: pad each input up to a multiple of this (the largest stride)

    def __post_init__(self) -> None:
        super().__post_init__()
        key = type(self).__dataclass_fields__["type"].default
        if self.type != key:
            raise ValueError(f"config type {self.type!r} used for a {key!r} detector")
        for name, allowed in (("output_format", ("auto", "yolov5", "yolov8", "end2end")),
                              ("resize", ("letterbox", "stretch")), ("channel_order", ("rgb", "bgr")),
                              ("layout", ("nchw", "nhwc"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std take 3 values")
        if self.stride < 1:
            raise ValueError("stride must be >= 1")


# ----------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source frame was mapped into the network input: ``input = source * scale + pad``."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    src_w: int
    src_h: int

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Source pixels → input pixels (the inverse of :meth:`to_source`, unclipped)."""
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale_x + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale_y + self.pad_y
        return out

    def to_source(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Input pixels → source pixels; ``clip=False`` for a crop, whose edges are not the object's."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale_y
        if clip:
            out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.src_w)
            out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.src_h)
        return out


def letterbox(image: np.ndarray, width: int, height: int, *, keep_ratio: bool = True,
              pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` into ``width × height``, keeping its aspect ratio and centring it on a pad colour."""
    h, w = image.shape[:2]
    if not keep_ratio:
        out = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return out, Letterbox(width / w, height / h, 0.0, 0.0, w, h)
    r = min(width / w, height / h)
    return _centred(image, max(1, round(w * r)), max(1, round(h * r)), width, height, pad_value)


def _centred(image: np.ndarray, nw: int, nh: int, width: int, height: int,
             pad_value: int) -> tuple[np.ndarray, Letterbox]:
    """``image`` resized to ``nw × nh`` and centred on a ``width × height`` pad colour (the picture itself
    when nothing changes: a crop already on the grid is not copied)."""
    h, w = image.shape[:2]
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left, top = (width - nw) // 2, (height - nh) // 2
    out = resized if (width, height) == (nw, nh) else cv2.copyMakeBorder(
        resized, top, height - nh - top, left, width - nw - left, cv2.BORDER_CONSTANT,
        value=(pad_value, pad_value, pad_value))
    return out, Letterbox(nw / w, nh / h, float(left), float(top), w, h)


def stride_size(w: int, h: int, scale: float, stride: int) -> tuple[int, int, int, int]:
    """``(input w, input h, scaled w, scaled h)`` of a ``w × h`` picture scaled by ``scale`` and padded up
    to multiples of ``stride`` (see :func:`pad_to_stride`)."""
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return -(-nw // stride) * stride, -(-nh // stride) * stride, nw, nh


def pad_to_stride(image: np.ndarray, scale: float, stride: int, *,
                  pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` by ``scale`` and pad it (centred, like :func:`letterbox`) up to the next multiple of
    ``stride``: the input of a dynamic-size model, with no more padding than the network needs.  Centred
    rather than right/bottom because yolov3-tiny is sensitive to where the picture falls on its 32-px grid:
    centred, a 4:3 frame gets exactly the 416×320 letterbox the hand-checked tests pass on; padded at the
    right/bottom it found 5 of the 7 people of vtest frame 200 (6 centred) and 2 of the 3 on the 1906 film."""
    h, w = image.shape[:2]
    width, height, nw, nh = stride_size(w, h, scale, stride)
    return _centred(image, nw, nh, width, height, pad_value)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between ``a [N, 4]`` and ``b [M, 4]`` (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, class_ids: np.ndarray | None = None,
        max_out: int | None = None, contain_threshold: float | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; per class when ``class_ids`` is given. Returns kept indices.

    With ``contain_threshold``, a lower-scored box is also suppressed when that fraction of the smaller
    of the two boxes lies inside the other (YOLO's two heads often return a body box and a torso box).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float32)
    if class_ids is not None:  # shift each class into its own coordinate range: one pass, no cross-class IoU
        offset = (np.asarray(class_ids, dtype=np.float32) * (float(boxes.max()) + 1.0))[:, None]
        boxes = boxes + offset
    order = np.argsort(-np.asarray(scores), kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if max_out is not None and len(keep) >= max_out:
            break
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        drop = iou > iou_threshold
        if contain_threshold is not None:
            drop |= inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-9) > contain_threshold
        order = rest[~drop]
    return np.asarray(keep, dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def decode_candidates(pred: np.ndarray, fmt: str, num_classes: int, score_threshold: float, *,
                      apply_sigmoid: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output → ``(boxes xyxy [K,4], scores [K], class_ids [K])`` above the threshold."""
    pred = np.asarray(pred, dtype=np.float32)
    if fmt == "end2end":
        pred = pred.reshape(-1, pred.shape[-1])
        if pred.shape[1] == 7:  # batch_id, x1, y1, x2, y2, score, class
            pred = pred[:, 1:]
        scores = _sigmoid(pred[:, 4]) if apply_sigmoid else pred[:, 4]
        m = scores >= score_threshold
        return pred[m, :4], scores[m], pred[m, 5].astype(np.int64)
    if fmt == "yolov8":
        if pred.shape[0] == 4 + num_classes and pred.shape[1] != 4 + num_classes:
            pred = pred.T
        cls = pred[:, 4:4 + num_classes]
        if apply_sigmoid:
            cls = _sigmoid(cls)
        class_ids = cls.argmax(axis=1)
        scores = cls[np.arange(len(cls)), class_ids]
    elif fmt == "yolov5":
        obj = pred[:, 4]
        if apply_sigmoid:
            obj = _sigmoid(obj)
        m = obj >= score_threshold  # score = obj * cls <= obj: cheap pre-filter
        pred, obj = pred[m], obj[m]
        cls = pred[:, 5:5 + num_classes]
        if apply_sigmoid:
            cls = _sigmoid(cls)
        class_ids = cls.argmax(axis=1)
        scores = obj * cls[np.arange(len(cls)), class_ids]
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    m = scores >= score_threshold
    return _cxcywh_to_xyxy(pred[m, :4]), scores[m], class_ids[m]


# ----------------------------------------------------------------------------------------------- plug-in


class OnnxYoloDetector(DetectionApi):
    type_key: ClassVar[str] = "onnx_yolo"
    config_class: ClassVar[type[DetectorConfig]] = OnnxYoloConfig
    config: OnnxYoloConfig

    def __init__(self, config: OnnxYoloConfig):
        super().__init__(config)
        import onnxruntime as ort

        path = self._model_path()
        so = ort.SessionOptions()
        so.intra_op_num_threads = config.threads
        so.inter_op_num_threads = config.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not config.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.model_path = path
        self.session = ort.InferenceSession(path, sess_options=so, providers=list(config.providers),
                                            disabled_optimizers=list(config.disabled_optimizers or ()) or None)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[config.output_index].name
        shape = list(inp.shape)
        self.input_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                            "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        if config.layout == "nchw":
            mh, mw = shape[2], shape[3]
        else:
            mh, mw = shape[1], shape[2]
        self._dynamic_input = not (isinstance(mw, int) and isinstance(mh, int))
        self.input_width = config.input_width or (mw if isinstance(mw, int) else 640)
        self.input_height = config.input_height or (mh if isinstance(mh, int) else 640)
        fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.max_batch = fixed_batch or config.max_batch
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self._labels = self._resolve_labels()
        fmt = config.output_format
        if fmt == "auto":
            fmt = self.meta.get("output_format") or self._guess_format()
        self.output_format = fmt
        self._filter = set(config.class_filter) if config.class_filter else None

    # -- set-up helpers
    def _model_path(self) -> str:
        if not self.config.model_path:
            raise ValueError("onnx_yolo needs model_path")
        return str(self.config.model_path)

    def _resolve_labels(self) -> list[str]:
        spec = self.config.labels
        if spec is None and "names" in self.meta:
            raw = self.meta["names"]
            try:
                names = json.loads(raw)
            except ValueError:
                names = ast.literal_eval(raw)  # Ultralytics writes a Python dict repr
            labels = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        else:
            labels = load_labels(spec)
        if self.config.label_map:
            labels = [self.config.label_map.get(n, n) for n in labels]
        return labels

    def _guess_format(self) -> str:
        shape = self.session.get_outputs()[self.config.output_index].shape
        c = len(self._labels)
        last = shape[-1] if isinstance(shape[-1], int) else None
        mid = shape[1] if len(shape) > 2 and isinstance(shape[1], int) else None
        if last == 5 + c:
            return "yolov5"
        if mid == 4 + c or last == 4 + c:
            return "yolov8"
        if last in (6, 7):
            return "end2end"
        raise ValueError(f"cannot guess output_format from output shape {shape}; set it in the config")

    @property
    def labels(self) -> list[str]:
        return self._labels

    @property
    def dynamic_input(self) -> bool:
        """True when the model's input height and width are symbolic: any multiple of ``stride`` runs."""
        return self._dynamic_input

    def input_scale(self, w: int, h: int) -> float:
        """The scale a ``w × h`` frame is resized by to fit ``input_width × input_height`` (aspect kept):
        crop motion regions and pass this to :meth:`detect_scaled` to search them at the frame's scale."""
        return min(self.input_width / w, self.input_height / h)

    # -- inference
    def preprocess(self, frames: list[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        cfg = self.config
        boxed, infos = [], []
        for f in frames:
            if f.ndim == 2:
                f = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            img, info = letterbox(f, self.input_width, self.input_height,
                                  keep_ratio=cfg.resize == "letterbox", pad_value=cfg.pad_value)
            boxed.append(img)
            infos.append(info)
        return self._blob(boxed, self.input_width, self.input_height), infos

    def _blob(self, boxed: list[np.ndarray], width: int, height: int) -> np.ndarray:
        """Same-size BGR pictures → the model's input tensor (channel order, scaling, layout, dtype)."""
        cfg = self.config
        swap = cfg.channel_order == "rgb"
        if self.input_dtype == np.uint8:
            arr = np.stack([cv2.cvtColor(b, cv2.COLOR_BGR2RGB) if swap else b for b in boxed])
            return arr if cfg.layout == "nhwc" else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        mean = tuple(m / cfg.scale for m in cfg.mean)
        blob = cv2.dnn.blobFromImages(boxed, scalefactor=cfg.scale, size=(width, height),
                                      mean=mean, swapRB=swap, crop=False)
        if any(s != 1.0 for s in cfg.std):
            blob /= np.asarray(cfg.std, dtype=np.float32)[None, :, None, None]
        if cfg.layout == "nhwc":
            blob = np.ascontiguousarray(blob.transpose(0, 2, 3, 1))
        return blob.astype(self.input_dtype, copy=False)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run the session on a preprocessed batch (split into ``max_batch`` chunks when needed)."""
        n = blob.shape[0]
        step = self.max_batch or n
        outs = [self.session.run([self.output_name], {self.input_name: blob[i:i + step]})[0]
                for i in range(0, n, step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def postprocess(self, output: np.ndarray, infos: list[Letterbox],
                    input_size: tuple[int, int] | None = None, clip: bool = True) -> list[list[Detection]]:
        """Raw output → detections in source pixels; ``input_size`` (w, h) when not the configured one."""
        cfg = self.config
        in_w, in_h = input_size or (self.input_width, self.input_height)
        results: list[list[Detection]] = []
        for pred, info in zip(output, infos, strict=True):
            boxes, scores, class_ids = decode_candidates(pred, self.output_format, len(self._labels),
                                                         cfg.score_threshold, apply_sigmoid=cfg.apply_sigmoid)
            if cfg.normalized_boxes and len(boxes):
                boxes = boxes * np.array([in_w, in_h] * 2, dtype=np.float32)
            if self.output_format != "end2end" and len(boxes):
                keep = nms(boxes, scores, cfg.nms_iou, None if cfg.class_agnostic_nms else class_ids,
                           contain_threshold=cfg.suppress_contained)
                boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
            boxes = info.to_source(boxes, clip) if len(boxes) else boxes
            dets: list[Detection] = []
            for b, s, c in zip(boxes, scores, class_ids, strict=True):
                label = self._labels[int(c)] if 0 <= int(c) < len(self._labels) else str(int(c))
                if self._filter is not None and label not in self._filter:
                    continue
                d = Detection(label, float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])), int(c))
                if d.area <= cfg.min_box_area or d.width <= 0 or d.height <= 0:
                    continue
                dets.append(d)
                if len(dets) >= cfg.max_detections:
                    break
            results.append(dets)
        return results

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        if self._dynamic_input:
            return self._detect_padded(frames, [self.input_scale(f.shape[1], f.shape[0]) for f in frames])
        blob, infos = self.preprocess(frames)
        return self.postprocess(self.infer(blob), infos)

    def detect_scaled(self, frames: list[np.ndarray], scale: float, clip: bool = True) -> list[list[Detection]]:
        """Detect in each frame (typically a crop) resized by exactly ``scale`` and padded up to a multiple
        of ``stride``; boxes in the frame's own pixels (``clip=False``: not cut at its edges, for a crop of
        a larger picture).  Needs a dynamic-input model."""
        if not self._dynamic_input:
            raise ValueError(f"detect_scaled needs a model with a dynamic input size; {self.model_path} is fixed "
                             f"at {self.input_width}x{self.input_height} (yolo_darknet_onnx: set dynamic: true)")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, not {scale!r}")
        return self._detect_padded(frames, [float(scale)] * len(frames), clip) if frames else []

    def _detect_padded(self, frames: list[np.ndarray], scales: list[float], clip: bool = True) -> list[list[Detection]]:
        """Dynamic model: each frame resized by its scale and padded to the stride; one session call per
        distinct input shape, results in input order."""
        cfg = self.config
        groups: dict[tuple[int, int], list[int]] = {}
        boxed: list[np.ndarray] = []
        infos: list[Letterbox] = []
        for i, (f, s) in enumerate(zip(frames, scales, strict=True)):
            if f.ndim == 2:
                f = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            img, info = pad_to_stride(f, s, cfg.stride, pad_value=cfg.pad_value)
            boxed.append(img)
            infos.append(info)
            groups.setdefault((img.shape[1], img.shape[0]), []).append(i)
        results: list[list[Detection]] = [[] for _ in frames]
        for (w, h), idx in groups.items():
            out = self.infer(self._blob([boxed[i] for i in idx], w, h))
            for i, dets in zip(idx, self.postprocess(out, [infos[i] for i in idx], (w, h), clip), strict=True):
                results[i] = dets
        return results

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def describe(self) -> dict[str, Any]:
        return {"type": self.type_key, "model_path": self.model_path, "input": [self.input_width, self.input_height],
                "dynamic_input": self._dynamic_input, "output_format": self.output_format,
                "classes": len(self._labels), "threads": self.config.threads, "max_batch": self.max_batch}
