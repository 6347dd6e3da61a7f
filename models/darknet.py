"""Darknet cfg + weights → ONNX, written with the ``onnx`` package only.

Supported layer kinds are the ones YOLOv3 / YOLOv3-tiny use: ``convolutional`` (with or without batch
normalisation, ``leaky`` / ``linear`` activation), ``maxpool``, ``route``, ``upsample``, ``shortcut``
and ``yolo``.

Output contract of the produced graph (documented in ``models/MODEL_CARD.md``):

* input  ``images``      float32 ``[batch, 3, H, W]``, RGB, values in 0..1 (letterboxed by the caller);
  H and W fixed from the cfg, or symbolic (``convert(..., dynamic=True)``: any multiple of 32);
* output ``detections``  float32 ``[batch, boxes, 5 + classes]`` — the YOLO heads are **decoded inside
  the graph**: ``cx, cy, w, h`` in input pixels, then the objectness and the per-class probabilities,
  both already passed through the sigmoid.  This is the same layout as a YOLOv5 export, so the generic
  ``onnx_yolo`` detector plug-in reads it unchanged (``output_format: yolov5``).

Batch normalisation is folded into the convolution weights (Darknet normalises with
``(x - mean) / (sqrt(var) + 1e-6)``), so the graph is Conv → LeakyRelu chains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7  # pinned so that the serialised model (and its sha256) does not drift with the onnx version


@dataclass
class Section:
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise KeyError(f"[{self.kind}] lacks {key!r}")
            return default
        return int(self.options[key])

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.options[key].split(",") if v.strip()]

    def str(self, key: str, default: str = "") -> str:
        return self.options.get(key, default)


def parse_cfg(text: str) -> list[Section]:
    """Parse a Darknet ``.cfg`` file into sections (``[net]`` first)."""
    sections: list[Section] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append(Section(line[1:-1].strip().lower()))
        elif "=" in line:
            if not sections:
                raise ValueError("option before the first section")
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ValueError(f"cannot parse cfg line {raw!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ValueError("cfg must start with [net]")
    return sections


class _Weights:
    """Sequential reader over a Darknet ``.weights`` file."""

    def __init__(self, data: bytes):
        major, minor, revision = np.frombuffer(data[:12], dtype="<i4")
        seen_bytes = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
        self.header = (int(major), int(minor), int(revision))
        self.values = np.frombuffer(data[12 + seen_bytes :], dtype="<f4")
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > self.values.size:
            raise ValueError("weights file is shorter than the cfg needs")
        out = self.values[self.pos : self.pos + n].astype(np.float32)
        self.pos += n
        return out

    @property
    def remaining(self) -> int:
        return self.values.size - self.pos


@dataclass
class _Tensor:
    name: str
    channels: int
    height: int
    width: int


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def uid(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        name = self.uid(op.lower())
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs


def convert(cfg_text: str, weights: bytes, *, names: list[str] | None = None,
            doc: str = "", metadata: dict[str, str] | None = None, dynamic: bool = False) -> onnx.ModelProto:
    """Build an ONNX model from Darknet cfg text and weights bytes (see the module docstring).

    ``dynamic``: declare the input as ``[batch, 3, height, width]`` (any multiple of the largest stride,
    32 for yolov3-tiny) instead of the cfg's fixed size, so one session runs frames and crops of any size;
    the graph itself is the same (its YOLO heads are shape-agnostic)."""
    sections = parse_cfg(cfg_text)
    net = sections[0]
    height, width, channels = net.int("height"), net.int("width"), net.int("channels", 3)
    wts = _Weights(weights)
    g = _GraphBuilder()
    outputs: list[_Tensor] = []  # one per layer (index = darknet layer index)
    heads: list[str] = []
    num_classes: int | None = None
    current = _Tensor("images", channels, height, width)

    for idx, sec in enumerate(sections[1:]):
        if sec.kind == "convolutional":
            filters, size = sec.int("filters"), sec.int("size")
            stride, pad = sec.int("stride", 1), sec.int("pad", 0)
            padding = size // 2 if pad else sec.int("padding", 0)
            bn = sec.int("batch_normalize", 0)
            groups = sec.int("groups", 1)
            cin = current.channels // groups
            if bn:
                beta = wts.take(filters)
                gamma = wts.take(filters)
                mean = wts.take(filters)
                var = wts.take(filters)
                kernel = wts.take(filters * cin * size * size).reshape(filters, cin, size, size)
                scale = gamma / (np.sqrt(var) + 1e-6)
                kernel = kernel * scale[:, None, None, None]
                bias = beta - mean * scale
            else:
                bias = wts.take(filters)
                kernel = wts.take(filters * cin * size * size).reshape(filters, cin, size, size)
            w_name = g.const(f"conv{idx}_w", kernel.astype(np.float32))
            b_name = g.const(f"conv{idx}_b", bias.astype(np.float32))
            (out,) = g.node("Conv", [current.name, w_name, b_name], kernel_shape=[size, size],
                            strides=[stride, stride], pads=[padding] * 4, group=groups)
            act = sec.str("activation", "linear")
            if act == "leaky":
                (out,) = g.node("LeakyRelu", [out], alpha=0.1)
            elif act == "relu":
                (out,) = g.node("Relu", [out])
            elif act == "logistic":
                (out,) = g.node("Sigmoid", [out])
            elif act != "linear":
                raise ValueError(f"layer {idx}: activation {act!r} not supported")
            oh = (current.height + 2 * padding - size) // stride + 1
            ow = (current.width + 2 * padding - size) // stride + 1
            current = _Tensor(out, filters, oh, ow)
        elif sec.kind == "maxpool":
            size = sec.int("size")
            stride = sec.int("stride", size)
            padding = sec.int("padding", size - 1)
            # Darknet pads padding//2 before and the rest after; out-of-image cells never win the max,
            # which is what ONNX MaxPool's padding does too.  The size-2 stride-1 pool of yolov3-tiny
            # therefore needs pads = [0, 0, 1, 1] to keep 13×13.
            begin, end = padding // 2, padding - padding // 2
            (out,) = g.node("MaxPool", [current.name], kernel_shape=[size, size], strides=[stride, stride],
                            pads=[begin, begin, end, end])
            oh = (current.height + padding - size) // stride + 1
            ow = (current.width + padding - size) // stride + 1
            current = _Tensor(out, current.channels, oh, ow)
        elif sec.kind == "upsample":
            stride = sec.int("stride", 2)
            scales = g.const(g.uid("scales"), np.array([1, 1, stride, stride], dtype=np.float32))
            roi = g.const(g.uid("roi"), np.array([], dtype=np.float32))
            (out,) = g.node("Resize", [current.name, roi, scales], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            current = _Tensor(out, current.channels, current.height * stride, current.width * stride)
        elif sec.kind == "route":
            layers = [v if v >= 0 else idx + v for v in sec.ints("layers")]
            srcs = [outputs[i] for i in layers]
            if len(srcs) == 1:
                current = srcs[0]
            else:
                if len({(s.height, s.width) for s in srcs}) != 1:
                    raise ValueError(f"layer {idx}: route inputs differ in size")
                (out,) = g.node("Concat", [s.name for s in srcs], axis=1)
                current = _Tensor(out, sum(s.channels for s in srcs), srcs[0].height, srcs[0].width)
        elif sec.kind == "shortcut":
            frm = sec.int("from")
            other = outputs[frm if frm >= 0 else idx + frm]
            (out,) = g.node("Add", [current.name, other.name])
            if sec.str("activation", "linear") == "leaky":
                (out,) = g.node("LeakyRelu", [out], alpha=0.1)
            current = _Tensor(out, current.channels, current.height, current.width)
        elif sec.kind == "yolo":
            classes = sec.int("classes")
            if num_classes not in (None, classes):
                raise ValueError("yolo heads disagree on the number of classes")
            num_classes = classes
            heads.append(_yolo_head(g, current, sec, classes, width, height))
            # a yolo layer passes its input through for later routes
        else:
            raise ValueError(f"layer {idx}: [{sec.kind}] not supported")
        outputs.append(current)

    if wts.remaining:
        raise ValueError(f"{wts.remaining} weights left unused: cfg and weights do not match")
    if not heads or num_classes is None:
        raise ValueError("no [yolo] layer in cfg")
    if len(heads) > 1:
        (det,) = g.node("Concat", heads, axis=1)
    else:
        det = heads[0]
    g.nodes.append(helper.make_node("Identity", [det], ["detections"], name="detections_identity"))

    graph = helper.make_graph(
        g.nodes, "darknet_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["batch", channels, "height", "width"] if dynamic
                                       else ["batch", channels, height, width])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", "boxes", 5 + num_classes])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, producer_name="gridwatch.models.darknet", producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = IR_VERSION
    meta = {"output_format": "yolov5", "input_format": "RGB float 0..1 NCHW letterboxed",
            "imgsz": json.dumps([height, width])}  # the cfg's size (calibration size when dynamic)
    if dynamic:
        meta["dynamic_input"] = "true"
    if names is not None:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} names for {num_classes} classes")
        meta["names"] = json.dumps(names)
    meta.update(metadata or {})
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def _yolo_head(g: _GraphBuilder, x: _Tensor, sec: Section, classes: int, net_w: int, net_h: int) -> str:
    """Decode one YOLOv3 head into ``[N, A*H*W, 5+C]`` (cx, cy, w, h in pixels; sigmoid obj and classes).

    Shape-agnostic: the grid comes from ``Shape(x)`` at run time, so one graph serves any input size that
    is a multiple of the network stride.  Rows are ordered ``a*HW + y*W + x``."""
    mask = sec.ints("mask")
    anchors_flat = sec.ints("anchors")
    anchors = np.array(anchors_flat, dtype=np.float32).reshape(-1, 2)[mask]
    na, h, w = len(mask), x.height, x.width
    attrs = 5 + classes
    if x.channels != na * attrs:
        raise ValueError(f"yolo head expects {na * attrs} channels, got {x.channels}")
    shape1 = g.const(g.uid("shape"), np.array([0, na, attrs, -1], dtype=np.int64))
    (t,) = g.node("Reshape", [x.name, shape1])
    (t,) = g.node("Transpose", [t], perm=[0, 1, 3, 2])  # N, A, HW, attrs
    split = g.const(g.uid("split"), np.array([2, 2, attrs - 4], dtype=np.int64))
    xy, wh, rest = g.node("Split", [t, split], n_out=3, axis=3)
    # grid offsets (x, y) of each cell, [1, 1, H*W, 2] in the order y*W + x, from the run-time H and W
    (shape,) = g.node("Shape", [x.name])
    (gh,) = g.node("Gather", [shape, g.const(g.uid("idx"), np.array(2, dtype=np.int64))], axis=0)
    (gw,) = g.node("Gather", [shape, g.const(g.uid("idx"), np.array(3, dtype=np.int64))], axis=0)
    zero = g.const(g.uid("zero"), np.array(0, dtype=np.int64))
    one = g.const(g.uid("one"), np.array(1, dtype=np.int64))
    (ys,) = g.node("Range", [zero, gh, one])
    (xs,) = g.node("Range", [zero, gw, one])
    (ys,) = g.node("Cast", [ys], to=TensorProto.FLOAT)
    (xs,) = g.node("Cast", [xs], to=TensorProto.FLOAT)
    (ys,) = g.node("Reshape", [ys, g.const(g.uid("shape"), np.array([-1, 1, 1], dtype=np.int64))])  # H, 1, 1
    (xs,) = g.node("Reshape", [xs, g.const(g.uid("shape"), np.array([1, -1, 1], dtype=np.int64))])  # 1, W, 1
    (hw,) = g.node("Slice", [shape, g.const(g.uid("start"), np.array([2], dtype=np.int64)),
                             g.const(g.uid("end"), np.array([4], dtype=np.int64))])
    (hw1,) = g.node("Concat", [hw, g.const(g.uid("one"), np.array([1], dtype=np.int64))], axis=0)  # [H, W, 1]
    (xs,) = g.node("Expand", [xs, hw1])
    (ys,) = g.node("Expand", [ys, hw1])
    (grid,) = g.node("Concat", [xs, ys], axis=2)  # H, W, 2
    (grid,) = g.node("Reshape", [grid, g.const(g.uid("shape"), np.array([1, 1, -1, 2], dtype=np.int64))])
    # the stride is the head's downsampling factor: the same for every input size
    stride = np.array([net_w / w, net_h / h], dtype=np.float32)
    (xy,) = g.node("Sigmoid", [xy])
    (xy,) = g.node("Add", [xy, grid])
    (xy,) = g.node("Mul", [xy, g.const(g.uid("stride"), stride)])
    (wh,) = g.node("Exp", [wh])
    (wh,) = g.node("Mul", [wh, g.const(g.uid("anchors"), anchors.reshape(1, na, 1, 2).astype(np.float32))])
    (rest,) = g.node("Sigmoid", [rest])
    (out,) = g.node("Concat", [xy, wh, rest], axis=3)  # N, A, HW, attrs
    (out,) = g.node("Reshape", [out, g.const(g.uid("shape"), np.array([0, -1, attrs], dtype=np.int64))])
    return out


def convert_files(cfg_path: Path, weights_path: Path, out_path: Path, *, names: list[str] | None = None,
                  doc: str = "", metadata: dict[str, str] | None = None) -> Path:
    model = convert(Path(cfg_path).read_text(), Path(weights_path).read_bytes(), names=names, doc=doc,
                    metadata=metadata)
    tmp = Path(str(out_path) + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out_path)
    return Path(out_path)
