"""``bench rebuild``: every row measured on a real Chroma server, the tenant as written."""

from __future__ import annotations

from bench.rebuild import BATCH, PER_DOCUMENT, timings
from parley.ids import TenantId


async def test_each_rebuild_is_timed_and_the_shipped_index_holds_what_was_written(
    chroma_url: str,
) -> None:
    took, held = await timings(chroma_url, 2 * PER_DOCUMENT, writes=1,
                               tenant=TenantId("bench-rebuild"))
    before, afresh, shipped = ("before: every text read, bm25s", "every text read, numpy BM25",
                               "shipped")
    assert sorted(took) == sorted([
        f"first build (nothing held): {before}", "first build (nothing held): shipped",
        *(f"after a write of {BATCH} chunks: {way}" for way in (before, afresh, shipped)),
        *(f"after a document's {PER_DOCUMENT} chunks deleted: {way}"
          for way in (before, afresh, shipped)),
        f"past max_age, no write: {before}", "past max_age, no write: shipped",
    ])
    assert all(len(seconds) == 1 and seconds[0] > 0 for seconds in took.values())
    assert held == 2 * PER_DOCUMENT + BATCH - PER_DOCUMENT  # two documents, a batch, one deleted
