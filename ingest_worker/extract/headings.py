"""Section headings found in the laid-out text of a page (a PDF without an outline, an OCR'd scan),
from the lines alone: no fonts, so it works for pdfium, pypdf and OCR text alike. Pure, no I/O.

A line is a heading when it

- is short (at most 12 words and 100 characters; a numbered heading such as "Item 2. Management's
  Discussion and Analysis of ..." or "Note 4 - Leases" may be 24 words and 160 characters),
- starts with a capital letter (a quote before it allowed) or a numbering ("Item 1A.",
  "PART II", "Note 3", "2.1", "B."), is mostly words (not a table row: no amounts,
  percentages or bare numbers other than years; no check boxes), and does not end like a
  sentence, a label or a line that goes on (``. , ; : ! ?``, a hyphen or slash, "and", "of",
  "the"...),
- does not continue the line above it (which does not end with a hyphen, a comma or a word
  such as "and", "of", "the"), and is not a running header or footer (``skip``),
- and is followed by body text (prose, not a row of figures): a line 60% as long as the page's
  long lines, or a sentence of four words or more, or a list item; or by another heading (a
  chain such as "PART I" / "Item 2. ..." / "Overview"), or it is a title in capitals
  ("CONDENSED CONSOLIDATED BALANCE SHEETS"), which may head a table.

What is not found stays body text: a missed heading costs only a weaker section boundary.
"""

from __future__ import annotations

import re
from collections.abc import Collection

_NUMBERING = re.compile(
    r"(?:(?:item|part|note|section|chapter|article|schedule|appendix|exhibit)\s+"
    r"[\dIVXLC]+[A-Z]?(?:\.\d+)*[.:)]?\s*[-–—:]?"
    r"|\d{1,2}(?:\.\d{1,2})*\.?\)?|[A-H][.)]|[IVX]{1,4}[.)])\s+",
    re.IGNORECASE,
)
_END = re.compile(r"[.,;:!?…]['\"’”)\]]*$")
_CONTINUED = re.compile(
    r"(?:[-‐,(/&]|\b(?:and|or|of|the|a|an|to|in|for|with|by|on|at|as|from|that|which|its|their))$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"[•◦▪‣●○■□\-–—*]\s")
_FIGURE = re.compile(r"[$€£¥%☐☒✓✔]|\d")
_YEAR = re.compile(r"(?:19|20)\d\d[,;]?")
_WORDY = re.compile(r"[^\W\d_]{2,}")

MAX_WORDS, MAX_CHARS = 12, 100
MAX_NUMBERED_WORDS, MAX_NUMBERED_CHARS = 24, 160
_BODY_SHARE = 0.6  # a body line is at least this share of the page's long lines
_MIN_WIDE = 40  # characters: a page of short lines is measured against this at least


def split_at_headings(
    text: str, *, skip: Collection[str] = ()
) -> list[tuple[str | None, str]]:
    """``text`` cut before each heading line: (heading, text from it) pairs in order; the first
    pair's heading is None when the text does not start with a heading (it continues whatever
    came before). ``skip``: lines never taken as headings (running headers and footers), compared
    after :func:`normalized`."""
    lines = text.split("\n")
    found = headings(lines, skip=skip)
    out: list[tuple[str | None, str]] = []
    start, heading = 0, None
    for index in sorted(found):
        part = "\n".join(lines[start:index]).strip()
        if part:
            out.append((heading, part))
        start, heading = index, " ".join(lines[index].split())
    part = "\n".join(lines[start:]).strip()
    if part:
        out.append((heading, part))
    return out


def headings(lines: list[str], *, skip: Collection[str] = ()) -> set[int]:
    """Indexes of the heading lines among ``lines`` (one page's; see the module docstring)."""
    stripped = [line.strip() for line in lines]
    present = [i for i, line in enumerate(stripped) if line]
    if not present:
        return set()
    lengths = sorted(len(stripped[i]) for i in present)
    wide = max(lengths[int(0.9 * (len(lengths) - 1))], _MIN_WIDE)
    candidate = {
        i for i in present if _candidate(stripped[i]) and normalized(stripped[i]) not in skip
    }
    found: set[int] = set()
    # Bottom up, so that a heading followed by a heading is known when the first is looked at.
    for position in range(len(present) - 1, -1, -1):
        i = present[position]
        if i not in candidate:
            continue
        if position > 0:
            above = stripped[present[position - 1]]
            if _CONTINUED.search(above) and present[position - 1] not in candidate:
                continue
        below = stripped[present[position + 1]] if position + 1 < len(present) else None
        if below is None:
            continue  # the last line of a page heads nothing on it
        if (
            present[position + 1] in found
            or _body(below, wide)
            or _capitals(stripped[i])
        ):
            found.add(i)
    return found


def normalized(line: str) -> str:
    """A line compared as a running header or footer: digits as '#', spaces collapsed."""
    return re.sub(r"\d+", "#", " ".join(line.split()))


def _candidate(line: str) -> bool:
    numbered = _NUMBERING.match(line)
    rest = line[numbered.end() :] if numbered else line
    words = line.split()
    if numbered:
        if len(words) > MAX_NUMBERED_WORDS or len(line) > MAX_NUMBERED_CHARS:
            return False
    elif len(words) > MAX_WORDS or len(line) > MAX_CHARS:
        return False
    if not rest or _END.search(line) or _CONTINUED.search(line) or _BULLET.match(line):
        return False
    first = rest.lstrip("\"'“‘")[:1]
    if not first.isupper():
        return False
    tokens = rest.split()
    if any(_FIGURE.search(t) and not _YEAR.fullmatch(t) for t in tokens):
        return False
    return sum(1 for t in tokens if _WORDY.search(t)) >= 0.8 * len(tokens)


def _capitals(line: str) -> bool:
    """A title in capitals: two words or more, three letters in four capitals or more."""
    letters = [c for c in line if c.isalpha()]
    return (
        len(line.split()) >= 2
        and len(letters) >= 8
        and sum(c.isupper() for c in letters) >= 0.75 * len(letters)
    )


def _body(line: str, wide: int) -> bool:
    """Whether ``line`` reads as the start of body text under a heading."""
    if _BULLET.match(line):
        return True
    first = line.lstrip("\"'“‘")[:1]
    if not (first.isupper() or first.isdigit()):
        return False
    tokens = line.split()
    if sum(1 for t in tokens if _FIGURE.search(t)) * 3 > len(tokens):
        return False  # a table row
    if len(line) >= _BODY_SHARE * wide:
        return True
    return len(line.split()) >= 4 and bool(re.search(r"[.!?:]['\"’”)]?$", line))
