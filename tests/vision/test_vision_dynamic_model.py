"""The dynamic-input yolov3-tiny (``yolov3-tiny-dyn``): one session for any multiple of 32, so a frame is
padded only to the next multiple of 32 and crops around motion run at the frame's scale.

Real footage, real model.  vtest.avi is 768×576: at the 416 reference size its scale is 13/24, the picture
is 416×312 and the dynamic detector runs it as 416×320 with 4 px of padding above and below — exactly
the fixed 416×320 model's letterbox, so the two must agree to float rounding.  The 1906 film (640×360)
runs as 416×256 instead of 416×416."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from gridwatch.models import build as model_build
from gridwatch.models.detectors import DetectionApi, create_detector
from gridwatch.models.detectors.onnx_yolo import box_iou, letterbox, pad_to_stride
from gridwatch.models.detectors.sharding import ShardedDetector
from tests.vision.conftest import read_frame

MIN_SCORE = 0.3


def _session(path: Path, int8: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(model_build.INT8_DISABLED_OPTIMIZERS) if int8 else None)


def _blob(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    boxed, _ = letterbox(frame, w, h, pad_value=127)
    return cv2.dnn.blobFromImage(boxed, 1 / 255.0, (w, h), swapRB=True)


def _people(dets) -> list:
    return [d for d in dets if d.label == "person" and d.score >= MIN_SCORE]


@pytest.fixture(scope="module")
def dyn_path(model_path: Path) -> Path:
    return model_build.build(model_path.parent, size="dynamic", int8=False)


@pytest.fixture(scope="module")
def dyn_detector(dyn_path: Path) -> Iterator[DetectionApi]:
    det = create_detector({"type": "yolo_darknet_onnx", "dynamic": True, "threads": 1})
    yield det
    det.close()


def test_dynamic_build_files_and_symbolic_input(dyn_path: Path) -> None:
    cache = dyn_path.parent
    assert dyn_path.name == "yolov3-tiny-dyn.onnx" and model_build.is_built(cache, size="dynamic")
    assert model_build.model_path(cache, "int8", "dynamic").name == "yolov3-tiny-dyn.int8.onnx"
    manifest = json.loads(model_build.manifest_path(cache, "dynamic").read_text())
    assert manifest["dynamic"] is True and manifest["input"]["shape"] == ["batch", 3, "height", "width"]
    assert model_build.parse_size("dynamic") == model_build.DYNAMIC and model_build.size_name("dynamic") == "dyn"
    assert model_build.DYNAMIC in model_build.DEFAULT_BUILD  # the set-up step builds it
    with pytest.raises(ValueError, match="no fixed input size"):
        model_build.check_size("dynamic")
    assert _session(dyn_path).get_inputs()[0].shape == ["batch", 3, "height", "width"]


@pytest.mark.parametrize("size", [(416, 416), (416, 320)])
def test_dynamic_fp32_equals_fixed_fp32(model_path: Path, dyn_path: Path, vtest_path, size) -> None:
    """Same graph but for the declared input: the shape-agnostic YOLO heads (grid from Shape at run time)
    give the fixed model's numbers, row for row."""
    fixed = _session(model_build.build(model_path.parent, size=size, int8=False))
    dyn = _session(dyn_path)
    blob = np.concatenate([_blob(read_frame(vtest_path, i), *size) for i in (200, 600)])
    a = fixed.run(None, {"images": blob})[0]
    b = dyn.run(None, {"images": blob})[0]
    assert a.shape == b.shape == (2, 3 * (size[0] * size[1] // 1024 + size[0] * size[1] // 256), 85)
    np.testing.assert_allclose(b, a, atol=1e-3, rtol=1e-5)


def test_dynamic_int8_equals_fixed_int8_at_416(model_path: Path, vtest_path) -> None:
    """Calibrated on the same pictures at 416×416: the same quantisation as the fixed int8 model."""
    if not model_build.calibration_images():
        pytest.skip("int8 variant needs the Debian package darknet (calibration pictures)")
    cache = model_path.parent
    fixed = _session(model_build.build(cache, variant="int8"), int8=True)
    dyn = _session(model_build.build(cache, variant="int8", size="dynamic"), int8=True)
    blob = _blob(read_frame(vtest_path, 200), 416, 416)
    np.testing.assert_allclose(dyn.run(None, {"images": blob})[0], fixed.run(None, {"images": blob})[0], atol=1e-3)


def test_dynamic_detector_finds_the_fixed_detectors_people(detector, dyn_detector, vtest_path) -> None:
    """Frame 200 at the 416 detector's scale, padded to 416×320 instead of 416×416: the same people."""
    frame = read_frame(vtest_path, 200)
    assert dyn_detector.dynamic_input and not detector.dynamic_input
    assert dyn_detector.input_scale(768, 576) == pytest.approx(416 / 768)
    ref, got = _people(detector.detect_one(frame)), _people(dyn_detector.detect_one(frame))
    iou = box_iou(np.array([d.box for d in ref]), np.array([d.box for d in got]))
    assert (iou.max(axis=1) > 0.5).sum() >= len(ref) - 1, (ref, got)
    assert len(got) <= len(ref) + 1, (ref, got)


def test_mixed_shapes_batch_in_input_order(dyn_detector, vtest_path, market_street_path) -> None:
    """A 4:3 and a 16:9 frame in one batch run as two session calls (416×320 and 416×256); results come back
    in input order and equal the single-frame results."""
    v200, m0, v600 = read_frame(vtest_path, 200), read_frame(market_street_path, 0), read_frame(vtest_path, 600)
    assert pad_to_stride(m0, dyn_detector.input_scale(640, 360), 32)[0].shape == (256, 416, 3)
    batched = dyn_detector.detect([v200, m0, v600])
    for b, f in zip(batched, (v200, m0, v600), strict=True):
        s = dyn_detector.detect_one(f)
        assert [d.label for d in b] == [d.label for d in s]
        np.testing.assert_allclose([d.box for d in b], [d.box for d in s], atol=0.05)


# The crop's origin (414, 59) is 7 and 1 grid cells (32 px / scale 13/24 = 59.08 px) from the frame's corner;
# its 354 px width becomes 192 network px (no padding) and its 517 px height 280 px, padded to 288 with 4 px on
# top, the same 4 px as the full frame's 312 → 320: the crop falls on the frame's grid.  Off-grid crops
# shift the picture against yolov3-tiny's 32-px cells and boxes move more (IoU 0.4-0.9 measured).
CROP = (414, 59, 768, 576)


@pytest.mark.parametrize("index", [200, 600])
def test_detect_scaled_crop_matches_full_frame(dyn_detector, vtest_path, index) -> None:
    frame = read_frame(vtest_path, index)
    scale = dyn_detector.input_scale(frame.shape[1], frame.shape[0])
    x0, y0, x1, y1 = CROP
    full = [d for d in _people(dyn_detector.detect_one(frame)) if d.score >= 0.5
            and d.box[0] >= x0 and d.box[1] >= y0 and d.box[2] <= x1 and d.box[3] <= y1]
    (crop_dets,) = dyn_detector.detect_scaled([frame[y0:y1, x0:x1]], scale)
    shifted = np.array([[d.box[0] + x0, d.box[1] + y0, d.box[2] + x0, d.box[3] + y0] for d in _people(crop_dets)])
    assert len(full) >= 3 and len(shifted)
    iou = box_iou(np.array([d.box for d in full]), shifted).max(axis=1)
    assert (iou > 0.7).all(), (iou, full, shifted)


def test_detect_scaled_sharded_and_fixed_model_refused(detector, dyn_detector, vtest_path) -> None:
    frame = read_frame(vtest_path, 600)
    scale = dyn_detector.input_scale(768, 576)
    crops = [frame[59:576, 414:768], frame[0:300, 0:400], frame[100:400, 200:500]]
    sharded = ShardedDetector(dyn_detector, 2)
    try:
        assert sharded.dynamic_input and sharded.input_scale(768, 576) == scale
        a, b = sharded.detect_scaled(crops, scale), dyn_detector.detect_scaled(crops, scale)
        assert [[d.box for d in r] for r in a] == [[d.box for d in r] for r in b]
    finally:
        sharded._pool.shutdown(wait=True)  # not close(): the inner detector is the module's fixture
    with pytest.raises(ValueError, match="dynamic input size"):
        detector.detect_scaled(crops, scale)
