"""Chroma adapter of :class:`parley.vectors.store.VectorStore`, over HTTP to a Chroma server.

Always a server (``chroma run``), never an embedded PersistentClient: two processes writing one
embedded path corrupt it silently (measured). One collection per tenant and embedding
model (``parley-<tenant>-<model>-<hash>``), cosine space, no embedding function attached (we always
pass vectors; a collection with Chroma's default function tries to download a model).
``upsert`` only: ``add`` with an existing id is silently ignored (measured), which would make a
redelivered batch keep stale text.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

import chromadb
import httpx
from chromadb.config import Settings as ChromaSettings

from parley.errors import Retry
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.metadata import Scalar
from parley.vectors.store import ChunkRecord, Hit

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def collection_name(tenant: str, model_id: str) -> str:
    """A valid Chroma collection name, unique per (tenant, model), readable when possible."""
    digest = hashlib.sha256(f"{tenant}\x00{model_id}".encode()).hexdigest()[:10]
    readable = _UNSAFE.sub("-", f"{tenant}-{model_id}").strip("-_")[:40]
    return f"parley-{readable}-{digest}"


_PAGE = 1000
# chromadb's HTTP client (one per event loop) never times out: a server that stops answering
# would hold a handler, and the message it leases, for ever. Past this, a request is a Retry.
REQUEST_TIMEOUT = 30.0

OnWrite = Callable[[TenantId], Awaitable[None]]
# A new collection's graph: Chroma's default (16 links) left documents unreachable (bench ann).
HNSW = {"space": "cosine", "max_neighbors": 32, "ef_construction": 200}


@dataclass(frozen=True)
class StoredDocument:
    """What a collection holds of one document (for reconciliation and re-embedding)."""

    document_id: DocumentId
    path: str
    versions: frozenset[str]
    chunks: int


class ChromaStore:
    """Chunk vectors of every tenant, one Chroma collection each."""

    def __init__(self, client: Any, model_id: str, *, on_write: OnWrite | None = None) -> None:
        self._client = client
        self.model_id = model_id
        self.on_write = on_write
        self._collections: dict[str, Any] = {}

    @classmethod
    async def connect(cls, url: str, model_id: str, *, on_write: OnWrite | None = None,
                      timeout: float = REQUEST_TIMEOUT) -> ChromaStore:
        """``on_write(tenant)`` is awaited after every write to a tenant's collection of this
        store's model (upsert, delete), even one that failed half-way: the lexical index's
        generation (:class:`parley.vectors.generations.Generations`). A request, the first
        included, that gets no answer within ``timeout`` seconds raises (a Retry after connect)."""
        parsed = urlparse(url)
        async with asyncio.timeout(timeout):
            client = await chromadb.AsyncHttpClient(
                host=parsed.hostname or "127.0.0.1", ssl=parsed.scheme == "https",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                settings=ChromaSettings(anonymized_telemetry=False))
        cast(Any, client)._server._get_client().timeout = httpx.Timeout(timeout, connect=5.0)
        return cls(client, model_id, on_write=on_write)

    async def _wrote(self, tenant: TenantId) -> None:
        if self.on_write is not None:
            try:
                await self.on_write(tenant)
            except Exception as exc:
                raise Retry(
                    f"recording a write failed: {type(exc).__name__}: {exc}",
                    reason="redis_unavailable",
                ) from exc

    async def _collection(
        self, tenant: str, *, create: bool = True, model_id: str | None = None
    ) -> Any | None:
        model_id = model_id or self.model_id
        name = collection_name(tenant, model_id)
        found = self._collections.get(name)
        if found is not None:
            return found
        try:
            if create:
                found = await self._client.get_or_create_collection(
                    name,
                    configuration={"hnsw": HNSW},
                    metadata={"tenant": tenant, "model_id": model_id},
                    embedding_function=None,
                )
            else:
                found = await self._client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if not create and "does not exist" in str(exc).lower():
                return None
            raise _transient(exc) from exc
        self._collections[name] = found
        return found

    async def upsert(self, tenant: TenantId, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        collection = await self._collection(tenant)
        assert collection is not None
        try:
            await self._upsert(collection, records)
        finally:
            await self._wrote(tenant)

    async def _upsert(self, collection: Any, records: Sequence[ChunkRecord]) -> None:
        try:
            await collection.upsert(
                ids=[r.chunk_id for r in records],
                embeddings=[list(r.embedding) for r in records],
                documents=[r.text for r in records],
                metadatas=[_to_chroma(r) for r in records],
            )
        except Exception as exc:
            raise _transient(exc) from exc

    async def query(
        self,
        tenant: TenantId,
        embedding: Sequence[float],
        *,
        k: int,
        documents: Collection[DocumentId] | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest chunks, of ``documents`` only when given."""
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return []
        extra: dict[str, Any] = {}
        if documents is not None:
            if not documents:
                return []
            extra["where"] = {"document_id": {"$in": sorted(documents)}}
        try:
            result = await collection.query(
                query_embeddings=[list(embedding)],
                n_results=k,
                include=["documents", "metadatas", "distances"],
                **extra,
            )
        except Exception as exc:
            raise _transient(exc) from exc
        hits = []
        for chunk_id, text, metadata, distance in zip(
            result["ids"][0],
            result["documents"][0],
            result["metadatas"][0],
            result["distances"][0],
            strict=True,
        ):
            r = _from_chroma(chunk_id, text, metadata)
            hits.append(
                Hit(r.chunk_id, r.document_id, r.version, r.text, 1.0 - float(distance), r.metadata)
            )
        return hits

    async def delete_document(
        self, tenant: TenantId, document_id: DocumentId, *, keep: Collection[str] = ()
    ) -> int:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return 0
        where: dict[str, Any] = {"document_id": document_id}
        if keep:
            where = {"$and": [where, {"version": {"$nin": sorted(keep)}}]}
        try:
            found = await collection.get(where=where, include=[])
            ids = found["ids"]
            if ids:
                try:
                    await collection.delete(ids=ids)
                finally:
                    await self._wrote(tenant)
        except Exception as exc:
            raise _transient(exc) from exc
        return len(ids)

    async def delete_version(self, tenant: TenantId, document_id: DocumentId, version: str) -> int:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return 0
        where = {"$and": [{"document_id": document_id}, {"version": version}]}
        try:
            found = await collection.get(where=where, include=[])
            if found["ids"]:
                try:
                    await collection.delete(ids=found["ids"])
                finally:
                    await self._wrote(tenant)
        except Exception as exc:
            raise _transient(exc) from exc
        return len(found["ids"])

    async def count(self, tenant: TenantId, document_id: DocumentId | None = None) -> int:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return 0
        if document_id is None:
            return int(await collection.count())
        found = await collection.get(where={"document_id": document_id}, include=[])
        return len(found["ids"])

    async def ids(self, tenant: TenantId, document_id: DocumentId | None = None) -> list[str]:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return []
        where = None if document_id is None else {"document_id": document_id}
        return list((await collection.get(where=where, include=[]))["ids"])

    async def records(self, tenant: TenantId, *, vectors: bool = False,
                      only: Sequence[str] | None = None) -> list[ChunkRecord]:
        """The chunks of the tenant's collection (all versions; of ``only`` when given), page
        by page, with their vectors when asked: what the lexical index is built from."""
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return []
        out: list[ChunkRecord] = []
        offset, include = 0, ["documents", "metadatas", *(["embeddings"] if vectors else [])]
        while only is None or offset < len(only):
            window = None if only is None else list(only[offset:offset + _PAGE])
            try:
                page = await collection.get(ids=window, limit=None if window else _PAGE,
                                            offset=None if window else offset, include=include)
            except Exception as exc:
                raise _transient(exc) from exc
            ids, got = page["ids"], page["embeddings"] if vectors else None
            out += [_from_chroma(chunk_id, text, metadata, () if got is None else got[i])
                    for i, (chunk_id, text, metadata) in enumerate(
                        zip(ids, page["documents"] or [], page["metadatas"] or [], strict=True))]
            if window is None and len(ids) < _PAGE:
                return out
            offset += _PAGE
        return out

    async def existing(self, tenant: TenantId, chunk_ids: Sequence[ChunkId]) -> set[str]:
        if not chunk_ids:
            return set()
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return set()
        try:
            found = await collection.get(ids=list(chunk_ids), include=[])
        except Exception as exc:
            raise _transient(exc) from exc
        return set(found["ids"])

    # maintenance (maintenance_worker) ----------------------------------------------------------
    async def models(self, tenant: TenantId) -> list[str]:
        """The embedding models the tenant has a collection for (this store's included)."""
        try:
            collections = await self._client.list_collections()
        except Exception as exc:
            raise _transient(exc) from exc
        found = {
            str(c.metadata["model_id"])
            for c in collections
            if (c.metadata or {}).get("tenant") == tenant and "model_id" in (c.metadata or {})
        }
        return sorted(found)

    async def stored_documents(
        self, tenant: TenantId, *, model_id: str | None = None
    ) -> dict[DocumentId, StoredDocument]:
        """Every document with chunks in the tenant's collection of ``model_id`` (default: this
        store's), read page by page."""
        collection = await self._collection(tenant, create=False, model_id=model_id)
        if collection is None:
            return {}
        paths: dict[str, str] = {}
        versions: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        offset = 0
        while True:
            try:
                page = await collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            except Exception as exc:
                raise _transient(exc) from exc
            metadatas = page["metadatas"] or []
            for meta in metadatas:
                doc = str((meta or {}).get("document_id", ""))
                paths.setdefault(doc, str((meta or {}).get("path", "")))
                versions.setdefault(doc, set()).add(str((meta or {}).get("version", "")))
                counts[doc] = counts.get(doc, 0) + 1
            if len(metadatas) < _PAGE:
                break
            offset += _PAGE
        return {
            DocumentId(d): StoredDocument(
                DocumentId(d), paths[d], frozenset(versions[d]), counts[d]
            )
            for d in paths
        }

    async def chunks(
        self, tenant: TenantId, document_id: DocumentId, version: str, *, model_id: str
    ) -> list[ChunkRecord]:
        """One version of a document as stored under ``model_id``, vectors left out (empty)."""
        collection = await self._collection(tenant, create=False, model_id=model_id)
        if collection is None:
            return []
        where = {"$and": [{"document_id": document_id}, {"version": version}]}
        try:
            found = await collection.get(where=where, include=["metadatas", "documents"])
        except Exception as exc:
            raise _transient(exc) from exc
        return [
            _from_chroma(chunk_id, text, metadata)
            for chunk_id, text, metadata in zip(
                found["ids"], found["documents"], found["metadatas"], strict=True
            )
        ]

    async def drop(self, tenant: TenantId, model_id: str) -> bool:
        """Delete the tenant's whole collection of ``model_id``; False when there was none."""
        name = collection_name(tenant, model_id)
        self._collections.pop(name, None)
        try:
            await self._client.delete_collection(name)
        except Exception as exc:
            if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                return False
            raise _transient(exc) from exc
        return True

    async def close(self) -> None:
        self._collections.clear()  # the HTTP client has no close; its pool dies with the loop


def _to_chroma(record: ChunkRecord) -> dict[str, Scalar]:
    """A record's Chroma metadata: its own (:class:`~parley.vectors.metadata.ChunkMeta`'s flat
    form) with the document and version it belongs to, which every filter here reads."""
    return {**record.metadata, "document_id": record.document_id, "version": record.version}


def _from_chroma(chunk_id: str, text: str | None, metadata: Mapping[str, Any] | None,
                 vector: Sequence[float] = ()) -> ChunkRecord:
    """A stored chunk back: document and version taken out of its metadata."""
    meta = dict(metadata or {})
    document = DocumentId(str(meta.pop("document_id", "")))
    version = str(meta.pop("version", ""))
    return ChunkRecord(ChunkId(chunk_id), document, version, text or "", vector, meta)


def _transient(exc: Exception) -> Retry:
    return Retry(
        f"Chroma request failed: {type(exc).__name__}: {exc}",
        reason="chroma_unavailable",
        hint="is the Chroma server running? (PARLEY_CHROMA_URL)",
    )
