"""Blocks of extracted text -> chunks sized in the embedding model's tokens. Pure, no I/O.

How a document is cut:

- Blocks are grouped into *sections*: consecutive blocks with the same heading, page and kind of
  text (body text, i.e. paragraphs, pages, tables, text boxes and pictures, stays together;
  headers, footers, footnotes, endnotes, comments and speaker notes each form their own), and
  from the same source (text layer or OCR: a chunk is wholly OCR'd or not, and says which). A
  chunk never spans two sections.
- A section is split into *units*: sentences of paragraphs, rows of tables. A unit longer than the
  budget is split at line breaks, then cells, then words, then characters, so no text is lost.
- Units are packed greedily up to ``max_tokens``. When a chunk must end, it ends at the strongest
  boundary (paragraph > row/line > sentence > word) in its second half, not merely the last one.
- The next chunk of the same section starts with the previous chunk's last units (whole sentences
  when they fit, else its last words) up to ``overlap_tokens``.
- A chunk that continues a table (a ``table`` block: DOCX, PPTX, HTML, Markdown) starts with the
  table's header row, so a row such as "Lisbon | 120 | 14" is never embedded or indexed apart
  from the names of its columns. The first row is the header when every cell of it is text (no
  figures, no "name: value" cells: an XLSX row already carries its header in each cell) and it
  takes at most a quarter of the budget; the overlap gives way to it when both do not fit.
- A chunk never spans two pages either (the page is part of the section), so a citation's
  ``page`` is exact; ``heading`` is the section's. Overlap therefore stays within a page.
- A chunk that starts inside a table whose caption declared its unit ("(in thousands, except
  per share amounts)") in an earlier chunk carries that caption as ``unit``
  (:mod:`ingest_worker.declared`): metadata for the answerer and the number check, not part of
  the embedded or indexed text.

Every unit is tokenized once and every finished chunk once more to check the limit, so the cost is
linear in the text (the final check catches tokenizers whose counts are not additive).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Protocol

from ingest_worker import declared
from parley.embedder import Tokenizer

# Boundary strength before a unit: where a chunk would best end.
_CHAR, _WORD, _CELL, _SENTENCE, _LINE, _PARAGRAPH = range(6)
_SEPARATOR = {_CHAR: "", _WORD: " ", _CELL: " | ", _SENTENCE: " ", _LINE: "\n", _PARAGRAPH: "\n\n"}
# Cells split where a "|" has text on both sides, so an empty cell stays as "| " on the next one.
_SPLIT_AT = {_CELL: re.compile(r"(?<=\S)\s*\|\s*(?=\S)"), _LINE: re.compile(r"\n")}
_BODY_KINDS = frozenset({"paragraph", "page", "table", "textbox", "picture"})
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_CELL_SPLIT = re.compile(r"\s*\|\s*")
_FIGURE_CELL = re.compile(r"[-+(]?[$€£¥]?\s?[\d.,]+\)?\s?%?")
_YEAR = re.compile(r"(?:19|20)\d\d")
# The largest share of the budget a table's header row may take in a chunk that continues it.
_HEAD_SHARE = 0.25
# When a chunk must end, its best boundary is searched for among the units past this share.
_MIN_FILL = 0.5


class BlockLike(Protocol):
    """What :func:`chunk` reads of a block (``ingest_worker.extract.types.Block`` fits)."""

    @property
    def text(self) -> str: ...

    @property
    def page(self) -> int | None: ...

    @property
    def heading(self) -> str | None: ...

    @property
    def kind(self) -> str: ...

    @property
    def ocr(self) -> bool: ...


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has an id: ``ordinal`` counts from 0 in document order; ``tokens`` is the
    tokenizer's count of ``text`` (never above the ``max_tokens`` it was cut for)."""

    ordinal: int
    text: str
    page: int | None
    heading: str | None
    tokens: int
    ocr: bool = False  # the text is what OCR read from pixels
    unit: str | None = None  # the caption declaring the unit of the table the chunk continues


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int  # content tokens (the tokenizer's count minus its fixed special tokens)
    page: int | None
    strength: int  # boundary strength before this unit
    row: bool = False  # a table row (or part of one): overlap repeats it whole or not at all
    head: _Unit | None = None  # a row's table's header row, repeated by a chunk that starts here


def chunk(
    blocks: Sequence[BlockLike],
    *,
    tokenizer: Tokenizer,
    max_tokens: int,
    overlap_tokens: int,
) -> list[ChunkDraft]:
    """Cut ``blocks`` into chunks of at most ``max_tokens`` tokens; see the module docstring."""
    base = tokenizer.count("")  # special tokens every encoding carries ([CLS], [SEP])
    if max_tokens - base < 8:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for text")
    if not 0 <= overlap_tokens <= (max_tokens - base) // 2:
        raise ValueError("overlap_tokens must be between 0 and half of max_tokens")
    cutter = _Cutter(tokenizer, base=base, budget=max_tokens - base, overlap=overlap_tokens)
    drafts: list[ChunkDraft] = []
    for (heading, _, _, ocr), section in groupby(blocks, key=_section_key):
        units = [u for block in section for u in cutter.units(block)]
        captions = declared.follow(u.text for u in units)
        for text, page, tokens, start in cutter.pack(units):
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    text=text,
                    page=page,
                    heading=heading,
                    tokens=tokens,
                    ocr=ocr,
                    unit=captions[start] if declared.continues(text) else None,
                )
            )
    return drafts


def _section_key(block: BlockLike) -> tuple[str | None, str, int | None, bool]:
    kind = "body" if block.kind in _BODY_KINDS else block.kind
    return block.heading, kind, block.page, block.ocr


class _Cutter:
    def __init__(self, tokenizer: Tokenizer, *, base: int, budget: int, overlap: int) -> None:
        self.tokenizer = tokenizer
        self.base = base
        self.budget = budget
        self.overlap = overlap
        self._seen_chars = 0  # characters and tokens of the units counted so far
        self._seen_tokens = 0

    def count(self, text: str) -> int:
        return max(self.tokenizer.count(text) - self.base, 0)

    # -------------------------------------------------------------------------------- units

    def units(self, block: BlockLike) -> Iterator[_Unit]:
        """A block's units; the first one starts a paragraph (a PDF page only a line: sentences
        run on across page breaks)."""
        strength = _LINE if block.kind == "page" else _PARAGRAPH
        if block.kind == "table":
            head: _Unit | None = None
            for number, row in enumerate(r.strip() for r in block.text.split("\n") if r.strip()):
                pieces = list(
                    self._fit(row, block.page, strength, (_CELL, _WORD, _CHAR), row=True)
                )
                if number == 0 and len(pieces) == 1 and _is_header(row):
                    if pieces[0].tokens <= _HEAD_SHARE * self.budget:
                        head = replace(pieces[0], strength=_LINE)
                    yield pieces[0]
                else:
                    for piece in pieces:
                        yield replace(piece, head=head)
                strength = _LINE
            return
        for paragraph in _PARAGRAPHS.split(block.text):
            for sentence in _SENTENCE_END.split(paragraph.strip()):
                if sentence.strip():
                    yield from self._fit(
                        sentence.strip(), block.page, strength, (_LINE, _WORD, _CHAR)
                    )
                    strength = _SENTENCE
            strength = _PARAGRAPH

    def _fit(
        self,
        text: str,
        page: int | None,
        strength: int,
        finer: tuple[int, ...],
        *,
        row: bool = False,
    ) -> Iterator[_Unit]:
        """``text`` as one unit, or split at the finer boundaries until every piece fits."""
        if not self._surely_too_long(text):
            tokens = self.count(text)
            if tokens <= self.budget:
                self._seen_chars += len(text)
                self._seen_tokens += tokens
                yield _Unit(text, tokens, page, strength, row)
                return
        level, rest = finer[0], finer[1:]
        if level == _CHAR:
            yield from self._split_chars(text, page, strength, row=row)
            return
        if level == _WORD:
            parts = text.split()
        else:
            parts = [p.strip() for p in _SPLIT_AT[level].split(text)]
        parts = [p for p in parts if p]
        if len(parts) <= 1:
            yield from self._fit(text, page, strength, rest, row=row)
            return
        for part in parts:
            yield from self._fit(part, page, strength, rest, row=row)
            strength = level

    def _surely_too_long(self, text: str) -> bool:
        """Whether ``text`` is over three budgets long at this document's characters per token so
        far: then counting it whole is wasted work (dense forms have page-long "sentences")."""
        if self._seen_tokens < 500:
            return False
        return len(text) * self._seen_tokens > 3 * self.budget * self._seen_chars

    def _split_chars(
        self, text: str, page: int | None, strength: int, *, row: bool
    ) -> Iterator[_Unit]:
        """A word longer than the budget (a URL, base64, CJK without spaces): longest prefixes
        that fit, found by bisection."""
        while text:
            low, high = 1, len(text)
            while low < high:
                mid = (low + high + 1) // 2
                if self.count(text[:mid]) <= self.budget:
                    low = mid
                else:
                    high = mid - 1
            piece = text[:low]
            yield _Unit(piece, self.count(piece), page, strength, row)
            text = text[low:]
            strength = _CHAR

    # ------------------------------------------------------------------------------ packing

    def pack(self, units: list[_Unit]) -> Iterator[tuple[str, int | None, int, int]]:
        """(text, page, tokens, index of its first unit past the overlap) of each chunk of one
        section's units."""
        start = 0
        carried: list[_Unit] = []  # overlap from the previous chunk
        while start < len(units):
            head = units[start].head
            if head is not None and start > 0 and not any(u.text == head.text for u in carried):
                while carried and (
                    head.tokens + sum(u.tokens for u in carried) + units[start].tokens
                    > self.budget
                ):
                    carried.pop(0)  # the overlap gives way to the header row
                if head.tokens + units[start].tokens <= self.budget:
                    carried = [head, *carried]
            carried_tokens = sum(u.tokens for u in carried)
            while carried and carried_tokens + units[start].tokens > self.budget:
                carried_tokens -= carried.pop(0).tokens
            end, total = start, carried_tokens
            while end < len(units) and total + units[end].tokens <= self.budget:
                total += units[end].tokens
                end += 1
            if end < len(units):
                end = self._best_cut(units, start, end)
            while True:
                text = _join([*carried, *units[start:end]])
                tokens = self.tokenizer.count(text)
                if tokens <= self.budget + self.base:
                    break
                # Counts were not additive for this text: give up overlap, then units.
                if carried:
                    carried.pop(0)
                else:
                    end -= 1
            yield text, units[start].page, tokens, start
            carried = self._overlap(units[start:end])
            start = end

    def _best_cut(self, units: list[_Unit], start: int, end: int) -> int:
        """Cut before the strongest boundary among the units past the middle of the window."""
        total = sum(u.tokens for u in units[start:end])
        best, best_strength = end, -1
        running = 0
        for k in range(start + 1, end + 1):
            running += units[k - 1].tokens
            if running < _MIN_FILL * total:
                continue
            if units[k].strength >= best_strength:
                best, best_strength = k, units[k].strength
        return best

    def _overlap(self, units: list[_Unit]) -> list[_Unit]:
        """The last whole units within the overlap budget, else the last words of the last unit."""
        if self.overlap <= 0 or not units:
            return []
        taken: list[_Unit] = []
        tokens = 0
        for unit in reversed(units):
            if tokens + unit.tokens > self.overlap:
                break
            taken.insert(0, unit)
            tokens += unit.tokens
        if taken and len(taken) < len(units):
            return taken
        if taken:  # the whole chunk fits in the overlap: repeating all of it would add nothing
            return taken[1:] if len(taken) > 1 else []
        if units[-1].row:
            return []  # half a table row would read as a different row
        last = units[-1]
        words = last.text.split()
        # Guess the tail from the unit's own tokens per word, then shrink until it fits: usually
        # one count, where bisection would take several.
        per_word = last.tokens / max(len(words), 1)
        take = min(len(words) - 1, int(self.overlap / max(per_word, 1e-9)))
        while take > 0:
            tail = " ".join(words[-take:])
            tokens = self.count(tail)
            if tokens <= self.overlap:
                return [_Unit(tail, tokens, last.page, _WORD)]
            take = min(take - 1, int(take * self.overlap / tokens))
        return []


def _is_header(row: str) -> bool:
    """Whether a table's first row names its columns: two cells or more, all text (years such
    as "2023" count as names: columns are often periods)."""
    cells = [c for c in _CELL_SPLIT.split(row) if c]
    return len(cells) >= 2 and not any(
        (_FIGURE_CELL.fullmatch(c) and not _YEAR.fullmatch(c)) or ": " in c for c in cells
    )


def _join(units: Sequence[_Unit]) -> str:
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i:
            parts.append(_SEPARATOR[unit.strength])
        parts.append(unit.text)
    return "".join(parts)
