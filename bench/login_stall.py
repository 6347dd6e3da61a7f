"""Does a burst of failed logins stall the api? `/api/health/live` latency while bad logins arrive.

Each run fires ``--logins`` concurrent wrong-password logins at an in-process api (no Kafka) while a
probe asks ``/api/health/live`` every 10 ms (figure: the request's time plus any delay of the 10 ms
sleep before it, i.e. how long a health check could have waited), twice: with PBKDF2 on the event loop (the baseline: how
the api hashed before, reproduced with an executor that runs its work inline) and in the api's hash
pool (as shipped). Figures: probe latency p50 / p99 / max per mode over ``--runs`` runs.

    python -m gridwatch.bench login_stall --runs 3 --logins 10
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from .results_io import bench_parser, write_results


class InlineExecutor(Executor):
    """Runs the work in the caller's thread: ``run_in_executor`` then blocks the event loop."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001
            f.set_exception(e)
        return f


async def one_run(logins: int, inline: bool) -> list[float]:
    from aiohttp.test_utils import TestClient, TestServer

    from gridwatch.core.settings import load_settings
    from gridwatch.web.context import CTX
    from gridwatch.web.server import create_app

    s = load_settings(None, {"web.login_burst": 1_000_000, "web.login_account_burst": 1_000_000})
    app = create_app(s, kafka=False)
    if inline:
        app[CTX].hash_pool = InlineExecutor()  # type: ignore[assignment]
    latencies: list[float] = []
    async with TestClient(TestServer(app)) as client:
        await client.get("/api/health/live")
        done = asyncio.Event()

        async def probe() -> None:
            """A health request every 10 ms; its figure includes any time the loop held it back from
            starting (a stalled loop delays the 10 ms sleep too), so a stall is never missed."""
            while not done.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                r = await client.get("/api/health/live")
                await r.read()
                latencies.append((time.perf_counter() - t0) * 1000 - 10)

        async def bad_login(n: int) -> None:
            r = await client.post("/api/login", json={"user": "city", "password": f"wrong-{n}"})
            assert r.status == 401, r.status

        task = asyncio.create_task(probe())
        await asyncio.sleep(0.1)
        await asyncio.gather(*(bad_login(n) for n in range(logins)))
        done.set()
        await task
    return latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(out: Path | None, runs: int, logins: int) -> dict[str, Any]:
    import os

    os.environ.setdefault("GRIDWATCH_DEMO_CREDENTIALS", "allow")  # the sample city's demo accounts
    results: dict[str, Any] = {"logins": logins, "runs": runs, "modes": {}}
    for mode, inline in (("on_event_loop_baseline", True), ("hash_pool", False)):
        per_run = []
        for _ in range(runs):
            lat = asyncio.run(one_run(logins, inline))
            per_run.append({"probes": len(lat), "p50_ms": round(statistics.median(lat), 2),
                            "p99_ms": round(pct(lat, 0.99), 2), "max_ms": round(max(lat), 2)})
        results["modes"][mode] = per_run
        print(f"{mode:>24}: " + "  ".join(f"p50 {r['p50_ms']} / p99 {r['p99_ms']} / max {r['max_ms']} ms"
                                           f" ({r['probes']} probes)" for r in per_run), flush=True)
    write_results(out, results)
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("login_stall", __doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--logins", type=int, default=10)
    a = p.parse_args(argv)
    run(a.out, a.runs, a.logins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
