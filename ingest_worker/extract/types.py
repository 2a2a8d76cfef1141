"""What text extraction produces (:class:`Extraction`, a tuple of :class:`Block` in reading order)
or why nothing useful can come out (:class:`ExtractionFailed`), and the text-quality checks every
extractor shares.

:func:`ingest_worker.extract.dispatch.extract` is synchronous, pure CPU and trusts nothing about its
input: it sniffs the type from the bytes (never the file name), enforces the size and page limits,
and refuses to return a successful extraction that holds no text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from parley.errors import UserError
from parley.filetypes import SUPPORTED, FileKind

BlockKind = Literal[
    "paragraph",
    "table",
    "header",
    "footer",
    "footnote",
    "endnote",
    "comment",
    "textbox",
    "page",
    "notes",  # a slide's speaker notes
    "picture",  # text OCR read in a picture of a DOCX or PPTX
]
DocumentKind = FileKind

#: Every reason :class:`ExtractionFailed` can carry, with what it means for the user.
REASONS: dict[str, str] = {
    "encrypted": "the file is password-protected and no password is known",
    "no_text_layer": "scanned, image-only or vector-only: the text is pixels or shapes, not text",
    "garbled_text": "the text layer exists but does not map to readable characters",
    "malformed": "the file is damaged or not a valid document of its type",
    "too_large": "the file (or what it unpacks to) is over the size limit",
    "too_many_pages": "the PDF or presentation has more pages (slides) than the limit",
    "too_much_text": "the document holds more characters of text than the limit",
    "unsupported_type": f"not a {SUPPORTED} file",
    "empty": "the document holds no text at all",
    "timeout": "extraction took longer than allowed",
    "extractor_crashed": "the extractor process died on this file",
}


@dataclass(frozen=True)
class Block:
    """A run of text in reading order. ``page`` is the 1-based page of a PDF or slide of a
    presentation, ``None`` for the others; ``heading`` is the nearest heading above the text (or
    the heading itself for a heading; a slide's title, a sheet's name); ``ocr`` marks text that
    OCR read from pixels rather than a text layer."""

    text: str
    page: int | None
    heading: str | None
    kind: BlockKind
    ocr: bool = False


@dataclass(frozen=True)
class Extraction:
    """The text of one document. ``blocks`` is never empty and holds no blank text; ``warnings``
    say in plain words what was read by OCR and what was skipped (scanned pages without OCR,
    pages OCR found nothing in or had no time for, garbled pages, unreadable parts)."""

    kind: DocumentKind
    pages: int | None
    blocks: tuple[Block, ...]
    extractor: str
    warnings: tuple[str, ...] = ()
    #: What the file's own metadata calls it (a PDF's ``/Title``), as stored: often a tool's
    #: default ("Binder1.pdf") or an id; :func:`ingest_worker.context.document_context` judges.
    title: str | None = None

    @property
    def chars(self) -> int:
        """Non-whitespace characters extracted: the measure of how much text came out."""
        return sum(count_visible(b.text) for b in self.blocks)


class ExtractionFailed(UserError):
    """No usable text can come out of this file. ``reason`` is a key of :data:`REASONS`;
    ``message`` is plain words for the user ("scanned PDF: no text layer"). Terminal for the
    document (its status says why), never retried."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown extraction failure reason {reason!r}")
        super().__init__(message, reason=reason, hint=hint)


PageCallback = Callable[[int, int], None]

# ------------------------------------------------------------------------------ text quality

# Characters no real text layer contains: C0/C1 controls (except tab and newlines), private-use
# code points (where glyph ids of fonts without /ToUnicode often land), surrogates and the
# replacement character.
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\uf8ff\ufffd\U000f0000-\U0010ffff]")
_VISIBLE = re.compile(r"\S")
# Leader dots and rules in tables of contents are legitimate but carry no letters.
_LEADERS = re.compile(r"[.·…_\-–—=*]")
_ALNUM = re.compile(r"[^\W_]")


def count_visible(text: str) -> int:
    return len(_VISIBLE.findall(text))


@dataclass(frozen=True)
class TextQuality:
    visible: int  # non-whitespace characters, leaders not counted
    bad: int  # control / private-use / surrogate / replacement characters
    alnum: int  # letters and digits

    @property
    def garbled(self) -> bool:
        """True when the text is mostly not text: many bad characters, or almost no letters or
        digits among the visible characters."""
        if self.visible < 3:
            return False
        return self.bad > 0.2 * self.visible or self.alnum < 0.34 * self.visible


def quality(text: str) -> TextQuality:
    return TextQuality(
        visible=count_visible(text) - len(_LEADERS.findall(text)),
        bad=len(_BAD.findall(text)),
        alnum=len(_ALNUM.findall(text)),
    )


_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Line endings to ``\\n``, bad characters dropped, trailing spaces and runs of blank lines
    squeezed; leading/trailing whitespace stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _BAD.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()
