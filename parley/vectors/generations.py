"""The chunk generation of a tenant: a counter every writer of the tenant's chunks (the Chroma
store's ``on_write``) increments after each write, read by searches in the same ``MULTI`` as the
served map; a searcher's lexical index of the tenant (:mod:`chat_gateway.lexical`) is rebuilt
when it moved. Why the order matters is said there."""

from __future__ import annotations

from typing import Any

from parley.ids import DocumentId, TenantId
from parley.keys import Keys


class Generations:
    """``<prefix>:chunk-generation:<tenant>``: a counter every writer of a tenant's chunks
    increments after each write (see the module docstring)."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._redis = redis
        self._keys = Keys(prefix)

    def key(self, tenant: str) -> str:
        return self._keys.chunk_generation(tenant)

    async def bump(self, tenant: TenantId) -> None:
        await self._redis.incr(self.key(tenant))

    async def read_with_served(
        self, tenant: TenantId, served_key: str
    ) -> tuple[dict[DocumentId, str], str]:
        """The tenant's served map (the hash at ``served_key``) and its generation, read in one
        ``MULTI`` so that the two are of one moment."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(served_key)
            pipe.get(self.key(tenant))
            raw, generation = await pipe.execute()
        served = {DocumentId(_text(k)): _text(v) for k, v in raw.items()}
        return served, _text(generation) if generation is not None else "0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
