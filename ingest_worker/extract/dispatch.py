"""Extraction's entry point: sniff the type from the bytes (never the file name), run the
checks that need no parsing, and hand the document to its extractor (one module per format).

It runs hostile-file code paths of pdfium, lxml, python-pptx, openpyxl and the OCR engine, so
the worker calls it through :mod:`ingest_worker.extract.isolation`, in a child process.
"""

from __future__ import annotations

from ingest_worker.extract.ocr import Ocr, OcrOptions, make_ocr
from ingest_worker.extract.types import Extraction, ExtractionFailed, PageCallback
from parley.filetypes import SUPPORTED, UnsupportedType, detect


def extract(
    data: bytes,
    filename: str,
    *,
    max_pages: int,
    max_bytes: int,
    on_page: PageCallback | None = None,
    ocr: OcrOptions | Ocr | None = None,
) -> Extraction:
    """Extract the text of a document given as bytes; ``filename`` only colours messages. The type
    comes from :func:`parley.filetypes.detect`: PDF, DOCX, PPTX, XLSX, HTML, Markdown, text.

    ``on_page(done, total)`` is called after each PDF page or slide. With ``ocr``, scanned and
    image-only PDF pages and pictures in DOCX and PPTX are read by OCR (text marked ``ocr``);
    without, they are skipped as before. Raises :class:`ExtractionFailed` with a reason from
    :data:`REASONS` instead of ever returning an extraction without text.
    """
    preflight(data, max_bytes=max_bytes)
    try:
        kind = detect(data)
    except UnsupportedType as error:
        raise ExtractionFailed(
            "unsupported_type", f"{error.message}{_named(filename)}", hint=error.hint
        ) from None
    reader = make_ocr(ocr) if isinstance(ocr, OcrOptions) else ocr
    pictures = ocr.max_pictures if isinstance(ocr, OcrOptions) else 100
    if kind == "pdf":
        from ingest_worker.extract import pdf

        return pdf.extract_pdf(data, max_pages=max_pages, on_page=on_page, ocr=reader)
    if data.startswith(_OLE_MAGIC):
        raise ExtractionFailed(
            "encrypted",
            "encrypted Office file: the document is password-protected",
            hint="upload it again without a password",
        )
    if kind == "docx":
        from ingest_worker.extract import word

        return word.extract_docx(data, max_bytes=max_bytes, ocr=reader, max_pictures=pictures)
    if kind == "pptx":
        from ingest_worker.extract import pptx

        return pptx.extract_pptx(
            data,
            max_bytes=max_bytes,
            max_pages=max_pages,
            ocr=reader,
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
    if not data:
        raise ExtractionFailed("empty", "the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ExtractionFailed(
            "too_large",
            f"file is {_mib(len(data))}, over the {_mib(max_bytes)} limit",
        )


def _named(filename: str) -> str:
    return f" ({filename})" if filename else ""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
