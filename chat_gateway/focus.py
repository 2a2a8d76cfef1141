"""Which documents a question is about, from the periods and entities it names and the contexts
the tenant's documents gave themselves at ingest (:class:`parley.contracts.DocumentContext`). Pure.

- A date ("the quarter ended July 1, 2023") picks the documents whose period ends within 3 days
  of it; a quarter ("Q3 2023", "third quarter of 2023") those whose period label is that quarter;
  a fiscal year ("fiscal 2022", "FY22") those whose label or period end is in that year. The
  first of these kinds the question holds decides; every date (or quarter) of that kind counts,
  and a question naming two periods that two reports hold ("Q2 2025 and Q3 2025") gets one
  chunk of each report first.
- An entity ("Apple", "Contoso", "Northwind" for Northwind Traders Inc.) named in the question
  narrows to the documents of that entity when the tenant holds documents of several.
- "latest", "most recent", "last quarter" without a named period pick the documents of the
  latest period end (of the named entity, if any; of each, when the question names several:
  reason ``latest_each``, a chunk of each first).
- A question that spans periods ("over time", "across quarters", "in these 10-Qs", "compared
  to previous quarters") asks for one chunk of each document first (:attr:`Focus.spread`); so
  does one about every company ("Which company had the highest revenue in Q3 2025?"), over the
  reports of the period it names, if any; and one naming two companies or more ("Compare
  Halvard's and Tidewater's R&D in Q3 2025"), over their reports.
- Where the spread is over the focused documents only (:attr:`Focus.within`: two periods or
  companies named, every company of a period, each one's latest), search gives those documents
  the ranks in turn (the best chunk of each, then the second of each...), so that one side of
  a comparison does not fill them.

Search puts the chunks of the focused documents first (it also asks the vector store for them
alone, so they are found even when other documents' chunks crowd the nearest neighbours) and
fills the rest from the others: a wrong guess costs ranks, never the answer.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from parley.contracts import DocumentContext
from parley.ids import DocumentId
from parley.periods import DATE, QUARTER, fiscal_year, parse_date, quarter_label

_LATEST = re.compile(
    r"\b(?:latest|most recent|newest|last (?:quarter|report|filing|10-?[qk]|period|year))\b",
    re.IGNORECASE,
)
_SPREAD = re.compile(
    r"\b(?:over time|across|trends?|fluctuat\w*|each (?:reported |reporting )?"
    r"(?:period|quarter|year|report|filing)|these (?:10-?[qk]s|quarters|periods|years|reports|"
    r"filings|documents)|(?:reported|reporting|previous|prior|past) (?:quarters|periods|years)|"
    r"over the report(?:ed|ing) periods?|(?:quarter|year)[- ]over[- ](?:quarter|year))\b",
    re.IGNORECASE,
)
# "Which company had the highest revenue", "each of the companies": every company's report of
# the period a chunk first. The answerer reads the same words (inference_worker.extractive's
# _COMPANIES; the services do not import each other) to answer for each company.
_COMPANIES = re.compile(
    r"\b(?:which|what)\s+(?:company|companies|firm|firms|business|businesses)\b|"
    r"\b(?:each|every|all|both)\s+(?:of\s+the\s+)?(?:companies|company|firms|businesses)\b|"
    r"\b(?:the|these)\s+companies\b",
    re.IGNORECASE,
)
_SUFFIXES = re.compile(
    r"[,.]?\s+(?:inc|incorporated|corp|corporation|company|co|ltd|limited|llc|llp|lp|plc|gmbh|"
    r"ag|se|sa|nv|bv|holdings|group)\.?$",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^the\s+|\s+(?:&|and)$", re.IGNORECASE)
_DOMAIN = re.compile(r"\.(?:com|net|org|io)$", re.IGNORECASE)
DATE_TOLERANCE_DAYS = 3
# Abbreviations business questions use where reports spell the words out ("R&D expenditure"
# vs "Research and development expense"): a question gets the spelled-out words added.
ABBREVIATIONS = {
    "r&d": "research and development",
    "sg&a": "selling, general and administrative",
    "m&a": "mergers and acquisitions",
    "fx": "foreign exchange currency",
    "eps": "earnings per share",
    "capex": "capital expenditures",
    "opex": "operating expenses",
    "cogs": "cost of sales",
    "yoy": "year over year",
    "qoq": "quarter over quarter",
    "d&a": "depreciation and amortization",
}
_ABBREVIATION = re.compile(
    r"(?<![\w&])(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")(?![\w&])", re.IGNORECASE
)


@dataclass(frozen=True)
class Focus:
    """``documents``: the documents the question is about (None: no period or entity named, or
    none matched); ``reason``: what picked them ("date", "quarter", "fiscal_year", "latest",
    "latest_each", "entity"); ``spread``: one chunk per document first; ``within``: of the
    focused documents only (two periods or companies named: the others only fill the ranks
    after them), not of every document (a question over the reported periods)."""

    documents: frozenset[DocumentId] | None = None
    reason: str = ""
    spread: bool = False
    within: bool = False


def focus(question: str, contexts: Mapping[DocumentId, DocumentContext]) -> Focus:
    """See the module docstring. ``contexts``: the served documents that have one."""
    companies = bool(_COMPANIES.search(question))
    spread = bool(_SPREAD.search(question)) or companies
    pool = dict(contexts)
    entity_docs = _by_entity(question, contexts)
    if entity_docs is not None:
        pool = {d: contexts[d] for d in entity_docs}
    # "Compare Halvard's and Tidewater's R&D in Q3 2025": each company's reports get their share
    # of the ranks, or the one the question's words fit better fills them.
    several = len({entity_key(c.entity) for c in pool.values() if c.entity}) > 1 \
        and entity_docs is not None
    for reason, each in (
        ("date", _by_date(question, pool)),
        ("quarter", _by_quarter(question, pool)),
        ("fiscal_year", [_by_fiscal_year(question, pool)]),
    ):
        picked = set().union(*each)
        if picked:
            # Two periods asked ("from Q2 2025 to Q3 2025"): a chunk of each report first.
            return Focus(frozenset(picked), reason,
                         spread=sum(map(bool, each)) > 1 or companies or several, within=True)
    if _LATEST.search(question):
        each = _latest_of_each(pool) if entity_docs is not None else []
        if len(each) > 1:
            # "Compare Contoso's and Fabrikam's revenue in their latest quarters": each named
            # company's latest report (one company's may be older than the other's), a chunk
            # of each first.
            return Focus(frozenset().union(*each), "latest_each", spread=True, within=True)
        latest = _latest(pool)
        if latest:
            return Focus(frozenset(latest), "latest", spread=spread)
    if entity_docs is not None:
        return Focus(frozenset(entity_docs), "entity", spread=spread or several, within=several)
    return Focus(None, "", spread=spread)


def expanded(question: str) -> str:
    """``question`` with the spelled-out words of the abbreviations it uses added after it
    (:data:`ABBREVIATIONS`): what is embedded and matched for it. Pure."""
    found = dict.fromkeys(
        ABBREVIATIONS[m.group(1).lower()] for m in _ABBREVIATION.finditer(question)
    )
    return f"{question} ({'; '.join(found)})" if found else question


def entity_key(entity: str) -> str:
    """The name an entity is asked by: without a leading "The", its legal suffix or a web
    domain's ending ("Apple Inc." -> "apple", "AMAZON.COM, INC." -> "amazon", "JPMorgan Chase &
    Co." -> "jpmorgan chase", "The Coca-Cola Company" -> "coca-cola")."""
    name = " ".join(entity.split())
    while True:
        shorter = _LEADING.sub("", _SUFFIXES.sub("", name))
        if shorter == name:
            return _DOMAIN.sub("", name).lower().strip(" ,.")
        name = shorter


def _by_entity(
    question: str, contexts: Mapping[DocumentId, DocumentContext]
) -> set[DocumentId] | None:
    keys = {d: entity_key(c.entity) for d, c in contexts.items() if c.entity}
    if len(set(keys.values())) < 2:
        return None  # one entity (or none): naming it picks nothing out
    named = {d for d, key in keys.items() if key and _names(question, key)}
    return named or None


def _names(question: str, key: str) -> bool:
    """Whether ``question`` names the entity whose key is ``key``: the whole key, any case; its
    first word written as a name, capitalised ("Northwind" for Northwind Traders Inc., "JPMorgan",
    "NVIDIA"); or its initials in capitals ("AMD" for Advanced Micro Devices, "P&G" for Procter
    & Gamble)."""
    if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", question, re.IGNORECASE):
        return True
    words = key.split()
    first = words[0]
    if len(first) >= 4 and first != key and any(
        m.group(0)[0].isupper()
        for m in re.finditer(rf"(?<!\w){re.escape(first)}(?!\w)", question, re.IGNORECASE)
    ):
        return True
    initials = "".join("&" if w in ("&", "and") else w[0] for w in words if w != "of").upper()
    letters = len(initials.replace("&", ""))
    if len(words) < 2 or letters < 2 or (letters < 3 and "&" not in initials):
        return False
    return re.search(rf"(?<![\w&]){re.escape(initials)}(?![\w&])", question) is not None


def _by_date(question: str, pool: Mapping[DocumentId, DocumentContext]) -> list[set[DocumentId]]:
    """The documents of each date the question names, in its order (a date no document's period
    ends near picks none)."""
    asked = [a for m in DATE.finditer(question) if (a := parse_date(m.group(0))) is not None]
    return [
        {
            d
            for d, c in pool.items()
            if (end := _date(c.period_end)) is not None
            and abs((end - day).days) <= DATE_TOLERANCE_DAYS
        }
        for day in dict.fromkeys(asked)
    ]


def _by_quarter(
    question: str, pool: Mapping[DocumentId, DocumentContext]
) -> list[set[DocumentId]]:
    """The documents of each quarter the question names, in its order."""
    asked = [a for m in QUARTER.finditer(question) if (a := quarter_label(m.group(0))) is not None]
    return [{d for d, c in pool.items() if c.period == label} for label in dict.fromkeys(asked)]


def _by_fiscal_year(
    question: str, pool: Mapping[DocumentId, DocumentContext]
) -> set[DocumentId]:
    asked = fiscal_year(question)
    if asked is None:
        return set()
    picked = set()
    for d, c in pool.items():
        label_year = re.search(r"((?:19|20)\d\d)$", c.period or "")
        if label_year is not None:
            if int(label_year.group(1)) == asked:
                picked.add(d)
        elif (end := _date(c.period_end)) is not None and end.year == asked:
            picked.add(d)
    return picked


def _latest(pool: Mapping[DocumentId, DocumentContext]) -> set[DocumentId]:
    ends = {d: end for d, c in pool.items() if (end := _date(c.period_end)) is not None}
    if len(set(ends.values())) < 2:
        return set()  # nothing to choose between
    last = max(ends.values())
    return {d for d, end in ends.items() if end == last}


def _latest_of_each(pool: Mapping[DocumentId, DocumentContext]) -> list[set[DocumentId]]:
    """The documents of the latest period end of each entity in ``pool`` (those with an
    entity and a period end)."""
    ends: dict[str, dict[DocumentId, dt.date]] = {}
    for d, c in pool.items():
        if c.entity and (end := _date(c.period_end)) is not None:
            ends.setdefault(entity_key(c.entity), {})[d] = end
    return [{d for d, end in mine.items() if end == max(mine.values())} for mine in ends.values()]


def _date(iso: str | None) -> dt.date | None:
    if not iso:
        return None
    try:
        return dt.date.fromisoformat(iso)
    except ValueError:
        return None
