"""Document status records and progress events, in Redis.

A record per document (hash ``<p>:doc:<tenant>:<document_id>``), an index per tenant (sorted set
``<p>:docs:<tenant>`` by last update) and a progress stream per tenant
(``<p>:progress:<tenant>``, field ``d`` = the record as JSON after each change) that the chat
gateway relays live to the tenant's browsers.

Versions: ``version`` is the content hash whose chunks are served; ``pending_version`` the one
being embedded. Readers accept a chunk when its version is the document's ``version``, or, before
the first version is complete, its ``pending_version`` — so a replaced document switches from old
to new chunks in one atomic step (the Lua script in :meth:`StatusStore.batch_landed`), with no
moment where both or neither are served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from parley import lua
from parley.ids import DocumentId, TenantId
from parley.keys import Keys

PROGRESS_MAXLEN = 10_000


class Stage(StrEnum):
    QUEUED = "queued"
    EXTRACTING = "extracting"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"


TERMINAL_STAGES = frozenset({Stage.READY, Stage.FAILED, Stage.DELETED})


class DocumentStatus(BaseModel):
    """What a user sees of one document (CLI ``parley status --json``, portal, API)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    document_id: DocumentId
    tenant: TenantId
    filename: str = ""
    path: str = ""
    stage: Stage = Stage.QUEUED
    reason: str | None = None  # machine code of a failure, e.g. "encrypted"
    message: str | None = None  # the failure (or note) in plain words
    pages_total: int | None = None
    pages_done: int = 0
    chunks: int = 0
    chunks_done: int = 0
    batches_total: int = 0
    version: str | None = None
    pending_version: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


# What it takes and returns: the file's head. It also publishes the record it changes.
_LANDED = lua.script(__package__, "status_landed.lua")


class StatusStore:
    """Reads and writes document status. ``client`` is shared; the store does not close it."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "parley") -> None:
        self._redis = client
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._landed = client.register_script(_LANDED)

    # keys ------------------------------------------------------------------------------------
    def record_key(self, tenant: str, document_id: str) -> str:
        return self._keys.record(tenant, document_id)

    def index_key(self, tenant: str) -> str:
        return self._keys.documents(tenant)

    def progress_key(self, tenant: str) -> str:
        return self._keys.progress(tenant)

    def served_key(self, tenant: str) -> str:
        return self._keys.served(tenant)

    def _landed_key(self, tenant: str, document_id: str, version: str) -> str:
        """The set of batch indexes of ``version`` stored so far (see :meth:`batch_landed`)."""
        return self._keys.landed(tenant, document_id, version)

    # reading ----------------------------------------------------------------------------------
    async def get(self, tenant: TenantId, document_id: DocumentId) -> DocumentStatus | None:
        raw = await self._redis.hgetall(self.record_key(tenant, document_id))
        return _status(raw) if raw else None

    async def documents(self, tenant: TenantId) -> list[DocumentStatus]:
        """The tenant's documents, most recently updated first."""
        ids: Any = await self._redis.zrevrange(self.index_key(tenant), 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for document_id in ids:
                pipe.hgetall(self.record_key(tenant, document_id.decode()))
            records = await pipe.execute()
        return [_status(r) for r in records if r]

    async def tenants(self) -> list[TenantId]:
        members: Any = await self._redis.smembers(self._keys.tenants())
        return sorted(TenantId(m.decode()) for m in members)

    async def served_map(self, tenant: TenantId) -> dict[DocumentId, str]:
        """Every document's served version, as one consistent read (a hash kept in step with
        the records: written by the swap script and by updates that set a version)."""
        raw: Any = await self._redis.hgetall(self.served_key(tenant))
        return {DocumentId(k.decode()): v.decode() for k, v in raw.items()}

    async def served_versions(
        self, tenant: TenantId, document_ids: Iterable[DocumentId]
    ) -> dict[DocumentId, str | None]:
        """The version whose chunks may be served, per document (None: serve nothing), from
        the same served map search reads."""
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        values: Any = await self._redis.hmget(self.served_key(tenant), ids)
        return {d: v.decode() if v else None for d, v in zip(ids, values, strict=True)}

    # writing ----------------------------------------------------------------------------------
    async def update(
        self, tenant: TenantId, document_id: DocumentId, **fields: Any
    ) -> DocumentStatus:
        """Set fields (None clears one), bump ``updated_at``, publish the record as progress."""
        return await self._update(tenant, document_id, fields)

    async def begin_version(
        self,
        tenant: TenantId,
        document_id: DocumentId,
        version: str,
        *,
        batches_total: int,
        chunks: int,
        **fields: Any,
    ) -> DocumentStatus:
        """Start embedding ``version`` from nothing: make it the pending version with
        ``chunks_done`` 0 and forget which of its batches landed, in the same transaction, then
        publish. Called before its batches are published, so every one of them counts anew.

        The forgotten set may be a run of this version that never finished (replaced meanwhile,
        its chunks deleted since): counting it would make the version ``ready`` too early. It may
        also be this very run, when an ingest request is redelivered after it published its
        batches: those counts are lost, but the redelivery publishes every batch again and each
        counts once when it lands (a batch of the first publication counts the same, same ids)."""
        return await self._update(
            tenant,
            document_id,
            {
                **fields,
                "pending_version": version,
                "batches_total": batches_total,
                "chunks": chunks,
                "chunks_done": 0,
            },
            forget=self._landed_key(tenant, document_id, version),
        )

    async def _update(
        self,
        tenant: TenantId,
        document_id: DocumentId,
        fields: Mapping[str, Any],
        *,
        forget: str | None = None,
    ) -> DocumentStatus:
        now = time.time()
        key = self.record_key(tenant, document_id)
        mapping: dict[Any, Any] = {k: _encode(v) for k, v in fields.items()}
        mapping["updated_at"] = repr(now)
        async with self._redis.pipeline(transaction=True) as pipe:
            if forget is not None:
                pipe.delete(forget)
            pipe.hsetnx(key, "created_at", repr(now))
            pipe.hset(key, mapping={"document_id": document_id, "tenant": tenant, **mapping})
            pipe.zadd(self.index_key(tenant), {document_id: now})
            pipe.sadd(self._keys.tenants(), tenant)
            pipe.hgetall(key)
            replies = await pipe.execute()
        status = _status(replies[-1])
        if "version" in fields or "pending_version" in fields:
            # Safe outside the transaction: a swap to a pending version needs its batches,
            # which are published only after this update returns.
            served = status.version or status.pending_version
            if served:
                await self._redis.hset(self.served_key(tenant), document_id, served)
            else:
                await self._redis.hdel(self.served_key(tenant), document_id)
        await self.publish(status)
        return status

    async def publish(self, status: DocumentStatus) -> None:
        await self._redis.xadd(
            self.progress_key(status.tenant),
            {"d": status.model_dump_json()},
            maxlen=PROGRESS_MAXLEN,
            approximate=True,
        )

    async def batch_landed(
        self,
        tenant: TenantId,
        document_id: DocumentId,
        version: str,
        batch_index: int,
        chunks: int,
    ) -> int:
        """Record that one batch of ``version`` is stored. Returns 1 if the document became
        ready now (the swap to this version happened), 2 if it was already ready with this
        version, 0 if batches are still missing, -1 if ``version`` is no longer wanted."""
        # The script publishes the record when it changes it (0, 1), in the same step.
        result = await self._landed(
            keys=[
                self.record_key(tenant, document_id),
                self._landed_key(tenant, document_id, version),
                self.index_key(tenant),
                self.served_key(tenant),
                self.progress_key(tenant),
            ],
            args=[version, batch_index, chunks, repr(time.time()), tenant, document_id,
                  PROGRESS_MAXLEN],
        )
        return int(result)

    async def remove(self, tenant: TenantId, document_id: DocumentId) -> None:
        """Forget the document (after its chunks are gone); publishes a ``deleted`` event."""
        status = await self.get(tenant, document_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.record_key(tenant, document_id))
            pipe.zrem(self.index_key(tenant), document_id)
            pipe.hdel(self.served_key(tenant), document_id)
            await pipe.execute()
        if status is not None:
            await self.publish(
                status.model_copy(update={"stage": Stage.DELETED, "updated_at": time.time()})
            )


def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def _status(raw: Mapping[Any, Any]) -> DocumentStatus:
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    clean = {k: v for k, v in fields.items() if v != ""}
    return DocumentStatus.model_validate(clean)


def parse_progress(fields: Mapping[bytes, bytes]) -> DocumentStatus:
    """A progress stream entry (field ``d``: the record as a JSON object) -> status."""
    return DocumentStatus.model_validate(json.loads(fields[b"d"]))
