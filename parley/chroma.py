"""Chroma adapter of :class:`parley.vectorstore.VectorStore`, over HTTP to a Chroma server.

Always a server (``chroma run``), never an embedded PersistentClient: two processes writing one
embedded path corrupt it silently (measured, DESIGN.md). One collection per tenant and embedding
model (``parley-<tenant>-<model>-<hash>``), cosine space, no embedding function attached (we always
pass vectors; a collection with Chroma's default function tries to download a model).
``upsert`` only: ``add`` with an existing id is silently ignored (measured), which would make a
redelivered batch keep stale text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings as ChromaSettings

from parley.errors import Retry
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectorstore import ChunkRecord, Hit

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def collection_name(tenant: str, model_id: str) -> str:
    """A valid Chroma collection name, unique per (tenant, model), readable when possible."""
    digest = hashlib.sha256(f"{tenant}\x00{model_id}".encode()).hexdigest()[:10]
    readable = _UNSAFE.sub("-", f"{tenant}-{model_id}").strip("-_")[:40]
    return f"parley-{readable}-{digest}"


class ChromaStore:
    """Chunk vectors of every tenant, one Chroma collection each."""

    def __init__(self, client: Any, model_id: str) -> None:
        self._client = client
        self.model_id = model_id
        self._collections: dict[str, Any] = {}

    @classmethod
    async def connect(cls, url: str, model_id: str) -> ChromaStore:
        parsed = urlparse(url)
        client = await chromadb.AsyncHttpClient(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        return cls(client, model_id)

    async def _collection(self, tenant: str, *, create: bool = True) -> Any | None:
        name = collection_name(tenant, self.model_id)
        found = self._collections.get(name)
        if found is not None:
            return found
        try:
            if create:
                found = await self._client.get_or_create_collection(
                    name,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"tenant": tenant, "model_id": self.model_id},
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
            await collection.upsert(
                ids=[r.chunk_id for r in records],
                embeddings=[list(r.embedding) for r in records],
                documents=[r.text for r in records],
                metadatas=[
                    {**r.metadata, "document_id": r.document_id, "version": r.version}
                    for r in records
                ],
            )
        except Exception as exc:
            raise _transient(exc) from exc

    async def query(self, tenant: TenantId, embedding: Sequence[float], *, k: int) -> list[Hit]:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return []
        try:
            result = await collection.query(
                query_embeddings=[list(embedding)],
                n_results=k,
                include=["documents", "metadatas", "distances"],
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
            meta = dict(metadata or {})
            hits.append(
                Hit(
                    chunk_id=ChunkId(chunk_id),
                    document_id=DocumentId(str(meta.pop("document_id", ""))),
                    version=str(meta.pop("version", "")),
                    text=text or "",
                    score=1.0 - float(distance),
                    metadata=meta,
                )
            )
        return hits

    async def delete_document(
        self, tenant: TenantId, document_id: DocumentId, *, except_version: str | None = None
    ) -> int:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return 0
        where: dict[str, Any] = {"document_id": document_id}
        if except_version is not None:
            where = {"$and": [where, {"version": {"$ne": except_version}}]}
        try:
            found = await collection.get(where=where, include=[])
            ids = found["ids"]
            if ids:
                await collection.delete(ids=ids)
        except Exception as exc:
            raise _transient(exc) from exc
        return len(ids)

    async def count(self, tenant: TenantId, document_id: DocumentId | None = None) -> int:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return 0
        if document_id is None:
            return int(await collection.count())
        found = await collection.get(where={"document_id": document_id}, include=[])
        return len(found["ids"])

    async def ids(self, tenant: TenantId, document_id: DocumentId) -> list[str]:
        collection = await self._collection(tenant, create=False)
        if collection is None:
            return []
        found = await collection.get(where={"document_id": document_id}, include=[])
        return list(found["ids"])

    async def close(self) -> None:
        self._collections.clear()  # the HTTP client has no close; its pool dies with the loop


def _transient(exc: Exception) -> Retry:
    return Retry(
        f"Chroma request failed: {type(exc).__name__}: {exc}",
        reason="chroma_unavailable",
        hint="is the Chroma server running? (PARLEY_CHROMA_URL)",
    )
