"""The third-party patches: installed only on the versions they were checked on, and scoped."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from gridwatch import compat


def test_installed_versions_are_the_checked_ones():
    """constraints.txt, CHECKED and the environment agree (./run installs with the constraints)."""
    pins = {}
    for raw in (Path(__file__).resolve().parents[2] / "constraints.txt").read_text(encoding="utf-8").splitlines():
        text = raw.split("#", 1)[0].strip()
        if "==" in text:
            name, _, ver = text.partition("==")
            pins[name.strip().lower()] = ver.strip()
    for dist, versions in compat.CHECKED.items():
        assert pins.get(dist) in versions, f"constraints.txt pins {dist}=={pins.get(dist)}, CHECKED says {versions}"
        try:
            have = version(dist)
        except PackageNotFoundError:
            continue  # optional (plate reading)
        assert have in versions, f"{dist} {have} installed; the patches were checked on {versions}"


def test_a_patch_refuses_an_unchecked_version(monkeypatch, caplog):
    have = version("aiokafka")
    monkeypatch.setitem(compat.CHECKED, "aiokafka", ("0.0.1",))
    monkeypatch.delenv(compat.UNCHECKED_ENV, raising=False)
    with pytest.raises(compat.CompatError) as err:
        compat.require_checked("the Tansu shims", "aiokafka")
    msg = str(err.value)
    assert "the Tansu shims" in msg and "0.0.1" in msg and have in msg and "constraints.txt" in msg
    monkeypatch.setenv(compat.UNCHECKED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="gridwatch.compat"):
        compat.require_checked("the Tansu shims", "aiokafka")
    assert "applied anyway" in caplog.text


def test_a_missing_distribution_is_named():
    with pytest.raises(compat.CompatError, match="no-such-dist is not installed"):
        compat.CHECKED["no-such-dist"] = ("1",)
        try:
            compat.require_checked("x", "no-such-dist")
        finally:
            del compat.CHECKED["no-such-dist"]


def test_plate_sessions_are_limited_without_touching_onnxruntime(monkeypatch):
    plates = pytest.importorskip("gridwatch.models.plates")
    if plates.unavailable_reason():
        pytest.skip(plates.unavailable_reason())
    import onnxruntime as ort

    original = ort.InferenceSession
    built: list[int] = []
    make = compat._PlateOrt.InferenceSession

    def spy(self, *a, **kw):
        session = make(self, *a, **kw)
        built.append(session.get_session_options().intra_op_num_threads)
        return session

    monkeypatch.setattr(compat._PlateOrt, "InferenceSession", spy)
    plates.PlateReader(threads=1)
    assert ort.InferenceSession is original  # nobody else's sessions change
    assert built and set(built) == {1}, built
