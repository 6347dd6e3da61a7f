"""Topic family ``reports``: resident reports (Open311 GeoReport v2 requests, grid workers' chat records).

Keyed by grid code in Kafka, like grid events, so fusion sees a grid's events and reports in one
partition. The id is derived from the content (service, place, time, text), so a client retrying a POST
or a replay produces the same report, not a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .codec import SchemaError, dumps, loads

# 2: ``source`` "hotline" with ``external_id`` (the 12345 work-order id). Version 1 records still read.
VERSION = 2
READABLE_VERSIONS = (1, 2)


def hotline_report_id(order_id: str) -> str:
    """The report id of a 12345 hotline work order: from the order id alone, so the hotline system
    re-sending an order (with or without edits) files it once."""
    return "h" + hashlib.sha1(f"hotline|{order_id}".encode()).hexdigest()[:15]


def report_id(service_code: str, lat: float, lon: float, requested_ms: int, description: str) -> str:
    h = hashlib.sha1(f"{service_code}|{lat:.6f}|{lon:.6f}|{requested_ms}|{description}".encode()).hexdigest()
    return "r" + h[:15]


@dataclass(slots=True)
class ResidentReport:
    service_request_id: str
    service_code: str  # Open311 service (category), e.g. "manhole_cover", "streetlight_out"
    description: str
    lat: float
    lon: float
    requested_ms: int  # event time: when the resident reported it
    grid_code: str  # located with the grid map ("" when outside every grid)
    address: str = ""
    media_url: str = ""
    source: str = "open311"  # open311 | chat | hotline
    contact: dict[str, str] = field(default_factory=dict)  # first_name, last_name, email, phone, device_id, account_id
    device_id: str = ""  # a city part the report names (e.g. a manhole cover code), when known
    external_id: str = ""  # hotline: the 12345 work-order id (the report id is derived from it)
    v: int = VERSION

    def encode(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> ResidentReport:
        d: Any = loads(raw)
        if not isinstance(d, dict) or d.get("v") not in READABLE_VERSIONS:
            raise SchemaError("resident report: unsupported or missing schema version")
        try:
            return cls(**{**d, "v": VERSION})
        except TypeError as e:
            raise SchemaError(f"resident report: {e}") from None
