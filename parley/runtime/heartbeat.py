"""A process saying it is alive: one Redis key with a short expiry, renewed every ``interval``
seconds while the heartbeat runs and deleted when it stops. Others read the key: gone means
the process died (or lost Redis for longer than the expiry)."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
import structlog

from parley.runtime import tasks

log = structlog.get_logger(__name__)


class Heartbeat:
    """Renews ``key`` (value "1", expiry ``ttl`` s) every ``interval`` s from :meth:`start`
    until :meth:`close`. A failed renewal is logged and tried again next interval."""

    def __init__(
        self, client: aioredis.Redis, key: str, *, interval: float = 1.0, ttl: float = 3.0
    ) -> None:
        self._redis = client
        self.key = key
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        await self._redis.set(self.key, b"1", px=self.ttl_ms)

    async def start(self) -> None:
        """Beat once now (so the key exists when this returns), then in the background."""
        with contextlib.suppress(Exception):
            await self.beat()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception as exc:
                if not failing:  # once per outage, not every second
                    log.warning("heartbeat_failed", key=self.key, error=str(exc))
                failing = True
            else:
                failing = False

    async def close(self) -> None:
        """Stop beating and delete the key (best effort: it expires anyway)."""
        await tasks.stop(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self._redis.delete(self.key)
