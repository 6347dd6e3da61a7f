"""Fixtures for the vision tests: the built model, one detector, real footage (skipped with the reason
when the Debian packages that ship it are missing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from gridwatch.models import footage
from gridwatch.models.build import build, calibration_images
from gridwatch.models.detectors import DetectionApi, create_detector

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "vision"
# the detector of the shipped cameras.yaml: int8, any input size (motion regions), batches over 2 shards
SHIPPED_DETECTOR = {"type": "yolo_darknet_onnx", "variant": "int8", "dynamic": True, "threads": 1, "batch_workers": 2}


@pytest.fixture(scope="session")
def model_path() -> Path:
    return build(quiet=True)  # no-op when the set-up step built it


@pytest.fixture(scope="session")
def detector(model_path: Path) -> Iterator[DetectionApi]:
    det = create_detector({"type": "yolo_darknet_onnx", "model_path": str(model_path), "threads": 2})
    yield det
    det.close()


@pytest.fixture(scope="session")
def int8_detector(model_path: Path) -> Iterator[DetectionApi]:
    if not calibration_images():
        pytest.skip("int8 variant needs the Debian package darknet (calibration pictures)")
    det = create_detector({"type": "yolo_darknet_onnx", "variant": "int8", "threads": 2})
    yield det
    det.close()


@pytest.fixture(scope="session")
def int8_416x320_detector(model_path: Path) -> Iterator[DetectionApi]:
    """The int8 model at a 416×320 input: 4:3 and 16:9 frames at the 416×416 model's scale."""
    if not calibration_images():
        pytest.skip("int8 variant needs the Debian package darknet (calibration pictures)")
    det = create_detector({"type": "yolo_darknet_onnx", "variant": "int8", "threads": 2, "input_width": 416,
                           "input_height": 320})
    yield det
    det.close()


def _need(fn, *args) -> Path:
    try:
        return fn(*args)
    except footage.FootageUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    return _need(footage.vtest_avi)


@pytest.fixture(scope="session")
def market_street_path() -> Path:
    return _need(footage.market_street_mp4)


@pytest.fixture(scope="session")
def darknet_images() -> dict[str, Path]:
    return {n: _need(footage.darknet_image, n) for n in ("dog.jpg", "person.jpg")}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def read_frame(path: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {path}"
    return frame
