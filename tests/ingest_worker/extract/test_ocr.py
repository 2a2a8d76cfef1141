"""OCR with the real local engine (RapidOCR, models from its wheel): scanned PDF pages, image-only
pages among text pages, pictures in DOCX and PPTX, the time budget, and the extraction child.
The Azure Document Intelligence adapter is tested at its HTTP edge only (a mock transport that
answers as the service's REST API does), not against the service."""

from __future__ import annotations

import json
import time
from itertools import count
from typing import TypedDict

import httpx
import numpy as np
import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.isolation import ExtractorPool
from ingest_worker.extract.ocr import (
    AzureReadOcr,
    LocalOcr,
    Ocr,
    OcrError,
    OcrOptions,
    decode_picture,
    local_engine,
    make_ocr,
)
from ingest_worker.extract.types import Extraction, ExtractionFailed
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 50, "max_bytes": 50 * 1024 * 1024}
FACT = "The lighthouse keeper on Skarvoy logged 311 storm nights in 1987."


def words(text: str) -> str:
    return " ".join(text.split())


def test_a_scanned_pdf_is_read_page_by_page_and_marked_ocr() -> None:
    scan = docs.scanned_text_pdf(["Harbour log, spring edition.", FACT])
    out = extract(scan, "scan.pdf", **LIMITS, ocr=OcrOptions())
    assert (out.pages, out.extractor) == (2, "pypdfium2+rapidocr")
    assert [b.page for b in out.blocks] == [1, 2]
    assert all(b.ocr and b.kind == "page" for b in out.blocks)
    assert words(out.blocks[1].text) == FACT
    assert out.warnings == ("2 of 2 pages (1, 2) read by OCR",)


def test_an_image_only_page_among_text_pages_is_read_and_the_text_pages_are_not() -> None:
    mixed = docs.pdf(["Typed page one. " + docs.lorem(30), docs.PdfPage(scan=FACT), "Typed three."])
    out = extract(mixed, "mixed.pdf", **LIMITS, ocr=OcrOptions())
    assert [(b.page, b.ocr) for b in out.blocks] == [(1, False), (2, True), (3, False)]
    assert words(out.blocks[1].text) == FACT
    without = extract(mixed, "mixed.pdf", **LIMITS)  # OCR off: the page is skipped, as before
    assert [b.page for b in without.blocks] == [1, 3]


def test_a_scan_with_no_readable_text_still_ends_with_a_clear_reason() -> None:
    with pytest.raises(ExtractionFailed) as caught:
        extract(docs.scanned_pdf(2), "noise.pdf", **LIMITS, ocr=OcrOptions())
    assert caught.value.reason == "no_text_layer"
    assert "OCR found no readable text" in caught.value.message


def test_pictures_of_text_in_docx_and_pptx_are_read_where_they_stand() -> None:
    word = docs.docx(
        [docs.Heading("Kitchen"), "Before.", docs.Picture(FACT), "After.", docs.Picture(FACT)]
    )
    out = extract(word, "pic.docx", **LIMITS, ocr=OcrOptions())
    assert [(b.kind, b.ocr) for b in out.blocks] == [
        ("paragraph", False),
        ("paragraph", False),
        ("picture", True),
        ("paragraph", False),
        ("picture", True),  # the same pixels in another part: read again, where it stands
    ]
    assert words(out.blocks[2].text) == FACT and out.blocks[2].heading == "Kitchen"
    deck = docs.pptx([docs.Slide(title="Intro"), docs.Slide(title="Board", picture=FACT)])
    slides = extract(deck, "deck.pptx", **LIMITS, ocr=OcrOptions())
    [picture] = [b for b in slides.blocks if b.ocr]
    assert (picture.page, picture.heading, picture.kind) == (2, "Board", "picture")
    assert words(picture.text) == FACT
    assert slides.extractor == "python-pptx+rapidocr"


def test_a_docx_of_pictures_without_text_fails_saying_ocr_found_none() -> None:
    blank = docs.docx([docs.Picture("")])
    with pytest.raises(ExtractionFailed) as caught:
        extract(blank, "blank.docx", **LIMITS, ocr=OcrOptions())
    assert caught.value.reason == "no_text_layer" and "OCR found none" in caught.value.message


def test_the_budget_stops_ocr_and_keeps_the_pages_read_with_a_reason_for_the_rest() -> None:
    ticks = count()
    # Every clock reading is 10 s later: the first page "takes" 10 s, so with a 25 s budget a
    # second page would not fit what is left after it.
    ocr = Ocr(local_engine(0), budget=25.0, clock=lambda: 10.0 * next(ticks))
    scan = docs.scanned_text_pdf([FACT, "Second page.", "Third page."])
    out = extract(scan, "scan.pdf", **LIMITS, ocr=ocr)
    assert [b.page for b in out.blocks] == [1]
    assert "2 of 3 pages (2, 3) were not read: the OCR time budget was spent" in out.warnings
    none_left = Ocr(local_engine(0), budget=5.0, clock=lambda: 10.0 * next(ticks))
    with pytest.raises(ExtractionFailed) as caught:
        extract(scan, "scan.pdf", **LIMITS, ocr=none_left)
    assert caught.value.reason == "timeout" and "OCR ran out of time" in caught.value.message


def test_pictures_that_cannot_hold_text_are_not_decoded() -> None:
    assert decode_picture(b"not a picture") is None
    icon = docs.picture_of_text("x", width=20, size=8)
    assert decode_picture(icon) is None  # under the minimum side
    page = decode_picture(docs.picture_of_text(FACT))
    assert page is not None and page.ndim == 3 and page.shape[2] == 3 and page.dtype == np.uint8


async def test_ocr_runs_in_the_child_and_a_long_scan_ends_within_the_time_limit() -> None:
    """A 20-page scan under a 15 s limit: the child stops OCR on its budget (10 s: 5 s kept for
    the rest, as at any limit) and answers with the pages it read (never killed at the limit),
    each page accounted for. (A 30 s limit spent 25 s of OCR to prove the same.)"""
    pages = [f"Page {n}. " + docs.lorem(90, seed=n) for n in range(1, 21)]
    scan = docs.scanned_text_pdf(pages)
    pool = ExtractorPool(max_idle=1)
    started = time.monotonic()
    try:
        outcome = await pool.extract(scan, "long.pdf", timeout=15, ocr=OcrOptions(), **LIMITS)
    finally:
        await pool.close()
    assert time.monotonic() - started < 15
    assert isinstance(outcome, Extraction) and outcome.pages == 20
    read = sorted({b.page or 0 for b in outcome.blocks if b.ocr})
    assert read and read == list(range(1, len(read) + 1))
    if len(read) < 20:
        assert any("OCR time budget was spent" in w for w in outcome.warnings)
    assert words(outcome.blocks[0].text).startswith("Page 1.")


def test_the_local_engine_loads_once_per_child() -> None:
    assert local_engine(0) is local_engine(0)
    assert isinstance(make_ocr(OcrOptions()).engine, LocalOcr)


# ----------------------------------------------------------------------- Azure, at the HTTP edge


def azure_service(*, fail: bool = False) -> tuple[httpx.Client, list[httpx.Request]]:
    """A transport answering as Document Intelligence's REST API does: 202 with an
    Operation-Location, then the operation running, then succeeded with pages of lines."""
    seen: list[httpx.Request] = []
    polls = count()

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            if fail:
                return httpx.Response(401, json={"error": {"code": "401", "message": "bad key"}})
            return httpx.Response(
                202, headers={"Operation-Location": "https://di.example/operations/op1"}
            )
        if next(polls) == 0:
            return httpx.Response(200, json={"status": "running"})
        result = {
            "status": "succeeded",
            "analyzeResult": {
                "pages": [
                    {
                        "lines": [{"content": "Warehouse Zephyr"}, {"content": "holds 4,812"}],
                        "words": [{"confidence": 0.9}, {"confidence": 0.8}],
                    }
                ]
            },
        }
        return httpx.Response(200, content=json.dumps(result))

    return httpx.Client(transport=httpx.MockTransport(handle)), seen


def test_azure_read_posts_the_image_polls_and_returns_the_lines() -> None:
    client, seen = azure_service()
    engine = AzureReadOcr("https://di.example/", "secret", client=client, sleep=lambda _: None)
    pixels = decode_picture(docs.picture_of_text(FACT))
    assert pixels is not None
    result = engine.read(pixels)
    assert result.lines == ("Warehouse Zephyr", "holds 4,812")
    assert result.confidence == pytest.approx(0.85)
    post, first_poll, second_poll = seen
    assert post.url.path == "/documentintelligence/documentModels/prebuilt-read:analyze"
    assert post.url.params["api-version"] == "2024-11-30"
    assert post.headers["Ocp-Apim-Subscription-Key"] == "secret"
    assert post.headers["Content-Type"] == "image/png" and post.content.startswith(b"\x89PNG")
    assert str(first_poll.url) == str(second_poll.url) == "https://di.example/operations/op1"


def test_azure_errors_are_ocr_errors_and_a_missing_endpoint_is_refused() -> None:
    client, _ = azure_service(fail=True)
    engine = AzureReadOcr("https://di.example", "wrong", client=client, sleep=lambda _: None)
    with pytest.raises(OcrError, match="401"):
        engine.read(np.full((64, 64, 3), 255, dtype=np.uint8))
    with pytest.raises(OcrError, match="ENDPOINT"):
        make_ocr(OcrOptions(backend="azure"))


def test_settings_choose_the_engine_and_the_child_gets_a_budget_short_of_its_limit() -> None:
    from pydantic import SecretStr

    from ingest_worker.extract.isolation import _ocr_request
    from ingest_worker.extract.ocr import options_from
    from parley.settings import Settings

    assert options_from(Settings(ocr="off")) is None
    assert options_from(Settings()) == OcrOptions(backend="local")
    azure = options_from(
        Settings(
            ocr="azure",
            azure_docintel_endpoint="https://di.example",
            azure_docintel_key=SecretStr("k"),
        )
    )
    assert azure is not None and azure.backend == "azure"
    request = _ocr_request(azure, timeout=300)
    assert request["budget"] == 240 and request["azure_key"] == "k"  # the private pipe carries it
    assert _ocr_request(OcrOptions(), timeout=30)["budget"] == 25  # 5 s kept for the rest
