"""The Faust/aiokafka patches refuse versions they were not checked on."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridwatch import patch_versions as pv


def test_installed_versions_are_the_checked_ones() -> None:
    pv.require_checked("any")  # the venv is built with constraints.txt


def test_other_version_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pv.CHECKED, "aiokafka", ("0.0.1",))
    with pytest.raises(pv.UncheckedVersionError, match=r"aiokafka 0\.0\.1 only.*constraints\.txt"):
        pv.require_checked("seek fix")


def test_constraints_file_pins_exactly_the_checked_versions() -> None:
    text = (Path(pv.__file__).resolve().parents[1] / "constraints.txt").read_text()
    pins = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    for dist, versions in pv.CHECKED.items():
        assert pins[dist] in versions
