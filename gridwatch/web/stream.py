"""``GET /api/stream``: the console's live incident feed as Server-Sent Events.

Why SSE: the console only listens (actions go over plain POSTs), EventSource reconnects by itself
and passes the session cookie, and it is one long HTTP response that proxies understand. Each
operator's stream carries only incidents whose grid lies in their scope; the filter runs here,
server-side, never in the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from .auth import Operator
from .context import ctx
from .views import Subscriber

HEARTBEAT_S = 15.0
CLOSE = {"_close": True}


async def stream(request: web.Request) -> web.StreamResponse:
    from .console import require_operator

    c = ctx(request)
    op: Operator = require_operator(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    sub: Subscriber = c.view.subscribe(op.scope)
    request.app[STREAMS].add(sub)
    try:
        await resp.prepare(request)
        hello = {"user": op.user, "scope": op.scope, "server_ms": int(time.time() * 1000),
                 "ready": c.view.ready.is_set()}
        await resp.write(f"retry: 2000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode())
        while True:
            try:
                msg = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                if sub.dropped:
                    break
                await resp.write(b": ping\n\n")
                continue
            if msg is CLOSE:
                break
            msg["sent_ms"] = int(time.time() * 1000)
            inc = msg["incident"]
            data = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
            await resp.write(f"id: {inc['id']}:{inc.get('version', 0)}\nevent: incident\ndata: {data}\n\n".encode())
    except ConnectionResetError:
        return resp
    finally:
        c.view.unsubscribe(sub)
        request.app[STREAMS].discard(sub)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp


async def close_streams(app: web.Application) -> None:
    """On shutdown: end every open stream so the server stops without waiting for clients."""
    for sub in list(app[STREAMS]):
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(CLOSE)


STREAMS: web.AppKey[set[Subscriber]] = web.AppKey("streams", set)
