"""Option dataclasses from config mappings: one place that rejects unknown keys with a message naming them
and the valid ones (a typo in cameras.yaml should fail loudly, not be ignored)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def check_keys(cls: type, data: Mapping[str, Any], what: str, where: str = "") -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {what} option(s){where}: {sorted(unknown)}; valid: {sorted(names)}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, what: str) -> T:
    """``cls(**data)`` after :func:`check_keys`; ``None`` gives the defaults."""
    data = dict(data or {})
    check_keys(cls, data, what)
    return cls(**data)
