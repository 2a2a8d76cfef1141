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
    max_chars: int | None = None,
    on_page: PageCallback | None = None,
) -> Extraction:
    """Extract the text of a PDF or DOCX given as bytes; ``filename`` only colours messages.

    ``on_page(done, total)`` is called after each PDF page. Raises :class:`ExtractionFailed` with a
    reason from :data:`REASONS` instead of ever returning an extraction without text (or with
    more than ``max_chars`` characters of it: ``too_much_text``).
    """
    preflight(data, max_bytes=max_bytes)
    container = sniff(data)
    if container == "pdf":
        from ingest_worker.extract import pdf

        extraction = pdf.extract_pdf(data, max_pages=max_pages, on_page=on_page)
        return check_text(extraction, max_chars=max_chars)
    if container == "zip":
        from ingest_worker.extract import word

        return check_text(word.extract_docx(data, max_bytes=max_bytes), max_chars=max_chars)
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
            f"the document holds {total:,} characters of text, over the limit of "
            f"{max_chars:,}",
            hint="split it into smaller documents",
        )
    return extraction



def _named(filename: str) -> str:
    return f" ({filename})" if filename else ""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
