"""Reading order of a PDF page set in columns, from where its characters are drawn.

A PDF says where each glyph goes, not in which order a person reads them. Many files draw a page
of two or three columns line by line across the page (the IRS's instructions do), and a text
extractor that follows the drawing order then interleaves the columns: "A dual-status year is
one in which you you are taxed on income only from U.S. taxpayer is a nonresident alien if the
...", three sentences cut into one. :func:`reading_order` finds the columns from the
characters' boxes and reads the page's regions in reading order: a full-width band (a title, a
header, a wide table) where it is, and between such bands each column top to bottom, left to
right.

It changes nothing unless it is sure: a page is read in columns only when a vertical gutter runs
between blocks of prose on every side (words, not figures: the label and amount columns of a
financial table are not text columns) and the drawing order interleaves them. Every other page
keeps the extractor's own order.

Pure: characters and their boxes in (PDF user space: y grows upwards), text out.
``ingest_worker/extract/pdf.py`` reads the characters with pdfium.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: A gutter is at least this many ems wide, an em being the median glyph's height (about half
#: the font size); the IRS's three columns are three apart, a justified line's word spaces one.
GUTTER_EMS = 1.5
#: A column holds at least this many lines of prose and each of its lines averages this many
#: letters: fewer is a caption, a label column or a stray note, not a column of text.
MIN_COLUMN_LINES = 4
MIN_LINE_LETTERS = 12
#: A page of columns has a few full-width bands between them (a title, running headers).
MAX_BANDS = 7
#: A column's text is prose when letters are at least this share of its letters and digits.
PROSE_LETTERS = 0.75


@dataclass(frozen=True)
class Glyph:
    """One character as drawn: ``index`` in the drawing order, its box and the height of its
    baseline in user space."""

    index: int
    char: str
    left: float
    bottom: float
    right: float
    top: float
    baseline: float


@dataclass(frozen=True)
class Rect:
    """A box in user space: pdfium's line segments, for :func:`gutters`' first look."""

    left: float
    bottom: float
    right: float
    top: float


class _Fragment:
    """Glyphs of one line with no gap as wide as a gutter between them, and their extent."""

    def __init__(self, first: Glyph) -> None:
        self.glyphs = [first]
        self.left, self.right = first.left, first.right
        self.bottom, self.top = first.bottom, first.top

    def add(self, glyph: Glyph) -> None:
        self.glyphs.append(glyph)
        self.left, self.right = min(self.left, glyph.left), max(self.right, glyph.right)
        self.bottom, self.top = min(self.bottom, glyph.bottom), max(self.top, glyph.top)


def reading_order(glyphs: Sequence[Glyph]) -> str | None:
    """The page's text (``glyphs``: every character pdfium counts, in drawing order) with its
    columns one after the other, or None where the page is not read in columns or its drawing
    order already reads them so. Every character is kept once: a space or line break goes with
    the character drawn before it."""
    inked = [g for g in glyphs if not g.char.isspace() and g.right > g.left and g.top > g.bottom]
    if len(inked) < 200:
        return None
    em = statistics.median(g.top - g.bottom for g in inked)
    lines = _lines(inked, em)
    fragments = [f for line in lines for f in line]
    cuts = gutters([(f.left, f.right) for f in fragments], len(lines), em)
    if not cuts:
        return None
    middles = [(a + b) / 2 for a, b in cuts]

    def column_of(f: _Fragment) -> int:
        return sum(f.left >= m for m in middles)

    # Bands from the top: a line that crosses a gutter (a title, a running header, a wide
    # table's row) is read whole; the lines between two such are read column by column.
    bands: list[tuple[bool, list[_Fragment]]] = []
    for line in lines:
        wide = any(f.left < m < f.right for f in line for m in middles)
        if bands and bands[-1][0] == wide:
            bands[-1][1].extend(line)
        else:
            bands.append((wide, list(line)))
    in_columns = [[f for wide, fs in bands if not wide for f in fs if column_of(f) == k]
                  for k in range(len(cuts) + 1)]
    # A page that goes in and out of its columns line by line (a worksheet, a form) is not a
    # page of columns: a title and running headers make a few bands, not a dozen.
    if (len(bands) > MAX_BANDS or not all(_is_prose(fs) for fs in in_columns)
            or not _interleaved(bands, column_of)):
        return None
    region: dict[int, int] = {}  # glyph index -> its region's place in the reading order
    place = 0
    for wide, fs in bands:
        if wide:
            region.update((g.index, place) for f in fs for g in f.glyphs)
            place += 1
            continue
        for f in fs:
            region.update((g.index, place + column_of(f)) for g in f.glyphs)
        place += len(cuts) + 1
    texts: list[list[str]] = [[] for _ in range(place)]
    last: list[int] = [-2] * place
    current = 0
    for g in sorted(glyphs, key=lambda g: g.index):
        current = region.get(g.index, current)
        if last[current] != g.index - 1 and texts[current]:
            # The next line of this region, drawn after another region's: a line break, as
            # pdfium's own text has at the end of a line.
            if texts[current][-1].isspace():
                texts[current][-1] = "\n"
            else:
                texts[current].append("\n")
        texts[current].append(g.char)
        last[current] = g.index
    return "\n".join("".join(t).strip() for t in texts if t)


def _lines(glyphs: Sequence[Glyph], em: float) -> list[list[_Fragment]]:
    """Lines by the glyphs' baselines, top first, each cut where the gap between two glyphs is a
    gutter."""
    ordered = sorted(glyphs, key=lambda g: -g.baseline)
    lines: list[list[Glyph]] = []
    for g in ordered:
        if lines and lines[-1][0].baseline - g.baseline <= em * 0.3:
            lines[-1].append(g)
        else:
            lines.append([g])
    out: list[list[_Fragment]] = []
    for line in lines:
        line.sort(key=lambda g: g.left)
        cut = [_Fragment(line[0])]
        for g in line[1:]:
            if g.left - cut[-1].right > em * GUTTER_EMS:
                cut.append(_Fragment(g))
            else:
                cut[-1].add(g)
        out.append(cut)
    return out


def gutters(spans: Sequence[tuple[float, float]], lines: int, em: float
            ) -> list[tuple[float, float]]:
    """Vertical strips, at least a gutter wide, that no piece of a line (``spans``: its left and
    right) crosses but full-width lines (an eighth of the page's ``lines`` at most: a title,
    running headers), between columns at least a fifth of the text's width. Also a cheap first
    look with pdfium's own line segments (which may run across a gutter where two columns'
    lines share a baseline)."""
    left = min(a for a, _ in spans)
    right = max(b for _, b in spans)
    allowed = max(1, lines // 8)
    # A sweep over where pieces start (+1) and end (-1): the strips where at most ``allowed``
    # pieces run, inside the text's width.
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    cuts: list[tuple[float, float]] = []
    running = 0
    start: float | None = None
    for x, step in events:
        if start is not None and running + step > allowed:
            if x - start >= em * GUTTER_EMS and start > left and x < right:
                cuts.append((start, x))
            start = None
        running += step
        if start is None and running <= allowed:
            start = x
    # Columns narrower than a fifth of the text's width are a table's, not a page's.
    edges = [left, *(x for cut in cuts for x in cut), right]
    if any(edges[i + 1] - edges[i] < (right - left) / 5 for i in range(0, len(edges), 2)):
        return []
    return cuts


def _is_prose(fragments: Sequence[_Fragment]) -> bool:
    lines = len({round(f.glyphs[0].baseline) for f in fragments})
    return prose("".join(g.char for f in fragments for g in f.glyphs), lines)


def prose(text: str, lines: int) -> bool:
    """Whether ``text``, set in ``lines`` lines, reads as a column of prose: enough lines, of
    words rather than figures."""
    letters = sum(c.isalpha() for c in text)
    digits = sum(c.isdigit() for c in text)
    return (lines >= MIN_COLUMN_LINES and letters / lines >= MIN_LINE_LETTERS
            and letters >= PROSE_LETTERS * (letters + digits))


def _interleaved(bands: Sequence[tuple[bool, list[_Fragment]]],
                 column_of: Callable[[_Fragment], int]) -> bool:
    """Whether the drawing order mixes the columns of some band (else the extractor's own order
    already reads them one after the other, and is kept)."""
    for wide, fs in bands:
        if wide:
            continue
        spans: dict[int, tuple[int, int]] = {}
        for f in fs:
            k = column_of(f)
            lo = min(g.index for g in f.glyphs)
            hi = max(g.index for g in f.glyphs)
            a, b = spans.get(k, (lo, hi))
            spans[k] = (min(a, lo), max(b, hi))
        ranges = [spans[k] for k in sorted(spans)]
        if any(ranges[i][1] > ranges[i + 1][0] for i in range(len(ranges) - 1)):
            return True
    return False
