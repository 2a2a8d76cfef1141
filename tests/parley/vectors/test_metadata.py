"""ChunkMeta: the chunk metadata the embed worker writes and search, the lexical index and the
re-embedding sweep read back."""

from __future__ import annotations

from parley.contracts import Chunk, ChunkBatch, DocumentContext
from parley.embedder.text import document_text
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.metadata import ChunkMeta

CONTEXT = DocumentContext(
    title="Quarterly report", entity="Norrvik Timber AB", period="Q2 2024", period_end="2024-06-30"
)


def batch(*chunks: Chunk, context: DocumentContext | None = CONTEXT) -> ChunkBatch:
    return ChunkBatch(
        tenant=TenantId("acme"),
        document_id=DocumentId("d1"),
        version="v1",
        filename="norrvik-q2.pdf",
        path="acme/reports/norrvik-q2.pdf",
        batch_index=0,
        batch_count=1,
        chunks=list(chunks),
        context=context,
        kind="pdf",
    )


def test_the_flat_form_holds_what_the_embed_worker_has_always_written() -> None:
    chunk = Chunk(
        chunk_id=ChunkId("c1"), ordinal=3, text="Net sales rose.", page=2, heading="Results",
        tokens=5, ocr=True,
    )
    assert ChunkMeta.of(batch(chunk), chunk).to_metadata() == {
        "filename": "norrvik-q2.pdf",
        "path": "acme/reports/norrvik-q2.pdf",
        "page": 2,
        "heading": "Results",
        "ordinal": 3,
        "tokens": 5,
        "title": "Quarterly report",
        "entity": "Norrvik Timber AB",
        "period": "Q2 2024",
        "period_end": "2024-06-30",
        "kind": "pdf",
        "ocr": True,
    }


def test_unset_fields_and_a_false_ocr_mark_are_left_out() -> None:
    chunk = Chunk(chunk_id=ChunkId("c1"), ordinal=0, text="x", tokens=1)
    flat = ChunkMeta.of(batch(chunk, context=None), chunk).to_metadata()
    assert flat == {
        "filename": "norrvik-q2.pdf",
        "path": "acme/reports/norrvik-q2.pdf",
        "ordinal": 0,
        "tokens": 1,
        "kind": "pdf",
    }


def test_it_reads_back_what_it_wrote() -> None:
    meta = ChunkMeta(
        filename="a.pptx", path="t/a.pptx", page=4, heading="Roadmap", ordinal=9, tokens=120,
        context=CONTEXT, kind="pptx", ocr=True, unit="(in thousands, except per share amounts)",
    )
    assert meta.to_metadata()["unit"] == "(in thousands, except per share amounts)"
    assert ChunkMeta.from_metadata(meta.to_metadata()) == meta
    assert ChunkMeta.from_metadata(ChunkMeta().to_metadata()) == ChunkMeta()


def test_what_it_cannot_use_reads_as_unset() -> None:
    meta = ChunkMeta.from_metadata(
        {"page": True, "heading": "", "kind": "bogus", "ordinal": "7", "ocr": "yes", "unit": "",
         "other": 1}
    )
    assert meta == ChunkMeta()
    assert ChunkMeta.from_metadata({"page": 0}).page is None
    assert ChunkMeta.from_metadata({"page": 3.0}).page == 3


def test_its_document_text_is_the_embedding_rule() -> None:
    meta = ChunkMeta(filename="norrvik-q2.pdf", heading="Results", context=CONTEXT)
    assert meta.document_text("Net sales rose.") == document_text(
        "norrvik-q2.pdf", "Net sales rose.", "Results", CONTEXT
    )
