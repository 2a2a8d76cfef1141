"""PPTX, XLSX, HTML, Markdown and plain text: what each extractor reads, in which order, with which
page and heading, and how each fails."""

from __future__ import annotations

import io
import zipfile
from typing import TypedDict

import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.types import Block, ExtractionFailed
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 50, "max_bytes": 20 * 1024 * 1024}


def failure(
    data: bytes, *, max_pages: int = LIMITS["max_pages"], max_bytes: int = LIMITS["max_bytes"]
) -> ExtractionFailed:
    with pytest.raises(ExtractionFailed) as caught:
        extract(data, "upload.bin", max_pages=max_pages, max_bytes=max_bytes)
    return caught.value


# --------------------------------------------------------------------------------------- PPTX


def test_pptx_slides_are_pages_with_title_body_table_and_notes() -> None:
    deck = docs.pptx(
        [
            docs.Slide(title="Roadmap", body=["Launch in Q3", "Hire two engineers"], notes="Oslo"),
            docs.Slide(title="Budget", table=[["Item", "Cost"], ["Servers", "12,000 EUR"]]),
        ]
    )
    out = extract(deck, "deck.pptx", **LIMITS)
    assert (out.kind, out.pages, out.extractor) == ("pptx", 2, "python-pptx")
    assert out.blocks == (
        Block("Roadmap", 1, "Roadmap", "paragraph"),
        Block("Launch in Q3\nHire two engineers", 1, "Roadmap", "paragraph"),
        Block("Oslo", 1, "Roadmap", "notes"),
        Block("Budget", 2, "Budget", "paragraph"),
        Block("Item | Cost\nServers | 12,000 EUR", 2, "Budget", "table"),
    )


def test_pptx_reports_every_slide_and_keeps_the_slide_limit() -> None:
    deck = docs.pptx([docs.Slide(title=f"Slide {n}") for n in range(1, 4)])
    seen: list[tuple[int, int]] = []
    extract(deck, "d.pptx", **LIMITS, on_page=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert failure(deck, max_pages=2).reason == "too_many_pages"


def test_pptx_without_text_or_readable_package_fails_with_its_reason() -> None:
    assert failure(docs.pptx([docs.Slide(), docs.Slide()])).reason == "empty"
    pictures_only = docs.pptx([docs.Slide(picture="Only pixels here")])
    assert failure(pictures_only).reason == "no_text_layer"  # OCR off
    cut = docs.pptx([docs.Slide(title="Cut")])
    assert failure(cut[: len(cut) // 2]).reason == "malformed"


# --------------------------------------------------------------------------------------- XLSX


def test_xlsx_sheets_are_sections_and_rows_carry_their_header() -> None:
    book = docs.xlsx(
        {
            "Warehouses": [
                ["Warehouse", "City", "Pallets"],
                ["Zephyr", "Tromso", 4812],
                [None, None, None],
                ["Boreas", None, 120.0],
            ],
            "Loose": [[1, 2, 3], ["a", None, "c"]],
        }
    )
    out = extract(book, "stock.xlsx", **LIMITS)
    assert (out.kind, out.pages) == ("xlsx", None)
    assert out.blocks == (
        Block(
            "Warehouse: Zephyr | City: Tromso | Pallets: 4812\nWarehouse: Boreas | Pallets: 120",
            None,
            "Warehouses",
            "table",
        ),
        Block("1 | 2 | 3\na |  | c", None, "Loose", "table"),  # no header row: cells as they are
    )


def test_xlsx_title_rows_above_the_header_are_kept_as_text() -> None:
    book = docs.xlsx(
        {
            "Stock": [
                ["Stock count, March"],
                [],
                ["Warehouse", "Pallets"],
                ["Zephyr", 4812],
            ]
        }
    )
    out = extract(book, "stock.xlsx", **LIMITS)
    assert [b.text for b in out.blocks] == ["Stock count, March\nWarehouse: Zephyr | Pallets: 4812"]


def test_xlsx_dates_booleans_and_a_header_only_sheet() -> None:
    import datetime as dt

    book = docs.xlsx(
        {
            "Log": [["Day", "Done"], [dt.datetime(2024, 3, 5), True]],
            "Empty": [["Name", "Owner"]],
        }
    )
    out = extract(book, "log.xlsx", **LIMITS)
    assert [b.text for b in out.blocks] == ["Day: 2024-03-05 | Done: TRUE", "Name | Owner"]


def test_an_empty_workbook_and_a_bomb_fail_with_their_reasons() -> None:
    assert failure(docs.xlsx({"Sheet": []})).reason == "empty"
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<x>" + " " * (30 * 1024 * 1024) + "</x>")
    assert failure(bomb.getvalue(), max_bytes=1_000_000).reason == "too_large"


# --------------------------------------------------------------------------------------- HTML


def test_html_keeps_the_main_content_with_headings_not_the_navigation() -> None:
    page = docs.html_page(
        "Cold storage",
        "<p>Warehouse Zephyr holds 4,812 pallets.</p><h2>Inspections</h2>"
        "<p>Every second Tuesday.</p><table><tr><th>Room</th><th>Capacity</th></tr>"
        "<tr><td>North</td><td>2,000 pallets</td></tr></table>",
    )
    out = extract(page, "page.html", **LIMITS)
    assert out.kind == "html"
    texts = [(b.text, b.heading, b.kind) for b in out.blocks]
    assert ("Warehouse Zephyr holds 4,812 pallets.", "Cold storage", "paragraph") in texts
    assert ("Every second Tuesday.", "Inspections", "paragraph") in texts
    assert ("Room | Capacity\nNorth | 2,000 pallets", "Inspections", "table") in texts
    whole = " ".join(b.text for b in out.blocks)
    for furniture in ("Products", "Contact", "Older posts", "newsletter", "Cookie"):
        assert furniture not in whole


def test_html_without_semantic_tags_and_in_a_legacy_encoding() -> None:
    body = " ".join(f"<p>{docs.lorem(40, seed=n)}</p>" for n in range(4))
    page = (
        '<html><head><meta charset="windows-1252"><title>Caf\u00e9</title></head><body>'
        f"<div id=menu><a href=/>Home</a> <a href=/x>Shop</a></div>"
        f"<div id=content><h1>Caf\u00e9 cr\u00e8me</h1>{body}</div></body></html>"
    ).encode("cp1252")
    out = extract(page, "page.htm", **LIMITS)
    whole = "\n".join(b.text for b in out.blocks)
    assert "Caf\u00e9 cr\u00e8me" in whole and docs.lorem(40, seed=2)[:60] in whole


def test_a_page_without_text_is_empty() -> None:
    assert failure(b"<!DOCTYPE html><html><body><img src=a.png></body></html>").reason == "empty"


# ----------------------------------------------------------------------------------- Markdown


def test_markdown_headings_are_sections_and_tables_are_rows() -> None:
    text = (
        "# Guide\n\nIntro with a [link](https://example.org) and **bold**.\n\n"
        "## Install\n\nRun `pip install parley`.\n\n"
        "| Option | Default |\n|---|---|\n| ocr | local |\n\n- one\n- two\n\n"
        "```\ncode block\n```\n"
    )
    out = extract(text.encode(), "guide.md", **LIMITS)
    assert out.kind == "markdown"
    assert out.blocks == (
        Block("Guide", None, "Guide", "paragraph"),
        Block("Intro with a link and bold.", None, "Guide", "paragraph"),
        Block("Install", None, "Install", "paragraph"),
        Block("Run pip install parley.", None, "Install", "paragraph"),
        Block("Option | Default\nocr | local", None, "Install", "table"),
        Block("one", None, "Install", "paragraph"),
        Block("two", None, "Install", "paragraph"),
        Block("code block", None, "Install", "paragraph"),
    )


# ------------------------------------------------------------------------------- plain text


@pytest.mark.parametrize(
    ("encoding", "warning"),
    [("utf-8", ()), ("utf-8-sig", ()), ("utf-16", ("read as utf-16",)), ("cp1252", None)],
)
def test_text_encodings_are_detected(encoding: str, warning: tuple[str, ...] | None) -> None:
    text = (
        "Caf\u00e9 cr\u00e8me in Saint-\u00c9tienne costs 3 euros, "
        "tr\u00e8s \u00e9l\u00e9gant.\n\nSecond."
    )
    out = extract(text.encode(encoding), "notes.txt", **LIMITS)
    assert out.kind == "text"
    assert [b.text for b in out.blocks] == [text.split("\n\n")[0], "Second."]
    if warning is not None:
        assert out.warnings == warning
    else:
        assert out.warnings == ("read as cp1252",)


def test_text_of_only_whitespace_is_empty_and_binary_is_not_text() -> None:
    assert failure(b" \n\n\t ").reason == "empty"
    assert failure(bytes(range(256)) * 4).reason == "unsupported_type"
