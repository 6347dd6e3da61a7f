"""The soak in its short CI form (the full one is `python -m gridwatch.bench soak`)."""

from __future__ import annotations

from gridwatch.bench.soak import run


def test_short_soak_loses_nothing_and_lag_stays_bounded():
    res = run(None, seconds=40, rate=1000, sample_every=5)
    assert res["probes_expected"] >= 30
    assert res["lost"] == 0, res
    # the worker keeps up: what is not yet committed stays within a few seconds of input
    assert res["lag_records"]["max"] < 5 * 1000, res["samples"]
    print(f"short soak: {res['probes_alerted']} probes alerted, latency {res['latency_ms']}, "
          f"worker RSS {res['worker_rss_mb']}, lag {res['lag_records']}")
