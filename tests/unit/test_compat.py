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


def test_a_rebalance_stops_waiting_only_for_records_whose_every_open_count_a_clear_dropped():
    """Three grid events read by two agents, A and B, when a revoke clears the agents' buffers."""
    from types import SimpleNamespace

    from faust.types.tuples import Message
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    compat.install_faust_rebalance_wait_fix()
    flow = FlowControlEvent()
    buffer_a, buffer_b = (FlowControlQueue(flow_control=flow, clear_on_resume=True)
                              for _ in range(2))
    done_by_a, held_by_a, untouched = (Message("events", 3, off, 0.0, 0, None, None, b"{}", None)
                                       for off in (90, 91, 92))
    for m in (done_by_a, held_by_a, untouched):
        m.incref(2)  # one count per agent, as Faust's conductor does
        buffer_b.put_nowait(SimpleNamespace(message=m))
    buffer_a.put_nowait(SimpleNamespace(message=untouched))
    done_by_a.decref()  # A finished it; B never took it from its buffer
    # held_by_a: A is still working on it

    flow.clear()  # the revoke (patched: counts what it drops)

    left = compat.left_to_next_owner([done_by_a, held_by_a, untouched], compat._dropped)
    assert left == {done_by_a, untouched}  # held_by_a: A may still ack it, so the rebalance waits for it
    held_by_a.decref()  # A acks
    assert held_by_a in compat.left_to_next_owner([held_by_a], compat._dropped)
    assert not any(m.acked for m in (done_by_a, held_by_a, untouched))  # none counts as done: not committed


def test_the_idempotent_producer_patch_turns_idempotence_on_for_the_workers_producer(monkeypatch):
    import faust
    from faust.transport.drivers.aiokafka import Producer

    # process-wide patch: undone after this test, so no other in-process app gets it
    monkeypatch.setattr(Producer, "_settings_extra", Producer._settings_extra)
    monkeypatch.setattr(compat, "_installed", set(compat._installed) - {"idempotent_producer"})
    app = faust.App("gw-test-idempotent", broker="kafka://127.0.0.1:1")
    assert app.producer._settings_extra().get("enable_idempotence") is not True  # Faust's own default
    compat.install_faust_idempotent_producer()
    compat.install_faust_idempotent_producer()  # idempotent itself
    assert app.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}
