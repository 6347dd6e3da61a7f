"""Alert channels for incident changes: plug-ins registered by ``type`` (see base.py).

A new channel is one file here with ``@register("my_type")`` and a ``deliver()`` method, plus an
entry under ``channels:`` in incidents.yaml.
"""
