"""The one typing rule every caller shares: the bytes decide, never the name."""

from __future__ import annotations

import io
import zipfile

import pytest

from parley.filetypes import UnsupportedType, decode, detect, text_kind
from tests.fixtures import documents as docs


def test_documents_are_told_apart_by_their_bytes() -> None:
    assert detect(docs.text_pdf(["x"])) == "pdf"
    assert detect(b"junk before " + docs.text_pdf(["x"])) == "pdf"
    assert detect(docs.docx(["x"])) == "docx"
    assert detect(docs.docx(["x"], main_part="word/renamed.xml")) == "docx"  # by content type
    assert detect(docs.pptx([docs.Slide(title="x")])) == "pptx"
    assert detect(docs.xlsx({"S": [["a", "b"]]})) == "xlsx"
    assert detect(docs.encrypted_docx()) == "docx"  # reported as encrypted by the worker


def test_a_cut_off_office_file_is_still_what_its_parts_say() -> None:
    deck = docs.pptx([docs.Slide(title="Cut")])
    assert detect(deck[: len(deck) // 2]) == "pptx"  # the extractor then says it is damaged


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("<!DOCTYPE html><html><body>x</body></html>", "html"),
        ("<?xml version='1.0'?>\n<html xmlns='http://www.w3.org/1999/xhtml'></html>", "html"),
        ("  <!-- saved page -->\n<HTML><p>x</p></HTML>", "html"),
        ("# Title\n\nBody.", "markdown"),
        ("Title\n=====\n\nSome `code` and a [link](http://x.org).", "markdown"),
        ("Notes\n\n- **bold** item\n\n```\ncode\n```\n", "markdown"),
        ("Just a note about <b>tags</b> and #hashtags.", "text"),
        ("Plain prose.\nSecond line.", "text"),
    ],
)
def test_text_is_html_markdown_or_plain_by_what_it_holds(text: str, kind: str) -> None:
    assert text_kind(text) == kind
    assert detect(text.encode()) == kind


def test_encodings_are_detected_and_binary_is_not_text() -> None:
    sample = "Caf\u00e9 cr\u00e8me \u00e0 Saint-\u00c9tienne, tr\u00e8s \u00e9l\u00e9gant."
    assert decode(sample.encode("utf-8")) == (sample, "utf-8")
    assert decode(sample.encode("utf-16")) == (sample, "utf-16")
    assert decode(sample.encode("cp1252")) == (sample, "cp1252")
    assert decode(bytes(range(256))) is None
    assert decode(b"\xff\xfe" + b"\x00\xd8") is None  # a BOM, then invalid UTF-16


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
        (b"\x7fELF" + bytes(64), "a program"),
        (bytes(range(256)) * 4, "some other binary file"),
        (docs.legacy_doc(), "legacy Office file"),
    ],
)
def test_other_files_say_what_they_look_like(data: bytes, says: str) -> None:
    with pytest.raises(UnsupportedType, match=says) as caught:
        detect(data)
    assert caught.value.reason == "unsupported_type" and caught.value.hint


def test_a_zip_that_is_no_office_file_is_unsupported() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8\xff")
    with pytest.raises(UnsupportedType, match="ZIP archive"):
        detect(out.getvalue())
