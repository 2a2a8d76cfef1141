"""The vector store seam and its data. The Chroma adapter is in :mod:`parley.vectors.chroma`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from parley.ids import ChunkId, DocumentId, TenantId


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: ChunkId
    document_id: DocumentId
    version: str
    text: str
    embedding: Sequence[float]
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    chunk_id: ChunkId
    document_id: DocumentId
    version: str
    text: str
    # Higher is better. From the vector store: cosine similarity. From a hybrid search
    # (chat_gateway.search): the fused rank score; the cosine, when the vectors found the chunk, is
    # in metadata["similarity"].
    score: float
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@runtime_checkable
class VectorStore(Protocol):
    """Per-tenant chunk vectors. Tenants never share a collection, so a query of tenant A cannot
    return a chunk of tenant B whatever its filter says."""

    async def upsert(self, tenant: TenantId, records: Sequence[ChunkRecord]) -> None:
        """Insert or overwrite by ``chunk_id`` (idempotent: redelivery writes the same rows)."""
        ...

    async def query(
        self,
        tenant: TenantId,
        embedding: Sequence[float],
        *,
        k: int,
        documents: Collection[DocumentId] | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest chunks, best first, of ``documents`` only when given. An unknown
        tenant has no chunks: []."""
        ...

    async def delete_document(
        self, tenant: TenantId, document_id: DocumentId, *, keep: Collection[str] = ()
    ) -> int:
        """Remove the document's chunks, all or all but the versions in ``keep``; returns how
        many."""
        ...

    async def delete_version(self, tenant: TenantId, document_id: DocumentId, version: str) -> int:
        """Remove the chunks of one version of the document; returns how many."""
        ...

    async def count(self, tenant: TenantId, document_id: DocumentId | None = None) -> int: ...

    async def ids(self, tenant: TenantId, document_id: DocumentId | None = None) -> list[str]:
        """The ids of the document's chunks (every version), or the tenant's, in no order."""
        ...

    async def existing(self, tenant: TenantId, chunk_ids: Sequence[ChunkId]) -> set[str]:
        """Which of ``chunk_ids`` the tenant's collection holds already."""
        ...

    async def close(self) -> None: ...
