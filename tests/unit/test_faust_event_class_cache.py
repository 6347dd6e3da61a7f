"""gridwatch.compat.install_faust_event_class_cache: Faust's ``App.create_event`` makes the configured Event
class, looked up in the settings once per app (not once for every app: each has its own setting)."""

from __future__ import annotations

from types import SimpleNamespace

import faust
import pytest
from faust.events import Event
from faust.exceptions import AlreadyConfiguredWarning

from gridwatch.compat import install_faust_event_class_cache


class AuditedEvent(Event):
    """A user's own Event class (Faust's ``Event`` setting)."""


def test_events_are_made_of_each_apps_configured_class_looked_up_once():
    install_faust_event_class_cache()
    plain = faust.App("gw-test-event-cache-plain")
    audited = faust.App("gw-test-event-cache-audited", Event=AuditedEvent)
    message = SimpleNamespace(topic="x", partition=0, offset=1)
    a = audited.create_event(b"k", b"v", [], message)
    b = plain.create_event(b"k2", b"v2", [], message)
    assert type(a) is AuditedEvent and (a.key, a.value, a.message) == (b"k", b"v", message)
    assert type(b) is Event and b.app is plain
    assert type(audited.create_event(b"k3", b"v3", [], message)) is AuditedEvent  # the second from the cache


def test_an_app_configured_anew_makes_events_of_its_new_class():
    install_faust_event_class_cache()
    app = faust.App("gw-test-event-cache-anew")
    message = SimpleNamespace(topic="x", partition=0, offset=1)
    assert type(app.create_event(b"k", b"v", [], message)) is Event
    with pytest.warns(AlreadyConfiguredWarning):  # Faust's own word on configuring an app again
        app.config_from_object({"Event": AuditedEvent}, force=True)
    assert type(app.create_event(b"k", b"v", [], message)) is AuditedEvent
