"""Plain text and Markdown.

Plain text: the encoding is detected (a BOM, else UTF-8, else charset-normalizer's best guess, see
:func:`parley.filetypes.decode`); paragraphs (blank-line separated) become blocks, with no pages
and no headings.

Markdown: parsed with markdown-it-py (CommonMark plus tables); every heading starts a section,
so its text carries the heading as a DOCX paragraph does. Paragraphs, list items, block quotes
and code blocks are paragraphs; tables are one line per row with `` | `` between cells. Inline
markup is dropped (link text kept, URLs not).
"""

from __future__ import annotations

from ingest_worker.extract.types import Block, BlockKind, Extraction, ExtractionFailed, clean_text
from parley.filetypes import decode

#: A text file longer than this many characters is cut (with a warning) rather than chunked whole.
MAX_CHARS = 20_000_000


def decode_document(data: bytes, what: str) -> tuple[str, list[str]]:
    """The text of ``data`` and warnings; :class:`ExtractionFailed` when it is not text."""
    decoded = decode(data)
    if decoded is None:
        raise ExtractionFailed(
            "unsupported_type", f"{what}: the bytes are not text in any encoding we recognise"
        )
    text, encoding = decoded
    warnings = [] if encoding.startswith(("utf-8", "ascii")) else [f"read as {encoding}"]
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        warnings.append(f"only the first {MAX_CHARS:,} characters were read")
    return text, warnings


def extract_text(data: bytes) -> Extraction:
    text, warnings = decode_document(data, "text file")
    blocks = tuple(
        Block(text=part, page=None, heading=None, kind="paragraph")
        for part in (clean_text(p) for p in clean_text(text).split("\n\n"))
        if part
    )
    if not blocks:
        raise ExtractionFailed("empty", "the text file holds only whitespace")
    return Extraction(
        kind="text", pages=None, blocks=blocks, extractor="text", warnings=tuple(warnings)
    )


def extract_markdown(data: bytes) -> Extraction:
    from markdown_it import MarkdownIt

    text, warnings = decode_document(data, "Markdown file")
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(text)
    blocks: list[Block] = []
    heading: str | None = None
    row: list[str] = []
    rows: list[str] = []
    in_heading = in_cell = False

    def add(content: str, kind: BlockKind = "paragraph") -> None:
        cleaned = clean_text(content)
        if cleaned:
            blocks.append(Block(text=cleaned, page=None, heading=heading, kind=kind))

    for token in tokens:
        if token.type == "heading_open":
            in_heading = True
        elif token.type == "heading_close":
            in_heading = False
        elif token.type == "inline":
            words = _inline_text(token)
            if in_heading:
                heading = " ".join(words.split()) or heading
                add(words)
            elif in_cell:
                row.append(" ".join(words.split()))
            else:
                add(words)
        elif token.type in ("fence", "code_block") or token.type == "html_block":
            add(token.content)
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            if any(row):
                rows.append(" | ".join(row))
        elif token.type == "table_close":
            add("\n".join(rows), "table")
            rows = []
    if not blocks:
        raise ExtractionFailed("empty", "the Markdown file holds no text")
    return Extraction(
        kind="markdown",
        pages=None,
        blocks=tuple(blocks),
        extractor="markdown-it",
        warnings=tuple(warnings),
    )


def _inline_text(token: object) -> str:
    children = getattr(token, "children", None) or []
    parts: list[str] = []
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "image":
            parts.append(child.content)  # the alt text
    return "".join(parts) if children else str(getattr(token, "content", ""))
