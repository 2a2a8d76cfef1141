"""Retrieval: embed the query (the question, completed from the conversation when it is a
follow-up: :mod:`chat_gateway.followup`) through the same Embedder that indexed the documents,
and search the tenant's chunks with
:class:`chat_gateway.search.Searcher` (only each document's served version; during a switch of
embedding model, the previous model's collection too until the tenant's switch is complete).

Tenant isolation is the store's: every query names the tenant and tenants never share a
collection, so no filter mistake here can leak another tenant's chunks."""

from __future__ import annotations

from collections.abc import Mapping

from chat_gateway import citations, prompt
from chat_gateway.search import Searcher
from parley.contracts import Source
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.metadata import ChunkMeta
from parley.vectors.store import Hit

# Chunk metadata that says what the document is about itself (written at ingest), in the order
# it reads best: shown in the prompt's source header and matched by the extractive answerer.
CONTEXT_KEYS = ("title", "organisation", "organization", "entity", "company", "period",
                "date", "period_end", "section", "heading")


def context_of(meta: Mapping[str, object]) -> str:
    """The document context of a chunk's metadata: the distinct non-empty values of
    :data:`CONTEXT_KEYS`, joined with " · "."""
    values: dict[str, None] = {}
    for key in CONTEXT_KEYS:
        value = meta.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            values.setdefault(" ".join(str(value).split()), None)
    return " · ".join(values)


def to_source(n: int, hit: Hit) -> Source:
    meta = hit.metadata
    chunk = ChunkMeta.from_metadata(meta)
    # Chunks stored by other tools may name their document "document".
    document = chunk.filename or meta.get("document") or chunk.path or hit.document_id
    return Source(
        n=n,
        chunk_id=ChunkId(hit.chunk_id),
        document_id=DocumentId(hit.document_id),
        document=str(document),
        page=chunk.page,
        heading=chunk.heading,
        location=citations.location(chunk.kind, chunk.page, chunk.heading, ocr=chunk.ocr),
        ocr=chunk.ocr,
        unit=chunk.unit,
        snippet=prompt.snippet(hit.text),
        text=hit.text,
        score=round(float(hit.score), 4),
        context=context_of(meta),
    )


class Retriever:
    def __init__(self, searcher: Searcher, *, k: int = 5) -> None:
        self.searcher = searcher
        self.k = k

    async def retrieve(self, tenant: TenantId, query: str) -> list[Source]:
        """The tenant's ``k`` best chunks for ``query``, numbered 1..k; [] when the tenant has
        no documents. Embedder errors (:class:`parley.errors.Retry`) propagate."""
        hits = await self.searcher.search(tenant, query, k=self.k)
        return [to_source(i, hit) for i, hit in enumerate(hits, start=1)]
