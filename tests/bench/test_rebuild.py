"""``bench rebuild``: every row measured on a real Chroma server, the tenant as written."""

from __future__ import annotations

from bench.rebuild import BATCH, PER_DOCUMENT, timings
from parley.ids import TenantId


async def test_each_rebuild_is_timed_and_the_shipped_index_holds_what_was_written(
    chroma_url: str,
) -> None:
    took, held = await timings(chroma_url, 2 * PER_DOCUMENT, writes=1,
                               tenant=TenantId("bench-rebuild"))
    after_write, after_delete = f"after a write of {BATCH} chunks", "after a document's"
    assert sorted(took) == sorted([
        "first build (nothing held)",
        "past max_age, no write: shipped (every text read and compared)",
        *(f"{after_write}: {way}" for way in ("before: every text read, bm25s",
                                              "every text read, numpy BM25",
                                              "shipped (ids read, new chunks only)")),
        *(f"{after_delete} {PER_DOCUMENT} chunks deleted: {way}" for way in (
            "before: every text read, bm25s", "every text read, numpy BM25",
            "shipped (ids read, new chunks only)")),
    ])
    assert all(len(seconds) == 1 and seconds[0] > 0 for seconds in took.values())
    assert held == 2 * PER_DOCUMENT + BATCH - PER_DOCUMENT  # two documents, a batch, one deleted
