"""The Darknet → ONNX build: cached and checksummed, and numerically the same network as OpenCV's own
Darknet importer (an implementation we did not write) — on the real yolov3-tiny weights and on a small
random network that exercises every layer kind, including the size-2 stride-1 max-pool."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from gridwatch.models import build as model_build
from gridwatch.models import darknet
from gridwatch.models.labels import COCO80


def _session(path_or_bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def _opencv_rows(outs: list[np.ndarray], ours: np.ndarray, shapes: list[tuple[int, int, int]], net_wh: tuple[int, int]):
    """Reorder our [A*H*W] rows to OpenCV's [H*W*A] order, per head; normalise our pixel boxes."""
    start = 0
    pairs = []
    for out, (a, h, w) in zip(outs, shapes, strict=True):
        n = a * h * w
        block = ours[start:start + n].reshape(a, h, w, -1).transpose(1, 2, 0, 3).reshape(n, -1).copy()
        block[:, [0, 2]] /= net_wh[0]
        block[:, [1, 3]] /= net_wh[1]
        pairs.append((block, out))
        start += n
    return pairs


def test_build_is_cached_and_checksummed(model_path: Path) -> None:
    manifest = json.loads(model_build.manifest_path(model_path.parent).read_text())
    assert manifest["onnx"]["sha256"] == model_build.sha256_file(model_path)
    assert manifest["inputs"]["yolov3-tiny.weights"]["sha256"] == model_build.PINNED["yolov3-tiny.weights"]
    assert manifest["classes"] == list(COCO80)
    assert model_build.is_built(model_path.parent)
    assert model_build.build(model_path.parent) == model_path  # second call: the cached no-op path
    sess = _session(str(model_path))
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert inp.shape[1:] == [3, 416, 416] and out.shape[1:] == [2535, 85]
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["output_format"] == "yolov5" and json.loads(meta["names"])[0] == "person"


def test_real_weights_match_opencv_darknet_importer(model_path: Path, darknet_images) -> None:
    cache = model_path.parent
    net = cv2.dnn.readNetFromDarknet(str(cache / "yolov3-tiny.cfg"), str(cache / "yolov3-tiny.weights"))
    img = cv2.imread(str(darknet_images["dog.jpg"]))
    blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (416, 416), swapRB=True)
    net.setInput(blob)
    outs = net.forward(net.getUnconnectedOutLayersNames())
    ours = _session(str(model_path)).run(None, {"images": blob})[0][0]
    for mine, theirs in _opencv_rows(outs, ours, [(3, 13, 13), (3, 26, 26)], (416, 416)):
        np.testing.assert_allclose(mine[:, :5], theirs[:, :5], atol=1e-4)
        scores = mine[:, 5:] * mine[:, 4:5]  # OpenCV reports obj × class, zeroed below its 0.2 threshold
        shown = theirs[:, 5:] > 0
        np.testing.assert_allclose(scores[shown], theirs[:, 5:][shown], atol=1e-4)
        assert not (scores[~shown] > 0.21).any()


def test_other_input_sizes_build_and_match_opencv(model_path: Path, darknet_images, tmp_path: Path) -> None:
    """The same weights at a 416×320 input (less letterbox padding for 4:3 / 16:9 cameras): its own cached
    files and manifest, the right grids, and still OpenCV's Darknet importer's numbers."""
    cache = model_path.parent
    path = model_build.build(cache, size=(416, 320), int8=False)
    assert path.name == "yolov3-tiny-416x320.onnx" and model_build.is_built(cache, size=(416, 320))
    manifest = json.loads(model_build.manifest_path(cache, (416, 320)).read_text())
    assert manifest["input"]["shape"] == ["batch", 3, 320, 416] and manifest["output"]["shape"][1] == 3 * (130 + 520)
    sess = _session(str(path))
    assert sess.get_inputs()[0].shape[1:] == [3, 320, 416]
    cfg = tmp_path / "yolov3-tiny-416x320.cfg"
    cfg.write_text(model_build.cfg_with_size((cache / "yolov3-tiny.cfg").read_text(), (416, 320)))
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(cache / "yolov3-tiny.weights"))
    blob = cv2.dnn.blobFromImage(cv2.imread(str(darknet_images["dog.jpg"])), 1 / 255.0, (416, 320), swapRB=True)
    net.setInput(blob)
    outs = net.forward(net.getUnconnectedOutLayersNames())
    ours = sess.run(None, {"images": blob})[0][0]
    for mine, theirs in _opencv_rows(outs, ours, [(3, 10, 13), (3, 20, 26)], (416, 320)):
        np.testing.assert_allclose(mine[:, :5], theirs[:, :5], atol=1e-4)
    assert model_build.parse_size("320") == (320, 320) and model_build.size_name((416, 320)) == "416x320"
    for bad in (300, (416, 100), (416, 2048)):
        with pytest.raises(ValueError, match="multiples of 32"):
            model_build.check_size(bad)


def test_int8_keeps_a_float_stem(model_path: Path) -> None:
    """The int8 model leaves the 3-channel first conv (+ leaky + pool) in float, and the detector runs it
    without the optimiser that would move its Quantize above the pool (a slow uint8 NCHW max-pool)."""
    import onnx

    from gridwatch.models.detectors import parse_detector_config

    if not model_build.calibration_images():
        pytest.skip("int8 variant needs the Debian package darknet (calibration pictures)")
    path = model_build.build(model_path.parent, variant="int8")
    graph = onnx.load(str(path)).graph
    first = next(n for n in graph.node if "images" in n.input)
    assert first.op_type == "Conv"
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(first.input[1]) is None  # a float initializer, not a DequantizeLinear output
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) > 10  # the rest is quantised
    manifest = json.loads(model_build.manifest_path(model_path.parent).read_text())
    assert manifest["int8"]["disabled_optimizers"] == list(model_build.INT8_DISABLED_OPTIMIZERS)
    cfg = parse_detector_config({"variant": "int8"})
    assert cfg.disabled_optimizers == list(model_build.INT8_DISABLED_OPTIMIZERS)
    assert parse_detector_config({"variant": "fp32"}).disabled_optimizers is None


TINY_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 3,4,5
anchors = 4,6, 8,10, 12,16, 20,24, 30,36, 50,60
classes=2
num=6

[route]
layers = -4

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers = -1, 2

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 0,1,2
anchors = 4,6, 8,10, 12,16, 20,24, 30,36, 50,60
classes=2
num=6
"""


def _random_weights(cfg_text: str, rng: np.random.Generator) -> bytes:
    sections = darknet.parse_cfg(cfg_text)
    channels = [3]
    out: list[np.ndarray] = []
    for idx, sec in enumerate(sections[1:]):
        c = channels[-1]
        if sec.kind == "convolutional":
            f, k = sec.int("filters"), sec.int("size")
            if sec.int("batch_normalize", 0):
                out += [rng.normal(0, 0.1, f), rng.uniform(0.8, 1.2, f), rng.normal(0, 0.1, f), rng.uniform(0.5, 1.5, f)]
            else:
                out.append(rng.normal(0, 0.1, f))
            out.append(rng.normal(0, np.sqrt(2.0 / (c * k * k)), f * c * k * k))
            channels.append(f)
        elif sec.kind == "route":
            layers = [v if v >= 0 else idx + v for v in sec.ints("layers")]
            channels.append(sum(channels[i + 1] for i in layers))
        else:
            channels.append(c)
    header = np.array([0, 2, 0], dtype="<i4").tobytes() + np.array([0], dtype="<i8").tobytes()
    return header + np.concatenate(out).astype("<f4").tobytes()


@pytest.mark.parametrize("dynamic, width", [(False, 64), (True, 96)])
def test_every_layer_kind_matches_opencv_on_a_random_network(tmp_path: Path, dynamic: bool, width: int) -> None:
    """The 64×64 cfg's graph against OpenCV's Darknet importer.  ``dynamic=True``: run at 96×64, it gives
    OpenCV's numbers for a 96×64 cfg (the in-graph grid follows the run-time size, the stride stays the
    downsampling factor)."""
    rng = np.random.default_rng(7)
    weights = _random_weights(TINY_CFG, rng)
    model = darknet.convert(TINY_CFG, weights, names=["a", "b"], dynamic=dynamic)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 3, "height", "width"] if dynamic else ["batch", 3, 64, 64])
    (tmp_path / "tiny.cfg").write_text(TINY_CFG.replace("width=64", f"width={width}", 1))
    (tmp_path / "tiny.weights").write_bytes(weights)
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "tiny.cfg"), str(tmp_path / "tiny.weights"))
    x = rng.uniform(0, 1, (1, 3, 64, width)).astype(np.float32)
    net.setInput(x)
    outs = net.forward(net.getUnconnectedOutLayersNames())
    ours = _session(model.SerializeToString()).run(None, {"images": x})[0][0]
    # 64 → 32 → 16 → (size-2 stride-1 pool keeps) 16: the first head is 16 rows high, the second 32
    heads = [(3, 16, width // 4), (3, 32, width // 2)]
    assert ours.shape == (sum(a * h * w for a, h, w in heads), 7)
    for mine, theirs in _opencv_rows(outs, ours, heads, (width, 64)):
        np.testing.assert_allclose(mine[:, :5], theirs[:, :5], atol=2e-4, rtol=1e-4)  # random weights: big exp()


def test_mismatched_weights_are_rejected() -> None:
    weights = _random_weights(TINY_CFG, np.random.default_rng(1))
    with pytest.raises(ValueError, match="shorter"):
        darknet.convert(TINY_CFG, weights[:-400])
    with pytest.raises(ValueError, match="left unused"):
        darknet.convert(TINY_CFG, weights + b"\0" * 400)
