"""PDF text extraction: pypdfium2 first (fast, tolerant), pypdf when pdfium cannot open the file.

Every page is classified before its text is trusted: ``text`` (kept), ``scanned`` (a picture with
little or no text: a scan without OCR), ``garbled`` (glyphs without a Unicode mapping: control or
private-use characters, or no letters at all), ``vector`` (drawn, no text objects) or ``blank``.
A document with text pages succeeds, with a warning naming the pages that were not; a document
without any raises the specific :class:`ExtractionFailed` instead of succeeding with nothing.

With OCR (an :class:`~ingest_worker.extract.ocr.Ocr`), every page that is not ``text`` or ``blank``
is rendered (144 dpi, at most 6 megapixels) and read: what OCR reads becomes the page's text,
marked ``ocr``; a page where it reads nothing keeps its class and is named in a warning ("OCR found
no text"), as are pages left when the OCR time budget ran out. A document whose every page ends so
fails as before (``no_text_layer``), or ``timeout`` when the budget ran out before any text.

Headings come from the PDF outline (bookmarks): a page's text is split where an outline title on
that page occurs, so text after a bookmark carries its title.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import logging
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ingest_worker.extract import columns
from ingest_worker.extract.ocr import (
    MAX_PIXELS,
    RENDER_SCALE,
    Ocr,
    OcrError,
    OcrText,
    OcrTimeUp,
    to_rgb,
)
from ingest_worker.extract.types import (
    Block,
    Extraction,
    ExtractionFailed,
    PageCallback,
    clean_text,
    count_visible,
    quality,
)

PageClass = Literal["text", "scanned", "garbled", "vector", "blank"]
#: Why OCR left a page without text: it read nothing, its time budget was spent, it failed.
OcrMiss = Literal["nothing", "time", "failed"]

#: A page with a picture over this share of its area and fewer visible characters than
#: :data:`SCAN_TEXT_FLOOR` is a scan without a usable text layer (the few characters are stamps,
#: watermarks or OCR debris); an OCRed scan carries hundreds.
SCAN_IMAGE_COVER = 0.2
SCAN_TEXT_FLOOR = 100
#: A document of several pages averaging fewer visible characters per page than this has only
#: page numbers or stray marks as text.
SPARSE_CHARS_PER_PAGE = 4
_OUTLINE_MAX = 5000
_OBJECTS_MAX = 20000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    text: str  # cleaned
    kind: PageClass
    ocr: bool = False  # the text is what OCR read
    missed: OcrMiss | None = None  # OCR was tried and gave no text


def extract_pdf(
    data: bytes,
    *,
    max_pages: int,
    on_page: PageCallback | None = None,
    ocr: Ocr | None = None,
) -> Extraction:
    """Extract every page's text; see the module docstring for what fails and how."""
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            raise _encrypted() from None
        log.info("pdfium cannot open the file (%s); trying pypdf", error)
        return _extract_with_pypdf(data, max_pages=max_pages, on_page=on_page, cause=str(error))
    try:
        total = len(document)
        _check_pages(total, max_pages)
        try:
            outline = _pdfium_outline(document)
            title = document.get_metadata_dict(skip_empty=True).get("Title")
            pages = list(_pdfium_pages(document, total, on_page, ocr))
        except pdfium.PdfiumError as error:
            log.info("pdfium failed mid-document (%s); trying pypdf", error)
            return _extract_with_pypdf(data, max_pages=max_pages, on_page=on_page, cause=str(error))
    finally:
        document.close()
    extractor = "pypdfium2" + (f"+{ocr.engine.name}" if any(p.ocr for p in pages) and ocr else "")
    return _assemble(pages, outline, total, extractor=extractor, warnings=[], title=title)


def ocr_page(page: pdfium.PdfPage, ocr: Ocr) -> tuple[str, OcrMiss | None]:
    """Render ``page`` and read it: (text, None) or ("", why not)."""
    width, height = page.get_size()
    scale = min(RENDER_SCALE, (MAX_PIXELS / max(width * height, 1.0)) ** 0.5)
    try:
        bitmap = page.render(scale=scale, grayscale=True)
        try:
            pixels = to_rgb(bitmap.to_numpy())
        finally:
            bitmap.close()
        result: OcrText = ocr.read(pixels)
    except OcrTimeUp:
        return "", "time"
    except (OcrError, pdfium.PdfiumError) as error:
        log.info("OCR failed on a page: %s", error)
        return "", "failed"
    text = clean_text(result.text)
    if not text or quality(text).garbled:
        return "", "nothing"
    return text, None


def _check_pages(total: int, max_pages: int) -> None:
    if total == 0:
        raise ExtractionFailed("empty", "the PDF has no pages")
    if total > max_pages:
        raise ExtractionFailed(
            "too_many_pages",
            f"the PDF has {total} pages, over the limit of {max_pages}",
            hint="split the document and upload the parts",
        )


def _encrypted() -> ExtractionFailed:
    return ExtractionFailed(
        "encrypted",
        "encrypted PDF: it needs a password to open",
        hint="upload it again without a password",
    )


def _classify(text: str, *, image_cover: float, has_objects: bool) -> PageClass:
    q = quality(text)
    if q.garbled:
        return "garbled"
    if image_cover >= SCAN_IMAGE_COVER and q.visible < SCAN_TEXT_FLOOR:
        return "scanned"
    if q.visible:
        return "text"
    return "vector" if has_objects else "blank"


# ----------------------------------------------------------------------------------- pdfium


def _pdfium_pages(
    document: pdfium.PdfDocument, total: int, on_page: PageCallback | None, ocr: Ocr | None
) -> Iterator[Page]:
    for index in range(total):
        page = document[index]
        try:
            textpage = page.get_textpage()
            try:
                raw = _in_columns(textpage) or textpage.get_text_range()
            finally:
                textpage.close()
            text = clean_text(raw)
            cover, has_objects = 0.0, True
            # Looking at page objects costs time; only pages with little text need it.
            if count_visible(text) < SCAN_TEXT_FLOOR:
                cover, has_objects = _pdfium_page_images(page)
            kind = _classify(raw, image_cover=cover, has_objects=has_objects)
            read: Page | None = None
            if ocr is not None and kind in ("scanned", "garbled", "vector"):
                found, missed = ocr_page(page, ocr)
                read = Page(index + 1, found, "text", ocr=True) if found else None
                if read is None:
                    read = Page(index + 1, text, kind, missed=missed)
        finally:
            page.close()
        yield read or Page(index + 1, text, kind)
        if on_page is not None:
            on_page(index + 1, total)


def _in_columns(textpage: pdfium.PdfTextPage) -> str | None:
    """The page's text in reading order where it is set in columns that the drawing order
    interleaves (``ingest_worker/extract/columns.py``), else None. A cheap look at pdfium's line
    segments first: only a page with a gutter between strips of prose has its glyphs read."""
    segments = _segments(textpage)
    if len(segments) < 2 * columns.MIN_COLUMN_LINES:
        return None
    # A segment is a line's height; the glyph-based em is about half of it.
    em = statistics.median(r.top - r.bottom for r in segments) / 2
    spans = [(r.left, r.right) for r in segments]
    cuts = columns.gutters(spans, len({round(r.bottom) for r in segments}), em)
    if not cuts:
        return None
    bottom = min(r.bottom for r in segments)
    top = max(r.top for r in segments)
    edges = [min(r.left for r in segments) - 1, *((a + b) / 2 for a, b in cuts),
             max(r.right for r in segments) + 1]
    for left, right in itertools.pairwise(edges):
        lines = len({round(r.bottom) for r in segments if left <= r.left and r.right <= right})
        if not lines or not columns.prose(textpage.get_text_bounded(left, bottom, right, top),
                                          lines):
            return None
    return columns.reading_order(_glyphs(textpage))


#: At most this many of a page's line segments are looked at: a page of tables has over a
#: thousand (a cell each), read at ~3 us each. Leaving some out can only open gutters that are
#: not there, and the strips' prose check and the glyphs then rule those out.
SEGMENTS_LOOKED_AT = 400


def _segments(textpage: pdfium.PdfTextPage) -> list[columns.Rect]:
    """pdfium's line segments, or an even sample of them."""
    out = []
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    count = pdfium_c.FPDFText_CountRects(textpage.raw, 0, -1)
    for index in range(0, count, max(1, count // SEGMENTS_LOOKED_AT)):
        pdfium_c.FPDFText_GetRect(textpage.raw, index, left, top, right, bottom)
        if right.value > left.value and top.value > bottom.value:
            out.append(columns.Rect(left.value, bottom.value, right.value, top.value))
    return out


def _glyphs(textpage: pdfium.PdfTextPage) -> list[columns.Glyph]:
    out = []
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    x, y = ctypes.c_double(), ctypes.c_double()
    for index in range(textpage.count_chars()):
        if not pdfium_c.FPDFText_GetCharBox(textpage.raw, index, left, right, bottom, top):
            left.value = right.value = bottom.value = top.value = 0.0  # a generated space
        pdfium_c.FPDFText_GetCharOrigin(textpage.raw, index, x, y)
        code = pdfium_c.FPDFText_GetUnicode(textpage.raw, index)
        char = chr(code) if 0 < code < 0x110000 else "\ufffd"
        out.append(columns.Glyph(index, char, left.value, bottom.value, right.value, top.value,
                                 y.value))
    return out


def _pdfium_page_images(page: pdfium.PdfPage) -> tuple[float, bool]:
    """The largest share of the page one picture covers, and whether the page draws anything."""
    width, height = page.get_size()
    area = max(width * height, 1.0)
    cover = 0.0
    has_objects = False
    for seen, obj in enumerate(page.get_objects(max_depth=3)):
        has_objects = True
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            left, bottom, right, top = obj.get_bounds()
            cover = max(cover, min(1.0, (right - left) * (top - bottom) / area))
            if cover >= SCAN_IMAGE_COVER:
                break
        if seen >= _OBJECTS_MAX:  # a drawing of countless paths: looking further costs seconds
            break
    return cover, has_objects


def _pdfium_outline(document: pdfium.PdfDocument) -> list[tuple[int, str]]:
    """(1-based page, title) of every bookmark with a destination, in outline order."""
    entries: list[tuple[int, str]] = []
    try:
        for bookmark in document.get_toc(max_depth=8):
            dest = bookmark.get_dest()
            index = dest.get_index() if dest is not None else None
            title = " ".join(clean_text(bookmark.get_title() or "").split())
            if index is not None and title:
                entries.append((index + 1, title))
            if len(entries) >= _OUTLINE_MAX:
                break
    except Exception as error:  # a broken outline must not cost the text
        log.info("unreadable PDF outline ignored: %s", error)
    return entries


# ------------------------------------------------------------------------------------ pypdf


def _extract_with_pypdf(
    data: bytes, *, max_pages: int, on_page: PageCallback | None, cause: str
) -> Extraction:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                # An empty user password (permissions-only encryption) opens for anyone.
                if not reader.decrypt(""):
                    raise _encrypted()
            except (FileNotDecryptedError, NotImplementedError):
                raise _encrypted() from None
        total = len(reader.pages)
    except ExtractionFailed:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ExtractionFailed(
            "malformed",
            f"damaged PDF: neither reader could open it (pdfium: {_short(cause)};"
            f" pypdf: {_short(str(error))})",
            hint="upload the file again, or export it anew from the application that made it",
        ) from None
    _check_pages(total, max_pages)
    pages: list[Page] = []
    failed: list[int] = []
    for index in range(total):
        try:
            page = reader.pages[index]
            raw = page.extract_text() or ""
            images, has_objects = _pypdf_page_images(page)
        except Exception as error:  # one broken page must not cost the others
            log.info("pypdf failed on page %d: %s", index + 1, error)
            failed.append(index + 1)
            raw, images, has_objects = "", False, False
        pages.append(
            Page(
                index + 1,
                clean_text(raw),
                _classify(raw, image_cover=1.0 if images else 0.0, has_objects=has_objects),
            )
        )
        if on_page is not None:
            on_page(index + 1, total)
    warnings = ["pdfium could not open the file; text read with pypdf (slower, may differ)"]
    if failed:
        warnings.append(f"pages {_pages(failed)} could not be read")
    try:
        title = str(reader.metadata.title) if reader.metadata and reader.metadata.title else None
    except Exception:  # a broken Info dictionary costs the title only
        title = None
    return _assemble(pages, _pypdf_outline(reader), total, extractor="pypdf", warnings=warnings,
                     title=title)


def _pypdf_page_images(page: Any) -> tuple[bool, bool]:
    resources = page.get("/Resources") or {}
    xobjects = resources.get("/XObject") or {}
    images = any(xobjects[name].get_object().get("/Subtype") == "/Image" for name in xobjects)
    return images, page.get_contents() is not None


def _pypdf_outline(reader: Any) -> list[tuple[int, str]]:
    entries: list[tuple[int, str]] = []

    def walk(items: Sequence[Any]) -> None:
        for item in items:
            if len(entries) >= _OUTLINE_MAX:
                return
            if isinstance(item, list):
                walk(item)
                continue
            number = reader.get_destination_page_number(item)
            title = " ".join(clean_text(str(getattr(item, "title", "") or "")).split())
            if number is not None and number >= 0 and title:
                entries.append((number + 1, title))

    try:
        walk(reader.outline)
    except Exception as error:  # a broken outline must not cost the text
        log.info("unreadable PDF outline ignored: %s", error)
    return entries


# --------------------------------------------------------------------------------- assembly


def _assemble(
    pages: list[Page],
    outline: list[tuple[int, str]],
    total: int,
    *,
    extractor: str,
    warnings: list[str],
    title: str | None = None,
) -> Extraction:
    by_kind: dict[PageClass, list[int]] = {}
    for page in pages:
        by_kind.setdefault(page.kind, []).append(page.number)
    text_pages = [p for p in pages if p.kind == "text"]
    useful = sum(count_visible(p.text) for p in text_pages)
    non_blank = total - len(by_kind.get("blank", []))
    missed = {p.number: p.missed for p in pages if p.missed is not None}
    if not text_pages or (total >= 3 and useful < SPARSE_CHARS_PER_PAGE * max(non_blank, 1)):
        if missed and "time" in missed.values() and not any(p.ocr for p in text_pages):
            raise ExtractionFailed(
                "timeout",
                f"OCR ran out of time after {sum(v != 'time' for v in missed.values())} of "
                f"{len(missed)} image-only pages and read no text",
                hint="split the scan into smaller files, or raise the extraction time limit",
            )
        raise _no_text(by_kind, total, useful, ocr_tried=bool(missed))
    skipped: tuple[tuple[PageClass, str], ...] = (
        ("scanned", "look scanned (a picture, no text layer): their content is not indexed"),
        ("garbled", "have text without a readable character mapping: skipped"),
        ("vector", "are drawings without text: skipped"),
    )
    for kind, what in skipped:
        numbers = [n for n in by_kind.get(kind, []) if n not in missed]
        if numbers:
            warnings.append(f"{len(numbers)} of {total} pages ({_pages(numbers)}) {what}")
    warnings.extend(_ocr_warnings(pages, total))
    # Scanned pages keep their few characters (stamps, captions) when the document has real text.
    kept = [p for p in pages if p.kind in ("text", "scanned") and p.text]
    blocks = tuple(_blocks_with_headings(kept, outline))
    return Extraction(
        kind="pdf", pages=total, blocks=blocks, extractor=extractor, warnings=tuple(warnings),
        title=clean_text(title)[:500] or None if title else None,
    )


def _ocr_warnings(pages: list[Page], total: int) -> list[str]:
    read = [p.number for p in pages if p.ocr]
    out = []
    if read:
        out.append(f"{len(read)} of {total} pages ({_pages(read)}) read by OCR")
    for why, what in (
        ("nothing", "are images in which OCR found no text"),
        ("time", "were not read: the OCR time budget was spent"),
        ("failed", "could not be read: OCR failed on them"),
    ):
        numbers = [p.number for p in pages if p.missed == why]
        if numbers:
            out.append(f"{len(numbers)} of {total} pages ({_pages(numbers)}) {what}")
    return out


def _no_text(
    by_kind: dict[PageClass, list[int]], total: int, useful: int, *, ocr_tried: bool = False
) -> ExtractionFailed:
    garbled = len(by_kind.get("garbled", []))
    scanned = len(by_kind.get("scanned", []))
    vector = len(by_kind.get("vector", []))
    if garbled and garbled >= scanned + vector:
        return ExtractionFailed(
            "garbled_text",
            "PDF text is unreadable: its fonts do not map glyphs to characters",
            hint="export the PDF again from the source application, or OCR it",
        )
    if scanned and ocr_tried:
        return ExtractionFailed(
            "no_text_layer",
            f"scanned PDF: OCR found no readable text ({scanned} of {total} pages are images)",
            hint="the scan may be blank, a photo or drawing, or too blurred to read",
        )
    if scanned:
        return ExtractionFailed(
            "no_text_layer",
            f"scanned PDF: no text layer ({scanned} of {total} pages are images without text)",
            hint="run OCR on it (e.g. OCRmyPDF) and upload the result",
        )
    if vector:
        return ExtractionFailed(
            "no_text_layer",
            "PDF has no text layer: its text is drawn as shapes",
            hint="export it again with text, or OCR it",
        )
    if useful:
        return ExtractionFailed(
            "no_text_layer",
            f"PDF has almost no text ({useful} characters on {total} pages)",
            hint="if it is a scan, run OCR on it and upload the result",
        )
    return ExtractionFailed("empty", "the PDF has no text: every page is blank")


def _short(text: str) -> str:
    return text.removeprefix("Failed to load document ").strip("(). ")[:120]


def _pages(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _blocks_with_headings(pages: list[Page], outline: list[tuple[int, str]]) -> Iterator[Block]:
    """One block per page, split where an outline title on that page occurs in its text. A title
    not found in the text marks its page from where the previous title ended."""
    ordered = sorted(outline, key=lambda entry: entry[0])  # stable: outline order within a page
    heading: str | None = None
    cursor = 0
    for page in pages:
        # Bookmarks on earlier pages (including skipped scanned ones) set the running heading.
        while cursor < len(ordered) and ordered[cursor][0] < page.number:
            heading = ordered[cursor][1]
            cursor += 1
        start = 0
        while cursor < len(ordered) and ordered[cursor][0] == page.number:
            title = ordered[cursor][1]
            cursor += 1
            found = _find_title(page.text, title, start)
            if found is not None:
                before = page.text[start:found].strip()
                if before:
                    yield Block(
                        text=before, page=page.number, heading=heading, kind="page", ocr=page.ocr
                    )
                start = found
            heading = title
        rest = page.text[start:].strip()
        if rest:
            yield Block(text=rest, page=page.number, heading=heading, kind="page", ocr=page.ocr)


_NUMBERING = re.compile(r"[\dIVXivx]+(?:[.\-)]\d*)*\.?\s*")


def _find_title(text: str, title: str, start: int) -> int | None:
    """Where ``title`` starts in ``text`` (from ``start``), including a section number before it
    on the same line ("2.1 Results" for the bookmark "Results")."""
    words = title.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    match = re.compile(pattern, re.IGNORECASE).search(text, start)
    if match is None:
        return None
    line_start = max(text.rfind("\n", start, match.start()) + 1, start)
    if _NUMBERING.fullmatch(text, line_start, match.start()):
        return line_start
    return match.start()
