"""Detector plug-ins on real footage and on synthetic model outputs.

Hand check (frames saved as PNG and looked at, with and without the detector's boxes drawn):

* ``dog.jpg`` (Darknet sample, 768×576): a dog (lower left), a bicycle (middle), a pickup truck (top
  right).  Our yolov3-tiny calls the truck both ``car`` 0.64 and ``truck`` 0.54 (two classes, same object).
* ``person.jpg`` (Darknet sample, 640×424): a person, a horse, a dog.
* ``vtest.avi`` frame 200: 7 people — walker far left (95,188), man mid-left (232,228), man in the middle
  (502,183), two by the building top right (688,125) and (712,125), man right (630,315), man far right
  (725,305) — and 2 parked vehicles: a white van (688,72) and a car cut by the right edge (750,72).
  The detector boxes all 7 people at score >= 0.3 plus 2 duplicate boxes (a second, shifted box on the
  man in the middle and the man mid-left: yolov3-tiny's anchors overlap at this size), and both vehicles.
* ``vtest.avi`` frame 600: 6 people — walker left (197,180), man (580,245), man (688,255), man in red by
  the tripod (470,360), man (655,360), woman with blond hair on the lawn (305,505) — same 2 vehicles;
  all found.
* ``market_street_1906.mp4`` frame 0 (grainy 1906 film, 640×360): an automobile on the right
  (550,150), two horse carriages, and more than ten pedestrians, most under 40 px tall and overlapping on
  the left sidewalk; yolov3-tiny finds the automobile and 3 of the pedestrians.

Tolerances derived from that: every hand-marked person and vehicle must be inside a box of its kind
(score >= 0.3), allowing one missed person per frame for score drift across onnxruntime versions; at
most 2 extra person boxes per frame (the duplicates seen above); on the 1906 film at least 3 people
and the automobile, and no person box above the street level (y < 100) or below the frame.  The float
and int8 models at 416×416 and the int8 model at 416×320 (same scale, less padding) meet them; at
320×320 yolov3-tiny found only 4 of the 7 people of frame 200 and missed the 1906 automobile (measured,
not tested: that size is an option for near, large objects only; see MODEL_CARD.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gridwatch.models.detectors import Detection, create_detector, detector_types, parse_detector_config
from gridwatch.models.detectors.onnx_yolo import box_iou, letterbox, nms
from gridwatch.models.labels import VEHICLE_LABELS
from tests.vision.conftest import read_frame

VEHICLES = VEHICLE_LABELS | {"train"}
MIN_SCORE = 0.3


def _inside(p: tuple[float, float], d: Detection, margin: float = 3.0) -> bool:
    x1, y1, x2, y2 = d.box
    return x1 - margin <= p[0] <= x2 + margin and y1 - margin <= p[1] <= y2 + margin


def _found(points, dets, labels) -> list[bool]:
    cands = [d for d in dets if d.label in labels and d.score >= MIN_SCORE]
    return [any(_inside(p, d) for d in cands) for p in points]


VTEST_TRUTH = {
    200: {"people": [(95, 188), (232, 228), (502, 183), (688, 125), (712, 125), (630, 315), (725, 305)],
          "vehicles": [(688, 72), (750, 72)]},
    600: {"people": [(197, 180), (580, 245), (688, 255), (470, 360), (655, 360), (305, 505)],
          "vehicles": [(688, 72), (750, 72)]},
}


@pytest.mark.parametrize("variant", ["detector", "int8_detector", "int8_416x320_detector"])
@pytest.mark.parametrize("index", sorted(VTEST_TRUTH))
def test_people_and_vehicles_on_vtest(request, vtest_path, index, variant) -> None:
    truth = VTEST_TRUTH[index]
    dets = request.getfixturevalue(variant).detect_one(read_frame(vtest_path, index))
    people = _found(truth["people"], dets, {"person"})
    assert sum(people) >= len(people) - 1, (people, dets)
    assert all(_found(truth["vehicles"], dets, VEHICLES)), dets
    n_person_boxes = sum(d.label == "person" and d.score >= MIN_SCORE for d in dets)
    assert n_person_boxes <= len(truth["people"]) + 2, dets


def test_darknet_sample_images(detector, darknet_images) -> None:
    import cv2

    dog = detector.detect_one(cv2.imread(str(darknet_images["dog.jpg"])))
    assert _found([(250, 370)], dog, {"dog"}) == [True], dog
    assert _found([(390, 300)], dog, {"bicycle"}) == [True], dog
    assert _found([(570, 125)], dog, VEHICLES) == [True], dog
    person = detector.detect_one(cv2.imread(str(darknet_images["person.jpg"])))
    assert _found([(232, 240)], person, {"person"}) == [True], person
    assert _found([(500, 235)], person, {"horse"}) == [True], person
    assert _found([(135, 310)], person, {"dog"}) == [True], person
    assert sum(d.score >= 0.5 for d in person) == 3, person


@pytest.mark.parametrize("variant", ["detector", "int8_416x320_detector"])
def test_market_street_1906(request, variant, market_street_path) -> None:
    dets = request.getfixturevalue(variant).detect_one(read_frame(market_street_path, 0))
    assert _found([(550, 150)], dets, VEHICLES) == [True], dets
    people = [d for d in dets if d.label == "person" and d.score >= MIN_SCORE]
    assert len(people) >= 3, dets
    assert all(d.box[1] >= 100 and d.box[3] <= 360 for d in people), people


def test_int8_variant_agrees_with_float_model(detector, int8_detector, vtest_path, market_street_path,
                                              darknet_images) -> None:
    """The int8 model is calibrated on Darknet's 7 sample pictures only; on frames it never saw it must
    find (same label, IoU > 0.5) at least 85 % of what the float model finds at score >= 0.3 (measured:
    69 of 75 on these 13 frames with the float stem of quantisation version 3, 71 of 75 before) and add no
    more than 15 % boxes of its own."""
    import cv2

    frames = [read_frame(vtest_path, i) for i in (100, 200, 300, 500, 600, 700)]
    frames += [read_frame(market_street_path, i) for i in (0, 300, 600, 900, 1500)]
    frames += [cv2.imread(str(p)) for p in darknet_images.values()]
    ref_n = matched = q_n = 0
    for f in frames:
        ref = [d for d in detector.detect_one(f) if d.score >= MIN_SCORE]
        q = [d for d in int8_detector.detect_one(f) if d.score >= MIN_SCORE]
        ref_n, q_n = ref_n + len(ref), q_n + len(q)
        for r in ref:
            matched += any(d.label == r.label and box_iou(np.array([r.box]), np.array([d.box]))[0, 0] > 0.5 for d in q)
    assert ref_n > 50
    assert matched >= 0.85 * ref_n and q_n <= 1.15 * ref_n, (matched, ref_n, q_n)


def test_batch_equals_single_frames(detector, vtest_path, market_street_path) -> None:
    frames = [read_frame(vtest_path, 200), read_frame(market_street_path, 0), read_frame(vtest_path, 600)]
    batched = detector.detect(frames)
    single = [detector.detect_one(f) for f in frames]
    assert len(batched) == 3
    for b, s in zip(batched, single, strict=True):
        assert [d.label for d in b] == [d.label for d in s]
        np.testing.assert_allclose([d.box for d in b], [d.box for d in s], atol=0.05)
        np.testing.assert_allclose([d.score for d in b], [d.score for d in s], atol=1e-4)


def test_generic_plugin_reads_our_model_from_metadata(detector, model_path, vtest_path) -> None:
    generic = create_detector({"type": "onnx_yolo", "model_path": str(model_path), "threads": 1, "pad_value": 127,
                               "suppress_contained": 0.85})
    assert generic.output_format == "yolov5" and generic.labels == detector.labels
    assert (generic.input_width, generic.input_height) == (416, 416)
    frame = read_frame(vtest_path, 600)
    a, b = generic.detect_one(frame), detector.detect_one(frame)
    assert [d.label for d in a] == [d.label for d in b]
    np.testing.assert_allclose([d.box for d in a], [d.box for d in b], atol=0.05)
    only = create_detector({"type": "onnx_yolo", "model_path": str(model_path), "threads": 1,
                            "class_filter": ["car", "truck"]})
    assert {d.label for d in only.detect_one(frame)} <= {"car", "truck"}


# --------------------------------------------------------------------------- synthetic model outputs


def _const_model(tmp_path, output: np.ndarray, names: list[str] | None = None, size: int = 64) -> str:
    """An ONNX model that ignores its input and returns ``output`` (to test post-processing alone)."""
    const = helper.make_node("Constant", [], ["out"], value=onnx.numpy_helper.from_array(output.astype(np.float32)))
    graph = helper.make_graph(
        [const], "const",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(output.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    if names:
        helper.set_model_props(model, {"names": str(dict(enumerate(names)))})  # Ultralytics-style metadata
    path = tmp_path / "const.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_yolov8_layout_letterbox_and_nms(tmp_path) -> None:
    # [1, 4 + 2 classes, 3 boxes]: two overlapping class-1 boxes (NMS keeps the better), one class-0 box
    boxes = np.array([[32, 32, 16, 8, 0.1, 0.9],
                      [33, 32, 16, 8, 0.1, 0.7],
                      [10, 50, 6, 6, 0.8, 0.05]], dtype=np.float32)
    path = _const_model(tmp_path, boxes.T[None], names=["walker", "cart"])
    det = create_detector({"type": "onnx_yolo", "model_path": path, "threads": 1, "output_format": "auto"})
    assert det.output_format == "yolov8" and det.labels == ["walker", "cart"]
    frame = np.zeros((64, 128, 3), np.uint8)  # 128×64 → scale 0.5, 16 px pad top and bottom
    dets = sorted(det.detect_one(frame), key=lambda d: -d.score)
    assert [d.label for d in dets] == ["cart", "walker"]
    np.testing.assert_allclose(dets[0].box, (48, 24, 80, 40), atol=1e-3)  # (24,28,40,36) in input space
    assert dets[0].score == pytest.approx(0.9)
    stretch = create_detector({"type": "onnx_yolo", "model_path": path, "threads": 1, "resize": "stretch"})
    np.testing.assert_allclose(sorted(stretch.detect_one(frame), key=lambda d: -d.score)[0].box,
                               (48, 28, 80, 36), atol=1e-3)  # x halved, y as is


def test_end2end_layout_and_normalised_boxes(tmp_path) -> None:
    out = np.array([[[0.25, 0.25, 0.5, 0.5, 0.8, 2], [0.0, 0.0, 0.1, 0.1, 0.1, 0]]], dtype=np.float32)
    path = _const_model(tmp_path, out)
    det = create_detector({"type": "onnx_yolo", "model_path": path, "threads": 1, "output_format": "end2end",
                           "normalized_boxes": True, "labels": ["a", "b", "c"]})
    (d,) = det.detect_one(np.zeros((64, 64, 3), np.uint8))
    assert d.label == "c" and d.box == pytest.approx((16, 16, 32, 32))


def test_registry_and_config_validation(model_path) -> None:
    assert {"onnx_yolo", "yolo_darknet_onnx"} <= set(detector_types())
    cfg = parse_detector_config({"threads": 1})
    assert cfg.type == "yolo_darknet_onnx" and cfg.input_width == 416
    assert dataclasses.asdict(cfg)["suppress_contained"] == 0.85
    with pytest.raises(ValueError, match="unknown detector type"):
        parse_detector_config({"type": "tflite"})
    with pytest.raises(ValueError, match="unknown detector option"):
        parse_detector_config({"type": "onnx_yolo", "model": "x.onnx"})
    with pytest.raises(ValueError, match="output_format"):
        parse_detector_config({"type": "onnx_yolo", "output_format": "yolov4"})


def test_nms_letterbox_iou_units() -> None:
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 8, 8]], dtype=np.float32)
    s = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    assert nms(b, s, 0.5).tolist() == [0, 2, 3]
    assert nms(b, s, 0.5, contain_threshold=0.9).tolist() == [0, 2]  # box 3 lies inside box 0
    assert nms(b, s, 0.5, class_ids=np.array([0, 1, 0, 0])).tolist() == [0, 1, 2, 3]
    assert box_iou(b[:1], b[1:2])[0, 0] == pytest.approx(81 / 119)
    img, info = letterbox(np.zeros((100, 200, 3), np.uint8), 64, 64)
    assert img.shape == (64, 64, 3) and (info.pad_x, info.pad_y) == (0.0, 16.0)
    np.testing.assert_allclose(info.to_source(np.array([[0, 16, 64, 48]], np.float32)), [[0, 0, 200, 100]], atol=1)
