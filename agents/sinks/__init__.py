"""Sink plug-ins: where the pipeline's records are kept (InfluxDB, the system of record, ...).

One file per sink, found by the plug-in registry (base.py); the ``sinks:`` list of gridwatch.yaml says
which ones a worker runs.
"""
