"""The audit log: who logged in (or failed to, from where), who logged out, who did what to which incident.

Why a file of JSON lines: an operator (or the discipline commission, 纪委督单) must be able to read it
with ``tail`` / ``grep`` / ``jq`` without Kafka tooling, and it must survive a broker outage. Each entry
also goes to the ``gridwatch.audit`` logger (one line in the api's log) and, when Kafka is up, to
``<prefix>.audit`` so every api instance's entries land in one place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gridwatch.audit")
MAX_PENDING = 1000  # audit records on their way to Kafka; beyond this only the file and the log get them


class AuditLog:
    def __init__(self, path: str | Path, topic: str = "") -> None:
        self.path = Path(path)
        self.topic = topic
        self.producer: Any = None  # set once Kafka is up
        self._lock = threading.Lock()
        self._pending: set[asyncio.Task] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one entry (``event``: login_ok, login_failed, login_throttled, logout, action, ...)."""
        entry = {"ts": int(time.time() * 1000), "event": event,
                 **{k: v for k, v in fields.items() if v not in (None, "")}}
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        log.info("%s", line)
        self._to_kafka(entry)
        return entry

    def _to_kafka(self, entry: dict[str, Any]) -> None:
        if self.producer is None or not self.topic or len(self._pending) >= MAX_PENDING:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send(entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, entry: dict[str, Any]) -> None:
        try:
            await self.producer.send_and_wait(self.topic, json.dumps(entry, ensure_ascii=False).encode(),
                                              key=str(entry.get("user", "")).encode())
        except Exception as e:  # the file has it; Kafka is a copy
            log.warning("audit entry not sent to %s: %s", self.topic, e)


def read_entries(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of an audit file (for tests and `jq`-less readers)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
