"""Dates and fiscal periods as reports and questions write them ("July 1, 2023", "Q3 2023",
"third quarter of 2023", "fiscal 2022", "FY22"): shared by the ingest side (a document's context)
and the search side (which documents a question is about). Pure."""

from __future__ import annotations

import datetime as dt
import re

MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for m in names
}
MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
DATE = re.compile(rf"\b({MONTH})\.?\s+(\d{{1,2}}),?\s+((?:19|20)\d\d)\b", re.IGNORECASE)
_ORDINAL = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "1st": 1,
    "2nd": 2,
    "3rd": 3,
    "4th": 4,
}
QUARTER = re.compile(
    r"\b(?:Q([1-4])\s*(?:FY|fiscal\s*)?'?((?:19|20)?\d\d)\b"
    r"|([1-4])Q\s*'?((?:19|20)?\d\d)\b"
    r"|(first|second|third|fourth|1st|2nd|3rd|4th)\s+(?:fiscal\s+)?quarter\s+(?:of\s+)?(?:fiscal\s+(?:year\s+)?)?((?:19|20)\d\d)\b"
    r"|FY\s*'?((?:19|20)?\d\d)\s*Q([1-4])\b"
    r"|\b((?:19|20)\d\d)\s*Q([1-4])\b)",
    re.IGNORECASE,
)
FISCAL_YEAR = re.compile(r"\b(?:fiscal(?:\s+year)?|FY)\s*'?((?:19|20)\d\d|\d\d)\b", re.IGNORECASE)


def parse_date(text: str) -> dt.date | None:
    m = DATE.search(text)
    if not m:
        return None
    month = MONTHS.get(m.group(1).lower().rstrip("."))
    try:
        return dt.date(int(m.group(3)), month or 0, int(m.group(2)))
    except ValueError:
        return None


def quarter_label(text: str) -> str | None:
    m = QUARTER.search(text)
    if not m:
        return None
    g = m.groups()
    if g[0]:
        q, y = g[0], g[1]
    elif g[2]:
        q, y = g[2], g[3]
    elif g[4]:
        q, y = str(_ORDINAL[g[4].lower()]), g[5]
    elif g[6]:
        q, y = g[7], g[6]
    else:
        q, y = g[9], g[8]  # "2023 Q1" (file names: "2023 Q1 MSFT.pdf")
    return f"Q{q} {year_of(y)}"


def year_of(text: str) -> int:
    """A year written with 2 or 4 digits ("23" -> 2023)."""
    y = int(text)
    return y + 2000 if y < 100 else y


def fiscal_year(text: str) -> int | None:
    """The year of the first "fiscal 2022" / "FY22" / "fiscal year 2022" in ``text``."""
    m = FISCAL_YEAR.search(text)
    return year_of(m.group(1)) if m else None
