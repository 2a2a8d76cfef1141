"""Table rows as the extractors render them, read back into cells: which figure of a row belongs
to which column, and which column a question asks for. Pure, no I/O.

Two renderings reach the answerer (ingest_worker/extract/):

- PDF text: a row is its label and then its figures (``Net sales $ 81,797 $ 82,959 $ 282,887``);
  the column headings are lines above the rows, often broken a word or a date piece a line
  (``Three Months Ended Nine Months Ended``, ``July 1,``, ``2023``, ``June 25,``, ``2022``, ...),
  or each group with its day over a line of years (``Three Months Ended March 31, Nine Months
  Ended March 31,`` then ``2023 2022 2023 2022``);
- cell-separated rows (DOCX, PPTX, HTML, Markdown and text tables): ``North | 1,200 | 1,350``
  under a heading row ``Region | Q1 2024 | Q2 2024``; XLSX rows name each cell's column
  (``Region: North | Q1 2024: 1,200``).

A column is chosen by what the question says: its measure and period words found in the
column's heading ("pallets", "nine months"), a date it names, the span it asks for (a quarter is
three months), the year, "a year earlier"; on a tie the first column, which in financial
statements is the current period.

A table's declared unit ("(in thousands)", "(in millions, except number of shares, which are
reflected in thousands, ...)") is read from its caption (:func:`scale`), and each cell's unit
told from its row, its column and its value (:func:`cell_unit`): prices, rates, percentages and
figures to the cent are never scaled.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_MONTH_NUMBER = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DATE = re.compile(rf"\b({_MONTHS})\.?\s+(\d{{1,2}}),?\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_YEAR = re.compile(r"\b((?:19|20)\d\d)\b")
_CHANGE = re.compile(r"(?:\b(?:percentage|percent)\s+|%\s*|\$\s*)?\b(?:change|variance)\b",
                     re.IGNORECASE)
# The words of a question that asks how a figure moved.
_MOVES = re.compile(r"chang|increas|decreas|grow|grew|gain|declin|drop|rose|rise|fell|fall|"
                    r"differ|compar|vari|up$|down$|moved?$", re.IGNORECASE)
_DAY = re.compile(rf"\b({_MONTHS})\.?\s+(\d{{1,2}})\b,?", re.IGNORECASE)
_QUARTER = re.compile(r"\bQ([1-4])\b", re.IGNORECASE)
_SPAN = re.compile(r"\b(three|six|nine|twelve|3|6|9|12)[- ]months?\b|\b(quarter|year|half)s?\b",
                   re.IGNORECASE)
_SPAN_MONTHS = {"three": 3, "3": 3, "six": 6, "6": 6, "nine": 9, "9": 9, "twelve": 12, "12": 12,
                "quarter": 3, "half": 6, "year": 12}
# A group heading over several columns: "Three Months Ended", "Nine Months Ended", "Year Ended".
_GROUP = re.compile(r"\b(?:(?:three|six|nine|twelve)\s+months|quarters?|years?|fiscal\s+years?|"
                    r"periods?|six-month|nine-month|three-month)\s+ended\b", re.IGNORECASE)
# One cell of a PDF row: a figure with its sign, currency and percent, or a dash for nothing.
_VALUE = re.compile(r"^\(?-?\d[\d,]*(?:\.\d+)?\)?%?$|^[—–-]+$")
# A change in percentage points or basis points, after its figure or glued to it.
_POINTS_UNIT = re.compile(r"^(?:pts?|ppts?|pp|bps|points?)$", re.IGNORECASE)
_POINTS = re.compile(r"^\(?-?\d+(?:\.\d+)?\)?(?:pts?|ppts?|pp|bps)$", re.IGNORECASE)
_PRIOR = re.compile(r"\b(?:a year (?:earlier|before|ago)|prior[- ]year|previous year|last year|"
                    r"year[- ]ago|same (?:quarter|period) (?:of |in )?(?:the )?(?:prior|previous|"
                    r"last) year)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Cell:
    """One figure of a row: the heading of its column ("" when unknown) and the figure as
    written ("$ 81,797", "(1,680)", "12.5 %")."""

    column: str
    value: str


@dataclass(frozen=True)
class Row:
    """A table row: what it is (its label) and its figures, each under its column."""

    label: str
    cells: tuple[Cell, ...]


def split_figures(line: str) -> tuple[str, list[str]]:
    """A PDF-rendered row's label and its figures, read from the end of the line
    (``"Net sales $ 81,797 $ 82,959"`` -> ``("Net sales", ["$ 81,797", "$ 82,959"])``).
    Years at the end of a label ("Notes due 2025") stay in the label only when they carry no
    currency and are followed by other figures."""
    tokens = line.split()
    values: list[str] = []
    i = len(tokens)
    pending_percent = False
    while i > 0:
        token = tokens[i - 1]
        if token == "%":
            pending_percent = True
            i -= 1
            continue
        if _POINTS_UNIT.match(token) and i > 1 and _VALUE.match(tokens[i - 2]):
            # "3.9 pts", a change in percentage points: one figure.
            values.insert(0, f"{tokens[i - 2]} {token}")
            i -= 2
            continue
        if _POINTS.match(token):  # "1ppt", "(2)ppt"
            values.insert(0, token)
            i -= 1
            continue
        if token == "$" and values:
            values[0] = "$ " + values[0]
            i -= 1
            continue
        bare = token[1:] if token.startswith("$") else token
        if _VALUE.match(bare):
            values.insert(0, token + (" %" if pending_percent else ""))
            pending_percent = False
            i -= 1
            continue
        break
    label = " ".join(tokens[:i]).rstrip(":")
    return label, values


def pdf_row(line: str, headings: str) -> Row | None:
    """A PDF-rendered row under the column headings ``headings`` (the heading lines above the
    table, joined); None when the line has no label or no figure."""
    label, values = split_figures(line)
    if not label or not values:
        return None
    columns = column_headings(headings, len(values))
    return Row(label, tuple(Cell(c, v) for c, v in zip(columns, values, strict=True)))


def column_headings(headings: str, count: int) -> list[str]:
    """The heading of each of ``count`` columns, read from heading lines such as
    ``Three Months Ended Nine Months Ended July 1, 2023 June 25, 2022 July 1, 2023 June 25,
    2022``: the dates (or years, or "Q3 2024"-like labels) one a column, under the groups that
    span them; "" for each column when the headings do not fit the row."""
    text = " ".join(headings.split())
    # The last: a group line read under the headings ("Revenue") may follow it.
    change = next(reversed(list(_CHANGE.finditer(text))), None)
    if change and count > 1 and not re.search(r"\d", text[change.end():]):
        # A last column of the change between the periods ("... 2023 2022 Percentage Change").
        periods = column_headings(text[:change.start()], count - 1)
        if any(periods):
            return [*periods, " ".join(change.group(0).split()).title()]
    groups = [" ".join(g.split()).title() for g in _GROUP.findall(text)]
    labels = [m.group(0) for m in _DATE.finditer(text)]
    if len(labels) != count:
        labels = re.findall(r"\bQ[1-4]\s+(?:FY\s?)?(?:19|20)\d\d\b|\b(?:19|20)\d\d\s+Q[1-4]\b",
                            text, re.IGNORECASE)
    if len(labels) != count:
        # The month and day with each group, the years a line below ("Three Months Ended
        # March 31, Nine Months Ended March 31," over "2023 2022 2023 2022"): each year under
        # its group's day.
        # Or a day a column ("July 30, July 31," over "2023 2022").
        days = [f"{m.group(1)} {m.group(2)}" for m in _DAY.finditer(text)]
        years = _YEAR.findall(_DAY.sub(" ", text))
        if days and len(years) == count:
            if len(days) == count:
                labels = [f"{d}, {y}" for d, y in zip(days, years, strict=True)]
            elif count % len(days) == 0 and len(days) in (1, len(groups)):
                per = count // len(days)
                labels = [f"{days[i // per]}, {y}" for i, y in enumerate(years)]
    if len(labels) != count:
        rest = _DATE.sub(" ", text)
        labels = labels if labels else _YEAR.findall(rest)
    if len(labels) != count:
        if len(groups) == count:
            return groups
        return [""] * count
    if groups and count % len(groups) == 0:
        per = count // len(groups)
        return [f"{groups[i // per]} {label}" for i, label in enumerate(labels)]
    return labels


def pipe_rows(lines: Sequence[str]) -> list[Row | None]:
    """Rows of a cell-separated table (``a | b | c`` lines, the first naming the columns when
    none of its cells is a figure; XLSX cells ``Column: value``), one per line (None for the
    heading row and rows without a figure)."""
    out: list[Row | None] = []
    header: list[str] | None = None
    for index, line in enumerate(lines):
        cells = split_cells(line)
        named = [_NAMED.match(c) for c in cells]
        if index == 0 and names_columns(line):
            header = cells
            out.append(None)
            continue
        label_parts: list[str] = []
        figures: list[Cell] = []
        for position, cell in enumerate(cells):
            name, value = "", cell
            match = named[position]
            if match and (header is None or is_figure(match.group(2))):
                name, value = match.group(1), match.group(2)
            elif header is not None and position < len(header):
                name = header[position]
            if is_figure(value) and (position > 0 or len(cells) == 1):
                figures.append(Cell(name, value))
            elif value:
                label_parts.append(value)
        label = " ".join(label_parts)
        out.append(Row(label, tuple(figures)) if label and figures else None)
    return out


_NAMED = re.compile(r"^([^:]{1,60}):\s+(.+)$")  # an XLSX cell under its column: "Pallets: 4812"


def names_columns(line: str) -> bool:
    """Whether the first line of a cell table is its heading row: several cells, none a figure,
    and not a spreadsheet row whose every cell names its own column ("Setting: PARLEY_OCR |
    Default: local", a row of text whose column headings are in each cell), nor a form's row of
    fields, a cell ending in ":" followed by its value ("Job Location: | Rig Floor")."""
    cells = split_cells(line)
    named = [_NAMED.match(c) for c in cells]
    return (len(cells) > 1 and not any(is_figure(c) for c in cells[1:])
            and not any(m and is_figure(m.group(2)) for m in named) and not all(named)
            and not any(c.endswith(":") and after for c, after in itertools.pairwise(cells)))


def split_cells(line: str) -> list[str]:
    """The cells of a ``a | b | c`` line; a Markdown row's outer pipes (``| a | b |``) are not
    cells, a leading pipe alone is an empty first cell (``| 2025 | 2024`` over row labels)."""
    line = line.strip()
    if line.startswith("|") and line.endswith("|") and len(line) > 1:
        line = line[1:-1]
    return [c.strip() for c in re.split(r"\s*\|\s*", line)]


def is_rule(line: str) -> bool:
    """A Markdown table's rule line (``|---|:---:|``)."""
    return bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?", line.strip()))


def is_figure(cell: str) -> bool:
    """Whether a cell is a figure: a number with its currency, sign or percent, or a dash."""
    bare = re.sub(r"[$€£¥\s]|USD|EUR", "", cell)
    return bool(bare) and bool(_VALUE.match(bare.replace("%", "") + ("%" if "%" in bare else "")))


@dataclass(frozen=True)
class Period:
    """What a question says about the period it wants."""

    dates: frozenset[tuple[int, int, int]]  # (year, month, day) named
    years: frozenset[int]
    span: int  # months: 3 for a quarter, 9 for "nine months"; 0 when not said
    prior: bool  # "a year earlier", "prior year"


def spans(text: str) -> set[int]:
    """The spans, in months, of the periods ``text`` reports on ("during the nine months ended
    July 1, 2023": 9; "the quarter ended ...": 3): those a group heading would name (a span not
    followed by "ended" is not one)."""
    found = (_SPAN.search(m.group(0)) for m in _GROUP.finditer(text))
    return {_SPAN_MONTHS[(s.group(1) or s.group(2)).lower()] for s in found if s}


def period(question: str) -> Period:
    """The period ``question`` asks about."""
    dates = frozenset((int(y), _MONTH_NUMBER[m.lower()[:3]], int(d))
                      for m, d, y in _DATE.findall(question))
    years = frozenset(int(y) for y in _YEAR.findall(question))
    span = 0
    for m in _SPAN.finditer(question):
        word = (m.group(1) or m.group(2)).lower()
        if word == "year" and not re.search(r"\b(?:fiscal )?year ended|full year|annual",
                                            question, re.IGNORECASE):
            continue  # "a year earlier", "the year 2023": not a span
        span = _SPAN_MONTHS[word]
        break
    if not span and (_QUARTER.search(question) or re.search(r"\b(?:first|second|third|fourth)\s"
                                                             r"quarter", question, re.I)):
        span = 3
    return Period(dates, years, span, bool(_PRIOR.search(question)))


def asks_change(words: set[str]) -> bool:
    """Whether a question's words (lower case) ask how a figure moved ("change", "grew")."""
    return any(_MOVES.match(w) for w in words)


def unchanged(headings: str) -> str:
    """Column headings without their change columns' ("Percentage Change", "$ Change"): what
    they say to a question that asks for a share, not how a figure moved ("What percentage of
    revenue ...")."""
    return _CHANGE.sub(" ", headings)


def column_score(column: str, position: int, asked: Period, words: set[str]) -> float:
    """How well a column's heading fits what the question asks: its words (``words``, the
    question's content words, lower case), a date it names, its span, its year; ``position``
    is the column's place in its group (0 = first, the current period)."""
    low = column.lower() if asks_change(words) else unchanged(column).lower()
    score = sum(1.0 for w in set(re.findall(r"[a-z]{3,}", low)) if w in words) * 0.5
    dates = {(int(y), _MONTH_NUMBER[m.lower()[:3]], int(d)) for m, d, y in _DATE.findall(column)}
    if asked.dates and dates:
        score += 3.0 if dates & asked.dates else -1.0
    span = _SPAN.search(column)
    if asked.span and span:
        score += 1.5 if _SPAN_MONTHS[(span.group(1) or span.group(2)).lower()] == asked.span \
            else -1.5
    years = {int(y) for y in _YEAR.findall(column)}
    if asked.years and years and not asked.dates:
        score += 0.5 if years & asked.years else 0.0
    quarter = _QUARTER.search(column)
    if quarter and re.search(rf"\bQ{quarter.group(1)}\b", " ".join(words), re.IGNORECASE):
        score += 1.0
    if asked.prior:
        score += 1.0 if position == 1 else 0.0
    return score


def best_cell(row: Row, question: str, words: set[str]) -> Cell | None:
    """The cell of ``row`` that answers ``question``: the best-fitting column, the first on a
    tie; None when the row has no figure. ``words`` are the question's content words."""
    return fit(row, period(question), words)[0]


def fit(row: Row, asked: Period, words: set[str]) -> tuple[Cell | None, float]:
    """The best-fitting cell of ``row`` for a question asking ``asked`` in ``words``, and how
    well it fits (:func:`column_score`; 0 when the columns are unknown)."""
    if not row.cells:
        return None, 0.0
    group_of: dict[str, int] = {}
    best: tuple[float, int, Cell] | None = None
    for index, cell in enumerate(row.cells):
        group = _GROUP.search(cell.column)
        key = group.group(0).lower() if group else ""
        position = group_of.get(key, 0)
        group_of[key] = position + 1
        score = column_score(cell.column, position, asked, words)
        if best is None or score > best[0]:
            best = (score, index, cell)
    assert best is not None
    return best[2], best[0]


# --- scale: "(in thousands)", "(dollars in millions, except per share amounts)" -------------

_SCALE = re.compile(r"\bin\s+(thousands|millions|billions)\b", re.IGNORECASE)
MULTIPLIER = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_SHARES = re.compile(r"(?<!per )\bshares\b", re.IGNORECASE)
_COUNTED = re.compile(r"(?<!per )\bshares?\b|\brepurchas", re.IGNORECASE)
_DECLARATION = re.compile(r"\([^()]*\bin\s+(?:thousands|millions|billions)\b[^()]*\)",
                          re.IGNORECASE)
# A cell that is a price or a ratio, never scaled: "per share", "Average price paid", "rate".
_UNSCALED = re.compile(r"\bper[\s-]+(?:share|unit)\b|\bprice\b|\brate\b|\bratio\b|"
                       r"\bpercent", re.IGNORECASE)
# A margin is money ("Gross margin 34,670", in millions) or a ratio ("Gross margin 44.5"): the
# ratio has a decimal point.
_MARGIN = re.compile(r"\bmargin\b", re.IGNORECASE)


@dataclass(frozen=True)
class Scale:
    """The unit a table declares for its figures: ``main`` for amounts ("thousand", "million",
    "billion"; "" when not said) and ``shares`` for counts of shares when said apart ("except
    number of shares, which are reflected in thousands")."""

    main: str
    shares: str


def scale(text: str) -> Scale | None:
    """The unit a caption or heading declares, or None when it declares none: "(in thousands)"
    -> Scale("thousand", ""); "(in millions, except number of shares, which are reflected in
    thousands, ...)" and "(net income in millions and shares in thousands)" -> Scale("million",
    "thousand"). A declaration is of share counts when "shares" (not "per share") comes between
    it and the previous one."""
    main = shares = ""
    last = 0
    for m in _SCALE.finditer(text):
        unit = m.group(1).lower().rstrip("s")
        if _SHARES.search(text[last:m.start()]):
            shares = shares or unit
        else:
            main = main or unit
        last = m.end()
    return Scale(main, shares) if main or shares else None


def cell_unit(declared: Scale | None, row: Row, cell: Cell, columns: str = "") -> str:
    """The unit of one cell under its table's declared scale: "thousand", "million", "billion",
    "thousand shares", or "" when the cell is not scaled or its unit cannot be told (a
    percentage, a price or a per-share amount, a figure to the cent, or, where share counts
    have a unit of their own, a figure that names neither shares nor money)."""
    if declared is None or "%" in cell.value:
        return ""
    digits = re.sub(r"[^\d.]", "", cell.value)
    if "." in digits and len(digits.split(".")[1]) >= 2:
        return ""  # to the cent: a price or a per-share amount, not thousands of them
    named = f"{row.label} {cell.column}"
    if _UNSCALED.search(named) or (_MARGIN.search(named) and "." in digits):
        return ""
    money = bool(re.search(r"[$€£¥]|USD|EUR", cell.value))
    if declared.shares and declared.shares != declared.main:
        # The declaration itself says "shares" ("except number of shares, which are reflected in
        # thousands"): a bare figure is a count of shares under headings or a caption that
        # count them ("Total Number of Shares Purchased", "Share repurchase activity ..."), not
        # on a balance sheet that declares so ("Term debt 9,740").
        heads = _DECLARATION.sub(" ", columns)
        if _SHARES.search(named) or (not money and _COUNTED.search(heads)):
            return f"{declared.shares} shares"
        return declared.main if money or _money_label(row.label) else ""
    return declared.main or ""


def _money_label(label: str) -> bool:
    return bool(re.search(r"\b(?:sales|revenues?|income|expenses?|costs?|cash|assets|"
                          r"liabilities|dollar|value|amount|paid|proceeds)\b", label, re.I))


def scaled(value: str, unit: str) -> str:
    """The full figure of ``value`` in ``unit`` ("102,673", "thousand shares" ->
    "102,673,000"; "$ 81,797", "million" -> "$81,797,000,000"); "" when it cannot be worked
    out."""
    word = unit.split()[0] if unit else ""
    if word not in MULTIPLIER:
        return ""
    digits = re.sub(r"[^\d.]", "", value)
    if not digits or digits == ".":
        return ""
    from decimal import Decimal

    full = Decimal(digits) * MULTIPLIER[word]
    text = f"{full:,.0f}" if full == full.to_integral_value() else f"{full.normalize():,f}"
    currency = re.search(r"[$€£¥]", value)
    sign = "-" if "(" in value or value.strip().startswith("-") else ""
    return f"{sign}{currency.group(0) if currency else ''}{text}"
