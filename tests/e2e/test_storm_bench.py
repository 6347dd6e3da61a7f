"""The storm benchmark at a tiny scale (the full one is `python -m gridwatch.bench storm`): every failing
manhole, every dark circuit and every resident report reaches the console's live stream, the reports
merged into the sensors' incidents, on the real pipeline and api. Counts only, no timings."""

from __future__ import annotations

from gridwatch.bench.storm import run


def test_tiny_storm_reaches_the_console_stream_whole(stack):
    res = run(None, manholes=20, circuits=2, reports=10, timeout=180, stack=stack)
    assert (res["manholes"], res["circuits"], res["reports"]) == (20, 2, 10)
    console = res["console"]
    # every source is in an incident (run() raises otherwise); 20 covers and 2 circuits make at most 22
    # incidents (covers in one grid share one), each report joined the incident of its spot's sensor event
    assert 1 <= console["incidents"] <= 22
    assert console["reports_merged_with_sensor_events"] == 10
    assert console["incident_lag_ms"]["n"] == console["incidents"]
    assert res["baseline_mqtt_alerts"]["alerts"] == 22
