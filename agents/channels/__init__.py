"""Channels: how incident changes and grid events leave the pipeline; plug-ins registered by ``type``
(see base.py).

A new channel is one file here with ``@register("my_type")`` on a :class:`~.base.Channel` (incident
changes: ``deliver()``) or an :class:`~.base.EventChannel` (grid events: ``queue()``), plus an entry
under ``channels:`` in incidents.yaml.
"""
