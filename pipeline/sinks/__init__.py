"""Sinks: where pipeline records go for history and dashboards (InfluxDB 2)."""
