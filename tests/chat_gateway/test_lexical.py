"""The BM25 side of search, pure parts: terms, ranking, served-version masks, contexts, the exact
vector side of a small tenant. The index's life on real Chroma and Redis is in
tests/chat_gateway/test_search_hybrid.py."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import structlog

from chat_gateway.lexical import LexicalIndex, LexicalIndexes, indexed_text, tokenize, top_rows
from parley.contracts import DocumentContext
from parley.embedder.text import context_metadata
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.store import ChunkRecord


def record(doc: str, version: str, n: int, text: str, **meta: str) -> ChunkRecord:
    return vectored(doc, version, n, text, (), **meta)


def vectored(doc: str, version: str, n: int, text: str, vector: Sequence[float],
             **meta: str) -> ChunkRecord:
    return ChunkRecord(ChunkId(f"{doc}-{version}-{n}"), DocumentId(doc), version, text, vector,
                       {"filename": f"{doc}.pdf", **meta})


def test_terms_are_stemmed_words_and_whole_numbers() -> None:
    assert tokenize("Total net sales were $81,797 million") == [
        "total", "net", "sale", "81797", "million"]
    assert tokenize("81797") == tokenize("81,797")
    assert tokenize("Research and Development expenses") == ["research", "develop", "expens"]
    assert tokenize("1.375% Notes") == ["1.375", "note"]
    assert tokenize("the and of") == []


def test_bm25_ranks_by_the_rare_terms_and_skips_rows_without_any() -> None:
    rows = [
        record("a", "v", 0, "Total net sales 81,797 for the quarter."),
        record("b", "v", 0, "Research and development 7,457 for the quarter."),
        record("c", "v", 0, "Foreign exchange risk and hedging."),
    ]
    index = LexicalIndex(rows)
    everything = np.ones(3, dtype=bool)
    found = index.search("What were research and development costs?", everything, k=5)
    assert [f.row for f in found] == [1]
    assert [f.row for f in index.search("net sales 81797", everything, k=5)] == [0]
    assert index.search("unknown words entirely", everything, k=5) == []


def test_masks_keep_served_versions_and_focused_documents() -> None:
    rows = [
        record("a", "v1", 0, "pump bearings wear"),
        record("a", "v2", 0, "pump bearings wear quickly"),
        record("b", "v1", 0, "pump seals"),
    ]
    index = LexicalIndex(rows)
    served = {DocumentId("a"): "v2", DocumentId("b"): "v1"}
    assert index.served_rows(served).tolist() == [False, True, True]
    assert index.served_rows(served, [DocumentId("b")]).tolist() == [False, False, True]
    assert index.served_rows({}).tolist() == [False, False, False]
    hits = top_rows(index.scores("pump"), index.served_rows(served), k=5)
    assert {index.records[h.row].version for h in hits} == {"v2", "v1"}
    assert all(index.records[h.row].chunk_id != "a-v1-0" for h in hits)


def test_the_document_context_is_indexed_and_kept_per_version() -> None:
    ctx = DocumentContext(entity="Contoso Ltd.", period="Q2 2024", period_end="2024-06-30")
    rows = [
        record("a", "v", 0, "Total revenue 5,127", **context_metadata(ctx)),
        record("b", "v", 0, "Total revenue 4,812"),
    ]
    assert "Contoso Ltd." in indexed_text(rows[0]) and "June 30, 2024" in indexed_text(rows[0])
    index = LexicalIndex(rows)
    assert index.contexts == {(DocumentId("a"), "v"): ctx}
    found = index.search("Contoso total revenue", np.ones(2, dtype=bool), k=2)
    assert index.records[found[0].row].document_id == "a"


def test_an_empty_tenant_has_an_empty_index() -> None:
    index = LexicalIndex([])
    assert len(index) == 0
    assert index.search("anything", np.zeros(0, dtype=bool), k=5) == []


def test_a_misspelt_word_is_searched_as_the_documents_spell_it() -> None:
    rows = [
        record("a", "v", 0, "Every password must be at least 12 characters long."),
        record("b", "v", 0, "Descale the machine every 3 months."),
        record("c", "v", 0, "Clean desk: drawings are locked away at night."),
    ]
    index = LexicalIndex(rows)
    everything = np.ones(3, dtype=bool)
    # Swapped, dropped and doubled letters; the case of a capitalised word is kept.
    assert index.respelled("minimum paswsord length") == "minimum password length"
    assert index.respelled("How often should I Decsale it?") == "How often should I Descale it?"
    assert index.respelled("our draiwngs on a stick") == "our drawings on a stick"
    for typed, row in (("paswsord length", 0), ("decsale", 1), ("draiwngs", 2)):
        assert [f.row for f in index.search(typed, everything, k=3)] == [row], typed


def test_only_unknown_long_words_are_respelt() -> None:
    index = LexicalIndex([record("a", "v", 0, "Parts and labour are covered; the descaling kit.")])
    assert index.respelled("the holiday party") == "the holiday party"  # a real word: kept
    assert index.respelled("Labor parts") == "Labor parts"  # 5 letters, a known word
    assert index.respelled("our kitt") == "our kitt"  # under 5 letters: too many neighbours
    assert index.respelled("descalings") == "descalings"  # its stem is indexed: not a typo
    assert index.respelled("Q3 2023 81,797") == "Q3 2023 81,797"
    assert LexicalIndex([]).respelled("paswsord") == "paswsord"



def test_the_nearest_rows_are_found_by_comparing_with_every_row_under_the_mask() -> None:
    rows = [
        vectored("a", "v1", 0, "old", [1.0, 0.0]),
        vectored("a", "v2", 0, "new", [0.0, 2.0]),  # compared as a direction
        vectored("b", "v1", 0, "b0", [3.0, 3.0]),
        vectored("b", "v1", 1, "b1", [-1.0, 0.0]),
    ]
    index = LexicalIndex(rows)
    served = index.served_rows({DocumentId("a"): "v2", DocumentId("b"): "v1"})
    hits = index.nearest([0.0, 5.0], served, k=10)
    assert [h.chunk_id for h in hits] == ["a-v2-0", "b-v1-0", "b-v1-1"]  # a-v1 is not served
    assert [round(h.score, 4) for h in hits] == [1.0, 0.7071, 0.0]
    assert hits[0].text == "new" and hits[0].metadata["filename"] == "a.pdf"
    assert [h.chunk_id for h in index.nearest([1.0, 0.0], served, k=1)] == ["b-v1-0"]
    focused = index.served_rows({DocumentId("b"): "v1"}, [DocumentId("b")])
    assert [h.chunk_id for h in index.nearest([0.0, 1.0], focused, k=5)] == ["b-v1-0", "b-v1-1"]
    assert index.nearest([0.0, 1.0], index.served_rows({}), k=5) == []
    asked = np.array([0.0, 5.0], dtype=np.float32)
    index.nearest(asked, served, k=1)
    assert asked.tolist() == [0.0, 5.0]  # the caller's vector is left as it was


def test_an_index_built_without_vectors_has_no_vector_side() -> None:
    index = LexicalIndex([record("a", "v", 0, "pump"), vectored("a", "v", 1, "seal", [1.0])])
    assert index.vectors is None  # one record without its vector: none are kept
    with pytest.raises(ValueError, match="without the chunks' vectors"):
        index.nearest([1.0], np.ones(2, dtype=bool), k=1)


class Source:
    """A tenant's chunks as the Chroma store gives them, counting what was asked."""

    def __init__(self, chunks: int) -> None:
        self.chunks = list(range(chunks))
        self.asked: list[bool] = []
        self.only: list[list[str] | None] = []
        self.gone: set[str] = set()  # deleted between a listing and the vectors' fetch
        self.texts: dict[int, str] = {}  # a chunk rewritten under its id

    async def count(self, tenant: TenantId) -> int:
        return len(self.chunks)

    async def ids(self, tenant: TenantId) -> list[str]:
        self.asked.append(False)
        self.only.append([])  # the ids alone: no text, no vector
        return [f"a-v-{n}" for n in self.chunks]

    async def records(self, tenant: TenantId, *, vectors: bool = False,
                      only: Sequence[str] | None = None) -> list[ChunkRecord]:
        self.asked.append(vectors)
        self.only.append(None if only is None else list(only))
        made = [vectored("a", "v", n, self.texts.get(n, f"pump {n}"),
                         [1.0, float(n) + (n in self.texts)] if vectors else ())
                for n in self.chunks]
        return made if only is None else [
            r for r in made if r.chunk_id in only and r.chunk_id not in self.gone]


async def test_only_a_tenant_small_enough_keeps_its_vectors() -> None:
    small, large = Source(3), Source(4)
    assert (await LexicalIndexes(small, exact_max_chunks=3).index(TenantId("t"), "1")).vectors \
        is not None
    assert (await LexicalIndexes(large, exact_max_chunks=3).index(TenantId("t"), "1")).vectors \
        is None
    assert (small.asked, large.asked) == ([True], [False])


async def test_the_indexes_kept_stay_within_a_number_of_chunks() -> None:
    source = Source(3)
    indexes = LexicalIndexes(source, max_chunks=7)
    for tenant in ("a", "b"):
        await indexes.index(TenantId(tenant), "1")
    assert indexes.rebuilds == 2
    await indexes.index(TenantId("a"), "1")  # 6 chunks kept: both are
    assert indexes.rebuilds == 2
    with structlog.testing.capture_logs() as logged:
        await indexes.index(TenantId("c"), "1")  # 9: "b", the least recently used, goes
    assert [(e["event"], e["tenant"], e["chunks_kept"]) for e in logged] == [
        ("lexical_index_dropped", "b", 9)]
    await indexes.index(TenantId("a"), "1")
    assert indexes.rebuilds == 3
    await indexes.index(TenantId("b"), "1")
    assert indexes.rebuilds == 4
    alone = LexicalIndexes(Source(10), max_chunks=7)
    await alone.index(TenantId("big"), "1")
    await alone.index(TenantId("big"), "1")  # larger than the bound alone: kept all the same
    assert alone.rebuilds == 1


async def test_a_rebuild_fetches_only_the_chunks_it_does_not_hold() -> None:
    source = Source(3)
    indexes = LexicalIndexes(source)
    first = await indexes.index(TenantId("t"), "1")
    source.chunks = [1, 2, 3, 4]  # chunk 0 deleted, 3 and 4 written
    source.gone = {"a-v-4"}  # and 4 deleted again before it was read
    second = await indexes.index(TenantId("t"), "2")
    assert source.asked == [True, False, True]
    assert source.only == [None, [], ["a-v-3", "a-v-4"]]  # all, the ids, the new ones
    assert [r.chunk_id for r in second.records] == ["a-v-1", "a-v-2", "a-v-3"]
    assert second.vectors is not None and first.vectors is not None
    assert np.allclose(second.vectors[:2], first.vectors[1:])  # kept, not fetched again
    assert [h.chunk_id for h in second.nearest([1.0, 3.0], np.ones(3, dtype=bool), k=1)] == [
        "a-v-3"]


async def test_a_rebuild_past_max_age_reads_every_text_and_fetches_what_changed() -> None:
    now = [0.0]
    source = Source(3)
    indexes = LexicalIndexes(source, max_age=300, clock=lambda: now[0])
    first = await indexes.index(TenantId("t"), "1")
    source.texts = {1: "valve 1"}  # rewritten under its id by a writer that did not bump
    now[0] = 301.0
    aged = await indexes.index(TenantId("t"), "1")
    assert source.only == [None, None, ["a-v-1"]]  # all; every text; the changed one's vector
    assert source.asked == [True, False, True]
    assert [r.text for r in aged.records] == ["pump 0", "valve 1", "pump 2"]
    everything = np.ones(3, dtype=bool)
    assert [f.row for f in aged.search("valve", everything, k=3)] == [1]
    assert aged.search("valve", everything, k=3) == LexicalIndex(aged.records).search(
        "valve", everything, k=3)
    assert aged.vectors is not None and first.vectors is not None
    assert np.allclose(aged.vectors[[0, 2]], first.vectors[[0, 2]])
    assert not np.allclose(aged.vectors[1], first.vectors[1])  # the rewritten chunk's own
    now[0] = 302.0
    await indexes.index(TenantId("t"), "2")  # a generation moved: the ids, nothing new
    assert source.only[3:] == [[]]


def test_an_index_built_on_the_previous_one_is_the_index_built_afresh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    words = ["pump", "seal", "bearing", "valve", "gasket", "motor", "filter", "sensor", "relay",
             "boiler"]

    def chunk(n: int) -> ChunkRecord:
        text = " ".join(words[(n * k) % len(words)] for k in range(1, 4 + n % 5))
        return record(f"d{n % 3}", "v", n, f"{text} {n * 7}", heading=words[n % 4])

    first = LexicalIndex([chunk(n) for n in range(12)])
    tokenized: list[str] = []

    def counting(text: str) -> list[str]:
        tokenized.append(text)
        return tokenize(text)

    monkeypatch.setattr("chat_gateway.lexical.tokenize", counting)
    # 0-5 deleted (their terms "0", "7", ... with them), 12-15 written, 6-11 kept
    later = [chunk(n) for n in range(6, 16)]
    built_on = LexicalIndex(later, previous=first)
    assert len(tokenized) == 4  # only the new chunks were read into terms
    afresh = LexicalIndex(later)
    assert built_on._vocab.keys() == afresh._vocab.keys()  # the deleted chunks' terms are gone
    served = built_on.served_rows({DocumentId(f"d{n}"): "v" for n in range(3)})
    for query in [*words, "pump seal 42", "valve 105 filter", "7", "gasket motor relay boiler"]:
        assert np.array_equal(built_on.scores(query), afresh.scores(query)), query
        assert built_on.search(query, served, k=5) == afresh.search(query, served, k=5)
    assert not built_on.scores("35").any() and first.scores("35").any()  # chunk 5 only
