"""`gridwatch` command line: one sub-command per process of the pipeline.

    gridwatch stack        run the embedded Kafka-protocol broker + Mosquitto (foreground)
    gridwatch bridge       MQTT -> Kafka bridge
    gridwatch worker       Faust worker: telemetry rules and alert fan-out
    gridwatch simulate     drive a simulated city fleet over MQTT
    gridwatch demo         all of the above with a live terminal view
    gridwatch api          Open311 API + operator console (http://127.0.0.1:8080/console)
    gridwatch cameras      capture service: RTSP cameras -> sampled JPEG frames on Kafka (cameras.yaml)
    gridwatch camera serve FILE...   serve video files as looping RTSP streams (demos, tests)
    gridwatch tail TOPIC   print records of a Kafka topic (events, deadletter, readings)
    gridwatch record OUT   record device/gateway MQTT traffic (and cameras) into an MCAP file
    gridwatch replay FILE  replay a recording into an isolated namespace (--compare A B: diff two runs)
    gridwatch city ...     generate or inspect a city (grid map + device table)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

from gridwatch.core import gc_policy
from gridwatch.core.procs import run_async
from gridwatch.core.settings import STACK_FILE, Settings, SettingsError, load_settings
from gridwatch.roles import ROLES, apply_role

log = logging.getLogger("gridwatch")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Faust, mode and aiokafka are chatty at INFO; GRIDWATCH_LIBRARY_LOG=info|debug lets them speak.
    lib_level = getattr(logging, os.environ.get("GRIDWATCH_LIBRARY_LOG", "warning").upper(), logging.WARNING)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(lib_level, logging.getLogger().level))


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML settings file layered over the defaults (gridwatch/config/gridwatch.yaml)")
    p.add_argument("--kafka", metavar="URL", help="Kafka bootstrap, e.g. kafka://10.0.0.5:9092 (default: the embedded stack)")
    p.add_argument("--mqtt", metavar="URL", help="MQTT broker, e.g. mqtt://user:pass@10.0.0.6:1883 (default: the embedded stack)")
    p.add_argument("--prefix", metavar="NAME", help="Kafka topic prefix (namespace), default 'gw'")
    p.add_argument("--city", metavar="DIR", help="city folder (grids.geojson + devices.csv); default the sample city")
    p.add_argument("--store", metavar="URL", help="store database (SQLAlchemy URL, e.g. "
                   "postgresql+psycopg://user@host/gridwatch); default store.url, else embedded SQLite")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, {
        "kafka.url": args.kafka, "mqtt.url": args.mqtt, "kafka.topic_prefix": args.prefix, "city.path": args.city,
        "store.url": getattr(args, "store", None),
    })


# -- sub-commands ---------------------------------------------------------------------------------
def cmd_stack(args: argparse.Namespace) -> int:
    import time

    from gridwatch.stack import EmbeddedStack, StackError, stack_workdir

    try:
        stack = EmbeddedStack(workdir=stack_workdir(args.engine), engine=args.engine, kafka_port=args.kafka_port,
                              mqtt_port=args.mqtt_port, mqtt_settings=load_settings(args.config).mqtt).start()
    except (StackError, SettingsError) as e:
        log.error("%s", e)
        return 2
    stack.write_state(STACK_FILE)
    print(f"embedded stack running ({stack.engine})\n  kafka: {stack.kafka_url}\n  mqtt:  {stack.mqtt_url}\n"
          f"  (recorded in {STACK_FILE}; other gridwatch commands find it there). Ctrl-C stops it.", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and all(p.alive() for p in stack.procs.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        with contextlib.suppress(OSError):
            STACK_FILE.unlink()
        print("embedded stack stopped", flush=True)
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from gridwatch.devices.registry import city_of
    from gridwatch.pipeline.sources.mqtt_bridge import MqttBridge

    settings = settings_from(args)
    if args.client_id:
        settings.bridge.client_id = args.client_id
    city = city_of(settings)
    gc_policy.install(settings.worker.gc_full_every_s)  # the registry lives as long as the bridge: out of GC walks
    log.info("city %s: %d devices, %d grids", city.name, len(city.registry), len(city.gridmap.areas("grid")))
    bridge = MqttBridge(settings, city.registry)
    run_async(bridge.run, settings.bridge.drain_s + 5, "bridge")
    return 0


def prepare_broker(settings: Settings) -> None:
    """Before a worker starts: create the project's topics (partitions, retention) so no agent's source
    topic is auto-created with one partition and no send waits on a missing topic; and, for a broker
    given by URL, find out whether it is Tansu (its work-arounds then switch on)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from gridwatch.compat import broker_is_tansu
    from gridwatch.pipeline.kafka_io import ensure_topics

    async def prepare() -> None:
        await ensure_topics(settings)
        if not settings.kafka.quirks_enabled() and await broker_is_tansu(settings.kafka, settings.kafka_bootstrap()):
            settings.kafka.tansu_quirks = "on"
            log.info("the broker is Tansu: its work-arounds are on (kafka.tansu_quirks)")

    # In a thread: asyncio.run here would leave the main thread without the event loop Faust expects.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, prepare()).result()


def cmd_worker(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from gridwatch.app import create_app

    settings = settings_from(args)
    if args.app_id:
        settings.worker.app_id = args.app_id
    agents = args.agents or None  # None: worker.agents from the settings
    if args.role:
        agents = apply_role(args.role, settings, args.agents)
    if args.cameras:
        settings.vision.cameras = args.cameras
    prepare_broker(settings)
    app = create_app(settings, agents=agents)
    log.info("worker starting: app %s, broker %s, topics %s.*", app.conf.id, settings.kafka_bootstrap(),
             settings.kafka.topic_prefix)
    worker = bounded_worker(Worker, settings.worker.shutdown_s)(app, loglevel=args.log_level, quiet=True,
                                                                 redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def bounded_worker(base: type, limit_s: float) -> type:
    """Faust's Worker whose SIGTERM / SIGINT also arms the shutdown watchdog: Faust's own stop waits on
    the broker (commits, the consumer group), so with Kafka frozen it ignored SIGTERM for minutes. What
    was not committed is redelivered to the next worker; a second signal ends it at once."""
    from gridwatch.core.shutdown import arm_watchdog, hard_exit

    class BoundedWorker(base):  # type: ignore[misc, valid-type]
        _stopping = False

        def _arm(self, name: str) -> None:
            if self._stopping:
                hard_exit("worker", f"second {name}")
            self._stopping = True
            log.info("worker: %s received, stopping (at most %.0fs)", name, limit_s)
            arm_watchdog(limit_s, "worker", name)

        def _on_sigint(self) -> None:
            self._arm("SIGINT")
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            self._arm("SIGTERM")
            super()._on_sigterm()

    return BoundedWorker


def cmd_cameras(args: argparse.Namespace) -> int:
    from gridwatch.pipeline.sources.camera_service import camera_config_path, load_camera_config, run_service

    settings = settings_from(args)
    if args.cameras:
        settings.vision.cameras = args.cameras
    return run_service(settings, load_camera_config(camera_config_path(settings)), args.camera or None)


def cmd_camera(args: argparse.Namespace) -> int:
    from gridwatch.pipeline.sources.rtsp_server import check_available, serve

    reason = check_available()
    if reason:
        log.error("cannot serve RTSP: %s", reason)
        return 2
    names = args.names.split(",") if args.names else None
    serve(args.files, args.port, names=names, host=args.host, fps=args.fps, width=args.width, block=True,
          quiet=args.log_level != "debug")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gridwatch.simulate import run_simulator

    return run_simulator(settings_from(args), args)


def cmd_demo(args: argparse.Namespace) -> int:
    from gridwatch.demo import run_demo

    return run_demo(args)


def cmd_tail(args: argparse.Namespace) -> int:
    from gridwatch.tail import tail

    settings = settings_from(args)
    run_async(lambda stop: tail(settings, args.topic, stop, from_beginning=args.from_beginning, limit=args.limit))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    if args.hash_password:
        import getpass

        from gridwatch.web.auth import hash_password

        pw = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
        if not pw:
            log.error("empty password")
            return 2
        print(hash_password(pw))
        return 0
    from gridwatch.web.server import serve

    settings = settings_from(args)
    gc_policy.install(settings.worker.gc_full_every_s)
    run_async(lambda stop: serve(settings, stop, host=args.host, port=args.port))
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from gridwatch.store.commands import run

    return run(settings_from(args), args)


def cmd_operators(args: argparse.Namespace) -> int:
    from gridwatch.operators import add

    return add(settings_from(args), args)


def cmd_record(args: argparse.Namespace) -> int:
    from gridwatch.recordreplay import run_record

    return run_record(settings_from(args), args)


def cmd_replay(args: argparse.Namespace) -> int:
    from gridwatch.recordreplay import run_replay

    return run_replay(settings_from(args), args)


def cmd_city(args: argparse.Namespace) -> int:
    if args.city_cmd == "generate":
        from gridwatch.devices import citygen

        argv = [args.out, "--devices", str(args.devices), "--seed", str(args.seed)]
        return citygen.main(argv) or 0
    from gridwatch.devices.registry import city_of

    city = city_of(settings_from(args))
    reg, gm = city.registry, city.gridmap
    print(f"{city.name} ({city.code}) from {city.path}")
    for tier in ("city", "district", "street", "community", "grid"):
        print(f"  {tier:<10} {len(gm.areas(tier)):>6}")
    kinds: dict[str, int] = {}
    for d in reg:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    print("  devices    " + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))
    print(f"  gateways   {len(reg.gateways())}   lamp circuits {len(reg.circuits())}")
    return 0


def cmd_mqtt_credentials(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gridwatch.devices.registry import city_of
    from gridwatch.security.mqtt_auth import (
        device_password,
        load_secret,
        service_accounts,
        write_broker_files,
    )

    settings = settings_from(args)
    secret = load_secret()
    if args.show:
        print(device_password(secret, args.show))
        return 0
    reg = city_of(settings).registry
    clients = [d.id for d in reg] + reg.gateways()
    passwd, acl = write_broker_files(Path(args.out), secret, clients, alert_prefix=settings.mqtt.alert_prefix,
                                     stats_prefix=settings.mqtt.stats_prefix)
    print(f"wrote {passwd} ({len(clients)} devices and gateways + {len(service_accounts(secret))} service accounts) "
          f"and {acl}.\nIn mosquitto.conf: allow_anonymous false / password_file {passwd} / acl_file {acl}.\n"
          f"A device's password: gridwatch mqtt-credentials --show DEVICE_ID (same secret in the environment).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridwatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    from gridwatch.stack import add_engine_argument

    p = sub.add_parser("stack", help="run the embedded broker stack (Kafka broker + Mosquitto) in the foreground")
    add_engine_argument(p, durable=True)
    p.add_argument("--kafka-port", type=int, default=0,
                   help="port for Kafka (default: a free one; the kafka engine reuses its last port when free)")
    p.add_argument("--mqtt-port", type=int, default=0, help="port for MQTT (default: a free one)")
    p.add_argument("--config", help="YAML settings file (mqtt.publish_limit*: Mosquitto's per-device publish limit)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("bridge", help="MQTT -> Kafka bridge (at-least-once, dead-letters bad input)")
    common(p)
    p.add_argument("--client-id", help="MQTT client id (persistent session); default from config")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("worker", help="Faust worker running the agents (start more on other machines to scale)",
                       description="The default topology is two workers: `--role telemetry` and `--role incidents` "
                                   "(the incident agent in a process and consumer group of its own; gridwatch/"
                                   "roles.py). Without --role one worker runs every default agent.")
    common(p)
    p.add_argument("--role", choices=tuple(ROLES),
                   help="; ".join(f"{name}: {r.help}" for name, r in ROLES.items())
                   + '. --agents adds to the role ("+vision"); --app-id sets the base the role\'s suffix goes on')
    p.add_argument("--app-id", help="Faust app id / consumer group (default from config)")
    p.add_argument("--agents", help='agents to run: "telemetry,alerts", "+vision" (defaults plus vision), '
                                    '"-incidents" (defaults without), "all" '
                                    "(default: worker.agents, else every agent except the opt-in vision)")
    p.add_argument("--cameras", metavar="FILE", help="camera config for the vision agent (default vision.cameras)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("cameras", help="capture service: cameras (cameras.yaml) -> sampled JPEG frames on Kafka")
    common(p)
    p.add_argument("--cameras", metavar="FILE", help="camera config (default vision.cameras: cameras.yaml)")
    p.add_argument("--camera", action="append", metavar="ID", help="run only this camera (repeatable)")
    p.set_defaults(func=cmd_cameras)

    p = sub.add_parser("camera", help="camera tools: serve video files as RTSP streams")
    csub = p.add_subparsers(dest="camera_cmd", required=True)
    sv = csub.add_parser("serve", help="serve video files as looping RTSP streams (GStreamer RTSP server)")
    sv.add_argument("files", nargs="+", metavar="FILE", help="video files (any format GStreamer plays)")
    sv.add_argument("--port", type=int, default=8554, help="RTSP port (default 8554)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--names", help="comma-separated mount names, one per file (default cam1,cam2,...)")
    sv.add_argument("--fps", type=float, help="re-time the streams to this frame rate")
    sv.add_argument("--width", type=int, help="downscale to this width")
    sv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sv.set_defaults(func=cmd_camera)

    p = sub.add_parser("simulate", help="publish a simulated fleet's telemetry over MQTT")
    common(p)
    from gridwatch.simulate import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="embedded stack + bridge + worker + simulator with a live terminal view")
    common(p)
    from gridwatch.demo import add_arguments as demo_args

    demo_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("api", help="Open311 API, operator console and live stream (web.host / web.port)")
    common(p)
    p.add_argument("--host", help="address to listen on (default web.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default web.port, 8080; 0 = a free one)")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (prompt or stdin) and print its hash for operators.yaml, then exit")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("operators", help="console accounts: `operators add USER --role --scope --file`",
                       description="Create real operator accounts (the shipped ones are refused outside the demo).")
    common(p)
    from gridwatch.operators import add_arguments as operators_args

    operators_args(p)
    p.set_defaults(func=cmd_operators)

    p = sub.add_parser("store", help="the system of record: migrate, rebuild from Kafka, purge, export a month")
    common(p)
    from gridwatch.store.commands import add_arguments as store_args

    store_args(p)
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("tail", help="print records of a Kafka topic as JSON lines")
    common(p)
    p.add_argument("topic", help="topic family: events, deadletter, readings (the prefix is added)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("-n", "--limit", type=int, default=0, help="stop after N records")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("mqtt-credentials", help="write Mosquitto password + ACL files (per-device logins)",
                       description="Per-device MQTT logins derived from a master secret in GRIDWATCH_MQTT_SECRET "
                                   "or GRIDWATCH_MQTT_SECRET_FILE (never stored in the repo).")
    common(p)
    p.add_argument("--out", default="var/mqtt-auth", help="folder for passwd and acl (default var/mqtt-auth)")
    p.add_argument("--show", metavar="ID", help="print the password of one device, gateway or service account")
    p.set_defaults(func=cmd_mqtt_credentials)

    from gridwatch.recordreplay import add_record_arguments, add_replay_arguments

    p = sub.add_parser("record", help="record device/gateway MQTT traffic (and RTSP cameras) into an MCAP file")
    common(p)
    add_record_arguments(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="replay a recording into an isolated namespace, or --compare two runs")
    common(p)
    add_replay_arguments(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("city", help="generate or inspect a city")
    csub = p.add_subparsers(dest="city_cmd", required=True)
    g = csub.add_parser("generate", help="generate a synthetic city folder")
    g.add_argument("out", help="output folder")
    g.add_argument("--devices", type=int, default=3000)
    g.add_argument("--seed", type=int, default=7)
    i = csub.add_parser("info", help="summarise the configured city")
    common(i)
    p.set_defaults(func=cmd_city)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"))
    try:
        return args.func(args) or 0
    except (SettingsError, ConnectionError, FileNotFoundError, ValueError) as e:  # CredentialError is a ValueError
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
