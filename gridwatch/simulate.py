"""`gridwatch simulate`: CLI glue around devices/simulator.py (fleet model + MQTT publisher)."""

from __future__ import annotations

import argparse
import time

from gridwatch.core.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=0,
                   help="simulate only the first N devices of the city (default: all of them)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated time runs this many times real time")
    p.add_argument("--start", type=float, default=0.0,
                   help="simulated start, epoch seconds (default: now at --speed 1; faster, far enough in the past "
                        "that the clock reaches now only at the end of --duration, or after 6 simulated hours)")
    p.add_argument("--allow-future", action="store_true",
                   help="let the simulated clock run past the wall clock (the bridge then needs a larger "
                        "bridge.max_future_skew_s, or it dead-letters the readings as bad_ts); without it the "
                        "clock goes on at real time once it reaches now")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many simulated seconds (0 = run until Ctrl-C)")
    p.add_argument("--rate", type=float, default=0.0, help="cap readings per real second (benchmarks)")
    p.add_argument("--faults-per-hour", type=float, default=6.0, help="random faults injected per simulated hour")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--qos", type=int, default=1, choices=[0, 1])


def run_simulator(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from gridwatch.devices.registry import city_of
    from gridwatch.devices.simulator import Fleet, Publisher, behind_now_start

    log = logging.getLogger("gridwatch.simulate")
    city = city_of(settings)
    registry = city.registry
    fleet = Fleet(registry, seed=args.seed, limit=args.devices or None)
    start = args.start or behind_now_start(time.time(), args.speed, args.duration or None)
    if not args.start and start < time.time() - 1:
        log.info("simulated clock starts %s (%.1f h ago) so that at %gx it reaches now only at the end of the run",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(start)), (time.time() - start) / 3600, args.speed)
    if args.faults_per_hour:
        fleet.random_faults(args.faults_per_hour, start_ts=start, horizon_s=args.duration or 86400)
    host, port, user, password = settings.mqtt_endpoint()

    def progress(stats: dict) -> None:
        log.info("sim time %s | %s readings, %s messages, %.0f readings/s, %s faults active",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(stats.get("sim_ts", start))),
                 stats.get("readings"), stats.get("messages"), stats.get("readings_per_s", 0),
                 stats.get("faults_active"))

    pub = Publisher(fleet, qos=args.qos, username=user, password=password,
                    stats_topic=f"{settings.mqtt.stats_prefix}/simulator")
    pub.run(host, port, start_ts=start, speed=args.speed, duration_s=args.duration or None,
            rate=args.rate or None, progress=progress, max_ahead_s=None if args.allow_future else 0.0)
    return 0
