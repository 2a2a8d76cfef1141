"""PowerPoint (PPTX) with python-pptx: the slide number is the page.

Each slide gives, in order: its title (the slide's heading: every block of the slide carries it),
the text of its other shapes top to bottom and left to right (groups looked into), tables as one
line per row with `` | `` between cells, the text OCR reads in its pictures (kind ``picture``,
marked ``ocr``) when OCR is on, and its speaker notes (kind ``notes``). Hidden slides are read too
(they are part of the document). The package's unpacked size is checked before python-pptx loads
it (it reads every part into memory).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from typing import Any

from ingest_worker.extract.ocr import Ocr, PictureReader
from ingest_worker.extract.types import (
    Block,
    Extraction,
    ExtractionFailed,
    PageCallback,
    clean_text,
)

#: The parts may unpack to this many times the upload limit, at most 512 MiB.
UNPACK_FACTOR = 20
UNPACK_CAP = 512 * 1024 * 1024

log = logging.getLogger(__name__)


def check_package(data: bytes, *, max_bytes: int, what: str) -> None:
    """Refuse a ZIP package whose declared unpacked size is over the limit (a bomb), before a
    library that unpacks every part opens it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ExtractionFailed(
            "malformed", f"damaged {what}: not a readable ZIP package ({str(error)[:120]})"
        ) from None
    if declared > min(UNPACK_FACTOR * max_bytes, UNPACK_CAP):
        raise ExtractionFailed("too_large", f"{what} unpacks to more than the size limit")


def extract_pptx(
    data: bytes,
    *,
    max_bytes: int,
    max_pages: int,
    ocr: Ocr | None = None,
    max_pictures: int = 100,
    on_page: PageCallback | None = None,
) -> Extraction:
    """Extract every slide; see the module docstring."""
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    check_package(data, max_bytes=max_bytes, what="PowerPoint file")
    try:
        deck = Presentation(io.BytesIO(data))
        slides = list(deck.slides)
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ExtractionFailed(
            "malformed",
            f"damaged PowerPoint file ({type(error).__name__}: {str(error)[:120]})",
            hint="open it in PowerPoint and save it again",
        ) from None
    total = len(slides)
    if total == 0:
        raise ExtractionFailed("empty", "the presentation has no slides")
    if total > max_pages:
        raise ExtractionFailed(
            "too_many_pages", f"the presentation has {total} slides, over the limit of {max_pages}"
        )
    reader = PictureReader(ocr, max_pictures)
    blocks: list[Block] = []
    for number, slide in enumerate(slides, start=1):
        blocks.extend(_slide(slide, number, reader))
        if on_page is not None:
            on_page(number, total)
    warnings = reader.warnings()
    if not blocks:
        if reader.seen:
            raise ExtractionFailed(
                "no_text_layer",
                "the presentation holds pictures but no text"
                + (" (OCR found none in them)" if ocr is not None else ""),
            )
        raise ExtractionFailed("empty", "the presentation has no text")
    engine = f"+{ocr.engine.name}" if ocr is not None and reader.found else ""
    return Extraction(
        kind="pptx",
        pages=total,
        blocks=tuple(blocks),
        extractor="python-pptx" + engine,
        warnings=tuple(warnings),
    )


def _slide(slide: Any, number: int, pictures: PictureReader) -> Iterator[Block]:
    title_shape = slide.shapes.title
    title = None
    if title_shape is not None and title_shape.has_text_frame:
        title = " ".join(clean_text(title_shape.text_frame.text).split()) or None
    if title:
        yield Block(text=title, page=number, heading=title, kind="paragraph")
    for shape in _ordered(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        yield from _shape(shape, number, title, pictures)
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = clean_text(frame.text) if frame is not None else ""
        if notes:
            yield Block(text=notes, page=number, heading=title, kind="notes")


def _ordered(shapes: Any) -> list[Any]:
    """Top to bottom, then left to right (shapes without a position keep their place last)."""
    return sorted(shapes, key=lambda s: ((s.top or 0) // 20000, s.left or 0))


def _shape(shape: Any, number: int, title: str | None, pictures: PictureReader) -> Iterator[Block]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    kind = shape.shape_type
    if kind == MSO_SHAPE_TYPE.GROUP:
        for inner in _ordered(shape.shapes):
            yield from _shape(inner, number, title, pictures)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = []
        for row in shape.table.rows:
            cells = [" ".join(clean_text(cell.text).split()) for cell in row.cells]
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            yield Block(text="\n".join(rows), page=number, heading=title, kind="table")
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = clean_text(shape.text_frame.text)
        if text:
            yield Block(text=text, page=number, heading=title, kind="paragraph")
    if kind == MSO_SHAPE_TYPE.PICTURE:
        try:
            blob, digest = shape.image.blob, shape.image.sha1
        except (AttributeError, KeyError, ValueError) as error:
            log.info("unreadable picture skipped: %s", error)
            return
        read = pictures.read(blob, digest)
        if read:
            yield Block(text=read, page=number, heading=title, kind="picture", ocr=True)
