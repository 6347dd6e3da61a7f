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
                   help="simulated start, epoch seconds (default: now; e.g. an evening to see lamps switch on)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many simulated seconds (0 = run until Ctrl-C)")
    p.add_argument("--rate", type=float, default=0.0, help="cap readings per real second (benchmarks)")
    p.add_argument("--faults-per-hour", type=float, default=6.0, help="random faults injected per simulated hour")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--qos", type=int, default=1, choices=[0, 1])


def run_simulator(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from gridwatch.devices.registry import city_of
    from gridwatch.devices.simulator import Fleet, Publisher

    log = logging.getLogger("gridwatch.simulate")
    city = city_of(settings)
    registry = city.registry
    fleet = Fleet(registry, seed=args.seed, limit=args.devices or None)
    start = args.start or time.time()
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
            rate=args.rate or None, progress=progress)
    return 0
