"""The incident benchmark's in-process baseline: its second run, in a fresh process, fuses what the first fuses; and
the fusion's CPU inside the worker, read from the worker's figures lines."""

from __future__ import annotations

from types import SimpleNamespace

from gridwatch.agents.worker_stats import figures_line
from gridwatch.bench.incidents import (
    feed_records,
    fusion_inputs,
    in_process,
    in_process_fresh,
    logged_total,
    pooled,
)
from gridwatch.devices.registry import load_city


def test_the_fresh_process_run_makes_the_same_changes_and_pooling_sums_the_runs() -> None:
    city = load_city()
    inputs, ends = fusion_inputs(city, 1)
    here = in_process(city, feed_records([*inputs, *ends]))
    fresh = in_process_fresh(1)
    assert here["inputs"] > 1000 and here["changes"] > here["inputs"] // 2  # the premise: a real workload was fused
    for key in ("inputs", "control_records", "changes", "changes_by_kind", "incidents_in_memory"):
        assert fresh[key] == here[key], key
    both = pooled(here, fresh)
    assert both["runs"] == 2 and both["inputs_per_cpu_s_each"] == [here["inputs_per_cpu_s"], fresh["inputs_per_cpu_s"]]
    cpu = here["inputs"] / here["inputs_per_cpu_s"] + fresh["inputs"] / fresh["inputs_per_cpu_s"]
    assert both["inputs_per_cpu_s"] == round(2 * here["inputs"] / cpu)
    assert min(here["inputs_per_cpu_s"], fresh["inputs_per_cpu_s"]) <= both["inputs_per_cpu_s"] * 1.01
    assert both["inputs_per_cpu_s"] <= max(here["inputs_per_cpu_s"], fresh["inputs_per_cpu_s"]) * 1.01


def test_the_fusion_cpu_is_read_from_the_last_figures_line_the_worker_logged() -> None:
    """bench incidents reads the incident worker's own fusion CPU from its log, in the form worker_stats writes."""
    lines = [figures_line({}, {"incident_fusion_cpu_us": 1_234, "incident_inputs": 9}, 1.0),
             figures_line({"incident_fusion_cpu_us": 1_234}, {"incident_fusion_cpu_us": 2_345_678}, 0.5),
             figures_line({"incident_inputs": 9}, {"incident_inputs": 12}, 0.5)]  # a later line without it
    log = SimpleNamespace(log=lambda: "\n".join(str(x) for x in lines))
    assert logged_total(log, "incident_fusion_cpu_us") == 2_345_678
    assert logged_total(log, "incident_inputs") == 12
    assert logged_total(log, "fusion_cpu_us") == 0  # a counter's name whole, not the tail of another's
    assert logged_total(SimpleNamespace(log=lambda: ""), "incident_fusion_cpu_us") == 0  # before it first moved
