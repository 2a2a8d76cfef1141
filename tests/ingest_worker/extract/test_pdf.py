"""PDF extraction on generated documents: pages, headings from the outline, mixed scanned pages,
the pypdf fallback, and encryption that does or does not need a password."""

from __future__ import annotations

from typing import TypedDict

import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.pdf import SCAN_TEXT_FLOOR
from ingest_worker.extract.types import ExtractionFailed
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 500, "max_bytes": 50 * 1024 * 1024}


def test_page_numbers_are_kept_one_block_per_page() -> None:
    pages = [docs.lorem(150, seed=i) for i in range(5)]
    result = extract(docs.text_pdf(pages), "five.pdf", **LIMITS)
    assert [b.page for b in result.blocks] == [1, 2, 3, 4, 5]
    for block, text in zip(result.blocks, pages, strict=True):
        assert block.text.split() == text.split()  # wrapped into lines, every word kept


def test_outline_titles_split_pages_and_become_headings() -> None:
    data = docs.text_pdf(
        [
            "Preface text.\n1 Introduction\nIntro body.\n2 Methods\nMethods body.",
            "More methods.\n3 Results\nResults body.",
        ],
        outline=[("Introduction", 1), ("Methods", 1), ("Results", 2)],
    )
    blocks = extract(data, "outlined.pdf", **LIMITS).blocks
    assert [(b.page, b.heading, b.text.split("\n")[0]) for b in blocks] == [
        (1, None, "Preface text."),
        (1, "Introduction", "1 Introduction"),  # the section number stays with its title
        (1, "Methods", "2 Methods"),
        (2, "Methods", "More methods."),
        (2, "Results", "3 Results"),
    ]


def test_a_bookmark_whose_title_is_not_on_the_page_marks_the_page_from_its_top() -> None:
    data = docs.text_pdf(["First.", "Second."], outline=[("Chapter Two", 2)])
    blocks = extract(data, "b.pdf", **LIMITS).blocks
    assert [(b.page, b.heading) for b in blocks] == [(1, None), (2, "Chapter Two")]


def test_scanned_pages_among_text_pages_are_a_warning_not_a_failure() -> None:
    result = extract(
        docs.mixed_pdf(["Real text one.", None, "Real text three.", None]), "m.pdf", **LIMITS
    )
    assert [b.page for b in result.blocks] == [1, 3]
    assert result.warnings == (
        "2 of 4 pages (2, 4) look scanned (a picture, no text layer): their content is not indexed",
    )


def test_a_picture_with_a_watermark_line_is_still_a_scan() -> None:
    stamp = docs.PdfPage(text="Produced with a trial version", image=True)
    with pytest.raises(ExtractionFailed) as error:
        extract(docs.pdf([stamp, stamp]), "s.pdf", **LIMITS)
    assert error.value.reason == "no_text_layer"
    assert "scanned PDF" in error.value.message
    # ...but a page with a picture and real text is a text page.
    page = docs.PdfPage(text=docs.lorem(SCAN_TEXT_FLOOR), image=True)
    assert extract(docs.pdf([page]), "t.pdf", **LIMITS).warnings == ()


def test_garbled_pages_are_dropped_with_a_warning_when_others_are_readable() -> None:
    garbled = docs.PdfPage(extra=b"BT /FG 10 Tf 50 700 Td (\x01\x02\x03\x04\x05\x06\x07\x08) Tj ET")
    result = extract(docs.pdf(["Readable words here.", garbled]), "g.pdf", **LIMITS)
    assert [b.page for b in result.blocks] == [1]
    assert "readable character mapping" in result.warnings[0]


def test_whole_document_garbled_or_drawn_fails_specifically() -> None:
    with pytest.raises(ExtractionFailed) as garbled:
        extract(docs.garbled_pdf(4), "g.pdf", **LIMITS)
    assert garbled.value.reason == "garbled_text"
    with pytest.raises(ExtractionFailed) as drawn:
        extract(docs.vector_pdf(2), "v.pdf", **LIMITS)
    assert (drawn.value.reason, drawn.value.message) == (
        "no_text_layer",
        "PDF has no text layer: its text is drawn as shapes",
    )


def test_only_page_numbers_on_many_pages_is_no_text_layer() -> None:
    data = docs.text_pdf([str(n) for n in range(1, 11)])
    with pytest.raises(ExtractionFailed) as error:
        extract(data, "numbers.pdf", **LIMITS)
    assert error.value.reason == "no_text_layer"


def test_pypdf_reads_what_pdfium_refuses() -> None:
    import pypdfium2

    data = docs.repairable_pdf(["Recovered page one.", "Recovered page two."])
    with pytest.raises(pypdfium2.PdfiumError):
        pypdfium2.PdfDocument(data)
    result = extract(data, "repairable.pdf", **LIMITS)
    assert result.extractor == "pypdf"
    assert [(b.page, b.text) for b in result.blocks] == [
        (1, "Recovered page one."),
        (2, "Recovered page two."),
    ]
    assert "pypdf" in result.warnings[0]


@pytest.mark.parametrize("algorithm", ["RC4-40", "RC4-128", "AES-128", "AES-256"])
def test_encrypted_with_a_user_password_fails_as_encrypted(algorithm: str) -> None:
    data = docs.encrypted_pdf(algorithm=algorithm)  # type: ignore[arg-type]
    with pytest.raises(ExtractionFailed) as error:
        extract(data, "locked.pdf", **LIMITS)
    assert (error.value.reason, error.value.message) == (
        "encrypted",
        "encrypted PDF: it needs a password to open",
    )


def test_permissions_only_encryption_opens_without_a_password() -> None:
    result = extract(docs.owner_only_encrypted_pdf("Anyone may read."), "o.pdf", **LIMITS)
    assert result.blocks[0].text == "Anyone may read."


def test_self_drawing_xobject_terminates_with_its_text() -> None:
    result = extract(docs.recursive_xobject_pdf(), "loop.pdf", **LIMITS)
    assert "Hello recursion" in result.blocks[0].text
