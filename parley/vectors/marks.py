"""Write marks: when each of a tenant's collections (one per embedding model) was last written.
The embed worker marks before each upsert; the re-embedding sweep reads the marks to drop a
replaced model's collection only after a quiet period."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from parley.keys import Keys

_CLEAR = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1]) return 1
end
return 0
"""


class WriteMarks:
    """When each of a tenant's collections was last written: the hash
    ``<p>:embedding-written:<tenant>``, model id -> unix time.

    The embed worker marks *before* each upsert, so a write that lands before the reembed
    sweep drops a collection has moved its mark before the drop: the sweep drops a replaced
    model's collection only when its mark is older than the quiet period, reads it again just
    before the drop, and clears it after the drop only if unchanged; a change means a write
    raced the drop (:func:`reembed` then verifies the tenant). Marks are wall-clock times of
    the writing pod: clock skew between pods eats into the quiet period."""

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._redis = client
        self._keys = Keys(prefix)

    def key(self, tenant: str) -> str:
        return self._keys.embedding_written(tenant)

    async def mark(self, tenant: str, model_id: str) -> None:
        await self._redis.hset(self.key(tenant), model_id, repr(time.time()))

    async def last(self, tenant: str, model_id: str) -> str:
        """The raw mark ('' when the collection was never marked)."""
        raw: Any = await self._redis.hget(self.key(tenant), model_id)
        return "" if raw is None else bytes(raw).decode()

    async def clear(self, tenant: str, model_id: str, seen: str) -> bool:
        """Forget the mark if it is still ``seen``; False when it moved (a write raced)."""
        return bool(await self._redis.eval(_CLEAR, 1, self.key(tenant), model_id, seen))
