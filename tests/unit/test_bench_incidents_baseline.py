"""The incident benchmark's in-process baseline: its second run, in a fresh process, fuses what the first fuses."""

from __future__ import annotations

from gridwatch.bench.incidents import feed_records, fusion_inputs, in_process, in_process_fresh, pooled
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
