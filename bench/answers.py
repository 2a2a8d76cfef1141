"""Answer quality, measured at the answer: Parley's extractive and generative answers side by side
with the seed's approach, on questions with a reference and on questions no document answers.

    python -m bench answers [--generative N] [--max-tokens M] [--feedback FILE] [--wrong]

``--wrong`` prints each wrong extractive answer with what was expected (to stderr); ``--sets
handbooks,examples`` runs only the sets named.

Question sets:

- ``dev``: ../shared/eval/sec10q-dev (skipped, with the reason, when absent): the questions whose
  reference answer holds at least one key figure; those whose reference is short (at most 400
  characters before ``SOURCE(S)``) are graded correct or not, the longer ones (a figure a
  quarter, several facts) count for **figures** only; plus ``dev-none``: ten questions about
  those filings whose answer is in none.
- ``synthetic``: generated quarterly reports of three fictional companies over three quarters in
  one layout (tests/fixtures/quarterlies.py), rendered to PDF; one question of each kind per
  report, plus ``synthetic-none``: ten questions no report answers.
- ``statements``: generated interim reports of three other fictional companies at two quarter
  ends (tests/fixtures/statements.py) whose statements have four columns (the quarter and the
  year to date, each this year and a year earlier) and a balance sheet at two dates, half of
  them DOCX (tables as cells), half PDF; questions name a quarter, a date, a year to date or a
  year earlier, ask two figures at once or why revenue moved; plus ``statements-none``.
- ``comparisons``: the same reports asked about two companies or two quarters at once ("Compare
  A's and B's revenue in Q2 2025", "How did A's net income change from Q2 2025 to Q3 2025?"):
  correct when both figures are there; ``comparisons-none`` compares with a company no report
  is of (right when the answer says that company is not in the documents).
- ``two-parts``: the same reports asked a figure and a cause in one question ("How much did A
  spend on research and development in Q2 2025, and why did its revenue change?"): correct when
  both are there.
- ``buybacks``: the same companies' share repurchases by trading day, a table "(in thousands,
  ...)" long enough to be cut into several chunks (its caption in the first only), half DOCX;
  the quarter's total and its last row's shares (an accelerated repurchase), which the answer
  must give in full.
- ``handbooks``: everyday documents of three fictional organisations (tests/fixtures/handbooks.py:
  handbooks, an IT guide, a product manual, an FAQ, an expense workbook, security slides), 40
  questions mostly in the asker's words, plus ``handbooks-none``.
- ``typos``: the ``handbooks`` questions (and ``typos-none``: its unanswerable ones), each with
  a typist's slip in its longest lower-case word of 6 letters or more (:func:`misspelt`: two
  middle letters swapped, "password" -> "paswsord"), asked of the same documents.
- ``examples``: the project's examples/ as the quick start uploads it (its README.md too; the
  scanned memo left out: no OCR here), what a new user asks after the quick start, plus
  ``examples-none``.
- ``records``: a services agreement, a printer's data sheet, board minutes, a price list (XLSX),
  a business review (PPTX), an incident postmortem (HTML), a trial report, a lease, a new
  starter's checklist, a help article, an email, clinic tables, a timetable and a travel policy
  of fictional organisations (tests/fixtures/records.py), 105 questions mostly in other words
  than the documents' ("the MSA", "how much will the roof cost", "Larkspur's ARR"), plus
  ``records-none``. Written beside the answerer rules it first measured (session 18): a
  development set, not an unseen one.
- ``corpus``: real documents nobody on the project wrote (../shared/corpus, skipped when absent:
  IRS instructions set in three columns, a rig procedure, a course schedule, an OCRed diary, a
  data model, a contract notice), 48 questions written without reading the answerer
  (bench/corpus_questions.py), each graded by short phrases of the passage that answers, plus
  ``corpus-none``.

With ``--feedback FILE`` (what ``parley feedback export --json`` writes), users' rated questions
are answered again, extractively, over the sources their answer was given: graded where a
``reference`` was filled in, counted for citations and unsupported figures everywhere.

Pipelines (all with the same embedder; retrieval exactly as ``bench retrieval`` ranks, top K =
the gateway's default ``retrieval_k``):

- ``extractive``: Parley's extraction, document context and chunking, the Searcher's hybrid
  ranking with focus, then :mod:`inference_worker.extractive`;
- ``generative``: Parley's extraction and chunking, Parley's prompt (chat_gateway.prompt), the
  embedded model (SmolLM2-135M, numpy) with its repetition control, the not-found guard and the
  final checks (:mod:`inference_worker.grounding`), as the inference worker runs them;
- ``seed``: pypdf + RecursiveCharacterTextSplitter(1000, 10), the five chunks stuffed into a plain
  prompt for the same model, no checks.

Scoring (no model judges):

- **correct**: every key figure of the reference appears in the answer (figures compare without
  separators, currency signs or trailing zeros: "$81,797 million" holds 81797), or for a phrase
  reference (synthetic "why" questions) the phrase appears, case-insensitive. Key figures of a
  dev reference: its numbers other than dates ("July 1, 2023"), years and the "10" of "10-Q".
  For ``statements`` a figure question is also wrong when the answer's first line (its direct
  answer) holds a figure of the same row's other columns (another period's).
- **figures**: of the key figures of every answerable question's reference, graded or not, the
  share that the answer holds (a long dev answer that gives two of its four quarters counts 2/4).
- **cited**: the answer holds at least one ``[n]`` naming one of its sources.
- **unsupported**: the share of answers with a figure that none of the sources it cites holds
  (for the seed, none of its five chunks); **unflagged**: such figures missing from the answer's
  ``unsupported_numbers`` (Parley flags every one by construction; the seed flags nothing).
- **not found**: the share of unanswerable questions answered "not in the documents" (for a
  generated answer: it says so in words such as "not in the documents", "cannot find").
- **ttft / total**: seconds from the question to the first piece and to the end of the answer,
  retrieval included (median), in this process.

The model is slow on two shared cores, so the generative and seed rows answer only the first
``--generative`` questions of each set (default 4); extractive answers all of them. The table
says how many each row answered. Do not tune to the dev set: it is one company.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import functools
import json
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus_questions import CORPUS
from bench.table import render
from parley.settings import Settings

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "sec10q-dev"
# The shipped default: what the gateway retrieves for an answer.
K = int(Settings.model_fields["retrieval_k"].default)
_DATE = re.compile(
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
    r"\s+\d{1,2},\s+\d{4}")
_NOT_FOUND = re.compile(r"not in the (?:provided )?documents|cannot find|can't find|could not find|"
                        r"no information|not (?:mentioned|provided|available)", re.IGNORECASE)
DEV_NONE = (
    "What was Apple's total net sales in fiscal 2031?",
    "Who is the chief marketing officer's spouse?",
    "What is the recipe for the company cafeteria's apple pie?",
    "How many employees work in the Antarctica office?",
    "What was the price of a Tesla Model 3 in 2023?",
    "What dividend did Microsoft pay in the quarter ended July 1, 2023?",
    "What is the weather forecast for Cupertino next week?",
    "How many goals did the company football team score last season?",
    "What was the revenue of the Vision Pro headset in Q1 2020?",
    "Which law firm represents Apple in its divorce proceedings?",
)


@dataclass(frozen=True)
class Item:
    question: str
    figures: tuple[str, ...] = ()  # normalised key figures, all needed
    phrases: tuple[str, ...] = ()  # or phrases, all needed
    answerable: bool = True
    graded: bool = True  # counted in "correct" (a feedback line without a reference is not)
    decoys: tuple[str, ...] = ()  # normalised figures of other columns: not in the first line


@dataclass(frozen=True)
class Chunk:
    document: str
    text: str
    context: str  # the document context the gateway passes on with a source ("" for the seed)
    unit: str | None = None  # the caption of the table the chunk continues (Source.unit)


@dataclass
class Outcome:
    text: str
    cited: bool
    unsupported: tuple[str, ...]
    flagged: tuple[str, ...]
    ttft: float
    total: float


@dataclass
class Row:
    pipeline: str
    questions: str
    outcomes: list[tuple[Item, Outcome]] = field(default_factory=list)


# --- question sets ----------------------------------------------------------------------------


def key_figures(reference: str) -> tuple[str, ...]:
    from inference_worker.extractive import figure

    text = _DATE.sub(" ", reference)
    found = {figure(m) for m in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}
    return tuple(sorted(f for f in found if len(f.replace(".", "")) >= 2
                        and not re.fullmatch(r"(?:19|20)\d\d", f) and f != "10"))


def dev_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    pdfs = {p.name: p.read_bytes() for p in sorted((EVAL / "docs").glob("*.pdf"))}
    items = []
    for row in csv.DictReader((EVAL / "qna.csv").open(encoding="utf-8")):
        reference = row["Answer"].split("SOURCE(S)")[0].strip()
        figures = key_figures(reference)
        if figures:
            items.append(Item(row["Question"], figures=figures, graded=len(reference) <= 400))
    return pdfs, items, [Item(q, answerable=False) for q in DEV_NONE]


def synthetic_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    from inference_worker.extractive import figure
    from tests.fixtures.documents import text_pdf
    from tests.fixtures.quarterlies import questions, reports, unanswerable

    docs = reports()
    pdfs = {r.filename: text_pdf([r.text]) for r in docs}
    items = []
    for i, q in enumerate(questions(docs)):
        if i % 3:  # one question of each kind per report would be 45: take a third, all kinds
            continue
        is_figure = all(re.fullmatch(r"[\d,.]+", e) for e in q.expected)
        items.append(Item(q.question, figures=tuple(figure(e) for e in q.expected))
                     if is_figure else Item(q.question, phrases=q.expected))
    return pdfs, items, [Item(q.question, answerable=False) for q in unanswerable()]


@functools.cache
def statement_files() -> dict[str, bytes]:
    """The statements' reports, every other one a DOCX: one dict for the three sets asked of
    them, so that :func:`run` indexes them once."""
    from tests.fixtures.statements import reports

    return {r.filename + (".docx" if i % 2 else ".pdf"): r.docx() if i % 2 else r.pdf()
            for i, r in enumerate(reports())}


def statements_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """Interim reports whose tables have four columns (quarter and year to date, this year and
    a year earlier) and a two-date balance sheet (tests/fixtures/statements.py), every other one
    a DOCX (tables as cells) and the rest PDFs: the figure must come from the asked column."""
    from inference_worker.extractive import figure
    from tests.fixtures.statements import questions, reports, unanswerable

    files = statement_files()
    items = []
    for q in questions(reports()):
        if all(re.fullmatch(r"[\d,.]+", e) for e in q.expected):
            items.append(Item(q.question, figures=tuple(figure(e) for e in q.expected),
                              decoys=tuple(figure(d) for d in q.decoys)))
        else:
            items.append(Item(q.question, phrases=q.expected))
    return files, items, [Item(q.question, answerable=False) for q in unanswerable()]


def comparisons_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """The statements' reports asked about two companies or two quarters at once
    (tests/fixtures/statements.py, ``comparisons``): a correct answer gives both figures. Not
    answerable: a comparison with a company no report is of (answered for the one that is, the
    other said to be missing)."""
    from inference_worker.extractive import figure
    from tests.fixtures.statements import comparisons, reports

    files = statement_files()
    items = [Item(q.question, figures=tuple(figure(e) for e in q.expected))
             for q in comparisons(reports())]
    return files, items, [Item("Compare Halvard Shipping's and Osprey Mining's revenue in "
                               "Q2 2025.", answerable=False)]


def two_parts_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """The statements' reports asked two questions in one, a figure and a cause
    (tests/fixtures/statements.py, ``two_parts``): correct when the answer holds both."""
    from inference_worker.extractive import figure
    from tests.fixtures.statements import reports, two_parts

    files = statement_files()
    items = []
    for q in two_parts(reports()):
        numeric = [e for e in q.expected if re.fullmatch(r"[\d,.]+", e)]
        items.append(Item(q.question, figures=tuple(figure(e) for e in numeric),
                          phrases=tuple(e for e in q.expected if e not in numeric)))
    return files, items, []


def buybacks_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """The statements' companies' share repurchases by trading day (tests/fixtures/statements.py,
    ``daily_pdf``/``daily_docx``, every other one a DOCX): a table "(in thousands, except per
    share amounts)" cut into several chunks, its caption in the first only. Asked the quarter's
    total and its last row's shares: the answer must give the count in full."""
    from tests.fixtures.statements import ASR, reports

    files, items = {}, []
    for i, r in enumerate(reports()):
        name = f"{r.filename}-buybacks"
        files[name + (".docx" if i % 2 else ".pdf")] = r.daily_docx() if i % 2 else r.daily_pdf()
        rows = dict((label, shares) for label, shares, _price in r.daily_repurchases())
        quarter = f"Q{r.quarter} {r.year}"
        for question, label in (
            (f"How many shares did {r.company} repurchase in total in {quarter}?", "Total"),
            (f"How many shares did {r.company} repurchase in the accelerated share repurchase "
             f"settlement in {quarter}?", ASR),
        ):
            full = int(rows[label].replace(",", "")) * 1000
            items.append(Item(question, figures=(str(full),)))
    return files, items, []


def handbooks_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """Everyday business documents of three fictional organisations (tests/fixtures/handbooks.py:
    handbooks, an IT guide, a manual, an FAQ, an expense workbook, security slides; DOCX, PDF,
    HTML, XLSX, PPTX), asked about mostly in the asker's words rather than the document's."""
    from tests.fixtures.handbooks import documents, questions, unanswerable

    items = [Item(q.text, phrases=q.expected) for q in questions()]
    return documents(), items, [Item(q.text, answerable=False) for q in unanswerable()]


def records_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """Fourteen records of kinds the other sets lack (an agreement, a data sheet, minutes, a
    price list, a deck, a postmortem, a trial report, a lease, a checklist, a help article, an
    email, clinic tables, a timetable, a travel policy; tests/fixtures/records.py), asked about
    mostly in other words than theirs."""
    from tests.fixtures.records import documents, questions, unanswerable

    items = [Item(q.text, phrases=q.expected) for q in questions()]
    return documents(), items, [Item(q.text, answerable=False) for q in unanswerable()]


def misspelt(question: str) -> str:
    """``question`` with a typist's slip in its longest lower-case word of 6 letters or more:
    the two letters in its middle swapped (where they are the same letter, one of them left
    out). A question without such a word is returned as it is."""
    words = [w for w in re.findall(r"\b[a-z]+\b", question) if len(w) >= 6]
    if not words:
        return question
    word = max(words, key=len)
    i = len(word) // 2 - 1
    slip = (word[:i] + word[i + 1] + word[i] + word[i + 2:] if word[i] != word[i + 1]
            else word[:i] + word[i + 1:])
    return re.sub(rf"\b{word}\b", slip, question, count=1)


def typos_set(
    of: tuple[dict[str, bytes], list[Item], list[Item]],
) -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """The questions of ``of`` (the same files, so the same index), each with one typo
    (:func:`misspelt`)."""
    files, items, none = of
    return (files, [dataclasses.replace(i, question=misspelt(i.question)) for i in items],
            [dataclasses.replace(i, question=misspelt(i.question)) for i in none])


def corpus_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """Real documents nobody on the project wrote (../shared/corpus: IRS instructions in three
    columns, a rig procedure, a course schedule, an OCRed diary, a data model, a contract
    notice), asked what their holder would ask (bench/corpus_questions.py, written without
    reading the answerer)."""
    from bench.corpus_questions import QUESTIONS, UNANSWERABLE, documents

    items = [Item(question, phrases=phrases) for _, question, phrases in QUESTIONS]
    return documents(), items, [Item(q, answerable=False) for q in UNANSWERABLE]


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Questions a new user asks of examples/ (the scanned memo is left out: this bench runs no OCR),
# with a phrase of the passage that answers; then questions none of them answers.
EXAMPLE_QUESTIONS = (
    ("What file types can Parley read?", "PowerPoint"),
    ("How do I add documents?", "parley ingest"),
    ("What is the default maximum upload size?", "104857600"),
    ("What happens when a PDF is encrypted?", "password"),
    ("What does the embed worker do?", "vectors"),
    ("Which setting chooses the OCR engine?", "PARLEY_OCR"),
    ("Where does a citation point in a spreadsheet?", "sheet name"),
    ("How do I start Parley locally?", "./dev up"),
    ("What happens if a worker is down?", "waits on the queue"),
    ("Where is the portal?", "8080"),
    ("Can Parley read scanned documents?", "OCR"),
    ("What is the default chat model?", "local"),
    ("How does KEDA scale the workers?", "length of its queue"),
    ("What is the local sign-in token?", "dev-token"),
    ("How do I stop Parley?", "Ctrl-C"),
)
EXAMPLE_NONE = (
    "What is the default answer mode?", "How do I delete a document?",
    "How many chunks does an embed batch hold?", "Who founded Parley?",
    "What does Parley cost per seat?", "What is the weather in Paris tomorrow?",
    "Which GPU does Parley need?", "How do I reset my password?",
)


def examples_set() -> tuple[dict[str, bytes], list[Item], list[Item]]:
    """The project's examples/ folder as the quick start's ``parley ingest examples`` uploads
    it (its README.md, an index of the other files, included), asked what a new user asks."""
    files = {p.name: p.read_bytes() for p in sorted(EXAMPLES.iterdir())
             if p.name != "scanned-memo.pdf"}
    items = [Item(q, phrases=(phrase,)) for q, phrase in EXAMPLE_QUESTIONS]
    return files, items, [Item(q, answerable=False) for q in EXAMPLE_NONE]


def feedback_set(path: Path) -> list[tuple[Item, list[Chunk]]]:
    """The evaluation set ``parley feedback export --json`` writes (docs/chat-protocol.md,
    Feedback): each question is answered again over the sources its rated answer was given.
    A line whose ``reference`` was filled in is graded by that reference's key figures; the
    others count for citations and unsupported figures only."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        reference = row.get("reference") or ""
        figures = key_figures(reference) if reference else ()
        item = Item(str(row["question"]), figures=figures, graded=bool(figures))
        chunks = [Chunk(str(s.get("document") or s.get("document_id") or "?"),
                        str(s.get("text") or ""), "", s.get("unit") or None)
                  for s in row.get("sources") or [] if s.get("text")]
        out.append((item, chunks))
    return out


# --- retrieval ------------------------------------------------------------------------------


class Index:
    """One pipeline's chunks and its ranking, exactly as ``bench retrieval`` measures them:
    Parley's (extraction, document context, chunking; the gateway Searcher's hybrid ranking with
    focus at the shipped fusion weights, over exact vectors) or the seed's (pypdf + splitter,
    dense only)."""

    def __init__(self, corpus: Any, ranker: Any, *, parley: bool) -> None:
        self.corpus = corpus
        self.ranker = ranker
        self.parley = parley
        self.records = {r.chunk_id: r for r in corpus.records}

    @classmethod
    async def of_parley(cls, pdfs: dict[str, bytes]) -> Index:
        from bench import retrieval
        from chat_gateway.search import DENSE_WEIGHT, LEXICAL_WEIGHT

        corpus = await retrieval.corpus(retrieval.parley_records(pdfs), seed=False)
        ranker = retrieval.hybrid((DENSE_WEIGHT, LEXICAL_WEIGHT), focused=True)
        return cls(corpus, ranker, parley=True)

    @classmethod
    async def of_seed(cls, pdfs: dict[str, bytes]) -> Index:
        from bench import retrieval

        corpus = await retrieval.corpus(retrieval.seed_records(pdfs), seed=True)
        return cls(corpus, retrieval.dense, parley=False)

    async def top(self, question: str, embedder: object) -> list[Chunk]:
        from chat_gateway.focus import expanded
        from chat_gateway.retrieval import context_of
        from parley.vectors.metadata import ChunkMeta

        # As the Searcher asks: abbreviations spelled out (Parley only; the seed asks as is).
        asked = expanded(question) if self.parley else question
        if self.parley:  # a misspelt word as the documents spell it, as the Searcher asks
            asked = self.corpus.index.respelled(asked)
        [vector] = await embedder.embed([asked])  # type: ignore[attr-defined]
        hits = self.ranker(self.corpus, question, np.asarray(vector, dtype=np.float32))[:K]
        return [
            Chunk(str(h.document_id), h.text,
                  context_of(self.records[h.chunk_id].metadata) if self.parley else "",
                  ChunkMeta.from_metadata(self.records[h.chunk_id].metadata).unit)
            for h in hits
        ]


def as_sources(chunks: Sequence[Chunk]) -> list[object]:
    from chat_gateway.prompt import snippet
    from parley.contracts import Source
    from parley.ids import ChunkId, DocumentId

    return [Source(n=n, chunk_id=ChunkId(f"c{n}"), document_id=DocumentId(c.document),
                   document=c.document, snippet=snippet(c.text), text=c.text, score=1.0,
                   context=c.context, unit=c.unit)
            for n, c in enumerate(chunks, start=1)]


# --- answering ------------------------------------------------------------------------------


async def timed(pieces: AsyncIterator[str], started: float) -> tuple[str, float, float]:
    parts: list[str] = []
    first = None
    async for piece in pieces:
        if first is None:
            first = time.perf_counter()
        parts.append(piece)
    end = time.perf_counter()
    return "".join(parts), (first or end) - started, end - started


async def extractive_answer(
    question: str, index: Index | list[Chunk], embedder: object, meaning: object | None = None
) -> Outcome:
    """The extractive answer over ``index``'s top chunks, or over given chunks (a feedback line's
    sources, as the user's answer was given them); with ``meaning`` (the inference worker's
    :class:`inference_worker.meaning.Meaning`), read as the worker reads it."""
    from inference_worker import extractive, grounding

    started = time.perf_counter()
    chunks = index if isinstance(index, list) else await index.top(question, embedder)
    sources = as_sources(chunks)
    answer = extractive.answer(question, extractive.numbered(sources),  # type: ignore[arg-type]
                               closeness=meaning)  # type: ignore[arg-type]

    async def pieces() -> AsyncIterator[str]:
        for piece in re.findall(r"\s*\S+", answer.text):
            yield piece

    text, ttft, total = await timed(pieces(), started)
    checked = grounding.check(text, sources, question=question)  # type: ignore[arg-type]
    return Outcome(checked.text, bool(checked.cited), checked.unsupported_numbers,
                   checked.unsupported_numbers, ttft, total)


async def generative_answer(
    question: str, index: Index, embedder: object, model: object, max_tokens: int,
    meaning: object | None = None,
) -> Outcome:
    from chat_gateway import prompt
    from inference_worker import extractive, grounding

    started = time.perf_counter()
    sources = as_sources(await index.top(question, embedder))
    found = extractive.answer(question, extractive.numbered(sources),  # type: ignore[arg-type]
                              closeness=meaning)  # type: ignore[arg-type]
    if not found.found:  # the worker's guard: no model call
        text, ttft, total = found.text, time.perf_counter() - started, time.perf_counter() - started
        attribute = False
    else:
        built = prompt.build(question, sources, [], context_tokens=2048,  # type: ignore[arg-type]
                             answer_tokens=max_tokens)
        stream = model.stream(list(built.messages), max_tokens=max_tokens,  # type: ignore[attr-defined]
                              temperature=0.0)
        text, ttft, total = await timed(stream, started)
        attribute = True
    checked = grounding.check(text, sources, question=question,  # type: ignore[arg-type]
                              attribute_uncited=attribute)
    return Outcome(checked.text, bool(checked.cited), checked.unsupported_numbers,
                   checked.unsupported_numbers, ttft, total)


SEED_PROMPT = ("Use the following pieces of context to answer the question at the end. If you "
               "don't know the answer, just say that you don't know.\n\n{context}\n\n"
               "Question: {question}\nHelpful Answer:")


async def seed_answer(
    question: str, index: Index, embedder: object, model: object, max_tokens: int
) -> Outcome:
    from inference_worker import grounding
    from parley.contracts import ChatMessage

    started = time.perf_counter()
    chunks = await index.top(question, embedder)
    content = SEED_PROMPT.format(context="\n\n".join(c.text for c in chunks), question=question)
    stream = model.stream([ChatMessage(role="user", content=content)],  # type: ignore[attr-defined]
                          max_tokens=max_tokens, temperature=0.0)
    text, ttft, total = await timed(stream, started)
    # The seed cites nothing: its figures are checked against all five chunks it was given.
    sources = as_sources(chunks)
    allowed: set[str] = set()
    for s in sources:
        allowed |= grounding.source_figures(s.text)  # type: ignore[attr-defined]
    allowed |= grounding.source_figures(question)
    unsupported = tuple(w for w, v in grounding.figures(text) if v not in allowed)
    cited = bool(re.search(r"\[\d+\]", text))
    return Outcome(text, cited, unsupported, (), ttft, total)


# --- scoring --------------------------------------------------------------------------------


def _flat(text: str) -> str:
    """Lower case, whitespace runs as one space: a phrase cut by a line break is still there."""
    return " ".join(text.lower().split())


def correct(item: Item, text: str) -> bool:
    from inference_worker.extractive import numbers

    have = set(numbers(text))
    lead = set(numbers(text.strip().split("\n", 1)[0]))
    return (all(f in have for f in item.figures)
            and all(_flat(p) in _flat(text) for p in item.phrases)
            and not any(d in lead for d in item.decoys))


def misses(row: Row) -> list[str]:
    """What went wrong in ``row``: each answer graded wrong (or a "not found" question answered),
    with what was expected."""
    out = []
    for item, outcome in row.outcomes:
        found = bool(_NOT_FOUND.search(outcome.text))
        if item.answerable and item.graded and not correct(item, outcome.text):
            want = ", ".join(item.figures + item.phrases)
        elif not item.answerable and not found:
            want = "not in the documents"
        else:
            continue
        out.append(f"--- {row.questions}: {item.question}\n    expected: {want}\n    "
                   + outcome.text.replace("\n", "\n    "))
    return out


def summary(row: Row) -> list[object]:
    from inference_worker.extractive import numbers

    answerable = [(i, o) for i, o in row.outcomes if i.answerable and i.graded]
    none = [(i, o) for i, o in row.outcomes if not i.answerable]
    n = len(row.outcomes)

    def share(count: int, total: int) -> str:
        return f"{count / total:.2f} ({count}/{total})" if total else "-"

    with_figures = [(i, o) for i, o in row.outcomes if i.answerable and i.figures]
    held = sum(len(set(i.figures) & set(numbers(o.text))) for i, o in with_figures)
    unsupported = sum(bool(o.unsupported) for _, o in row.outcomes)
    unflagged = sum(len(set(o.unsupported) - set(o.flagged)) for _, o in row.outcomes)
    return [
        row.pipeline, row.questions,
        share(sum(correct(i, o.text) for i, o in answerable), len(answerable)),
        share(held, sum(len(i.figures) for i, _ in with_figures)),
        share(sum(o.cited for _, o in row.outcomes), n),
        share(unsupported, n), unflagged,
        share(sum(bool(_NOT_FOUND.search(o.text)) for _, o in none), len(none)),
        statistics.median(o.ttft for _, o in row.outcomes) if n else "-",
        statistics.median(o.total for _, o in row.outcomes) if n else "-",
    ]


async def run(
    generative: int, max_tokens: int, show: Callable[[str], None], feedback: Path | None = None,
    wrong: bool = False, only: Sequence[str] = (), meaning: bool = True,
) -> str:
    from inference_worker.local import LocalChatModel
    from inference_worker.meaning import Meaning
    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig
    from parley.errors import ParleyError

    sets: list[tuple[str, tuple[dict[str, bytes], list[Item], list[Item]]]] = []
    notes = []
    if EVAL.exists():
        sets.append(("dev", dev_set()))
    else:
        notes.append(f"dev: skipped: {EVAL} is absent (../shared is beside the project only "
                     "in CI and development)")
    if CORPUS.exists():
        sets.append(("corpus", corpus_set()))
    else:
        notes.append(f"corpus: skipped: {CORPUS} is absent")
    sets.append(("synthetic", synthetic_set()))
    sets.append(("statements", statements_set()))
    sets.append(("comparisons", comparisons_set()))
    sets.append(("two-parts", two_parts_set()))
    sets.append(("buybacks", buybacks_set()))
    handbooks = handbooks_set()
    sets.append(("handbooks", handbooks))
    sets.append(("typos", typos_set(handbooks)))
    sets.append(("examples", examples_set()))
    sets.append(("records", records_set()))
    if only:
        sets = [s for s in sets if s[0] in only]
    embedder = LocalEmbedder()
    # The inference worker's second reading of a question (its own embedder on one thread).
    second = LocalEmbedder(LocalEmbedderConfig(threads=1)) if meaning else None
    reader = Meaning(second) if second is not None else None
    model: object | None = None
    if generative > 0:  # the model takes a while to load: not for extractive rows alone
        try:
            model = LocalChatModel(threads=1)
            model.load()
        except ParleyError as exc:
            notes.append(f"generative and seed rows skipped: {exc}")
            model = None
    rows: list[Row] = []
    try:
        if feedback is not None:
            row = Row("extractive", f"feedback ({feedback.name})")
            for item, chunks in feedback_set(feedback):
                row.outcomes.append((item, await extractive_answer(item.question, chunks,
                                                                   embedder, reader)))
            rows.append(row)
            show("feedback: extractive done")
        indexes: dict[int, tuple[Index, Index]] = {}  # sets asked of the same files share them
        for name, (pdfs, items, none) in sets:
            if id(pdfs) not in indexes:
                indexes[id(pdfs)] = (await Index.of_parley(pdfs), await Index.of_seed(pdfs))
            parley, seed = indexes[id(pdfs)]
            for label, chosen in ((name, items), (f"{name}-none", none)):
                row = Row("extractive", label)
                for item in chosen:
                    row.outcomes.append((item, await extractive_answer(item.question, parley,
                                                                       embedder, reader)))
                rows.append(row)
                show(f"{label}: extractive done")
                if wrong:
                    for line in misses(row):
                        show(line)
                if model is None:
                    continue
                for pipeline in ("generative", "seed"):
                    row = Row(pipeline, label)
                    for item in chosen[:generative]:
                        if pipeline == "generative":
                            outcome = await generative_answer(item.question, parley, embedder,
                                                              model, max_tokens, reader)
                        else:
                            outcome = await seed_answer(item.question, seed, embedder, model,
                                                        max_tokens)
                        row.outcomes.append((item, outcome))
                    rows.append(row)
                    show(f"{label}: {pipeline} done")
    finally:
        await embedder.close()
        if second is not None:
            await second.close()
        if model is not None:
            await model.close()  # type: ignore[attr-defined]
    table = render(
        f"Answers (top {K}, same embedder; generative/seed: first {generative} of each set, "
        f"max {max_tokens} tokens)",
        ["pipeline", "questions", "correct", "figures", "cited", "unsupported", "unflagged",
         "not found", "ttft s", "total s"],
        [summary(r) for r in rows if r.outcomes],
    )
    return table + "".join(f"{n}\n" for n in notes)


def main(argv: Sequence[str] = ()) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench answers")
    parser.add_argument("--generative", type=int, default=4,
                        help="questions per set answered by the model rows (default 4)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--wrong", action="store_true",
                        help="print each wrong extractive answer with what was expected")
    parser.add_argument("--feedback", type=Path, default=None,
                        help="also answer the questions of a `parley feedback export --json` file")
    parser.add_argument("--sets", default="",
                        help="comma-separated question sets to run (default: all)")
    parser.add_argument("--meaning", choices=("on", "off"), default="on",
                        help="the extractive answerer reads questions also by the sentence "
                        "embedder, as the inference worker does (default on)")
    args = parser.parse_args(list(argv))
    only = [s for s in args.sets.split(",") if s]
    return asyncio.run(run(args.generative, args.max_tokens,
                           lambda s: print(s, file=sys.stderr, flush=True), args.feedback,
                           args.wrong, only, args.meaning == "on"))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
