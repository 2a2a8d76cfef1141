"""Extraction's entry point: sniff the type from the bytes (never the file name), run the
checks that need no parsing, and hand the document to its extractor (one module per format).

It runs hostile-file code paths of pdfium, lxml, python-pptx, openpyxl and the OCR engine, so
the worker calls it through :mod:`ingest_worker.extract.isolation`, in a child process.
"""

from __future__ import annotations

from ingest_worker.extract.ocr import Ocr, OcrOptions, make_ocr
from ingest_worker.extract.types import Extraction, ExtractionFailed, PageCallback
from parley.filetypes import SUPPORTED, FileKind, UnsupportedType, detect


def extract(
    data: bytes,
    filename: str,
    *,
    max_pages: int,
    max_bytes: int,
    max_chars: int | None = None,
    on_page: PageCallback | None = None,
    ocr: OcrOptions | Ocr | None = None,
) -> Extraction:
    """Extract the text of a document given as bytes; ``filename`` only colours messages. The type
    comes from :func:`parley.filetypes.detect`: PDF, DOCX, PPTX, XLSX, HTML, Markdown, text.

    ``on_page(done, total)`` is called after each PDF page or slide. With ``ocr``, scanned and
    image-only PDF pages and pictures in DOCX and PPTX are read by OCR (text marked ``ocr``);
    without, they are skipped as before. Raises :class:`ExtractionFailed` with a reason from
    :data:`REASONS` instead of ever returning an extraction without text (or with more than
    ``max_chars`` characters of it: ``too_much_text``).
    """
    preflight(data, max_bytes=max_bytes)
    try:
        kind = detect(data)
    except UnsupportedType as error:
        raise ExtractionFailed(
            "unsupported_type", f"{error.message}{_named(filename)}", hint=error.hint
        ) from None
    if data.startswith(_OLE_MAGIC):
        raise ExtractionFailed(
            "encrypted",
            "encrypted Office file: the document is password-protected",
            hint="upload it again without a password",
        )
    reader = make_ocr(ocr) if isinstance(ocr, OcrOptions) else ocr
    pictures = ocr.max_pictures if isinstance(ocr, OcrOptions) else 100
    extraction = _extract(
        kind,
        data,
        max_pages=max_pages,
        max_bytes=max_bytes,
        on_page=on_page,
        ocr=reader,
        pictures=pictures,
    )
    return check_text(extraction, max_chars=max_chars)


def _extract(
    kind: FileKind,
    data: bytes,
    *,
    max_pages: int,
    max_bytes: int,
    on_page: PageCallback | None,
    ocr: Ocr | None,
    pictures: int,
) -> Extraction:
    if kind == "pdf":
        from ingest_worker.extract import pdf

        return pdf.extract_pdf(data, max_pages=max_pages, on_page=on_page, ocr=ocr)
    if kind == "docx":
        from ingest_worker.extract import word

        return word.extract_docx(data, max_bytes=max_bytes, ocr=ocr, max_pictures=pictures)
    if kind == "pptx":
        from ingest_worker.extract import pptx

        return pptx.extract_pptx(
            data,
            max_bytes=max_bytes,
            max_pages=max_pages,
            ocr=ocr,
            max_pictures=pictures,
            on_page=on_page,
        )
    if kind == "xlsx":
        from ingest_worker.extract import xlsx

        return xlsx.extract_xlsx(data, max_bytes=max_bytes)
    if kind == "html":
        from ingest_worker.extract import html

        return html.extract_html(data)
    from ingest_worker.extract import text

    if kind == "markdown":
        return text.extract_markdown(data)
    return text.extract_text(data)


_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
__all__ = ["SUPPORTED", "extract", "preflight"]


def preflight(data: bytes, *, max_bytes: int) -> None:
    """The checks that need no parsing (empty, over the size limit): callers that hand the work
    to another process run them first, so a refused file never travels."""
    check_size(len(data), max_bytes=max_bytes)


def check_size(size: int, *, max_bytes: int) -> None:
    """:func:`preflight` for a file of ``size`` bytes."""
    if not size:
        raise ExtractionFailed("empty", "the file is empty (0 bytes)")
    if size > max_bytes:
        raise ExtractionFailed(
            "too_large",
            f"file is {_mib(size)}, over the {_mib(max_bytes)} limit",
        )


def check_text(extraction: Extraction, *, max_chars: int | None) -> Extraction:
    """The extraction, unless its text is over ``max_chars`` characters (``too_much_text``): a
    small file can unpack to far more text than is worth indexing (and than the worker should
    chunk and hold)."""
    if max_chars is None:
        return extraction
    total = sum(len(block.text) for block in extraction.blocks)
    if total > max_chars:
        raise ExtractionFailed(
            "too_much_text",
            f"the document holds {total:,} characters of text, over the limit of {max_chars:,}",
            hint="split it into smaller documents",
        )
    return extraction


def _named(filename: str) -> str:
    return f" ({filename})" if filename else ""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
