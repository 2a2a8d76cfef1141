"""extract(): type sniffing, limits, the closed set of failure reasons, text-quality checks, and one
generated document of every category (the same categories the real corpus test covers)."""

from __future__ import annotations

from typing import TypedDict

import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.types import (
    REASONS,
    Block,
    Extraction,
    ExtractionFailed,
    clean_text,
    quality,
)
from parley.errors import UserError
from parley.filetypes import detect
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 500, "max_bytes": 50 * 1024 * 1024}


def failure(
    data: bytes, *, max_pages: int = LIMITS["max_pages"], max_bytes: int = LIMITS["max_bytes"]
) -> ExtractionFailed:
    with pytest.raises(ExtractionFailed) as caught:
        extract(data, "upload.bin", max_pages=max_pages, max_bytes=max_bytes)
    return caught.value


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: docs.scanned_pdf(3), "no_text_layer"),
        (docs.vector_pdf, "no_text_layer"),
        (docs.garbled_pdf, "garbled_text"),
        (docs.encrypted_pdf, "encrypted"),
        (lambda: docs.encrypted_pdf(algorithm="RC4-40"), "encrypted"),
        (docs.malformed_pdf, "malformed"),
        (docs.truncated_pdf, "malformed"),
        (docs.blank_pdf, "empty"),
        (lambda: docs.docx([]), "empty"),
        (docs.encrypted_docx, "encrypted"),
        (docs.legacy_doc, "unsupported_type"),
        (lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "unsupported_type"),
        (lambda: bytes(range(256)) * 8, "unsupported_type"),
        (lambda: b"   \n\t\n", "empty"),
        (lambda: b"", "empty"),
    ],
    ids=[
        "scanned",
        "vector",
        "garbled",
        "aes256",
        "rc4",
        "malformed",
        "truncated",
        "blank",
        "empty-docx",
        "encrypted-docx",
        "legacy-doc",
        "png-image",
        "binary",
        "blank-text",
        "zero-bytes",
    ],
)
def test_each_kind_of_unusable_file_fails_with_its_reason(make, reason):  # type: ignore[no-untyped-def]
    error = failure(make())
    assert error.reason == reason
    assert isinstance(error, UserError)  # terminal for the document, never retried
    assert error.message and reason in REASONS


def test_failure_reasons_are_a_closed_set() -> None:
    with pytest.raises(ValueError, match="unknown"):
        ExtractionFailed("something_else", "nope")
    assert str(ExtractionFailed("encrypted", "encrypted PDF")) == "encrypted PDF [encrypted]"


def test_type_comes_from_the_bytes_not_the_name() -> None:
    pdf = extract(docs.text_pdf(["Named like a Word file."]), "report.docx", **LIMITS)
    word = extract(docs.docx(["Named like a PDF."]), "report.pdf", **LIMITS)
    assert (pdf.kind, word.kind) == ("pdf", "docx")
    assert detect(b"junk" * 10 + b"%PDF-1.4") == "pdf"  # pdfium allows a prefix before the header


def test_size_and_page_limits() -> None:
    data = docs.text_pdf(["page one", "page two", "page three"])
    assert failure(data, max_bytes=len(data) - 1).reason == "too_large"
    assert failure(data, max_pages=2).reason == "too_many_pages"
    assert extract(data, "ok.pdf", max_pages=3, max_bytes=len(data)).pages == 3


def test_a_good_pdf_and_docx_come_out_as_blocks() -> None:
    pdf = extract(docs.text_pdf(["Alpha page.", "Beta page."]), "a.pdf", **LIMITS)
    assert pdf == Extraction(
        kind="pdf",
        pages=2,
        blocks=(Block("Alpha page.", 1, None, "page"), Block("Beta page.", 2, None, "page")),
        extractor="pypdfium2",
        warnings=(),
    )
    word = extract(docs.docx([docs.Heading("Intro"), "Body text."]), "a.docx", **LIMITS)
    assert word.blocks == (
        Block("Intro", None, "Intro", "paragraph"),
        Block("Body text.", None, "Intro", "paragraph"),
    )
    assert word.chars == len("IntroBodytext.")


def test_on_page_reports_every_pdf_page() -> None:
    seen: list[tuple[int, int]] = []
    extract(
        docs.text_pdf(["page one", "page two", "page three"]),
        "p.pdf",
        **LIMITS,
        on_page=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_quality_flags_control_and_private_use_text_but_not_leaders_or_cjk() -> None:
    assert quality("\x01\x06\x0b\x10" * 20).garbled
    assert quality("\ue000\ue001\ue002 \ue003\ue004").garbled
    assert quality('"7+%-').garbled  # glyph ids read as ASCII: no letters
    assert not quality("1 OVERVIEW" + "." * 80 + "6").garbled
    assert not quality("みんなのおのおののなかのすべてですから").garbled
    assert not quality("Revenue | 1,234.5 | 1,300.0").garbled
    assert not quality("7").garbled  # too little to judge


def test_clean_text_drops_bad_characters_and_normalises_lines() -> None:
    assert clean_text("a\x03b\r\nc  \r\n\n\n\nd\ufffd ") == "ab\nc\n\nd"
