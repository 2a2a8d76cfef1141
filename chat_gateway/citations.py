"""Where a cited chunk is in its document, in words: "page 3", "slide 2 · Roadmap", "sheet Stock",
"§ Installation". Pure; the gateway puts it on every source it shows.

What a chunk's ``page`` means depends on the document: a PDF's page, a presentation's slide; a
workbook's ``heading`` is the sheet's name; Markdown, HTML and Word give the nearest heading.
Text read by OCR says so ("page 4, OCR"), so a reader knows to expect its slips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley.filetypes import FileKind
from parley.vectors.metadata import ChunkMeta


def location(
    kind: FileKind | None, page: int | None, heading: str | None, *, ocr: bool = False
) -> str | None:
    """The chunk's place in words, or ``None`` when there is nothing to say (a plain text file)."""
    parts: list[str] = []
    if kind == "pptx" and page is not None:
        parts.append(f"slide {page}")
        if heading:
            parts.append(heading)
    elif kind == "xlsx":
        if heading:
            parts.append(f"sheet {heading}")
    elif page is not None:
        parts.append(f"page {page}")
        if heading:
            parts.append(heading)
    elif heading:
        parts.append(f"§ {heading}")
    if not parts:
        return "OCR" if ocr else None
    return " · ".join(parts) + (", OCR" if ocr else "")


def from_metadata(metadata: Mapping[str, Any]) -> str | None:
    """:func:`location` from a stored chunk's metadata (``kind``, ``page``, ``heading``, ``ocr``);
    chunks stored before ``kind`` existed are PDF pages or DOCX sections, as then."""
    meta = ChunkMeta.from_metadata(metadata)
    return location(meta.kind, meta.page, meta.heading, ocr=meta.ocr)
