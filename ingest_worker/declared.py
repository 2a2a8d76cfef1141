"""A table's declared unit, followed through its text: which caption ("Share Repurchases (in
thousands, except per share amounts)", "(In millions)") is in force at each point of a section,
so a chunk that continues the table can carry it (``ChunkDraft.unit``) when its own text no
longer holds the caption. Pure, no I/O.

Read line by line, the way the extractive answerer reads a source
(:func:`inference_worker.extractive.units`, whose :func:`inference_worker.tables.scale` parses
what a caption declares; this module only finds the caption):

- a line that says "in thousands", "in millions" or "in billions" and is not a row of figures
  declares the unit of the table that follows it (a later declaration replaces it); a caption
  whose parenthesis a line break cut ("(in thousands, except" / "per share amounts):") is
  carried whole;
- the declaration holds over the table's rows (figures, or ``a | b`` cells), its column headings
  and group labels ("Net sales:"), whatever their number;
- a line of prose (a sentence: it ends with ".", "!" or "?") ends it: the table is over, and a
  table after that paragraph declares its own unit or has none;
- a chunk carries the caption in force where it starts only when it starts inside the table
  (:func:`continues`: with a row, a column heading or a group label), not with prose.

A section is read on its own (a chunk never spans two): a table that goes on over a page break
is not followed onto the next page, where a heading, a footer or another statement may come
first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# What a caption says of its figures: the pattern inference_worker.tables.scale parses.
_DECLARES = re.compile(r"\bin\s+(?:thousands|millions|billions)\b", re.IGNORECASE)
# An amount of a table row: money, a percentage, a decimal, or three digits or more that are
# not a year ("Total 102,673", "$ 94.57", "12.5 %"); a caption's "2023" is not one.
_AMOUNT = re.compile(r"(?<![\w.])(?:\$\s?\(?\d[\d,]*(?:\.\d+)?|\(?\d[\d,]*\.\d+\)?|"
                     r"\(?\d{1,3}(?:,\d{3})+\)?|\(?\d{3,}\)?)(?:\s?%)?(?![\w.])")
_YEAR = re.compile(r"(?:19|20)\d\d")
# The longest line read as a column heading or group label rather than a line of prose.
_SHORT = 80
# The longest caption carried; a longer "declaration" is a paragraph that mentions a unit.
MAX_CAPTION = 200


def _is_row(line: str) -> bool:
    """A row of figures (as the answerer tells one): cells, or amounts other than years and not
    a sentence, under a short label ("Total 102,673 $ 94,569"; a line of prose that holds two
    amounts has more words)."""
    if "|" in line:
        return True
    amounts = [m for m in _AMOUNT.finditer(line) if not _YEAR.fullmatch(m.group(0).strip("()"))]
    if not amounts or line.endswith("."):
        return False
    words = len(re.findall(r"[A-Za-z]{2,}", line))
    if len(amounts) == 1:
        return words <= 8 and not line[amounts[0].end():].strip(" %)")
    return words <= 12


def declares(line: str) -> bool:
    """Whether ``line`` is a caption or heading declaring a unit ("(in thousands, except per
    share amounts)"), not a row of figures or a paragraph."""
    line = line.strip()
    return (len(line) <= MAX_CAPTION and bool(_DECLARES.search(line))
            and not _is_row(line))


def continues(text: str) -> bool:
    """Whether a chunk's ``text`` starts inside a table: its first line is a row, or a short
    line that is not a sentence (a column heading, a group label such as "Net sales:"), not
    prose that a table's caption no longer speaks for."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return _is_row(first) or (len(first) <= _SHORT and not first.endswith((".", "!", "?")))


def follow(texts: Iterable[str], declared: str | None = None) -> list[str | None]:
    """For each text of a section in order, the caption in force where it starts (``declared``
    at the first): the last declaring line before it, unless a sentence of prose came after
    that line."""
    out: list[str | None] = []
    open_caption = False  # the caption's parenthesis goes on to the next line
    for text in texts:
        out.append(declared)
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if open_caption and declared is not None and not _is_row(line):
                declared = f"{declared} {line}"[:MAX_CAPTION]  # "... (in thousands, except" +
                open_caption = declared.count("(") > declared.count(")")  # "per share amounts)"
            elif declares(line):
                declared = line
                open_caption = line.count("(") > line.count(")")
            elif line.endswith((".", "!", "?")) and "|" not in line:
                declared = None
                open_caption = False
            else:
                open_caption = False
    return out
