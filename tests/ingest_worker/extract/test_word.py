"""DOCX extraction on generated documents: everything python-docx misses, Strict OOXML, renamed and
missing parts, hostile packages."""

from __future__ import annotations

import io
import zipfile
from typing import TypedDict

import docx as python_docx
import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.types import Block, ExtractionFailed
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 500, "max_bytes": 50 * 1024 * 1024}

RICH_BLOCKS = (
    Block("Quarterly Report", None, "Quarterly Report", "paragraph"),
    Block("Opening paragraph about the quarter.", None, "Quarterly Report", "paragraph"),
    Block("Revenue", None, "Revenue", "paragraph"),
    Block("Revenue grew in every region.", None, "Revenue", "paragraph"),
    Block(
        "Region | Q1 | Q2\nEurope | 1,234.5 | 1,300.0\nAsia | 987.6 | 1,010.2",
        None,
        "Revenue",
        "table",
    ),
    # A horizontally merged cell once, a vertically merged one in its first row only.
    Block(
        "Merged heading | Solo\nLeft | Middle | Right\nDown | x | y\n | p | q",
        None,
        "Revenue",
        "table",
    ),
    Block("Risks", None, "Risks", "paragraph"),
    Block("Currency risk remains.", None, "Risks", "paragraph"),
    Block("Text box: key figure 42.", None, "Risks", "textbox"),  # once, not again from VML
    Block("Company Confidential", None, None, "header"),  # in both sections, kept once
    Block("Cover header", None, None, "header"),
    Block("Page footer one", None, None, "footer"),
    Block("Even page header", None, None, "header"),
    Block("Page footer two", None, None, "footer"),
    Block("Footnote: unaudited figures.", None, "Revenue", "footnote"),
    Block("Endnote: see annual report.", None, "Risks", "endnote"),
    Block("Comment: check the hedging numbers.", None, "Risks", "comment"),
)


def test_everything_python_docx_misses_is_extracted_in_reading_order() -> None:
    result = extract(docs.rich_docx(), "rich.docx", **LIMITS)
    assert result.blocks == RICH_BLOCKS
    assert (result.kind, result.pages, result.extractor, result.warnings) == (
        "docx",
        None,
        "ooxml",
        (),
    )
    # The fixture is a fair test: python-docx's own view repeats the merged cell and has no notes.
    document = python_docx.Document(io.BytesIO(docs.rich_docx()))
    first_row = [cell.text for cell in document.tables[1].rows[0].cells]
    assert first_row == ["Merged heading", "Merged heading", "Solo"]
    assert "Footnote" not in "\n".join(p.text for p in document.paragraphs)


def test_strict_ooxml_reads_like_transitional() -> None:
    with pytest.raises(KeyError):
        python_docx.Document(io.BytesIO(docs.rich_docx(strict=True)))
    assert extract(docs.rich_docx(strict=True), "strict.docx", **LIMITS).blocks == RICH_BLOCKS


def test_renamed_document_part_and_missing_styles_part() -> None:
    data = docs.docx(
        [docs.Heading("Title here", 1), "Body."], main_part="word/blah.xml", styles=False
    )
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "word/document.xml" not in names and "word/styles.xml" not in names
    assert extract(data, "renamed.docx", **LIMITS).blocks == (
        Block("Title here", None, "Title here", "paragraph"),  # style id still says heading
        Block("Body.", None, "Title here", "paragraph"),
    )


def test_document_part_found_by_content_type_when_the_relationship_is_missing() -> None:
    source = zipfile.ZipFile(io.BytesIO(docs.docx(["Found anyway."])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            if name != "_rels/.rels":
                target.writestr(name, source.read(name))
    result = extract(out.getvalue(), "no-rels.docx", **LIMITS)
    assert result.blocks[0].text == "Found anyway."
    assert result.warnings == ("document part found by content type, not relationship",)


def _edit_document_xml(data: bytes, old: str, new: str) -> bytes:
    package = zipfile.ZipFile(io.BytesIO(data))
    files = {name: package.read(name) for name in package.namelist()}
    xml = files["word/document.xml"].decode()
    assert old in xml
    files["word/document.xml"] = xml.replace(old, new, 1).encode()
    return _zip(files)


def test_nested_tables_stay_in_their_cell() -> None:
    nested = "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>inner</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
    cell_end = '<w:t xml:space="preserve">outer</w:t></w:r></w:p>'
    data = _edit_document_xml(
        docs.docx([docs.Table([["outer", "x"]])]), cell_end, cell_end + nested
    )
    assert extract(data, "n.docx", **LIMITS).blocks[0].text == "outer inner | x"


def test_pictures_without_text_are_no_text_layer_and_nothing_at_all_is_empty() -> None:
    run = '<w:r><w:t xml:space="preserve">placeholder</w:t></w:r>'
    data = _edit_document_xml(docs.docx(["placeholder"]), run, "<w:r><w:drawing/></w:r>")
    with pytest.raises(ExtractionFailed) as error:
        extract(data, "pic.docx", **LIMITS)
    assert (error.value.reason, error.value.message) == (
        "no_text_layer",
        "DOCX holds pictures but no text",
    )
    with pytest.raises(ExtractionFailed) as empty:
        extract(docs.docx([""]), "e.docx", **LIMITS)
    assert empty.value.reason == "empty"


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in files.items():
            archive.writestr(name, payload)
    return out.getvalue()


@pytest.mark.parametrize(
    ("files", "reason", "message"),
    [
        ({"xl/workbook.xml": b"<workbook/>"}, "malformed", "damaged Excel file"),
        ({"ppt/presentation.xml": b"<p/>"}, "malformed", "damaged PowerPoint file"),
        (
            {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
            "unsupported_type",
            "an OpenDocument file (LibreOffice)",
        ),
        ({"readme.txt": b"hello"}, "unsupported_type", "a ZIP archive that is not a Word"),
    ],
    ids=["xlsx", "pptx", "odt", "zip"],
)
def test_other_zip_packages_are_told_apart_by_their_main_part(
    files: dict[str, bytes], reason: str, message: str
) -> None:
    """A broken workbook or deck is read as what it is (and fails as damaged); an OpenDocument
    file or a plain ZIP is not a type we read, and the message says what it is."""
    with pytest.raises(ExtractionFailed) as error:
        extract(_zip(files), "x.docx", **LIMITS)
    assert error.value.reason == reason
    assert error.value.message.startswith(message), error.value.message


def test_a_zip_bomb_is_too_large_before_it_is_unpacked() -> None:
    run = '<w:t xml:space="preserve">x</w:t>'
    data = _edit_document_xml(docs.docx(["x"]), run, "<w:t>" + "A" * (30 * 1024 * 1024) + "</w:t>")
    assert len(data) < 100_000
    with pytest.raises(ExtractionFailed) as error:
        extract(data, "bomb.docx", max_pages=1, max_bytes=1000000)
    assert error.value.reason == "too_large"


def test_entities_are_not_expanded_and_invalid_xml_keeps_what_is_readable() -> None:
    package = zipfile.ZipFile(io.BytesIO(docs.docx(["Safe text."])))
    files = {name: package.read(name) for name in package.namelist()}
    xml = files["word/document.xml"].decode()
    body = xml.split("?>", 1)[1]
    files["word/document.xml"] = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/hostname">]>'
        + body.replace("Safe text.", "Safe text.&secret;")
    ).encode()
    result = extract(_zip(files), "xxe.docx", **LIMITS)
    assert [b.text for b in result.blocks] == ["Safe text."]

    files["word/document.xml"] = xml.replace(
        "</w:body>", "<w:p><w:r><w:t>broken</w:r></w:body>"
    ).encode()
    result = extract(_zip(files), "broken.docx", **LIMITS)
    assert result.blocks[0].text == "Safe text."
    assert result.warnings == (
        "part word/document.xml has invalid XML; its readable text was kept",
    )


def test_a_damaged_zip_is_malformed() -> None:
    data = docs.docx(["Cut."])
    with pytest.raises(ExtractionFailed) as error:
        extract(data[: len(data) // 2], "cut.docx", **LIMITS)
    assert error.value.reason == "malformed"
