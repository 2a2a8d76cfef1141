from __future__ import annotations

import pytest

from inference_worker.citations import citations, cited_numbers
from parley.contracts import Source
from parley.ids import ChunkId, DocumentId


def source(n: int) -> Source:
    return Source(
        n=n, chunk_id=ChunkId(f"c{n}"), document_id=DocumentId(f"d{n}"), document=f"doc{n}.pdf",
        page=n, snippet=f"snippet {n}", text=f"full text {n}", score=0.5,
    )


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("Revenue grew [2].", [2]),
        ("A [1, 3] and B [3][2].", [1, 3, 2]),
        ("Both [1-3].", [1, 2, 3]),
        ("En dash [2\u20134].", [2, 3, 4]),
        ("As [Source 2] and [sources 1 and 4] say.", [2, 1, 4]),
        ("[1; 2]", [1, 2]),
        ("No citation, a list [a] or a year (2024) or [] here.", []),
        ("Not a range of 900 sources [1-900].", [1]),
        ("Backwards [3-1].", [3]),
    ],
)
def test_cited_numbers(text: str, numbers: list[int]) -> None:
    assert cited_numbers(text) == numbers


def test_citations_resolve_in_order_of_use_and_drop_unknown_numbers() -> None:
    sources = [source(1), source(2), source(3)]
    cited = citations("First [3], then [1] and a made-up [7], again [3].", sources)
    assert [c["n"] for c in cited] == [3, 1]
    assert cited[0] == {
        "n": 3, "chunk_id": "c3", "document_id": "d3", "document": "doc3.pdf", "page": 3,
        "snippet": "snippet 3", "score": 0.5, "context": "",
        # where in the document (slide, sheet, heading, OCR: chat_gateway.citations)
        "heading": None, "location": None, "ocr": False,
        "unit": None,  # the caption of the table the text continues: none here
    }
    assert "text" not in cited[1]


def test_no_sources_no_citations() -> None:
    assert citations("It says so [1].", []) == []
