"""Search a tenant's chunks: embed the query with the indexing Embedder, ask the VectorStore for
more than ``k`` hits, and keep only chunks of each document's served version (see
:mod:`parley.status`), so a document being replaced shows its old chunks until the new version
is complete and then only the new ones — never both, never neither.

Order matters: the served versions are read *before* the vector query. A swap that happens
between the two still finds the old chunks in the store, because the embed worker deletes a
superseded version only a grace period after the swap; reading them after the query could see the
new version while the query ran before its chunks were written (both then filtered out).
"""

from __future__ import annotations

from parley.embedder import Embedder
from parley.ids import TenantId
from parley.status import StatusStore
from parley.vectorstore import Hit, VectorStore

OVERFETCH = 3  # hits fetched per hit wanted, to survive filtering of superseded versions


class Searcher:
    def __init__(self, embedder: Embedder, vectors: VectorStore, status: StatusStore) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.status = status

    async def search(self, tenant: TenantId, query: str, *, k: int = 5) -> list[Hit]:
        """The ``k`` best served chunks, best first; [] for a tenant with no documents."""
        [vector] = await self.embedder.embed([query])
        return await self.nearest(tenant, vector, k=k)

    async def nearest(self, tenant: TenantId, vector: list[float], *, k: int) -> list[Hit]:
        served = await self.status.served_map(tenant)
        if not served:
            return []
        hits = await self.vectors.query(tenant, vector, k=k * OVERFETCH + 2)
        return [h for h in hits if served.get(h.document_id) == h.version][:k]
