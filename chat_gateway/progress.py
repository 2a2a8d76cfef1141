"""Document status and progress, pushed to the connected clients of each tenant.

The ingestion side appends to ``<prefix>:progress:<tenant>`` (field ``d``: the document status as
JSON). One task per gateway process reads the streams of every tenant that has a client here in
a single blocking ``XREAD``, and hands each event to that tenant's subscribers, so ten thousand
idle sessions cost one Redis connection, not ten thousand.

A tenant's stream is read from the moment its first subscriber arrives (within about ``block``
seconds); earlier history is what ``GET /api/documents`` lists. Subscribers' callbacks must not
block: a session queues the send on its own task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

from parley.keys import Keys
from parley.runtime import tasks

log = structlog.get_logger(__name__)

Subscriber = Callable[[dict[str, Any]], None]


class ProgressHub:
    def __init__(self, client: aioredis.Redis, *, prefix: str, block: float = 1.0) -> None:
        self._redis = client
        self._keys = Keys(prefix)
        self._block = block
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._last: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def key(self, tenant: str) -> str:
        return self._keys.progress(tenant)

    def subscribe(self, tenant: str, callback: Subscriber) -> None:
        """Deliver the tenant's document events to ``callback`` until :meth:`unsubscribe`."""
        self._subscribers.setdefault(tenant, set()).add(callback)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="progress-hub")

    def unsubscribe(self, tenant: str, callback: Subscriber) -> None:
        """Stop delivering to ``callback`` (a bound method equal to the one subscribed will
        do). No closure per subscriber: ten thousand idle sessions subscribe."""
        subs = self._subscribers.get(tenant)
        if subs is not None:
            subs.discard(callback)
            if not subs:
                del self._subscribers[tenant]
                self._last.pop(tenant, None)

    async def _start_ids(self, tenants: list[str]) -> None:
        """Pin '$' to a concrete id for newly watched tenants, so nothing written between two
        reads is missed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.xrevrange(self.key(tenant), "+", "-", count=1)
            replies = await pipe.execute()
        for tenant, reply in zip(tenants, replies, strict=True):
            last = reply[0][0] if reply else b"0-0"
            self._last[tenant] = last.decode() if isinstance(last, bytes) else str(last)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("progress_read_failed", error=str(exc))
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        tenants = list(self._subscribers)
        if not tenants:
            self._wake.clear()
            await self._wake.wait()
            return
        new = [t for t in tenants if t not in self._last]
        if new:
            await self._start_ids(new)
        streams: dict[Any, Any] = {self.key(t): self._last[t] for t in tenants if t in self._last}
        reply: Any = await self._redis.xread(streams, count=256, block=int(self._block * 1000))
        for key, entries in reply or []:
            name = key.decode() if isinstance(key, bytes) else str(key)
            tenant = name.rsplit(":", 1)[-1]
            for entry_id, fields in entries:
                self._last[tenant] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                raw = fields.get(b"d", fields.get("d"))
                try:
                    status = json.loads(raw) if raw else {}
                except ValueError:
                    continue
                if not isinstance(status, dict):
                    continue
                event = {**status, "type": "document"}
                for callback in list(self._subscribers.get(tenant, ())):
                    callback(event)

    async def close(self) -> None:
        await tasks.stop(self._task)
