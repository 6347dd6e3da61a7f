"""``gridwatch store``: migrate, rebuild from Kafka, recount, purge past retention, export a month."""

from __future__ import annotations

import argparse
import asyncio
import logging

from gridwatch.core.settings import Settings

log = logging.getLogger("gridwatch.store")
FAMILIES = ("incidents", "reports", "actions", "events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_cmd", required=True, metavar="ACTION")
    sub.add_parser("migrate", help="create or upgrade the schema (Alembic; also done at every start)")
    sub.add_parser("rebuild", help="re-read every record Kafka still holds into the store (idempotent; the "
                   "per-area counters follow every write)")
    sub.add_parser("recount", help="recompute the per-area monthly counters from the stored incidents (a repair)")
    sub.add_parser("purge", help="delete case files older than store.retention_years (closed ones)")
    e = sub.add_parser("export", help="a month's governance index ranking and case list as CSV and XLSX")
    e.add_argument("--month", required=True, help="YYYY-MM (city time)")
    e.add_argument("--scope", default="", help="area code (default: the city)")
    e.add_argument("--out", default=".", help="folder for the files (default: here)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from gridwatch.devices.registry import city_of

    from .db import open_store

    city = city_of(settings)
    store = open_store(settings, city.timezone)
    try:
        if args.store_cmd == "migrate":
            log.info("store schema is current: %s", store.engine.url.render_as_string(hide_password=True))
        elif args.store_cmd == "rebuild":
            from .feed import rebuild

            n = asyncio.run(rebuild(store, settings.kafka_bootstrap(), {f: settings.topic(f) for f in FAMILIES}))
            log.info("store rebuilt: %d records written (upserts; existing rows kept)", n)
        elif args.store_cmd == "recount":
            from .db import recount

            with store.engine.begin() as conn:
                n = recount(conn, store.tz)
            log.info("per-area counters recomputed from %d incidents", n)
        elif args.store_cmd == "purge":
            n = store.purge(settings.store.retention_years)
            log.info("purged %d case files older than %d years", n, settings.store.retention_years)
        else:
            from .export import export_month

            for path in export_month(store, city, args.month, args.scope or city.code, args.out,
                                     settings.stats.satisfied_min_rating):
                print(path)
    finally:
        store.close()
    return 0
