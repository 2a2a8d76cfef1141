"""Where a cited chunk is, in words, for every kind of document."""

from __future__ import annotations

from chat_gateway.citations import from_metadata, location


def test_each_kind_says_where_in_its_own_terms() -> None:
    assert location("pdf", 3, None) == "page 3"
    assert location("pdf", 3, "Results") == "page 3 · Results"
    assert location("pdf", 2, None, ocr=True) == "page 2, OCR"
    assert location("pptx", 2, "Roadmap") == "slide 2 · Roadmap"
    assert location("xlsx", None, "Stock") == "sheet Stock"
    assert location("markdown", None, "Install") == "§ Install"
    assert location("docx", None, None, ocr=True) == "OCR"
    assert location("text", None, None) is None


def test_stored_metadata_of_old_chunks_still_reads() -> None:
    assert from_metadata({"page": 4}) == "page 4"  # stored before chunks carried their kind
    assert from_metadata({"kind": "pptx", "page": 1.0, "heading": "Intro"}) == "slide 1 · Intro"
    assert from_metadata({"kind": "bogus", "page": True, "heading": ""}) is None
    assert from_metadata({"kind": "pdf", "page": 2, "ocr": True}) == "page 2, OCR"
