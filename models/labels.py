"""Class lists shared by the detector plug-ins and the scene rules."""

from __future__ import annotations

from pathlib import Path

# The 80 COCO classes in the order every YOLO export uses, with today's common spelling
# (Ultralytics / torchvision).  Darknet's ``coco.names`` spells six of them differently; see DARKNET_ALIASES.
COCO80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

DARKNET_ALIASES: dict[str, str] = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}

# Labels the scene rules treat as vehicles / people by default.
VEHICLE_LABELS: frozenset[str] = frozenset({"car", "truck", "bus", "motorcycle"})
PERSON_LABELS: frozenset[str] = frozenset({"person"})


def canonical(name: str) -> str:
    return DARKNET_ALIASES.get(name.strip(), name.strip())


def load_labels(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Resolve a class-list spec: ``None``/``"coco80"`` → COCO80, a list → itself, a path → one name a line."""
    if spec is None or spec == "coco80":
        return list(COCO80)
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    path = Path(spec)
    return [canonical(line) for line in path.read_text().splitlines() if line.strip()]
