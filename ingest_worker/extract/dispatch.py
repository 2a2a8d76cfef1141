"""Extraction's entry point: sniff the type from the bytes (never the file name), run the
checks that need no parsing, and hand the document to its extractor.

It runs hostile-file code paths of pdfium and lxml, so the worker calls it through
:mod:`ingest_worker.extract.isolation`, in a child process.
"""

from __future__ import annotations

from ingest_worker.extract.types import Extraction, ExtractionFailed, PageCallback, sniff


def extract(
    data: bytes,
    filename: str,
    *,
    max_pages: int,
    max_bytes: int,
    on_page: PageCallback | None = None,
) -> Extraction:
    """Extract the text of a PDF or DOCX given as bytes; ``filename`` only colours messages.

    ``on_page(done, total)`` is called after each PDF page. Raises :class:`ExtractionFailed` with a
    reason from :data:`REASONS` instead of ever returning an extraction without text.
    """
    preflight(data, max_bytes=max_bytes)
    container = sniff(data)
    if container == "pdf":
        from ingest_worker.extract import pdf

        return pdf.extract_pdf(data, max_pages=max_pages, on_page=on_page)
    if container == "zip":
        from ingest_worker.extract import word

        return word.extract_docx(data, max_bytes=max_bytes)
    if container == "ole":
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise ExtractionFailed(
                "encrypted",
                "encrypted DOCX: the document is password-protected",
                hint="upload it again without a password",
            )
        raise ExtractionFailed(
            "unsupported_type",
            "legacy Office file (Word 97-2003 .doc or similar): not a PDF or DOCX",
            hint="save it as .docx or .pdf and upload it again",
        )
    raise ExtractionFailed(
        "unsupported_type",
        f"not a PDF or DOCX{_named(filename)}",
        hint="upload a PDF or a Word .docx file",
    )


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
