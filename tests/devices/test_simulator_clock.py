"""The simulator's clock stays behind the wall clock unless asked (the bridge rejects readings from the
future as bad_ts: on main `simulate --speed 60` started at now and was 600 s ahead within 10 s)."""

from __future__ import annotations

from gridwatch.devices.simulator import DEFAULT_SPAN_S, behind_now_start, sim_clock

NOW = 1_764_000_000.0


def test_main_start_ran_ahead_within_seconds():
    # the premise: started at now, a 60x clock is past the bridge's 600 s skew limit after 11 s
    assert sim_clock(NOW, 60, 11, NOW + 11, None) - (NOW + 11) > 600


def test_a_5_minute_run_at_60x_stays_behind_now_even_without_the_clamp():
    start = behind_now_start(NOW, 60, None)
    for elapsed in range(0, 301):
        wall = NOW + elapsed
        assert sim_clock(start, 60, elapsed, wall, None) <= wall  # the start alone keeps it behind
        assert sim_clock(start, 60, elapsed, wall, 0.0) <= wall


def test_a_run_with_a_duration_ends_at_now_and_the_clamp_holds_after():
    for speed in (2, 30, 60, 600):
        for duration in (600.0, 3600.0, None):
            start = behind_now_start(NOW, speed, duration)
            span = duration or DEFAULT_SPAN_S
            wall_s = span / speed
            assert abs(sim_clock(start, speed, wall_s, NOW + wall_s, None) - (NOW + wall_s)) < 1e-3
            for elapsed in (wall_s * 2, wall_s * 10, 86400.0):  # past the planned run: real time, never ahead
                assert sim_clock(start, speed, elapsed, NOW + elapsed, 0.0) <= NOW + elapsed


def test_real_time_starts_now_and_allow_future_is_not_clamped():
    assert behind_now_start(NOW, 1, None) == NOW
    assert sim_clock(NOW, 60, 100, NOW + 100, None) == NOW + 6000  # --allow-future: as asked
