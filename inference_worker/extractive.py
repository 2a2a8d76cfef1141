"""Extractive answers, pure: a question and its numbered sources -> the passages of those sources
that answer it, each quoted with its ``[n]``; or, when no passage covers the question, a plain
"not in the documents" with the closest sources named. Nothing is generated, so nothing is
invented: every word of an answer but the connecting text is a source's.

How a passage is chosen (no model, no I/O):

- a question word the sources do not hold that is no common English word ("pasword") is read as
  the sources' word one edit away (:func:`respelled`);
- each source is cut into units: a prose sentence (hard-wrapped PDF lines joined first, also
  those of a narrow column whose lines name dates and years: a line that goes on from an open
  one, or holds a sentence's end, is prose, never a column heading; a running footer's line
  keeps the end of the page's last sentence glued to it), a form's field and its value
  ("SOLICITATION NUMBER* | 36C26123Q1035", however short), or a
  table row (a short label and its figures, or a line of ``a | b`` cells) together with the
  column headings above it in the same source (the lines naming periods, "Three Months Ended",
  dates, or the heading row of a cell table) and the group it is in ("Net sales:"), read into
  cells under their columns (:mod:`inference_worker.tables`), so a quoted row still says which
  column is which;
- a question's terms are its content words (a short stop list, a light stemmer, a few domain
  synonyms such as revenue/sales) and its numbers; each term weighs its inverse document
  frequency over the units of the sources (a term found in no unit weighs the most);
- a unit's coverage is the weight of the question's terms found in the unit, its table headings
  or its source's title, over the weight of all of them; the score adds a little for the
  source's rank and for a figure when the question asks for an amount;
- a question for a cause ("why", "the primary driver", "what factors"): the words asking for it
  are covered by a sentence's causal wording ("due to", "driven by", "decreased ... compared
  to"), not by themselves, which explanations rarely use; table rows do not cover them;
- a table row also scores by how well its label fits the question (a label the question names
  wholly beats one that says more, "Percentage of total net sales" for "revenue") and by its
  best column's fit to the question's period (the date it names, the span: a quarter or "nine
  months", the year, "a year earlier");
- with a sentence embedder (``closeness``, :mod:`inference_worker.meaning`), a best unit just
  short of ``min_coverage`` answers when it is also the closest in meaning, and for a question
  that asks no amount the cosine adds to each unit's score (``AGREE_COVERAGE``,
  ``MEANING_WEIGHT``);
- the best unit answers when its coverage reaches ``min_coverage`` and every number the question
  names (a year, a date) appears in its source; then up to ``max_units`` more units whose score
  is close to the best or that add what the question asks and the chosen ones do not say (the
  second measure of "operating expenses compared to revenue": the row whose label aims at it);
- a chosen row leads with its figure for the asked column and its labels ("Total net sales
  (Three Months Ended July 1, 2023): $81,797 [n]"), then the row itself is quoted; for "what
  percentage of X was Y" with no row giving it, the share is worked out from the X and Y rows of
  one column and shown with its working, which grounding checks;
- a chosen sentence that announces what follows ("the following ...", a colon, "1.") or whose
  next sentence refers back to it ("Usually, this is 3 years ...") is quoted with that next
  sentence; a question about a relation ("how do A relate to B") that no passage covers is
  answered side by side, A and B each as a question, a side the sources lack said to be missing;
  so is a question that names two companies or two periods, each held by documents of its own
  among the sources ("Compare A's and B's revenue in Q2 2025", "from Q2 2025 to Q3 2025"): each
  side from its own documents, its first line led by its name (:func:`_sides`); a question that
  asks two things ("How much did X spend on R&D, and why did its revenue change?") gets the
  answer to its first part after the answer to the whole, where that adds lines, and the
  answer to its second part, asked with the names and periods the first gives it ("why did its
  revenue change? X Q2 2025"), where its own words are answered; a chosen
  sentence cut where its chunk ends is completed from the next chunk of its document when that
  is among the sources (it starts by repeating the end of the one before it), both cited, and
  a whole sentence that ends its chunk gets the next chunk's next sentence where that refers
  back ("But you must use Form 8814 to do so."); of the units after the first, the sentence
  right after a chosen one wins a tie (``NEXT_BONUS``);
- where a row's table declares its unit ("(in thousands)", "shares in thousands": the caption or
  heading above it in the same source, :func:`inference_worker.tables.scale`), the lead figure
  is also written in full ("$81,797 million ($81,797,000,000)"), and a row quoted without a lead
  figure gets its figures in full after it, where their unit can be told
  (:func:`inference_worker.tables.cell_unit`); grounding holds those only for a source that
  declares the unit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from inference_worker import tables
from parley import periods
from parley.contracts import Source
from parley.embedder.local import TOKENIZER_PATH

NOT_FOUND = "not in the documents"
RANK_STEP = 0.05
CHUNK_STEP = 0.015
# How much a table row's label fitting the question wholly (or not at all) adds (or takes).
LABEL_FIT = 0.3
# How much a table row's best column fitting the question's period counts (per point of
# tables.column_score: a date named +3, the span +1.5, the year +0.5; clamped to -2..6).
COLUMN_FIT = 0.06  # the score a passage loses per place of its chunk, within its document
# "the latest quarter": a source of the newest period named among the sources is preferred by
# more than the ranking's spread (4 places), since the question says which period it wants.
LATEST_BONUS = 0.25  # the score a source loses per place in the ranking
_REASON = re.compile(r"\b(?:why|reasons?|drivers?|drove|driven|caus\w*|explain\w*|factors?)\b",
                     re.IGNORECASE)
# Causal wording: a sentence that says why something moved ("due to", "driven by", "as a
# result of"), or says that a figure rose or fell against another period ("decreased 3% ...
# compared to the same quarter"), the wording of a filing's explanation of its results.
_BECAUSE = re.compile(
    r"\b(?:due to|because|driven by|primarily|as a result|owing to|reflect|attributable to|"
    r"resulting from|led by|offset by)|\b(?:increased|decreased|declined|grew|rose|fell)\b"
    r"(?:[^.]|\.\d){0,160}\b(?:compared|versus|from)\b",
    re.IGNORECASE)
# The kind of thing a question asks for: "which bank", "what kind of vessel".
_FOCUS = re.compile(r"\b(?:which|what (?:kind|type|sort)s? of)\s+([A-Za-z][A-Za-z-]+)",
                    re.IGNORECASE)
# A question about how a figure moved over several periods.
_TREND = re.compile(r"\bover (?:the )?(?:\w+ ){0,2}(?:quarters|periods|years|months)\b|\btrends?\b|"
                    r"\bover time\b|\bquarter[- ]over[- ]quarter\b|\byear[- ]over[- ]year\b|"
                    r"\bacross (?:the |these |all )?(?:\w+ ){0,2}(?:quarters|periods|years|months|"
                    r"filings|reports)\b|\bfluctuat(?:e|ed|es|ing)\b|"
                    r"\bin (?:the|these|all) (?:reported |recent )?(?:quarters|periods)\b",
                    re.IGNORECASE)
# A short label, no figure, no sentence: "Operating Income", "Cost of revenue".
_GROUP_LABEL = re.compile(r"[A-Z][A-Za-z&'’-]*(?:[ ,]+[A-Za-z&'’-]+){0,3}")
_CHANGE_TERM = "chang"  # "changed", "increase", "fluctuate"...: one term (SYNONYMS)
# A question for a share: worked out from two rows when no row gives it.
_SHARE = re.compile(
    r"\b(?:what|which)\s+(?:percentage|percent|share|proportion|portion|fraction)\b", re.IGNORECASE)
# A row that gives one figure as a share of another ("Percentage of total net sales"), and the
# words of a question that asks for such a share.
_RATIO_ROW = re.compile(r"\s*(?:as\s+a\s+)?(?:percentage|percent|%|ratio|proportion)\s+(?:of|to)\b",
                        re.IGNORECASE)
_RATIO_ASKED = re.compile(r"%|\b(?:percent\w*|share|proportion|portion|fraction|ratio)\b",
                          re.IGNORECASE)
# What a share is of: "percentage of (Apple's total revenue) did ...".
_SHARE_OF = re.compile(r"\b(?:percentage|percent|share|proportion|portion|fraction)\s+of\s+(.+?)\s+"
                       r"(?:did|was|were|is|are|does|do|came|come|accounted|account|represented|"
                       r"represent|contributed|contribute|made)\b", re.IGNORECASE)
# "How long", "how often", "how soon": the adverb asks for a duration or a frequency, as "how
# much" asks for an amount: what kind of answer is wanted, not what it is about; no passage
# says "long", and it weighed the most.
_HOW = re.compile(r"\bhow\s+(?:long|often|quickly|soon|fast|far|early|late|old)\b", re.IGNORECASE)
# "... change in Q3 2023 compared to a year earlier": the period a change is measured from, which
# a table's columns (2023, 2022, Change) or "compared to the third quarter of 2022" say in their
# own words; its words are no content to cover (the asked period still picks the columns).
_BASELINE = re.compile(
    r"\b(?:compared\s+(?:to|with)|versus|vs\.?|relative\s+to|over)\s+(?:a|the)\s+"
    r"(?:year\s+(?:earlier|before|ago)|(?:prior|previous)\s+year|same\s+(?:period|quarter)"
    r"(?:\s+(?:a\s+year\s+(?:earlier|before|ago)|last\s+year|of\s+the\s+(?:prior|previous)"
    r"\s+year))?)\b", re.IGNORECASE)
# A question for a length of time or an age, and a passage that gives one ("within 60 days",
# "3 years from the date", "under age 17"): the kind of answer it asks for, as an amount is.
_ASKS_SPAN = re.compile(r"\bhow\s+long\b|\bhow\s+many\s+(?:days|weeks|months|years|hours)\b"
                        r"|\bby\s+when\b", re.IGNORECASE)
_COUNT = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|" \
    r"thirty|forty|forty-five|sixty|ninety)"
_SPAN = re.compile(rf"\b{_COUNT}[\s-]+(?:\w+\s+)?(?:days?|weeks?|months?|years?|hours?)\b",
                   re.IGNORECASE)
_ASKS_AGE = re.compile(r"\bhow\s+old\b|\bwhat\s+age\b|\bage\s+limit\b", re.IGNORECASE)
_AGE = re.compile(r"\bage\s+\d+|\b\d+\s+years?\s+(?:old|of\s+age)\b", re.IGNORECASE)
# "What file types can Parley read?", "Which packages make up the model?": the answer names
# several; a passage that lists three or more ("PDF, Word (.docx), PowerPoint (.pptx) ... and
# plain text") is one.
_ASKS_LIST = re.compile(
    r"\s*(?:what|which)\s+(?!(?:does|is|was|has|this|its|his)\b)(?:[a-z]+\s+)?"
    r"(?!(?:does|is|was|has|this|its|his)\b)([a-z]{3,}(?<!s)s)\s+(?:can|could|do|does|did|are|"
    r"were|will|would|should|must|may|might|have|make|need|apply|count|come)\b"
    r"(?!.*\b(?:how much|how many|total|amount)\b)", re.IGNORECASE)
_LAST_ITEM = re.compile(r"\b(?:and|or)\b")
_NOT_ITEM = re.compile(r"[;:|]|\.\s")


def _lists(text: str) -> bool:
    """Whether ``text`` lists three things or more: two short comma-separated items or more,
    then one holding "and" or "or" ("PDF, Word (.docx), ... Markdown and plain text"). By
    splitting, not a regular expression: one with nested repeats took a minute on a hostile
    text of 2,000 commas."""
    run = 0
    for part in text.split(","):
        if run >= 2 and len(part) <= 60 and _LAST_ITEM.search(part):
            return True
        run = run + 1 if len(part) <= 40 and not _NOT_ITEM.search(part) else 0
    return False


_LATEST = re.compile(r"\b(?:latest|most recent|current|last)\b", re.IGNORECASE)
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# A question term found in the passage's source but not in the passage itself (the company's
# name on the cover page, the period in a heading): it locates the passage, partly.
SOURCE_CREDIT = 0.6
# A term found in a table row's headings or caption, not in the row: it says which table, not
# which row, so it counts less than the row's own words.
HEADING_CREDIT = 0.7

# A term: a quarter ("Q3"), a code ("E4", "SHA256": one term, not a letter and a number), a
# word, a number.
_WORD = re.compile(r"\b[Qq][1-4]\b|\b[A-Za-z]{1,4}\d{1,4}[A-Za-z]?\b|[A-Za-z][A-Za-z&'\-]*"
                   r"|\d[\d,]*(?:\.\d+)?")
_CODE = re.compile(r"[a-z]{1,4}\d{1,4}[a-z]?")
_NUMBER = re.compile(r"(?<![\w.])\$?\(?\d[\d,]*(?:\.\d+)?\)?%?")
_FIGURE = re.compile(r"\d[\d,]*(?:\.\d+)?")
_AMOUNT = re.compile(r"(?<![\w.])(\$?\s?\(?\d[\d,]*(?:\.\d+)?\)?)(\s?%)?")
_YEAR = re.compile(r"(?:19|20)\d\d")
# Money or a share written as such ("$38.1", "262 million", "3%"), not a bare count or a year.
_MONEY = re.compile(r"\$\s?\d|\d(?:\.\d+)?\s*(?:%|percent\b|million\b|billion\b|thousand\b)")
_JOINED = re.compile(r"-\d")  # "73301-0215", "1545-0074", "1-800-661-2638"
_TOTAL = re.compile(r"total\b", re.IGNORECASE)  # a table's total row's label
# A running page header or footer ("Apple Inc. | Q3 2023 Form 10-Q | 17", "Page 4"): never
# quoted. A line of cells ending in a page number whose other cells hold no figure; a table row
# ("North | 1,200 | 17") has figures in its cells and stays.
_PAGE = re.compile(r"^\s*(?:page\s*)?\d{1,3}\s*$", re.IGNORECASE)


def _is_footer(line: str) -> bool:
    if _PAGE.match(line):
        return True
    cells = tables.split_cells(line)
    return (len(cells) >= 2 and bool(re.fullmatch(r"(?:page\s*)?\d{1,3}", cells[-1], re.I))
            and not any(tables.is_figure(c) for c in cells[:-1]))


def _before_footer(line: str) -> str:
    """The end of a page's last sentence that a running footer is glued to ("... downward
    pressure. Apple Inc. | Q3 2022 Form 10-Q | 17" -> "... downward pressure."), or ""."""
    first = tables.split_cells(line)[0]
    ends = list(_SENTENCE_END.finditer(first))
    return first[: ends[-1].start()].strip() if ends else ""


# Not after an initial ("Katherine L. Adams"; "Schedule D. Enter ..." is one passage then) or
# an abbreviation that goes on ("P.O. Box 7015", "Dr. Patel", "e.g. Excel"); "U.S." may end one.
_SENTENCE_END = re.compile(
    r"(?<![\s(][A-Z]\.)(?<!P\.O\.)(?<!\bDr\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bSt\.)"
    r"(?<!\bJr\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bvs\.)(?<!\bFig\.)"
    r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z(\"$])")
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_HEADING = re.compile(
    rf"\b(?:{_MONTHS})\b|\bended\b|\bfiscal\b|\bquarter\b|\byear\b|^\s*(?:19|20)\d\d\s*$",
    re.IGNORECASE,
)
# A line that ends with two dates or years or more (and perhaps a column of their change):
# column headings after a caption on the same line ("(In Millions, Except Per Share Amounts;
# Unaudited) Jul 1, 2023 Jul 2, 2022 ...", "... Three Months Ended March 31, 2023 2022
# Percentage Change"), when the line also names a period (_HEADING).
_DATES_AT_END = re.compile(
    rf"(?:(?:\b(?:{_MONTHS})\.?\s+\d{{1,2}},?\s+)?\b(?:19|20)\d\d\b\s*){{2,}}"
    r"(?:(?:\b(?:percentage|percent)\s+|%\s*|\$\s*)?\b(?:change|variance)\s*)?$", re.IGNORECASE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP = _words("""
a an the and or but of to in on at by for from with without as is are was were be been being do does
did done has have had having it its it's this that these those there their they them he she his her
we our you your i me my what which who whom whose when where why how much many any some all each
every both either neither not no nor so than then too very can could should would may might must
will shall about above after again against before below between into through during out over under
up off further once here more most other such only own same just also if whether per via across
tell show give list describe explain please report reported reports disclose disclosed mention
mentioned according document documents filing filings 10-q 10-k company company's companies
generate generated generating contribute contributed impact impacted affect affected relate related
relating reflect reflected include included including provide provided regarding based respectively
specifically identify identified find found see notable noted note state stated say said
indicate indicates indicated get gets got getting come comes came coming go goes went gone
latest recent newest current last engage engaged engaging happen happens happened
analyze analyse analyzing analysing assess evaluate examine interpret summarize summarise
elaborate insight insights
i'm i've i'd i'll don't doesn't didn't can't won't isn't aren't
""")
# Words that say what kind of answer is wanted, not what it is about: they count, but less.
WEAK = _words("""
total amount figure number value level levels change changed changes compare compared comparison
most quarter quarterly period periods year years annual month months ended ending specific
significant major key main primary overall current previous prior same
""")
SYNONYMS = {
    "revenue": "sale", "revenues": "sale", "sales": "sale", "turnover": "sale",
    "r&d": "research", "profit": "income", "earnings": "income", "spend": "expense",
    "spent": "expense", "increas": "chang", "decreas": "chang", "grew": "chang", "grow": "chang",
    "declin": "chang", "rais": "chang", "rose": "chang", "fell": "chang", "fluctuat": "chang",
    "trend": "chang",
    "spending": "expense", "deadline": "due", "respons": "respond",
    "expenditure": "expense", "costs": "cost", "maximum": "max", "minimum": "min",
    "quarterly": "quarter", "headcount": "employee", "staff": "employee", "workforce": "employee",
    "delivery": "ship", "deliveries": "ship", "percentag": "percent",
    # Months as statements abbreviate them ("Jul 1, 2023") and questions do not.
    "jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june",
    "jul": "july", "aug": "august", "sep": "september", "sept": "september", "oct": "october",
    "nov": "november", "dec": "december",
}
AMOUNT_CUES = ("how much", "how many", "what was", "what were", "what is", "what are", "total",
               "amount", "rate", "percentage", "margin", "revenue", "sales", "income", "cost",
               "expense", "cash", "spend", "price", "figure")


# Cached: every turn stems its sources' words (also a generative turn, to know whether they hold
# an answer), and words repeat across sources and turns; ~20% of the worker's CPU per turn before.
@functools.lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """A light English stemmer: lower case, possessive, plural and -ing/-ed endings off."""
    w = word.lower().strip("'-")
    if w.endswith("'s"):
        w = w[:-2]
    w = SYNONYMS.get(w, w)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    elif len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] in "bdgmnprt":
        w = w[:-1]  # "shipping" -> "shipp" -> "ship", "planned" -> "plan"
    return SYNONYMS.get(w, w)


def figure(token: str) -> str:
    """A number as compared: no thousands separators, no trailing dot or zeros after a point."""
    n = token.replace(",", "").rstrip(".")
    if "." in n:
        n = n.rstrip("0").rstrip(".")
    return n


# Phrases read as one term: "three months" first (its "quarter" may then follow an ordinal,
# "third three months" -> "q3 quarter"), then the others in one pass (they cannot overlap).
_MONTHS_SPAN = re.compile(r"\bthree[- ]months?\b", re.IGNORECASE)
_PHRASES = re.compile(
    r"\b(?:(twelve[- ]months?)|(research and development)|(R&D)|(first quarter)"
    r"|(second quarter)|(third quarter)|(fourth quarter)|((?:go|goes|going|gone|went) up)"
    r"|((?:go|goes|going|gone|went) down)|(day (?:one|1))|(week (?:one|1)))\b", re.IGNORECASE)
_PHRASE_TERMS = ("year", "research", "research", "q1 quarter", "q2 quarter", "q3 quarter",
                 "q4 quarter", "increase", "decrease", "first day", "first week")


# Initials written with points ("U.S.", "U.K.", "U.S.A.") are the word a question writes without
# them ("US"): as points, each letter alone would be dropped as too short.
_INITIALS = re.compile(r"\b((?:[A-Z]\.){2,4})(?![A-Za-z])")


# "OMB No. 1545-0074", "Policy # 42": the number a question asks for by that word.
# A numbered clause or item starts its sentence ("3.1 Each party's total liability ..."), where a
# chunk that starts with a figure otherwise starts inside a sentence cut by the chunking.
_CLAUSE = re.compile(r"\(?\d{1,2}(?:\.\d{1,2}){0,3}[.)]?\s+[A-Z]")


_NUMBER_SIGN = re.compile(r"\b[Nn]o\.(?=\s*\d)|#(?=\s*\d)")


# "a seven-hour flight" is "a 7 hour flight": a measure in words reads as one in figures. Not
# days, weeks, months or years: "Six Months Ended" names a period, which is read as words.
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
_WORDED_MEASURE = re.compile(
    rf"\b({'|'.join(_NUMBER_WORDS)})[\s-]+(hours?|minutes?|nights?)\b", re.IGNORECASE)


def _worded_measure(match: re.Match[str]) -> str:
    return f"{_NUMBER_WORDS.index(match.group(1).lower()) + 1} {match.group(2)}"


def _initials(match: re.Match[str]) -> str:
    return match.group(1).replace(".", "")


def _phrase(match: re.Match[str]) -> str:
    return _PHRASE_TERMS[(match.lastindex or 1) - 1]


def terms(text: str) -> list[str]:
    """Content terms of ``text`` (stems, and numbers as :func:`figure`), in order."""
    return list(_terms(text))


# Cached: one answer reads the same texts several times (each unit when it is cut, weighed and
# scored; each source whole, twice), a generative turn too (to know whether its sources hold an
# answer, while the model works on its first token), and turns about the same documents share
# their chunks. 8 sources of ~350 words cost ~50 ms of CPU a turn uncached.
@functools.lru_cache(maxsize=8192)
def _terms(text: str) -> tuple[str, ...]:
    text = _PHRASES.sub(_phrase, _MONTHS_SPAN.sub("quarter", _INITIALS.sub(_initials, text)))
    text = _NUMBER_SIGN.sub("number ", text)
    text = _WORDED_MEASURE.sub(_worded_measure, text)
    out = []
    for token in _WORD.findall(text):
        if token[0].isdigit():
            out.append(figure(token))
            continue
        low = token.lower().replace("\u2019", "'").strip("'-")
        if low in STOP or len(low) < 2 or (low.endswith("'s") and low[:-2] in STOP):
            continue  # "what's", "that's": a stop word and its "is"
        out.append(stem(low))
    return tuple(out)


def numbers(text: str) -> list[str]:
    """The figures in ``text`` as :func:`figure` normalises them."""
    return [figure(m.group()) for m in _FIGURE.finditer(text)]


@dataclass(frozen=True)
class Numbered:
    """A source as the answerer sees it: its number, what it is called, its text, and the
    caption declaring the unit of the table its text continues (``Source.unit``), if any."""

    n: int
    title: str
    text: str
    unit: str | None = None
    document: str = ""  # the document's name (its sources share it); "" -> the title

    @property
    def of(self) -> str:
        """Which document the source is of."""
        return self.document or self.title


@dataclass(frozen=True)
class Unit:
    n: int  # the source's number
    rank: int  # position of the source, 0 = best
    order: int  # position in the source
    text: str  # as quoted
    context: str  # a table row's caption and column headings: matched, not its own words
    is_row: bool
    columns: str = ""  # a table row's column headings, quoted after it
    row: tables.Row | None = None  # a table row read into its label and cells
    group: str = ""  # the label over a group of rows ("Net sales" over "Products", "Services")
    scale: tables.Scale | None = None  # the unit its table declares ("(in thousands)")


@dataclass(frozen=True)
class Answer:
    """What the answerer says: ``text`` (with ``[n]`` markers), whether the sources answered,
    and the numbers of the sources it quotes (or, when not found, the closest ones)."""

    text: str
    found: bool
    cited: tuple[int, ...]
    coverage: float


def _amounts(line: str, *, first: bool = False) -> int:
    """How many figures of ``line`` are amounts: money, a percentage, a decimal, or a number of
    three or more digits that is not a year (a "10" of "Form 10-Q" or a day of a date is not).
    ``first``: stop at the first (0 or 1)."""
    count = 0
    for m in _AMOUNT.finditer(line):
        token, percent = m.group(1), m.group(2)
        if _JOINED.match(line, m.end()) or (m.start() > 1 and line[m.start() - 1] == "-"
                                            and line[m.start() - 2].isdigit()):
            continue  # a number joined to another by a hyphen: a code, a ZIP+4, a phone number
        digits = figure(token.strip("$()"))
        if percent or "$" in token or "." in digits or (
                len(digits.replace(".", "")) >= 3 and not _YEAR.fullmatch(digits)):
            count += 1
            if first:
                break
    return count


def _is_row(line: str) -> bool:
    # The cheap tests first: a line of prose (a sentence, or more words than a row's label has)
    # is refused before its figures are counted.
    if line.rstrip().endswith(".") or (_DATES_AT_END.search(line) and _HEADING.search(line)):
        return False  # a sentence; column headings (their dates are not figures)
    words = re.findall(r"[A-Za-z]{2,}", line)
    if len(words) > 12 or _DANGLING.search(line):
        return False  # a row ends on its figures, not on "... and 1042-S) until the"
    amounts = _amounts(line)
    if amounts < 1:
        return False
    if amounts == 1:
        # "Total revenue 4,812": a short label and one figure that ends the line.
        label, values = tables.split_figures(line)
        return len(values) == 1 and 0 < len(words) <= 8 and bool(label) and _amounts(
            values[0]) == 1
    # A sentence of prose with two numbers in it is not a row: rows are mostly figures.
    return len(words) <= 12


# A sentence that announces what follows, and one that goes on about the sentence before it.
_ANNOUNCES = re.compile(r"(?:\bthe following\b[^.]*|\bas follows|:|\b1\.)\s*$"
                        r"|\bthe following\b.*\b1\.$", re.IGNORECASE)
_REFERS_BACK = re.compile(r"(?:[A-Z][a-z]+,\s+)?(?:[Tt]his|[Tt]hese|[Tt]hat|[Ii]t|[Tt]hey|"
                          r"[Ss]uch)\b|(?:But|However|Otherwise|If so|To do so)\b")
_DANGLING = re.compile(r"\b(?:the|a|an|of|to|and|or|until|by|for|with|from|that|which|in|on|at|"
                       r"as|is|are|was|were)$")
# A line that leaves its sentence open: it ends on a word that needs what follows ("decreased
# to", "you can deduct only", "the value was"), or it is a line of a paragraph (six words or
# more, lower case last) rather than a row's label.
_OPEN_SENTENCE = re.compile(
    r"\b(?:to|of|only|was|were|is|are|be|by|than|totaled|totalled|and|or|the|a|an|at|for|"
    r"from|with|about|approximately|least|reach(?:es|ed)?|exceed(?:s|ed)?|equal(?:s|ed)?)$"
    r"|^(?:\S+\s+){5,}\S*[a-z,]$")


def _is_cells(line: str) -> bool:
    """A line of a cell-separated table ("North | 1,200 | 1,350", "| a | b |")."""
    return len(tables.split_cells(line)) >= 2 and len(line) < 600


def _is_field(line: str) -> bool:
    """A line of cells whose first names something in words and whose others hold a value."""
    cells = tables.split_cells(line)
    return len(cells) > 1 and any(t[0].isalpha() for t in terms(cells[0])) and any(cells[1:])


def units(source: Numbered, rank: int) -> list[Unit]:
    """Sentences and table rows of one source, in order."""
    out: list[Unit] = []
    lines = [ln.strip() for ln in source.text.splitlines()]
    heading: list[str] = []  # heading lines seen since the last row
    current_heading = ""
    columns = ""
    group = ""  # the group label over the rows that follow ("Net sales:")
    prose: list[str] = []
    # The unit a caption or heading declared for the table to come ("(In millions)", "... as
    # follows (in thousands):"), and the unit of the table being read. A source that continues
    # a table whose caption is in an earlier chunk carries that caption (``Numbered.unit``):
    # the unit and the caption of the first table read here, unless prose comes first.
    carried = [source.unit] if source.unit else []
    pending: tables.Scale | None = tables.scale(source.unit) if source.unit else None
    table_scale: tables.Scale | None = None
    cells_scale: tables.Scale | None = None

    def flush() -> None:
        if not prose:
            return
        joined = " ".join(prose)
        prose.clear()
        for sentence in _passages(joined):
            if len(terms(sentence)) >= 3 and len(sentence.split()) >= 6:
                out.append(Unit(source.n, rank, len(out), sentence, "", False))

    cells: list[str] = []  # lines of a cell-separated table, read when it ends
    cells_title = ""  # the short line just above it ("Error codes"), taken off the prose

    def caption_above() -> str:
        above = out[-1].text if out and not out[-1].is_row else ""
        caption = " ".join([*carried, above]).strip()
        carried.clear()
        return caption

    def flush_cells() -> None:
        nonlocal cells_title
        if not cells:
            return
        caption = cells_title or caption_above()
        cells_title = ""
        parsed = tables.pipe_rows(cells)
        header = " ".join(tables.split_cells(cells[0])) if len(cells) > 1 and (
            tables.names_columns(cells[0])) else ""
        for line, row in zip(cells, parsed, strict=True):
            if row is not None:
                out.append(Unit(source.n, rank, len(out), line, (caption + " " + header).strip(),
                                True, header, row, scale=cells_scale))
            elif line is cells[0] and header:
                continue
            elif header and len(tables.split_cells(line)) > 1 and any(
                    t[0].isalpha() for t in terms(line)):
                # A row of words under named columns ("E4 | Overheating | Switch off ...",
                # "Excel | the sheet name"): a passage however short, said under its table's
                # caption and column names, which locate it as a figure row's do.
                out.append(Unit(source.n, rank, len(out), line,
                                (caption + " " + header).strip(), False, header))
            elif _is_field(line):
                # A form's field and its value, no column names above ("SOLICITATION NUMBER* |
                # 36C26123Q1035", "RECOVERY ACT FUNDS | N"): a passage however short; as prose
                # it was too short to be one, or cut at "N. Pecos Road".
                out.append(Unit(source.n, rank, len(out), line, caption, False))
            else:
                prose.append(line)
                flush()
        cells.clear()

    for line in lines:
        if not line or _is_footer(line):
            if line and (ended := _before_footer(line)):
                prose.append(ended)
            flush()
            flush_cells()
            continue
        is_row, is_cells = _is_row(line), _is_cells(line)
        declared = tables.scale(line) if not is_row else None
        if declared is not None:
            pending = declared
            carried.clear()
        elif line.endswith(".") and not is_cells:
            pending = None  # a paragraph of prose: the declaration was not of a table to come
            carried.clear()
        if is_cells:
            if not cells:
                cells_title = _title_line(prose)
            flush()
            if not cells:
                cells_scale, pending = pending, None
            if not tables.is_rule(line):
                cells.append(line)
            continue
        flush_cells()
        if is_row and prose and _OPEN_SENTENCE.search(prose[-1]) and line[:1] in "$(0123456789":
            # The figure a sentence goes on to ("The AMT exemption amount is decreased to" /
            # "$33,750 ($45,000 if a qualifying"): prose, not a row; a row starts with its label.
            heading, group = [], ""
            prose.append(line)
            continue
        if is_row and prose and line[:1].islower() and not prose[-1].endswith((".", ":", ";")):
            if _SENTENCE_END.search(prose[-1]) or len(prose[-1].split()) > 12:
                # The next line of a paragraph that holds figures ("... or call extension
                # 4400 (+1 612 555 0144" after "... every IT request. Log a ticket on the"):
                # a sentence goes on, not a row; a row's label is not a paragraph.
                heading, group = [], ""
                prose.append(line)
                continue
            else:
                # A row label wrapped onto a second line ("Depreciation and amortization of
                # ... content costs," / "operating lease assets, and other 19,528 23,076").
                line = f"{prose.pop()} {line}"
        if is_row and group and prose == [group]:
            prose.clear()  # the short line between rows is the label of the rows below it
        if is_row:
            starts_table = not out or not out[-1].is_row or bool(heading)
            flush()
            if starts_table:
                caption = caption_above()
                table_scale, pending = pending, None
                columns = " ".join(heading)
                current_heading = (caption + " " + columns).strip()
                heading = []
            # "As a percent of revenue 13 % 12 %" under "Research and development $ 6,628 ...":
            # a share of the row above it, which says what the share is of.
            above = out[-1].row if not starts_table else None
            share_of = above.label if above is not None and _RATIO_ROW.match(line) and not (
                _RATIO_ROW.match(above.label)) else ""
            out.append(Unit(source.n, rank, len(out), line,
                            f"{current_heading} {share_of or group}".strip(), True, columns,
                            tables.pdf_row(line, columns), share_of or group, table_scale))
            continue
        if line.endswith(":") and len(line) < 60 and (heading or (out and out[-1].is_row)):
            # A group of rows ("Net sales:", "Operating expenses:"): said of the rows below it,
            # not a column heading.
            flush()
            group = line.rstrip(":")
            continue
        if out and out[-1].is_row and not prose and not heading and _GROUP_LABEL.fullmatch(line):
            # "Operating Income" between a table's rows (after "Total $ 50,122"): the label of
            # the rows below it, like "Operating expenses:"; prose if no row follows.
            flush()
            group = line
            prose.append(line)
            continue
        goes_on = bool(prose) and bool(_DANGLING.search(prose[-1]) or (
            line[:1].islower() and not _ENDED.search(prose[-1])))
        if goes_on or _SENTENCE_END.search(line):
            # A line of running prose set in a narrow column ("return for the 2007 calendar
            # year is due" / "by April 15, 2008. If you did not receive wages as an"): it goes
            # on from a line left open (on "the", "as an"; or in lower case after a line that
            # ends no sentence), or it holds a sentence's end; a date or a year in it makes no
            # column heading (read as one, it was dropped, and the short lines after it).
            heading, group = [], ""
            prose.append(line)
            continue
        if _HEADING.search(line) and not line.endswith(".") and (
                len(line) < 80 or _DATES_AT_END.search(line)):
            # Column headings of a table to come ("Three Months Ended", "July 1,", "2023").
            flush()
            heading.append(line)
            group = ""
            continue
        if (heading or (pending is not None and prose and prose[-1].endswith(":"))) and len(
                line) < 40 and not line.endswith("."):
            # Column headings, also those under a caption that declares a table's unit ("... as
            # follows (in millions ...):" then "Periods", "Total Number", "of Shares", ...).
            flush()
            heading.append(line)
            continue
        heading = []
        group = ""
        prose.append(line)
    flush()
    flush_cells()
    return out


def _title_line(prose: list[str]) -> str:
    """The title of the table that follows ``prose`` (its lines so far): a short last line, or
    the words after the last sentence of that line ("... not overflowing. Error codes"), taken
    off ``prose``; "" when the prose ends a sentence."""
    if not prose or re.search(r"[.!?:;,]$", prose[-1]):
        return ""
    tail = _SENTENCE_END.split(prose[-1])[-1].strip()
    if not tail or len(tail.split()) > 8:
        return ""
    prose[-1] = prose[-1][: len(prose[-1]) - len(tail)].rstrip()
    if not prose[-1]:
        prose.pop()
    return tail


# A heading line the sentence under it begins with ("Services" over "Services net sales
# increased ...", "iPad" over "iPad net sales ..."), read as one line of the paragraph: quoted
# once.
_HEADING_REPEATED = re.compile(
    r"(^|[.!?]\s+)([A-Za-z][\w&',-]*(?:\s+[\w&',-]+){0,5})\s+(?=\2\b)")


def _passages(paragraph: str) -> list[str]:
    """The sentences of a paragraph, a short one (under six words: "encrypted: the file is
    password-protected.", "Upload it again.") joined to the sentence after it, or to the one
    before at the paragraph's end: alone it is too short to be a passage, dropped it would leave
    a definition list or a how-to without its answers."""
    out: list[str] = []
    carry = ""
    for sentence in _SENTENCE_END.split(paragraph):
        sentence = _HEADING_REPEATED.sub(r"\1", f"{carry} {sentence.strip()}".strip())
        carry = ""
        if len(sentence.split()) < 6:
            carry = sentence
        elif sentence:
            out.append(sentence)
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def names(question: str) -> list[str]:
    """The proper names of a question: capitalised words after its first word (runs of them
    as one name), other than question words, months and quarter labels."""
    out: list[str] = []
    current: list[str] = []
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9&'\-]*|\S", question)
    for i, word in enumerate(words):
        bare = word[:-2] if word.endswith("'s") else word.rstrip("'")
        low = bare.lower()
        if (i > 0 and bare[:1].isupper() and low not in STOP and low not in WEAK
                and not re.fullmatch(_MONTHS, low) and not re.fullmatch(r"q[1-4]", low)):
            current.append(bare)
            continue
        if current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


# A thing the question names by a word and a number ("Test 3", "Form 8814", "Note 5", "Week 11",
# "Schedule 2"): a passage that says the two together names that thing, not merely another
# test, form or week of the same document (every passage of a course schedule covers "test"
# and "3" somewhere in its chunk, so coverage alone cannot tell them apart).
NUMBERED_BONUS = 0.15
NUMBERED_RARE = 3  # passages at most that say the pair
_NUMBERED_NAME = re.compile(r"\b([A-Z][a-z]{2,})\s+(\d[\dA-Za-z\-]{0,8})\b")


def _numbered_names(question: str) -> list[re.Pattern[str]]:
    """Patterns for each "Word N" the question names, other than dates and years ("July 1",
    "Fiscal 2023"), each matching the two words together, case aside, and not "Test 30"."""
    out = []
    for word, number in _NUMBERED_NAME.findall(question):
        if re.fullmatch(_MONTHS, word.lower()) or _YEAR.fullmatch(number):
            continue
        out.append(re.compile(rf"\b{re.escape(word)}\s+{re.escape(number)}(?![\w.,]\d|\w)",
                              re.IGNORECASE))
    return out


def _weights(question: list[str], pool: Sequence[Unit]) -> dict[str, float]:
    """Each question term's inverse document frequency over the units (weak words less)."""
    docs = [set(terms(u.text + " " + u.context)) for u in pool]
    n = max(1, len(docs))
    weak = _weak_stems()
    out = {}
    for t in dict.fromkeys(question):  # in the question's order: sums, so ties, repeat
        df = sum(t in d for d in docs)
        w = math.log((n + 1) / (df + 0.5))
        if t in weak:
            w *= 0.35
        out[t] = max(w, 0.05)
    return out


# The cosine of a question to each of some passages, by a sentence embedder
# (:class:`inference_worker.meaning.Meaning`).
Closeness = Callable[[str, Sequence[str]], Sequence[float]]
# With an embedder: a question whose best passage by words falls short of the coverage an
# answer needs, but not by much, is answered when that passage is also the closest in meaning of
# all the sources' passages and close enough (two readings agree); and for a question that does
# not ask for an amount, a passage's cosine adds to its score, so that of the passages that
# cover the question, the one that means what it asks comes first ("For how long can I work
# from another country": "Working from abroad is allowed for up to 20 working days", not
# "Working from a country under trade sanctions is never allowed"). An amount's row is chosen
# by its label and columns, which the embedder reads worse (it moved two dev answers to
# another row).
AGREE_COVERAGE = 0.4
AGREE_COSINE = 0.45
MEANING_WEIGHT = 0.2


def _names_one(text: str, kind: str, known: set[str]) -> bool:
    """Whether ``text`` names a thing of ``kind`` (a stem of :data:`_NAMED_KINDS`): a year, month
    or date for a time; for a place or a person, a capitalised word inside a sentence that is not
    one of the ``known`` words (the question's, the document title's) nor a month."""
    if kind in _TIME_KINDS:
        return bool(_YEAR.search(text) or re.search(rf"\b(?:{_MONTHS})\b", text, re.IGNORECASE))
    for m in re.finditer(r"\b[A-Z][a-z]+\b", text):
        before = text[:m.start()].rstrip()
        low = m.group(0).lower()
        if (before and before[-1] not in ".!?:;" and low not in known and low not in STOP
                and not re.fullmatch(_MONTHS, low)):
            return True
    return False


# Of the passages after the first, one that is the sentence right after a chosen one goes on from
# it: it wins a tie ("If you did not receive wages ..., file by the 15th day of the 6th month" /
# "A return for the 2007 calendar year is due by June 16, 2008.", not the sentence before it
# that says "April 15").
NEXT_BONUS = 0.03


# Kinds whose instances a text names without naming the kind ("governed by the laws of Sweden"
# answers "which country", "in Stockholm" "which city"): no source needs to say them.
_NAMED_KINDS = frozenset(terms("country countries state states city cities town place year "
                                "month day date person people"))
_TIME_KINDS = frozenset(terms("year month day date"))
# A question for a price, and the words it asks it by; a price is in a currency or a percentage
# (a fee "of 1.5% per month").
# Not a statement's line ("cost of revenue", "what percentage of revenue did cost of sales
# represent"), whose figures carry no currency.
_ASKS_PRICE = re.compile(
    r"\b(?:how much|what)\b[^?]*\b(?:cost|charge)\s*\??\s*$|"
    r"\b(?:what(?:'s| is| are| was| were)?|how much (?:is|are|was|were)) the (?:\w+ )?"
    r"(?:price|cost|fee|charge)s?\b(?! of (?:revenue|sales|goods|services)\b)(?! target)",
    re.IGNORECASE)
# "How much will the roof cost?" is answered by a price alone; "what is the share price target"
# is not answered by any price.
_HOW_MUCH = re.compile(r"\bhow much\b", re.IGNORECASE)
_PRICE_WORDS = frozenset(terms("cost costs price priced charge charged fee fees"))
_PRICE = re.compile(r"[$€£¥]\s?\d|\d\s?(?:%|percent\b|USD\b|EUR\b|GBP\b|dollars?\b|euros?\b|"
                    r"pounds\b)", re.IGNORECASE)
# A question for a phone number, answered by one ("call support on 0800 555 0199").
_ASKS_PHONE = re.compile(r"\b(?:tele)?phone\b|\bnumber (?:to|should I|do I) call\b", re.IGNORECASE)
_PHONE_WORDS = frozenset(terms("phone telephone number"))
_PHONE = re.compile(
    r"(?<![\d.,])(?:\+?\d{1,3}[\s-])?\(?\d{2,5}\)?[\s-]\d{2,4}[\s-]\d{3,4}(?![\d.,])")
# "How do I ...": the passage that says what to do starts with a verb ("Press and hold the
# RESET button ...", "Open a ticket ...").
_HOW_TO = re.compile(r"\bhow (?:do|can|should|would|could) (?:i|we|you)\b|\bhow to\b",
                     re.IGNORECASE)
_IMPERATIVE = re.compile(
    r"(?:\d{1,2}[.)]\s+)?(?:press|hold|click|open|select|go|call|email|e-mail|send|enter|type|"
    r"unplug|plug|wait|turn|switch|restart|remove|insert|connect|disconnect|install|download|"
    r"log|sign|choose|tap|fill|complete|submit|book|contact|ask|use|check|set|put|take|return|"
    r"order|follow|visit|keep|bring|add|create|update|reset|run|save|print|scan|attach|upload|"
    r"request|apply|register|report|raise|pay|place|tell|make|find|clean|empty|rinse|"
    r"descale|replace|charge|store|lock|unlock|enable|disable|navigate)\b",
    re.IGNORECASE)
HOW_TO_BONUS = 0.1
GROUP_BONUS = 0.05
# "How many vacation days", "how many days of annual leave": what the days are of is what the
# question asks about; a passage that counts other days ("enrol within 14 days") does not answer.
_COUNTED = re.compile(
    r"\bhow\s+many\s+((?:[a-z][a-z-]*\s+){1,2}?)(?:days|weeks|months|years|hours|nights)\b|"
    r"\bhow\s+many\s+(?:days|weeks|months|years|hours|nights)\s+of\s+((?:[a-z][a-z-]*\s*){1,3})",
    re.IGNORECASE)


def _counted(question: str) -> set[str]:
    """The terms of what a question counts days (weeks, hours...) of: the words before the unit
    or after its "of", up to the first stop word ("days of paid holiday a year" -> paid,
    holiday)."""
    m = _COUNTED.search(question)
    if m is None:
        return set()
    out: set[str] = set()
    for word in (m.group(1) or m.group(2)).split():
        if word.lower() in STOP:
            if m.group(2):
                break
            continue
        out.update(terms(word))
    return {t for t in out if t not in WEAK}


_MEASURE = re.compile(r"\b(\d+(?:\.\d+)?)[\s-]*(?:hours?|hrs?|minutes?|mins?|nights?|km|kg|miles?|"
                      r"kilometres?|kilometers?|people|persons?|guests?)\b", re.IGNORECASE)


def answer(
    question: str,
    sources: Sequence[Numbered],
    *,
    min_coverage: float = 0.5,
    max_units: int = 3,
    near: float = 0.06,
    closeness: Closeness | None = None,
    sides: bool = True,
) -> Answer:
    """The extractive answer to ``question`` from ``sources`` (in rank order). ``closeness``
    (a sentence embedder), when given, is a second reading of the question beside its words:
    see ``AGREE_COVERAGE`` and ``MEANING_WEIGHT``; without it the answer is the words' alone.
    ``sides``: a question that names two companies or two periods, each in documents of its
    own, is answered for each (:func:`_sides`)."""
    question = respelled(question, sources)
    if sides and (split := _sides(question, sources)) is not None:
        # "Compare A's and B's revenue in Q2 2025", "X's net income from Q2 2025 to Q3 2025":
        # one best passage would answer for one of them only; each is asked of its own sources.
        each = [(label, answer(asked, own, min_coverage=min_coverage, max_units=2, near=near,
                               closeness=closeness, sides=False))
                for label, asked, own in split]
        if any(part.found for _, part in each):
            return _side_by_side(each)
    trending = bool(_TREND.search(question))
    if trending:
        # "How has revenue changed over time?": the movement over the periods is what kind of
        # answer is asked for (each period's figure, read side by side), not words a passage
        # says; "time" and "changed" had cost a statement's rows the coverage an answer needs.
        q_terms = [t for t in terms(_TREND.sub(" ", _BASELINE.sub(" ", question)))
                   if t != _CHANGE_TERM]
    else:
        q_terms = terms(_BASELINE.sub(" ", _HOW.sub("how", question)))
    pool = [u for rank, s in enumerate(sources) for u in units(s, rank)]
    if not any(t[0].isalpha() for t in q_terms) or not pool:
        # Nothing to match but numbers (or nothing this reader can read: another script).
        return _not_found(sources, 0.0)
    everywhere = set().union(*(set(terms(s.text + " " + s.title)) for s in sources))
    # Initials of the question that a source spells out ("the MSA": "Master Services Agreement")
    # are named by the sources.
    spelled_out = _spelled_out(question, sources)
    everywhere |= set(spelled_out)
    q_terms = _joined(question, q_terms, everywhere)
    weights = _weights(q_terms, pool)
    question_names = names(question)
    missing = [name for name in question_names if not set(terms(name)) <= everywhere]
    if missing:
        # The question is about something no source names (another company, a place): the
        # sources cannot answer it, however well its other words match.
        return _not_found(sources, 0.0)
    wants_reason = bool(_REASON.search(question))
    # "What was the primary driver behind ...": the words that ask for a cause ("driver",
    # "factors", "why") are answered by a sentence's causal wording, not by those words, which
    # explanations rarely use; weighing the most (no passage holds them), they would leave every
    # passage short of the coverage an answer needs.
    reason_terms = {stem(w) for w in _REASON.findall(question.lower())} & set(weights) \
        if wants_reason else set()
    total = sum(weights.values())
    wants_amount = not wants_reason and any(c in question.lower() for c in AMOUNT_CUES)
    # A measure the question gives ("a 7 hour flight", "a 3-night stay") is compared with the
    # sources' limits ("6 hours or more"), not looked up: it need not be in the passage.
    measures = {figure(m) for m in _MEASURE.findall(_WORDED_MEASURE.sub(_worded_measure,
                                                                         question))}
    q_numbers = [t for t in set(q_terms) if t[0].isdigit() and t not in measures]
    asks_list = _ASKS_LIST.match(question)
    asks_kind: Callable[[str], object] | None = (
        _SPAN.search if _ASKS_SPAN.search(question) else _AGE.search if _ASKS_AGE.search(
            question) else _lists if asks_list and not wants_reason else None)
    # "What file types can Parley read?": a passage that lists them answers without saying
    # "types" (the kind of thing asked for; its instances are the answer).
    listed = stem(asks_list.group(1).lower()) if asks_list and asks_kind is _lists else None
    source_text = {s.n: set(numbers(s.text + " " + s.title)) for s in sources}
    source_terms = {s.n: set(terms(s.text + " " + s.title)) for s in sources}
    # What a source's document holds among the sources: a slide that does not repeat the
    # company's name is still the company's when the title slide names it.
    of_document: dict[str, set[str]] = {}
    numbers_of: dict[str, set[str]] = {}
    for s in sources:
        of_document.setdefault(s.of, set()).update(source_terms[s.n])
        numbers_of.setdefault(s.of, set()).update(source_text[s.n])
    document_terms = {s.n: of_document[s.of] for s in sources}
    document_numbers = {s.n: numbers_of[s.of] for s in sources}
    spelled = _acronyms(sources) | _initialled(question, sources) | spelled_out
    # "the MSA" of a document titled "Master Services Agreement" is the document.
    title_terms = {s.n: _with_acronyms(set(terms(s.title)), spelled) for s in sources}
    titled_words = {s.n: {w.lower() for w in re.findall(r"[A-Za-z]+", s.title)} for s in sources}
    title_text = {s.n: " ".join(s.title.lower().split()) for s in sources}
    titled = set().union(*title_terms.values())
    named = set(terms(" ".join(question_names)))
    named_terms = {t for t in named if t[0].isalpha()}
    # A code in a name ("error code E4") names a row of a table, not the document: content.
    # So is an amount ("claims over $5,000"): it names a row; a year or a day locates.
    # An acronym no source's title holds ("What is the OMB number of Form 1040NR?") is what the
    # question asks about, not the document it locates: as a locator, every passage of a
    # document that says "OMB" once would cover it.
    asked_acronyms = {t for n in question_names for w in n.split()
                      if re.fullmatch(r"[A-Z]{2,5}", w) for t in terms(w)} - titled
    locators = {t for t in named if not _CODE.fullmatch(t) and t not in asked_acronyms} | {
        t for t in q_terms if re.fullmatch(rf"(?:19|20)\d\d|\d{{1,2}}|q[1-4]|{_MONTHS}", t)}

    # "The latest quarter" of the company the question names, not the newest of all sources.
    of_named = [s for s in sources if named <= source_terms[s.n]] or list(sources)
    # Of the documents: a chunk that does not repeat the name is still of a document that does.
    named_documents = {o.of for o in of_named}
    named_sources = {s.n for s in sources if s.of in named_documents}
    latest = _latest(of_named) if _LATEST.search(question) else None
    asked = period_key(_normalise_period(question))
    if asked[1]:  # the question names a quarter or a month: sources of that period first
        matching = {s.n for s in sources if period_key(s.title) == asked}
        latest = (latest or set()) | matching if matching else latest
    focus = set(terms(" ".join(_FOCUS.findall(question))))
    # "Which country ...": the kind is answered by a name, not said (nor needed from a source).
    kinds = focus & _NAMED_KINDS
    focus -= kinds
    asked_words = {w.lower() for w in re.findall(r"[A-Za-z]+", question)}
    price_words = set(weights) & _PRICE_WORDS if _ASKS_PRICE.search(question) else set()
    how_much = bool(_HOW_MUCH.search(question))
    phone_words = set(weights) & _PHONE_WORDS if _ASKS_PHONE.search(question) else set()
    how_to = bool(_HOW_TO.search(question))
    counted = _counted(question) - locators
    moves = tables.asks_change(asked_words)
    asked_period = tables.period(question)
    documents: list[str] = []
    for s in sources:
        if s.of not in documents:
            documents.append(s.of)
    doc_rank = {s.n: documents.index(s.of) for s in sources}
    words = {w for w in re.findall(r"[a-z]{3,}", question.lower()) if w not in STOP}
    # Only where the pair is rare among the passages: "Aroma 300" in a manual of the Aroma 300,
    # or "Form 1040NR" in its instructions, names the document, not a passage of it.
    says_numbered: set[int] = set()
    for pattern in _numbered_names(question):
        saying = {id(u) for u in pool if pattern.search(u.text)}
        if len(saying) <= NUMBERED_RARE and not any(pattern.search(s.title) for s in sources):
            says_numbered |= saying
    scored: list[tuple[float, float, Unit]] = []
    unit_terms: dict[int, set[str]] = {}
    asks_ratio = bool(_RATIO_ASKED.search(question))
    for unit in pool:
        if not unit.is_row and " ".join(unit.text.lower().split()) in title_text[unit.n]:
            continue  # the document's own title line, alone: says what it is, answers nothing
        own = _with_acronyms(set(terms(unit.text)), spelled)
        if unit.row is not None and unit.group and _RATIO_ROW.match(unit.row.label):
            own |= set(terms(unit.group))  # "As a percent of revenue" of the row above it
        if unit.row is not None and not asks_ratio and (ratio := _RATIO_ROW.match(unit.row.label)):
            # "Percentage of total net sales 7 %" is a share, not the net sales a question
            # about net sales asks for: the words after "of" name what it is a share of.
            own -= set(terms(unit.row.label[ratio.end():])) - set(terms(ratio.group(0)))
        heading = set(terms(unit.context if moves else tables.unchanged(unit.context)))
        got = 0.0
        causal = bool(reason_terms) and not unit.is_row and bool(_BECAUSE.search(unit.text))
        priced = bool(price_words) and bool(_PRICE.search(unit.text))
        dialled = bool(phone_words) and bool(_PHONE.search(unit.text))
        of_kind = asks_kind is not None and bool(asks_kind(unit.text))
        for t, w in weights.items():
            if t in reason_terms:
                # Causal wording says it, or the words, or a heading that names the cause
                # ("Root cause": the passage under it is the cause, however it is worded).
                got += w if causal or t in own or t in heading or t in title_terms[unit.n] \
                    else 0.0
            elif t in own or t in title_terms[unit.n] or (
                    t in locators and t in document_terms[unit.n]):
                # A term of the document's title, or a name or period the question gives that
                # the source holds, locates every passage of it equally: a sentence that
                # repeats the company's name or the date is no better an answer for it.
                got += w
            elif ((t == listed and of_kind)
                  or (t in kinds and _names_one(unit.text, t, asked_words | titled_words[unit.n]))
                  or (t in price_words and priced and how_much)
                  or (t in phone_words and dialled)):
                # The kind asked for, said by its instances: the file types a passage lists,
                # "Sweden" for "which country", "the quote ... of $48,500" for "cost".
                got += w
            elif t in heading:
                got += HEADING_CREDIT * w
            elif t in source_terms[unit.n] or (reason_terms and t in document_terms[unit.n]):
                # A cause is told under its own heading, apart from where the document names
                # what it is the cause of ("Root cause" after "Postmortem: checkout outage").
                got += SOURCE_CREDIT * w
        coverage = got / total if total else 0.0
        # What a passage says itself: a table's caption and headings are shared by its rows, so
        # a row covers only what its own label says ("statutory rate" is not covered by the
        # effective-rate row of a table captioned "effective and statutory rates").
        unit_terms[id(unit)] = {t for t in weights if t in own
                                and t not in title_terms[unit.n] and t not in locators}
        # "Which bank ...": a source that never says "bank" cannot name one.
        if focus and not focus <= source_terms[unit.n]:
            coverage *= 0.5
        # "How much does it cost?": a passage without a price cannot say what it costs.
        if price_words and not priced:
            coverage *= 0.5
        # "How many vacation days ...": days of something else are not the answer.
        if counted and not counted <= own | heading:
            coverage *= 0.5
        # A question about Contoso is not answered from another company's report while a
        # source of Contoso's is there.
        if named and len(named_sources) < len(sources) and unit.n not in named_sources:
            coverage *= 0.5
        # Question numbers must be in the source, or the passage is another period's (a day) or
        # another row's (an amount); a year in the passage's document (an incident's date in one
        # chunk, its corrective action in the next).
        if q_numbers and not all(q in (document_numbers if _YEAR.fullmatch(q) else source_text)[
                unit.n] for q in q_numbers):
            coverage *= 0.5
        # The ranking orders documents more surely than the passages of one document: a later
        # chunk of the best document loses less than a chunk of the next document.
        score = coverage - RANK_STEP * doc_rank[unit.n] - CHUNK_STEP * unit.rank
        if latest is not None and unit.n in latest:
            score += LATEST_BONUS
        # The figures a question gives ("I paid $70 for a dinner worth $40. How much can I
        # deduct?") are not its answer: a sentence that only repeats them holds no amount.
        # (A row of a table is another matter: there the amount names the row, "claims over
        # $5,000".)
        has_figure = unit.is_row or (_has_amount(unit.text) and not (
            q_numbers and set(numbers(unit.text)) <= set(q_numbers) and not _is_cells(unit.text)))
        if wants_amount:
            score += 0.08 if unit.is_row else 0.04 if has_figure else -0.1
        elif wants_reason:
            score += -0.1 if unit.is_row else 0.08 if _BECAUSE.search(unit.text) else 0.0
        if of_kind:
            score += 0.1
        if unit.columns and named_terms & own:
            score += 0.1  # the row of a table that names what the question names ("Excel | ...")
        if unit.row is not None and unit.group and (
                grouped := set(terms(unit.group)) - _weak_stems()) and grouped <= set(weights):
            score += GROUP_BONUS  # "Intelligent Cloud 8,600" under "Operating Income", asked
        if id(unit) in says_numbered:
            score += NUMBERED_BONUS  # "Test 3 (2.7, 3.5, 3.6)" for "... on Test 3?"
        if not unit.is_row and unit.order == 0 and not unit.text[:1].isupper() and (
                not _CLAUSE.match(unit.text)):
            score -= 0.1  # the tail of a sentence cut at the start of the chunk
        if unit.text.rstrip().endswith(":"):
            score -= 0.15  # introduces a table or a list: says where the answer is, not what
        if how_to and not unit.is_row and _IMPERATIVE.match(unit.text):
            score += HOW_TO_BONUS
        if not unit.is_row and len(unit.text) > 400:
            score -= 0.05
        if not unit.is_row and asked_period.span and (stated := tables.spans(unit.text)) and (
                asked_period.span not in stated):
            score -= 0.1  # a sentence about the nine months, where the question asks a quarter
        if unit.row is not None:
            score += 0.0 if wants_reason else _row_fit(
                unit.row, set(q_terms) | title_terms[unit.n], asked_period, words)
        scored.append((score, coverage, unit))
    scored.sort(key=lambda x: -x[0])
    best_score, best_coverage, lexical_best = scored[0]
    short = best_coverage < min_coverage
    if closeness is not None and (
            AGREE_COVERAGE <= best_coverage < min_coverage or (not short and not wants_amount)):
        # Embedded: the passages that cover the question at least half as well as the best
        # (the closest in meaning of the others would not agree; an embedding costs ~5 ms a
        # passage on a shared core).
        near_best = [u for _, c, u in scored[:60] if c >= best_coverage * 0.5]
        cosine = dict(zip(map(id, near_best), closeness(question, [u.text for u in near_best]),
                          strict=True))
        closest = max(near_best, key=lambda u: cosine[id(u)])
        if short and closest is lexical_best and cosine[id(closest)] >= AGREE_COSINE:
            short = False
            min_coverage = best_coverage
        if not short and not wants_amount:
            scored = sorted(((sc + MEANING_WEIGHT * cosine.get(id(u), 0.0), c, u)
                             for sc, c, u in scored),
                            key=lambda x: -x[0])
            best_score = scored[0][0]
    if short:
        first = _first_part(question)
        if first:
            # "How have inventories changed, and what might this indicate about ...": the
            # figures are in the documents, the reading of them rarely is; answer what they hold.
            part = answer(first, sources, min_coverage=min_coverage, max_units=max_units,
                          near=near, closeness=closeness)
            if part.found:
                return part
        related = _related_parts(question)
        if related:
            # "Analyze how the changes in X's inventory levels relate to its discussion of
            # supply chain risks": the relation is an interpretation no passage states; each
            # side is a question the documents can answer.
            halves = [(side, answer(side, sources, min_coverage=min_coverage, max_units=2,
                                   near=near, closeness=closeness)) for side in related]
            found = [a for _, a in halves if a.found]
            if found:
                # A side the documents do not hold is said to be missing, not left out: the
                # reader is not to take half an answer for the whole.
                missing = [f"“{_topic(side)}” is {NOT_FOUND} I searched." for side, a in halves
                           if not a.found]
                return Answer("\n".join([*(a.text for a in found), *missing]), True,
                              tuple(dict.fromkeys(n for a in found for n in a.cited)),
                              max(a.coverage for a in found))
        return _not_found(sources, best_coverage)
    chosen: list[Unit] = []
    seen: set[str] = set()
    covered: set[str] = set()
    candidates = [(sc, c, u) for sc, c, u in scored[:60] if c >= min_coverage * 0.8]

    # What the question asks about, beyond the names and periods that locate it.
    content = sum(w for t, w in weights.items() if t not in locators and t not in titled) or total

    def gain(unit: Unit) -> float:
        """The share of the question's content weight that ``unit`` would add to what is
        chosen: over the same terms as ``content`` (a term of some source's title is not
        content), or a passage from a source whose title names a question word would lose to
        one that repeats it elsewhere."""
        return sum(weights[t] for t in unit_terms[id(unit)] - covered - titled) / content

    # Greedy: the best passage, then those that are nearly as good or cover what is missing
    # ("operating expenses ... compared to revenue" wants two rows).
    def aim(unit: Unit) -> float:
        """How much of a table row's label is what is still missing: of two rows that add
        "revenue", "Total net sales" (1/2 of its words) aims at it better than "Percentage of
        total net sales" (1/3)."""
        return label_precision(unit.row, covered_missing()) if unit.row is not None else 0.0

    def follows(unit: Unit) -> bool:
        """Whether ``unit`` is the sentence right after a chosen one, in the same source."""
        return not unit.is_row and any(c.n == unit.n and c.order + 1 == unit.order
                                       and not c.is_row for c in chosen)

    def covered_missing() -> set[str]:
        return set(weights) - covered if chosen else set(weights)

    while candidates and len(chosen) < max_units:
        best = max(candidates, key=lambda item: item[0] + 0.5 * gain(item[2])
                   + (0.5 * aim(item[2]) + NEXT_BONUS * follows(item[2]) if chosen else 0.0))
        candidates.remove(best)
        sc, _, u = best
        key = _dedupe_key(u)
        if key in seen or (chosen and best_score - sc > near and gain(u) < 0.15):
            continue
        seen.add(key)
        covered |= unit_terms[id(u)]
        chosen.append(u)
    if chosen and (total_row := _total_of(chosen[0], pool)) is not None:
        chosen = [total_row, *(u for u in chosen if u is not total_row)][:max_units]
    if chosen and (listed_here := _section_items(question, chosen[0], pool, sources)):
        chosen = listed_here
    # A cause asked over the periods ("what drove the trend in ...") is answered by its wording.
    trend = _trend(scored, of_named, min_coverage * 0.8) if (
        trending and not wants_reason) else []
    if len(trend) > 1:
        chosen = trend
    # best first: the passage that answers most comes first
    parts = []
    share = _share(scored, question, words, set(q_terms)) if _SHARE.search(question) else None
    if share:
        line, part_unit, whole_unit = share
        parts.append(line)
        chosen = [part_unit, whole_unit]
    following = {(u.rank, u.order): u for u in pool}
    continued: list[int] = []
    quoted = {id(u) for u in chosen}
    for u in chosen:
        lead = _figure_line(u, question, words) if u.row is not None else None
        if lead:
            parts.append(f"{lead} [{u.n}]")
        body = _tidy(u.text, 600)
        after = following.get((u.rank, u.order + 1))
        if not u.is_row and after is not None and not after.is_row and id(after) not in quoted \
                and (_ANNOUNCES.search(u.text) or _REFERS_BACK.match(after.text)):
            # "... any of the following four conditions applies to you. 1." / "You were a
            # nonresident alien ..."; "Keep a copy of your tax return ..." / "Usually, this is
            # 3 years ...": the next sentence completes this one, which alone says too little.
            quoted.add(id(after))
            body = f"{body} {_tidy(after.text, 400)}"
        also = ""
        if not u.is_row and id(after) not in quoted and (
                going_on := _continuation(u, sources)) is not None:
            # "... and that income totaled" [1] / "... that income totaled less than $8,500,
            # you may be able to ..." [3]: a sentence cut where its chunk ends goes on in the
            # next chunk of its document, when that is among the sources.
            rest, n = going_on
            body = f"{body} {rest}"
            also = f"[{n}]"
            continued.append(n)
        if u.is_row and u.columns:
            body = f"{body} (columns: {_tidy(u.columns, 200)})"
        if u.row is not None and not lead:
            body += _in_full(u)
        parts.append(f"{body} [{u.n}]{also}")
    cited = tuple(dict.fromkeys([*(u.n for u in chosen), *continued]))
    first = _first_part(question)
    if first:
        # "How much did X spend on R&D in Q2 2025, and why did its revenue change?": the whole
        # question is read for its cause; what each part asks follows, where it adds. The
        # second is asked with the names and periods the first gives it ("why did its revenue
        # change? X Q2 2025"), where its own words are answered (those names locate every
        # passage of X's report: alone they would answer any second part).
        second, alone = _second_part(question, first)
        answered = answer(alone, sources, min_coverage=min_coverage, sides=False).found
        for part_of, most in ((first, 2), (second, 1))[:2 if answered else 1]:
            part = answer(part_of, sources, min_coverage=min_coverage, max_units=most, near=near,
                          closeness=closeness)
            added = [ln for ln in part.text.split("\n") if ln not in parts] if part.found else []
            if added:
                parts = [*parts, *added]
                cited = tuple(dict.fromkeys((*cited, *part.cited)))
    return Answer("\n".join(parts), True, cited, best_coverage)


# A misspelt question word ("pasword", "anual", "decsale") or a source's ("Cannister shot", OCR):
# read as the sources' word one edit away (a letter added, dropped, changed, or two swapped).
# Only a word that no source holds and that is no whole word of the packaged embedder's
# vocabulary (~22,000 common English words: "party" is never read as "parts"), of 5 letters
# or more (shorter words are one edit from too many others).
SPELLING_MIN_LETTERS = 5
_SPELT = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]")


@functools.cache
def known_words() -> frozenset[str]:
    """The whole lower-case words of the packaged embedder's WordPiece vocabulary."""
    vocab = json.loads(TOKENIZER_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and w.islower())


_POSSESSIVE = re.compile(r"'s$", re.IGNORECASE)


def respelled(question: str, sources: Sequence[Numbered]) -> str:
    """``question`` with each word the sources do not hold, and that is no known word, written
    as the sources' most frequent word one edit away from it (none: as it was)."""
    known = known_words()
    if not any(len(w) >= SPELLING_MIN_LETTERS and w.lower() not in known and w.lower() not in STOP
               for w in _SPELT.findall(question)):
        return question  # most questions: no word to look for, the sources' words not counted
    held: Counter[str] = Counter()
    for s in sources:
        # "doctor's" holds "doctor" ("dotcor" is one edit from it, three from "doctor's").
        held.update(_POSSESSIVE.sub("", w.lower()) for w in _SPELT.findall(s.text + " " + s.title))
    stems = {stem(w) for w in held}

    def fix(match: re.Match[str]) -> str:
        word = _POSSESSIVE.sub("", match.group(0))
        owner = match.group(0)[len(word):]  # "'s", said again after the word read
        low = word.lower()
        if (len(low) < SPELLING_MIN_LETTERS or low in held or low in known or low in STOP
                or stem(low) in stems):
            return match.group(0)
        near = process.extract(low, list(held), scorer=DamerauLevenshtein.distance,
                               score_cutoff=1, limit=None)
        if not near:
            return match.group(0)
        best = max(near, key=lambda found: held[found[0]])[0]
        if word.isupper():
            best = best.upper()
        elif word[:1].isupper():
            best = best.capitalize()
        return best + owner

    return _SPELT.sub(fix, question)


def _joined(question: str, q_terms: list[str], everywhere: set[str]) -> list[str]:
    """``q_terms`` with two words the question writes apart and the sources (whose terms are
    ``everywhere``) as one ("roll over" / "rollover", "pay roll" / "payroll") as that one term."""
    words = re.findall(r"[A-Za-z]+", question)
    pairs = {stem(a + b): (stem(a), stem(b)) for a, b in itertools.pairwise(words)
             if len(a) > 1 and len(b) > 1}
    if not pairs:
        return q_terms
    present = everywhere & set(pairs)
    out = list(q_terms)
    for whole in present:
        out = [t for t in out if t not in pairs[whole]] + [whole]
    return out


# "Alternative minimum tax (AMT)": a term the sources define by its initials.
_DEFINED = re.compile(r"((?:[A-Z][a-z]+|and|of|the|[A-Z]+)(?:[ -](?:[A-Z][a-z]+|and|of|the|for|"
                      r"[a-z]+)){1,6})\s+\(\s*[“\"]?([A-Z][A-Za-z&]{1,7})[”\"]?\s*\)")


def _acronyms(sources: Sequence[Numbered]) -> dict[str, frozenset[str]]:
    """The initials the sources define ("Alternative minimum tax (AMT)") -> the terms they stand
    for, so that a passage that says "The AMT exemption amount is ..." holds what a question
    about the alternative minimum tax asks, and the other way round."""
    return {short: words for source in sources for short, words in _defined(source.text)}


# Cached as the terms are: turns about the same documents read the same sources.
@functools.lru_cache(maxsize=4096)
def _defined(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    out = []
    for words, short in _DEFINED.findall(text):
        letters = [c for c in short if c.isupper()]
        # The defined words end with as many words as the initials have capitals, each
        # starting with its letter ("Health savings account (HSA)").
        tail = [w for w in re.split(r"[ -]", words) if w][-len(letters):]
        if len(tail) == len(letters) and all(
                w[0].upper() == c for w, c in zip(tail, letters, strict=True)):
            spelled = frozenset(terms(" ".join(tail)))
            if spelled:
                out.append((stem(short), spelled))
    return tuple(out)


def _initialled(question: str, sources: Sequence[Numbered]) -> dict[str, frozenset[str]]:
    """Three or four words of the question whose initials a source writes in capitals, defined
    or not ("personal protective equipment": "Specific PPE: Safety Harness")."""
    words = re.findall(r"[A-Za-z]+", question)
    capitals = set().union(*(_capitals(s.text) for s in sources))
    out: dict[str, frozenset[str]] = {}
    for size in (3, 4):
        for i in range(len(words) - size + 1):
            run = words[i:i + size]
            short = "".join(w[0] for w in run).upper()
            if short in capitals and all(len(w) > 2 for w in run):
                out[stem(short)] = frozenset(terms(" ".join(run)))
    return out


def _spelled_out(question: str, sources: Sequence[Numbered]) -> dict[str, frozenset[str]]:
    """The question's initials that no source writes ("the MSA"), spelt out by words of a source
    or its title that start with them in order: capitalised ("Master Services Agreement"), or a
    capitalised word and words of four letters or more ("Annual recurring revenue" for "ARR";
    not "must send all")."""
    out: dict[str, frozenset[str]] = {}
    for short in set(re.findall(r"\b[A-Z]{2,5}\b", question)):
        written = re.compile(rf"\b{short}\b")
        if any(written.search(s.text) or written.search(s.title) for s in sources):
            continue
        capitals = re.compile(r"\b" + r"[ -]".join(f"{c}[a-z]+" for c in short) + r"\b")
        lower = re.compile(r"\b" + r"[ -]".join(
            [f"{short[0]}[a-z]+"] + [f"[{c}{c.lower()}][a-z]{{3,}}" for c in short[1:]]) + r"\b")
        found = next((m.group(0) for run in (capitals, lower) for s in sources
                      for m in (run.search(s.title), run.search(s.text)) if m), None)
        if found:
            out[stem(short)] = frozenset(terms(found))
    return out


@functools.lru_cache(maxsize=4096)
def _capitals(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\b[A-Z]{3,4}\b", text))


def _with_acronyms(own: set[str], spelled: dict[str, frozenset[str]]) -> set[str]:
    for short, words in spelled.items():
        if short in own:
            own |= words
        elif words <= own:
            own.add(short)
    return own


# Where a question goes on to ask a second thing: "..., and what ...", "...? If so, how ...".
_SECOND_PART = re.compile(r",?\s+and\s+(?:if so,?\s+)?(?=(?:what|how|why|which|who|when|where|"
                          r"does|do|did|is|are|was|were|has|have|can|could|might)\b)|\?\s+(?=\S)",
                          re.IGNORECASE)


def _first_part(question: str) -> str | None:
    """The first of two questions asked in one ("How much did X spend on R&D, and what was its
    focus?" -> "How much did X spend on R&D"); None when ``question`` asks one thing."""
    match = _SECOND_PART.search(question)
    if match is None or len(terms(question[:match.start()])) < 2:
        return None
    return question[:match.start()]


_LOCATING = re.compile(
    rf"\b[Qq][1-4]\s+\d{{4}}\b|\b(?:first|second|third|fourth)\s+quarter(?:\s+of)?\s+\d{{4}}\b|"
    rf"\b(?:{_MONTHS})\s+\d{{1,2}},\s+\d{{4}}\b|\b(?:fiscal\s+)?(?:19|20)\d\d\b", re.IGNORECASE)


def _second_part(question: str, first: str) -> tuple[str, str]:
    """The second of two questions asked in one, followed by the names and periods that the
    first gives it ("why did its revenue change? X Q2 2025"), and that second question alone."""
    joint = _SECOND_PART.match(question, len(first))  # where _first_part cut the question
    rest = question[joint.end() if joint else len(first):].strip()
    locating = [*names(first), *(m.group(0) for m in _LOCATING.finditer(first))]
    return f"{rest} {' '.join(locating)}".strip(), rest


# "How do A relate to B", "how does A correlate with B", "how did A reflect on B": two things
# asked about and a relation between them. A locating lead ("In X's Q3 2023 10-Q,") is of both.
_RELATION = re.compile(r"\s+(?:relates?|related|correlates?|correlated|reflects?(?:\s+on)?|"
                       r"aligns?|tie(?:s|d)?\s+(?:in|back)|connects?|compares?)\s+(?:to|with)?\s*",
                       re.IGNORECASE)
_LOCATOR = re.compile(r"^(?:in|for|from|based on|according to)\b[^,?]{3,80},\s*", re.IGNORECASE)


def _related_parts(question: str) -> tuple[str, str] | None:
    """The two sides of a question about a relation ("In X's 10-Q, analyze how the changes in
    inventory relate to the discussion of supply chain risks" -> "In X's 10-Q, analyze how the
    changes in inventory", "In X's 10-Q, the discussion of supply chain risks"); None when it
    asks no relation or a side says too little to be asked alone."""
    match = _RELATION.search(question)
    if match is None:
        return None
    locator = _LOCATOR.match(question)
    lead = locator.group(0) if locator else ""
    left = question[:match.start()].rstrip(" ,")
    right = question[match.end():].rstrip(" ?.")
    if len(terms(left[len(lead):])) < 2 or len(terms(right)) < 2:
        return None
    return f"{left}?", f"{lead}{right}?"


def _sides(
    question: str, sources: Sequence[Numbered]
) -> list[tuple[str, str, list[Numbered]]] | None:
    """The sides of a question that names two or more companies, or two or more periods, each
    found in documents of its own among ``sources``: (the name as asked, the question without the
    other names, that side's sources). A company no source is of is a side with no sources when
    the names stand side by side (:func:`_coordinated`); a question about every company, naming
    none, has a side per organisation (:func:`_by_organisation`). None when the question names
    fewer than two, a document holds two of them (one report that names a competitor, or a
    filing that compares two quarters, answers such a question itself), or a name no source is
    of is not set beside the others."""
    # What each document says of itself in every one of its sources (its title, organisation,
    # period; a section heading is of one source only): a company named only in the text, or a
    # heading ("Wi-Fi"), is not what the document is of.
    titled: dict[str, set[str]] = {}
    title: dict[str, str] = {}
    for s in sources:
        own = set(terms(s.title))
        titled[s.of] = titled[s.of] & own if s.of in titled else own
        title.setdefault(s.of, s.title)

    def of_entity(name: str, document: str) -> bool:
        return set(terms(name)) <= titled[document]

    def of_period(period: str, document: str) -> bool:
        return _period_of(period, title[document])

    if _COMPANIES.search(question) and (by_company := _by_organisation(sources)) is not None:
        # "Which company had the highest revenue in Q3 2025?": each company's figure, side by
        # side; the reader compares (the words that ask for the comparison are in no passage).
        asked = " ".join(_COMPARING.sub(" ", _COMPANIES.sub(" ", question)).split())
        return [(label, asked, [s for s in sources if s.of in theirs])
                for label, theirs in by_company.items()]
    asked_periods = sorted((*periods.QUARTER.finditer(question), *periods.DATE.finditer(question)),
                           key=lambda m: m.start())
    holds: Callable[[str, str], bool]
    for named, holds in ((names(question), of_entity),
                         ([m.group(0) for m in asked_periods], of_period)):
        named = list(dict.fromkeys(named))
        if len(named) < 2:
            continue
        documents = [{d for d in title if holds(name, d)} for name in named]
        # A company no source is of is a side the documents lack ("Compare A's and B's
        # revenue": A's is answered, B's said to be missing) only when the question sets the
        # names side by side; "How many robots did A ship to Japan?" names a place.
        if not any(documents) or not (all(documents) or _coordinated(question, named)) or any(
                a & b for a, b in itertools.combinations(documents, 2)):
            continue
        out = []
        for name, theirs in zip(named, documents, strict=True):
            asked = question
            for other in named:
                if other != name:
                    asked = re.sub(rf"{re.escape(other)}(?:'s|’s|'|’)?", "", asked)
            out.append((name, asked, [s for s in sources if s.of in theirs]))
        return out
    return None


# A question about every company of the sources (the words chat_gateway.focus spreads the search
# over every company's report for), and the words that ask to compare them.
_COMPANIES = re.compile(
    r"\b(?:which|what)\s+(?:company|companies|firm|firms|business|businesses)\b|"
    r"\b(?:each|every|all|both)\s+(?:of\s+the\s+)?(?:companies|company|firms|businesses)\b|"
    r"\b(?:the|these)\s+companies\b",
    re.IGNORECASE)
_COMPARING = re.compile(r"\b(?:the\s+)?(?:highest|lowest|largest|smallest|biggest|greatest|"
                        r"most|least|best|worst|higher|lower|larger|smaller|more|less)\b|"
                        r"\b(?:compare|comparing|compared|rank|ranked)\b", re.IGNORECASE)


def _by_organisation(sources: Sequence[Numbered]) -> dict[str, set[str]] | None:
    """The documents of each organisation among ``sources``, by what each document says of
    itself in all its sources (``Numbered.title``: its name, then "Interim report · Halvard
    Shipping Group · Q2 2025 · 2025-06-28"): the first part that is not a period or a date and
    not the same for every document (the kind of report). None when fewer than two
    organisations, a document names none, or the documents share no part (not reports of one
    kind: a contract notice and a course schedule)."""
    kept: dict[str, list[str]] = {}
    for s in sources:
        said = s.title[len(s.document):] if s.document and s.title.startswith(s.document) \
            else s.title
        parts = [p.strip() for p in said.split(" · ") if p.strip()]
        kept[s.of] = [p for p in kept[s.of] if p in parts] if s.of in kept else parts
    everywhere = set.intersection(*(set(p) for p in kept.values())) if kept else set()
    if not everywhere:
        return None  # documents of different kinds: not reports of several companies
    out: dict[str, set[str]] = {}
    for document, parts in kept.items():
        label = next((p for p in parts if p not in everywhere and not _is_period(p)), None)
        if label is None:
            return None
        out.setdefault(label, set()).add(document)
    return out if len(out) > 1 else None


def _is_period(text: str) -> bool:
    return bool(periods.quarter_label(text) or periods.parse_date(text) or re.fullmatch(
        r"(?:FY\s*)?(?:19|20)\d\d(?:-\d\d-\d\d)?", text.strip(), re.IGNORECASE))


def _coordinated(question: str, named: Sequence[str]) -> bool:
    """Whether ``named`` stand side by side in ``question``: "A's and B's", "A or B",
    "A vs. B", "A, B and C"."""
    joins = r"(?:'s|’s|'|’)?\s*(?:,\s*(?:and\s+|or\s+)?|\s(?:and|or|vs\.?|versus)\s+)"
    pattern = joins.join(re.escape(name) for name in named)
    return re.search(pattern, question) is not None


DATE_TOLERANCE_DAYS = 3  # a date asked names the report whose period ends this near it (as focus)


def _period_of(period: str, title: str) -> bool:
    """Whether the source titled ``title`` (its document's name and what it says about itself:
    "Q3 2023 · 2023-07-01") is the report of ``period`` ("Q3 2023", "July 1, 2023")."""
    day = periods.parse_date(period)
    if day is not None:  # "the quarter ended July 1, 2023": the report of the period so ended
        return any(abs((end - day).days) <= DATE_TOLERANCE_DAYS for end in _iso_dates(title))
    label = periods.quarter_label(period)
    return label is not None and (label in title or period_key(label) == period_key(title))


def _iso_dates(text: str) -> list[dt.date]:
    """The valid ISO dates ("2023-07-01") written in ``text``."""
    out = []
    for iso in re.findall(r"\b\d{4}-\d\d-\d\d\b", text):
        with contextlib.suppress(ValueError):
            out.append(dt.date.fromisoformat(iso))
    return out


def _side_by_side(sides: Sequence[tuple[str, Answer]]) -> Answer:
    """One answer of each side's, its first line led by the side's name; a side the documents do
    not answer is said to be missing, not left out. At least one side is found."""
    lines = []
    for label, part in sides:
        if part.found:
            first, *rest = part.text.split("\n")
            lines += [f"{label}: {first}", *rest]
        else:
            lines.append(f"{label}: {NOT_FOUND} I searched.")
    found = [a for _, a in sides if a.found]
    return Answer("\n".join(lines), True, tuple(dict.fromkeys(n for a in found for n in a.cited)),
                  max(a.coverage for a in found))


def _topic(side: str) -> str:
    """What one side of a relation asks about, as a reader would name it: "In X's 10-Q, analyze
    how the changes in inventory?" -> "the changes in inventory"."""
    if (lead := _LOCATOR.match(side)) is not None:
        side = side[lead.end():]
    side = re.sub(r"^(?:[a-z]+\s+)?how\s+(?:(?:do|does|did|has|have|is|are|was|were)\s+)?", "",
                  side, flags=re.IGNORECASE)
    return side.rstrip(" ?")


OVERLAP_CHARS = 400  # where in the next chunk the end of the one before it is repeated
_ENDED = re.compile(r"[.!?:;][\"')\]]*\s*$")


def _continuation(unit: Unit, sources: Sequence[Numbered]) -> tuple[str, int] | None:
    """The rest of ``unit``'s sentence when the unit stops mid-sentence (no closing
    punctuation) and another source of its document holds the words it stops on and what
    follows them (the next chunk, which repeats the end of the one before it): that rest, up to
    its sentence's end, and the other source's number. A whole sentence that ends its chunk
    gets the next chunk's next sentence where that refers back ("But you must use Form 8814 to
    do so."). None otherwise."""
    words = unit.text.split()
    source = next((s for s in sources if s.n == unit.n), None)
    if source is None or len(words) < 4:
        return None
    ended = bool(_ENDED.search(unit.text))
    if ended and not " ".join(source.text.split()).endswith(" ".join(words[-6:])):
        return None  # a whole sentence inside its chunk: what follows it is here
    others = [s for s in sources if s.n != unit.n and s.of == source.of]
    # The next chunk starts by repeating the end of this one (the chunks' overlap), from a token
    # boundary: the last 6 words near its start, or 5 when it starts inside them. (4 words were
    # a running header's, "Instructions for Form 1040NR", found on another page.)
    for size in (6, 5):
        tail = r"\s+".join(map(re.escape, words[-size:]))
        for s in others:
            match = re.search(tail, s.text[:OVERLAP_CHARS])
            if match is None:
                continue
            if ended:
                # The sentence ends its chunk: the next one, where it refers back ("But you
                # must use Form 8814 to do so."), is in the next chunk.
                after = re.match(r"\s+(.{1,300}?[.!?])(?=[\"')\]]*(?:\s|$))",
                                 s.text[match.end():], re.DOTALL)
                if after is not None and _REFERS_BACK.match(after.group(1)):
                    return " ".join(after.group(1).split()), s.n
                continue
            rest = re.match(r"\s*(.{1,400}?[.!?])(?=[\"')\]]*(?:\s|$))", s.text[match.end():],
                            re.DOTALL)
            if rest is not None and rest.group(1)[:1].islower():
                text = rest.group(1)
                # "... you may be able to elect to report your child's income on your
                # return." / "But you must use Form 8814 to do so.": the next sentence, where
                # it refers back, completes this one here too.
                after = re.match(r"[\"')\]]*\s+(.{1,300}?[.!?])(?=[\"')\]]*(?:\s|$))",
                                 s.text[match.end() + rest.end():], re.DOTALL)
                if after is not None and _REFERS_BACK.match(after.group(1)):
                    text = f"{text} {after.group(1)}"
                return " ".join(text.split()), s.n
    return None


def _total_of(caption: Unit, pool: Sequence[Unit]) -> Unit | None:
    """The total row of the table that ``caption`` introduces ("Share repurchase activity ...
    was as follows (in millions ...):"), in its source or in one that continues the table:
    a caption says where the answer is, its table's total says what it is. None when
    ``caption`` introduces no table or its table has no total row."""
    if caption.is_row or not caption.text.rstrip().endswith(":"):
        return None
    tail = caption.text.rstrip()[-60:]
    for unit in pool:
        if unit.row is not None and tail in unit.context and _TOTAL.match(unit.row.label):
            return unit
    return None


def _dedupe_key(unit: Unit) -> str:
    """What makes two passages the same: a row's label and figures (one row rendered with and
    without currency signs in two chunks), a sentence's words."""
    if unit.row is not None:
        return unit.row.label.lower() + " " + " ".join(numbers(unit.text))
    return " ".join(unit.text.split()).lower()


def label_precision(row: tables.Row, asked: set[str]) -> float:
    """The share of a row label's content words (weak ones aside) that ``asked`` holds:
    "Total net sales" is 1/2 of "revenue", "Percentage of total net sales" 1/3."""
    own = _label_terms(row.label)
    return len(own & asked) / len(own) if own else 0.0


@functools.cache
def _weak_stems() -> frozenset[str]:
    return frozenset(stem(w) for w in WEAK)


@functools.lru_cache(maxsize=4096)
def _label_terms(label: str) -> frozenset[str]:
    """A row label's content words, weak ones aside (asked for again and again while the
    passages are chosen)."""
    weak = _weak_stems()
    return frozenset(t for t in terms(label) if t[0].isalpha() and t not in weak)


def _row_fit(row: tables.Row, asked: set[str], period: tables.Period, words: set[str]) -> float:
    """How much a table row's label and columns fit the question beyond its words: a label
    that says more than the question asks ("Percentage of total net sales" for "net sales")
    loses, one the question names wholly gains; a row whose columns name dates, none of them
    the one the question names, is another table's (another balance sheet date)."""
    fit = LABEL_FIT * (label_precision(row, asked) - 0.5)
    # The columns: one of them the date, span and year asked for, or none (another period's).
    _, columns = tables.fit(row, period, words)
    return fit + COLUMN_FIT * min(6.0, max(-2.0, columns))


def _trend(scored: Sequence[tuple[float, float, Unit]], sources: Sequence[Numbered],
           least: float) -> list[Unit]:
    """For "how has revenue changed over the quarters": the label of the best row covering at
    least ``least`` (wherever it ranks among the passages) as each period's source gives it (of
    ``sources``: those of the company the question names), one row a period, the latest period
    first (at most six). Empty when no row covers that much."""
    titles = {s.n: s.title for s in sources}
    found = next(((c, u.row) for _, c, u in scored if u.row is not None and c >= least), None)
    said_best = max((c for _, c, u in scored if not u.is_row and _MONEY.search(u.text)),
                    default=0.0)
    row = found[1] if found is not None and found[0] >= said_best else None
    if row is None:
        # No table gives it: each period's best sentence with an amount ("During the three
        # months ended ..., the Company repurchased 262 million shares ... for $38.1 billion").
        said: dict[tuple[int, int], Unit] = {}
        for _, coverage, unit in scored:
            if unit.n in titles and coverage >= least and _MONEY.search(unit.text):
                said.setdefault(period_key(titles[unit.n]), unit)
        return [said[k] for k in sorted(said, reverse=True)][:6]
    label = row.label.lower()
    by_period: dict[tuple[int, int], Unit] = {}
    for _, coverage, unit in scored:  # best first: each period keeps its best such row
        if (unit.row is not None and unit.n in titles and unit.row.label.lower() == label
                and coverage >= least):
            by_period.setdefault(period_key(titles[unit.n]), unit)
    return [by_period[k] for k in sorted(by_period, reverse=True)][:6]


def _value(cell: tables.Cell) -> float | None:
    """A cell's amount as a number (a bracketed one negative); None for a dash or a percent."""
    if "%" in cell.value:
        return None
    digits = re.sub(r"[^\d.]", "", cell.value)
    if not digits or digits == ".":
        return None
    return -float(digits) if "(" in cell.value else float(digits)


def _share(scored: Sequence[tuple[float, float, Unit]], question: str, words: set[str],
           asked: set[str]) -> tuple[str, Unit, Unit] | None:
    """For "what percentage of revenue did Services contribute", the share worked out from two
    rows of one table and one column, its working shown so that it can be checked: "Services /
    Total net sales (Three Months Ended July 1, 2023): 21,213 / 81,797 × 100 = 25.93%". The
    whole is a row whose label the question names ("Total net sales" for "total revenue"), the
    part a smaller row of the same table the question names too; of several pairs, the best
    scored, and a part in the group the whole totals ("Net sales:" over "Services") before one
    in another ("Cost of sales:"). None when no such pair is among the passages, or when the
    best row already is a percentage."""
    rows = [(sc, u, tables.best_cell(u.row, question, words)) for sc, _, u in scored
            if u.row is not None and label_precision(u.row, asked) >= 0.5]
    # A cell of a row whose columns are unknown is not said to be of any period: not used.
    cells = [(sc, u, c, _value(c)) for sc, u, c in rows
             if c is not None and (c.column or len(u.row.cells) == 1)]  # type: ignore[union-attr]
    if not cells or "%" in cells[0][2].value:
        return None
    of = _SHARE_OF.search(question)
    whole_terms = set(terms(of.group(1))) - {stem(w) for w in WEAK} if of else set()
    if not whole_terms:
        return None
    part_terms = asked - whole_terms

    def names(unit: Unit, wanted: set[str]) -> bool:
        return unit.row is not None and bool(set(terms(unit.row.label)) & wanted)

    best: tuple[float, str, Unit, Unit] | None = None
    for w_score, whole_unit, whole_cell, whole in cells:
        if not names(whole_unit, whole_terms):
            continue
        for p_score, part_unit, part_cell, part in cells:
            if (part is None or whole is None or part_unit.n != whole_unit.n
                    or not names(part_unit, part_terms)
                    or part_unit.columns != whole_unit.columns
                    or part_cell.column != whole_cell.column or not 0 < part < whole):
                continue
            assert part_unit.row is not None and whole_unit.row is not None
            grouped = bool(part_unit.group) and set(terms(part_unit.group)) <= set(
                terms(whole_unit.row.label))
            total = w_score + p_score + (0.1 if grouped else 0.0)
            if best is None or total > best[0]:
                column = f" ({_tidy(part_cell.column, 120)})" if part_cell.column else ""
                line = (f"{_tidy(part_unit.row.label, 80)} / {_tidy(whole_unit.row.label, 80)}"
                        f"{column}: {_bare(part_cell.value)} / {_bare(whole_cell.value)} × 100 = "
                        f"{part / whole * 100:.2f}% [{part_unit.n}]")
                best = (total, line, part_unit, whole_unit)
    return (best[1], best[2], best[3]) if best else None


def _bare(value: str) -> str:
    return re.sub(r"[$€£¥()\s]", "", value)


def _figure_line(unit: Unit, question: str, words: set[str]) -> str | None:
    """The figure that answers ``question`` from a table row, with its row and column labels
    ("Total net sales (Three Months Ended July 1, 2023): $81,797"), and its unit with the full
    figure when its table declares one ("$81,797 million ($81,797,000,000)", "102,673 thousand
    shares (102,673,000)"); None when the row's columns are unknown and it has more than one
    figure (the quoted row says all there is)."""
    row = unit.row
    assert row is not None
    cell = tables.best_cell(row, question, words)
    if cell is None or (not cell.column and len(row.cells) > 1):
        return None
    value = re.sub(r"([$€£¥])\s+", r"\1", cell.value).replace(" %", "%")
    measure = tables.cell_unit(unit.scale, row, cell, unit.columns or unit.context)
    full = tables.scaled(cell.value, measure)
    if full:
        value = f"{value} {measure} ({full})"
    label = _tidy(row.label, 120)
    if unit.group and _RATIO_ROW.match(label):
        label = f"{_tidy(unit.group, 80)}, {label[:1].lower()}{label[1:]}"
    return f"{label} ({_tidy(cell.column, 120)}): {value}" if cell.column else f"{label}: {value}"


def _in_full(unit: Unit) -> str:
    """For a quoted row of a table that declares its unit, its figures written in full where
    their unit can be told (" (in full: 102,673,000 shares; $94,569,000,000)"); "" otherwise."""
    row = unit.row
    if row is None or unit.scale is None:
        return ""
    full = []
    for cell in row.cells:
        measure = tables.cell_unit(unit.scale, row, cell, unit.columns or unit.context)
        value = tables.scaled(cell.value, measure)
        if value:
            full.append(f"{value} shares" if measure.endswith("shares") else value)
    return f" (in full: {'; '.join(full)})" if full else ""


def _has_amount(text: str) -> bool:
    return _amounts(text, first=True) > 0


def period_key(text: str) -> tuple[int, int]:
    """The latest (year, quarter-or-month) a title names: "2023 Q3" -> (2023, 9),
    "July 1, 2023" -> (2023, 7); (0, 0) when it names no year."""
    years = [int(y) for y in re.findall(r"\b((?:19|20)\d\d)\b", text)]
    if not years:
        return (0, 0)
    year = max(years)
    quarter = re.search(r"\bQ([1-4])\b", text, re.IGNORECASE)
    if quarter:
        return (year, int(quarter.group(1)) * 3)
    months = [i for i, m in enumerate(_MONTH_NAMES, 1) if re.search(rf"\b{m}", text, re.IGNORECASE)]
    return (year, max(months) if months else 0)


def _normalise_period(text: str) -> str:
    """ "the first quarter of 2023" -> "Q1 2023", so :func:`period_key` reads it."""
    for word, q in (("first", 1), ("second", 2), ("third", 3), ("fourth", 4)):
        text = re.sub(rf"\b{word} quarter\b", f"Q{q}", text, flags=re.IGNORECASE)
    return text


def _latest(sources: Sequence[Numbered]) -> set[int]:
    keys = {s.n: period_key(s.title) for s in sources}
    best = max(keys.values(), default=(0, 0))
    return {n for n, k in keys.items() if k == best and best != (0, 0)}


def _tidy(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


# "What are the action items ...": the items of a section, each a passage of its own.
_ASKS_ITEMS = re.compile(r"^\s*(?:what|which) (?:are|were) (?:the )?((?:[a-z-]+ ){0,2}[a-z-]+s)\b",
                         re.IGNORECASE)
SECTION_ITEMS = 6


def _section_items(question: str, first: Unit, pool: Sequence[Unit],
                   sources: Sequence[Numbered]) -> list[Unit]:
    """For "What are the action items ...", when the best passage is under a heading that names
    what is asked ("... · Action items"), every passage of that section in order (at most
    :data:`SECTION_ITEMS`): its items, each said alone, are the answer together. Empty when the
    question asks no such thing or the heading does not name it."""
    asked = _ASKS_ITEMS.match(question)
    if asked is None or first.is_row:
        return []
    title = next(s.title for s in sources if s.n == first.n)
    heading = set(terms(title.rsplit("·", 1)[-1])) if "·" in title else set()
    if not heading or not set(terms(asked.group(1))) <= heading:
        return []
    items = sorted((u for u in pool if u.n == first.n and not u.is_row
                    and set(terms(u.text)) - heading), key=lambda u: u.order)
    return items[:SECTION_ITEMS] if len(items) > 1 else []


def _not_found(sources: Sequence[Numbered], coverage: float) -> Answer:
    closest = sources[:3]
    if not closest:
        return Answer(f"The answer is {NOT_FOUND}.", False, (), coverage)
    names = "; ".join(f"{_tidy(s.title, 120)} [{s.n}]" for s in closest)
    return Answer(
        f"The answer is {NOT_FOUND} I searched: no passage covers this question. "
        f"The closest sources: {names}.",
        False, tuple(s.n for s in closest), coverage,
    )


def numbered(sources: Sequence[Source]) -> list[Numbered]:
    """The turn's sources as the answerer reads them: the title is the document's name and what
    it says about itself (its organisation, period, section: ``Source.context``)."""
    return [Numbered(s.n, f"{s.document} {s.context}".strip(), s.text, s.unit, s.document)
            for s in sorted(sources, key=lambda s: s.n)]
