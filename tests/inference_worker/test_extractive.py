"""The extractive answerer on generated quarterly reports of several companies and quarters: the
right report's passage, quoted with its number, among look-alike reports; "not in the
documents" when no report holds the answer."""

from __future__ import annotations

import random
import re

import pytest

from inference_worker import extractive, tables
from inference_worker.extractive import (
    NOT_FOUND,
    Answer,
    Numbered,
    answer,
    numbered,
    period_key,
    terms,
    units,
)
from tests.fixtures import filings, statements
from tests.fixtures.quarterlies import Question, Report, questions, reports, unanswerable

DOCS = reports()
# "Net sales (Three Months Ended ...): $7,191", and where the table declares its unit,
# " million ($7,191,000,000)" after it.
FIGURE_LINE = re.compile(
    r"(.+?) \((.+)\): (\S+)(?: (?:thousand|million|billion)(?: shares)? \(\S+\))?")


def retrieved(question: Question, seed: int) -> list[Numbered]:
    """Five look-alike reports as a search could return them: the one that answers (if any)
    somewhere among reports of the same company and of the same quarter, in a shuffled order."""
    rng = random.Random(seed)
    right = next((r for r in DOCS if r.filename == question.filename), None)
    others = [r for r in DOCS if r is not right]
    rng.shuffle(others)
    chosen: list[Report] = others[:4] if right is None else [right, *others[:4]]
    rng.shuffle(chosen)
    # The title is what the document says about itself: its first lines.
    return [Numbered(n, " ".join(r.text.splitlines()[:3]), r.text)
            for n, r in enumerate(chosen, start=1)]


@pytest.mark.parametrize("index", range(len(questions(DOCS))))
def test_answers_quote_the_right_report_with_its_number(index: int) -> None:
    question = questions(DOCS)[index]
    sources = retrieved(question, seed=index)
    result = answer(question.question, sources)
    assert result.found, result.text
    right = next(s.n for s in sources if question.expected[0] in s.text)
    first_line = result.text.splitlines()[0]
    assert all(e in first_line for e in question.expected), result.text
    assert first_line.endswith(f"[{right}]")
    # Every line is a quote of one source, or a figure of a quoted row with its labels; cited.
    for line in result.text.splitlines():
        n = int(line.rsplit("[", 1)[1].rstrip("]"))
        said = " ".join(sources[n - 1].text.split())
        figure_line = FIGURE_LINE.fullmatch(line.rsplit(" [", 1)[0])
        if figure_line:
            label, column, value = figure_line.groups()
            assert label in said and all(p in said for p in column.split())
            assert value.lstrip("$").rstrip("%") in said
            continue
        quoted = line.rsplit(" [", 1)[0].split(" (columns: ")[0]
        assert " ".join(quoted.split()) in said


@pytest.mark.parametrize("question", unanswerable(), ids=lambda q: q.question[:40])
def test_questions_no_report_answers_are_not_in_the_documents(question: Question) -> None:
    sources = retrieved(question, seed=len(question.question))
    result = answer(question.question, sources)
    assert not result.found, result.text
    assert NOT_FOUND in result.text
    assert result.cited == (1, 2, 3)  # the closest sources, named
    assert "[1]" in result.text and "[3]" in result.text


def test_table_rows_are_quoted_with_their_column_headings() -> None:
    report = DOCS[0]
    rows = [u for u in units(Numbered(1, report.filename, report.text), 0) if u.is_row]
    assert rows[0].text.startswith("Net sales")
    assert report.period_end in rows[0].columns
    assert "Statements of Operations" in rows[0].context  # the caption: matched, not quoted
    result = answer(f"What were {report.company}'s net sales in Q1 2024?",
                    [Numbered(1, report.filename, report.text)])
    assert f"(columns: Three Months Ended {report.period_end}" in result.text


@pytest.mark.parametrize("question", [
    "Wie hoch war der Umsatz von Kestrel Avionics im zweiten Quartal 2024?",
    "凯斯特雷尔航空电子公司2024年第二季度的净销售额是多少？",
])
def test_a_question_in_another_language_gets_the_closest_sources(question: str) -> None:
    result = answer(question, retrieved(questions(DOCS)[5], 1))
    assert not result.found and NOT_FOUND in result.text and result.cited == (1, 2, 3)


def test_no_sources_or_no_content_words_is_not_found() -> None:
    assert not answer("What were net sales?", []).found
    assert not answer("what is it?", retrieved(questions(DOCS)[0], 0)).found


def test_terms_and_periods() -> None:
    assert terms("Apple's revenues in Q3") == terms("apple sales in q3")
    assert "research" in terms("R&D spending") and "research" in terms("research and development")
    assert period_key("Kestrel Q2 2024 report") == (2024, 6)
    assert period_key("quarter ended July 1, 2023") == (2023, 7)
    assert period_key("no date") == (0, 0)


def test_terms_phrases_and_cache() -> None:
    # "three months" becomes "quarter" before the ordinals are read ("third quarter" -> q3).
    assert terms("the Third Three-Months ended") == ["q3", "quarter", "end"]
    assert terms("twelve months of R&D in the fourth quarter") == [
        "year", "research", "q4", "quarter"]
    # terms are cached by text: a caller changing its list does not change the next caller's.
    first = terms("net sales rose")
    first.append("changed")
    assert terms("net sales rose") == ["net", "sale", "chang"]


# --- tables with several columns: the right cell of the right row -------------------------------

STATEMENTS = statements.reports()
RENDERINGS = ("text", "cells")


def statement_sources(question: statements.Question, rendering: str,
                      seed: int) -> list[Numbered]:
    """The report that answers (if any) among four look-alikes, shuffled; each rendered as PDF
    text or as cell-separated rows, its title what it says about itself (its first two lines)."""
    rng = random.Random(seed)
    right = next((r for r in STATEMENTS if r.filename == question.filename), None)
    others = [r for r in STATEMENTS if r is not right]
    rng.shuffle(others)
    chosen = others[:4] if right is None else [right, *others[:4]]
    rng.shuffle(chosen)
    texts = [r.text() if rendering == "text" else r.cells() for r in chosen]
    return [Numbered(n, " ".join(t.splitlines()[:2]), t) for n, t in enumerate(texts, start=1)]


STATEMENT_CASES = [(q, how) for q in statements.questions(STATEMENTS) for how in RENDERINGS]


@pytest.mark.parametrize(("question", "rendering"), STATEMENT_CASES,
                         ids=[f"{how}-{q.question[:50]}" for q, how in STATEMENT_CASES])
def test_the_figure_of_the_asked_column_leads_the_answer(
        question: statements.Question, rendering: str) -> None:
    sources = statement_sources(question, rendering, seed=len(question.question))
    result = answer(question.question, sources)
    assert result.found, result.text
    lines = result.text.splitlines()
    report = next(r for r in STATEMENTS if r.filename == question.filename)
    right = next(s.n for s in sources if s.title.startswith(report.company)
                 and f"(Q{report.quarter} {report.year})" in s.title)
    # The direct answer: the asked figure, from the right report, and no other column's.
    lead = lines[0]
    assert question.expected[0] in lead or any(
        e in lead for e in question.expected), result.text
    assert lead.endswith(f"[{right}]"), result.text
    assert not any(d in lead for d in question.decoys), result.text
    assert all(e in result.text for e in question.expected), result.text


TWO_PART_CASES = [(q, how) for q in statements.two_parts(STATEMENTS) for how in RENDERINGS]


@pytest.mark.parametrize(("question", "rendering"), TWO_PART_CASES,
                         ids=[f"{how}-{q.question[:60]}" for q, how in TWO_PART_CASES])
def test_two_questions_in_one_are_both_answered(
        question: statements.Question, rendering: str) -> None:
    # "How much did X spend on R&D in Q2 2025, and why did its revenue change?": the cause
    # alone answered half of it.
    result = answer(question.question, statement_sources(question, rendering, seed=7))
    flat = " ".join(result.text.split())
    assert all(e in flat for e in question.expected), result.text


def test_the_second_of_two_questions_is_asked_with_the_firsts_names_and_periods() -> None:
    # Read as a whole for its cause, the question got the R&D sentence; the revenue's cause is
    # what its second part asks, "why did its revenue change? Tidewater Robotics Q3 2025".
    sources = sources_of(
        "Interim report · Tidewater Robotics Group · Q3 2025", "tidewater.docx",
        "Research and development expense reflects continued investment in new products and the "
        "hiring of engineers. Selling expense rose with the new sales offices.",
        "Revenue decreased during the quarter compared with the same quarter a year earlier, "
        "due primarily to orders from automotive plants in Mexico.",
        "Condensed statement of operations (in thousands)\nItem | Three Months Ended September "
        "27, 2025 | Three Months Ended September 28, 2024\nRevenue | 64,244 | 80,106\n"
        "Research and development | 68,155 | 34,446")
    result = answer("How much did Tidewater Robotics spend on research and development in Q3 "
                    "2025, and why did its revenue change?", sources)
    assert "Research and development (Three Months Ended September 27, 2025): 68,155" \
        in result.text, result.text
    assert "due primarily to orders from automotive plants in Mexico. [2]" in result.text
    # A second part whose own words no passage holds adds nothing: the names and periods alone
    # would cover any passage of the report.
    scale = answer("How much did Tidewater Robotics spend on research and development in Q3 "
                   "2025, and what was the scale?", sources)
    assert "Revenue" not in scale.text and "Mexico" not in scale.text, scale.text


@pytest.mark.parametrize("rendering", RENDERINGS)
@pytest.mark.parametrize("question", statements.unanswerable(), ids=lambda q: q.question[:40])
def test_statement_questions_no_report_answers_are_not_found(
        question: statements.Question, rendering: str) -> None:
    result = answer(question.question, statement_sources(question, rendering, seed=3))
    assert not result.found and NOT_FOUND in result.text, result.text


def test_a_figure_line_names_its_row_and_column_and_quotes_the_row() -> None:
    report = STATEMENTS[1]
    end = report.end
    result = answer(f"What was {report.company}'s net income for the nine months ended {end}?",
                    [Numbered(1, report.company, report.text())])
    lead, quote = result.text.splitlines()[:2]
    figure = report.operations["Net income"][2]
    # The statement is "(in thousands)": the figure in thousands, then in full.
    assert lead == (f"Net income (Nine Months Ended {end}): ${figure:,} thousand "
                    f"(${figure * 1000:,}) [1]")
    assert quote.startswith("Net income $ ") and "(columns: Three Months Ended Nine Months" in quote


def test_cell_rows_are_read_and_a_running_footer_is_not() -> None:
    text = "\n".join([
        "Warehouse stock",
        "Warehouse | Pallets | Forklifts",
        "Zephyr | 4,812 | 17",
        "Borealis | 3,120 | 9",
        "Northwind Traders | Annual report 2024 | 17",
    ])
    got = units(Numbered(1, "stock.docx", text), 0)
    assert [u.text for u in got if u.is_row] == ["Zephyr | 4,812 | 17", "Borealis | 3,120 | 9"]
    result = answer("How many pallets are in the Borealis warehouse?",
                    [Numbered(1, "stock.docx", text)])
    assert result.text.splitlines()[0] == "Borealis (Pallets): 3,120 [1]"


def test_a_label_that_says_more_than_the_question_loses_to_one_that_says_it() -> None:
    text = "\n".join([
        "Operating expenses were as follows (in millions):",
        "Three Months Ended",
        "March 31, 2025",
        "March 30, 2024",
        "Research and development $ 7,709 $ 6,306",
        "Percentage of total net sales 7 % 5 %",
        "Total operating expenses $ 14,316 $ 12,755",
        "Percentage of total net sales 12 % 10 %",
        "",
        "Statements of operations (in millions)",
        "Three Months Ended",
        "March 31, 2025",
        "March 30, 2024",
        "Total net sales 117,154 123,945",
        "Total cost of sales 66,822 69,702",
    ])
    result = answer("How did operating expenses compare to revenue in the quarter ended "
                    "March 31, 2025?", [Numbered(1, "Acme 10-Q", text)])
    assert result.text.splitlines()[0].startswith("Total operating expenses (Three Months Ended "
                                                  "March 31, 2025): $14,316")
    assert ("Total net sales (Three Months Ended March 31, 2025): 117,154 million "
            "(117,154,000,000) [1]") in result.text
    assert "Percentage" not in result.text


def test_a_share_is_worked_out_from_two_rows_and_checks() -> None:
    from inference_worker import grounding
    from parley.contracts import Source
    from parley.ids import ChunkId, DocumentId

    text = "\n".join([
        "Net sales by category (in millions):",
        "Three Months Ended",
        "July 1, 2023",
        "June 25, 2022",
        "Products $ 60,584 $ 63,355",
        "Services 21,213 19,604",
        "Total net sales $ 81,797 $ 82,959",
    ])
    question = "What percentage of total net sales did Services contribute in Q3 2023?"
    result = answer(question, [Numbered(1, "Acme Q3 2023", text)])
    first = result.text.splitlines()[0]
    assert first == ("Services / Total net sales (Three Months Ended July 1, 2023): "
                     "21,213 / 81,797 × 100 = 25.93% [1]"), result.text
    source = Source(n=1, chunk_id=ChunkId("c1"), document_id=DocumentId("d"), document="d",
                    snippet="", text=text, score=1.0)
    assert grounding.check(result.text, [source], question=question).unsupported_numbers == ()
    wrong = first.replace("25.93", "27.93")
    assert grounding.check(wrong, [source]).unsupported_numbers == ("100", "27.93%")


def test_spreadsheet_rows_name_their_columns() -> None:
    from ingest_worker.extract.dispatch import extract
    from tests.fixtures.documents import xlsx

    data = xlsx({"Stock": [["Warehouse", "Pallets", "Forklifts"], ["Zephyr", 4812, 17],
                           ["Borealis", 3120, 9]]})
    text = "\n".join(b.text for b in extract(data, "s.xlsx", max_pages=5, max_bytes=10**7).blocks)
    sources = [Numbered(1, "stock.xlsx", text)]
    assert [u.row.label for u in units(sources[0], 0) if u.row] == ["Zephyr", "Borealis"]
    result = answer("How many forklifts does the Zephyr warehouse have?", sources)
    assert result.text.splitlines()[0] == "Zephyr (Forklifts): 17 [1]"


def test_a_spreadsheet_of_text_rows_is_not_read_under_its_first_row() -> None:
    from ingest_worker.extract.dispatch import extract
    from tests.fixtures.documents import xlsx

    data = xlsx({"Settings": [
        ["Setting", "Default", "What it does"],
        ["PARLEY_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for queues and status"],
        ["PARLEY_CHUNK_TOKENS", 200, "the size of a chunk in tokens"],
        ["PARLEY_MAX_UPLOAD_BYTES", 104857600, "the largest file the portal accepts"],
    ]})
    text = "\n".join(b.text for b in extract(data, "s.xlsx", max_pages=5, max_bytes=10**7).blocks)
    result = answer("What is the largest file the portal accepts by default?",
                    [Numbered(1, "settings.xlsx", text)])
    first = result.text.splitlines()[0]
    assert "PARLEY_MAX_UPLOAD_BYTES" in first and "104857600" in first, result.text
    assert "PARLEY_REDIS_URL" not in result.text  # the first row is not every row's heading
    # "maximum" is what a setting's name abbreviates ("MAX"): the size of a chunk is not it.
    result = answer("What is the default maximum upload size?",
                    [Numbered(1, "settings.xlsx", text)])
    assert "PARLEY_MAX_UPLOAD_BYTES" in result.text.splitlines()[0], result.text


# --- another layout: one column, running footers, fiscal years that are not calendar years -----

FILINGS = filings.reports()


def filing_sources(chosen: list[filings.Report]) -> list[Numbered]:
    """``chosen`` reports as a search returns them, in that order, titled as their context."""
    return [Numbered(n, f"{r.company} Form 10-Q {r.label} {r.ended}", "\n".join(r.pages()))
            for n, r in enumerate(chosen, start=1)]


@pytest.mark.parametrize("index", range(len(filings.questions(FILINGS))))
def test_filings_are_answered_with_the_figure_or_reason_first(index: int) -> None:
    question = filings.questions(FILINGS)[index]
    rng = random.Random(index)
    others = [r for r in FILINGS if r not in question.sources]
    rng.shuffle(others)
    chosen = [*question.sources, *others[: max(0, 5 - len(question.sources))]]
    rng.shuffle(chosen)
    sources = filing_sources(chosen)
    result = answer(question.text, sources)
    if question.only:  # "from Q1 2024 to Q3 2024", "A's and B's": each side, in that order
        at = [result.text.find(f) for f in question.each]
        assert -1 not in at and at == sorted(at), result.text
        return
    assert question.answer in result.text.splitlines()[0], result.text
    if len(question.sources) > 1:  # "over the reported quarters": one line a quarter, latest first
        leads = [line for line in result.text.splitlines() if "):" in line]
        assert len(leads) == len(question.sources), result.text
        company = question.sources[0].short
        assert all(company in s.title for s in sources if f"[{s.n}]" in result.text)


def test_no_share_is_worked_out_from_rows_whose_columns_are_unknown() -> None:
    # A chunk cut inside a table: its rows without the headings that say which column is which.
    text = "Products $ 60,584 $ 63,355\nServices 21,213 19,604\nTotal net sales $ 81,797 $ 82,959"
    result = answer("What percentage of total net sales did Services contribute?",
                    [Numbered(1, "Acme Q3 2023", text)])
    assert result.found and "×" not in result.text, result.text


# --- questions for a cause; tables that declare their unit --------------------------------------

CAUSES = "\n".join([
    "Condensed Consolidated Statements of Operations (In millions)",
    "Three Months Ended",
    "April 5, 2025",
    "March 30, 2024",
    "Net sales $ 64,120 $ 66,530",
    "Operating income 14,810 15,990",
    "Net income $ 11,260 $ 12,470",
    "",
    "Net income is presented after the provision for income taxes for the second quarter of "
    "2025 and the second quarter of 2024.",
    "Total net sales decreased 4% or $2.4 billion during the second quarter of 2025 compared to "
    "the same quarter in 2024, due primarily to lower sales of tablets.",
    "The company's net income per share is computed on the weighted-average shares outstanding.",
])


def test_a_question_for_a_driver_is_answered_by_causal_wording() -> None:
    # No passage says "driver": the sentence saying why sales moved answers it, not the rows
    # that only name net income, and not "not in the documents".
    result = answer("In the second quarter of 2025, what was the primary driver behind the change "
                    "in Acme's net income?", [Numbered(1, "Acme Corp Form 10-Q Q2 2025", CAUSES)])
    assert result.found, result.text
    assert result.text.splitlines()[0].startswith("Total net sales decreased 4% or $2.4 billion")


@pytest.mark.parametrize("question", [
    "What factors contributed to the decline in Acme's net sales in the second quarter of 2025?",
    "Why did Acme's net sales fall in Q2 2025?",
    "What drove the change in Acme's net sales in the second quarter of 2025?",
])
def test_questions_for_a_cause_worded_several_ways(question: str) -> None:
    result = answer(question, [Numbered(1, "Acme Corp Form 10-Q Q2 2025", CAUSES)])
    assert "due primarily to lower sales of tablets" in result.text.splitlines()[0], result.text


REPURCHASES = "\n".join([
    "Share repurchase activity during the quarter was as follows (in millions, except number of "
    "shares, which are reflected in thousands, and per share amounts):",
    "Periods Total Number of Shares Purchased Average Price Paid Per Share",
    "Total shares repurchased 48,215 $ 171.20",
    "",
    "The following table shows the Company's other income for the quarter:",
    "Three Months Ended",
    "April 5, 2025",
    "Interest income 2,815",
])


def test_a_figure_of_a_table_in_thousands_is_given_in_full() -> None:
    source = Numbered(1, "Acme Corp Form 10-Q Q2 2025", REPURCHASES)
    rows = {u.row.label: u for u in units(source, 0) if u.row is not None}
    assert rows["Total shares repurchased"].scale == tables.Scale("million", "thousand")
    # A later table that declares no unit has none: the first table's is not carried over.
    assert rows["Interest income"].scale is None
    result = answer("How many shares did Acme repurchase in total during the quarter?", [source])
    # The row's columns are unknown: it is quoted, its figures in full where their unit is
    # told (shares in thousands; a price to the cent is not scaled).
    quoted = "Total shares repurchased 48,215 $ 171.20 (in full: 48,215,000 shares) [1]"
    assert quoted in result.text, result.text
    income = answer("What was Acme's interest income in the quarter ended April 5, 2025?",
                    [source])
    assert income.text.splitlines()[0] == "Interest income (Three Months Ended April 5, 2025): " \
        "2,815 [1]"


def test_a_figure_said_to_have_moved_against_another_period_is_causal_wording() -> None:
    # No "due to": the sentence saying that sales fell against the year before still explains.
    text = CAUSES.replace(", due primarily to lower sales of tablets.", ".")
    result = answer("In the second quarter of 2025, what was the primary driver behind the change "
                    "in Acme's net income?", [Numbered(1, "Acme Corp Form 10-Q Q2 2025", text)])
    assert result.text.splitlines()[0].startswith("Total net sales decreased 4% or $2.4 billion")


# --- a table cut into chunks: its caption's unit in the chunks that continue it ---------------


@pytest.mark.parametrize("kind", ["pdf", "docx"])
def test_a_row_of_a_continued_table_is_given_in_full_in_its_captions_unit(kind: str) -> None:
    """A generated report whose share repurchase table, "(in thousands, except per share
    amounts)", runs over several chunks: its "Total" row is in a chunk without the caption.
    Extracted and chunked as the workers do, each chunk a source with the caption it carries,
    the answer gives the total in full, from that chunk, and grounding holds the full figure."""
    from inference_worker.grounding import check
    from ingest_worker.chunking import chunk
    from ingest_worker.extract.dispatch import extract
    from parley.contracts import Source
    from parley.embedder.local import MiniLMTokenizer
    from parley.settings import Settings

    report = STATEMENTS[0]
    data = report.daily_pdf() if kind == "pdf" else report.daily_docx()
    settings = Settings()
    drafts = chunk(extract(data, f"buybacks.{kind}", max_pages=10, max_bytes=10**7).blocks,
                   tokenizer=MiniLMTokenizer(), max_tokens=settings.chunk_tokens,
                   overlap_tokens=settings.chunk_overlap_tokens)
    shares = report.repurchased[0]
    total = next(d for d in drafts if f"Total{' |' if kind == 'docx' else ''} {shares:,}" in d.text)
    assert "in thousands" not in total.text and total.unit is not None, total
    sources = [Source(n=n, chunk_id=f"c{n}", document_id="d", document=f"buybacks.{kind}",
                      snippet="", text=d.text, score=1.0, unit=d.unit,
                      context=f"{report.company} Group · Q{report.quarter} {report.year}")
               for n, d in enumerate(drafts, start=1)]
    question = (f"How many shares did {report.company} repurchase in total in "
                f"Q{report.quarter} {report.year}?")
    result = answer(question, numbered(sources))
    lead = result.text.splitlines()[0]
    assert f"{shares * 1000:,}" in lead and lead.endswith(f"[{total.ordinal + 1}]"), result.text
    assert check(result.text, sources, question=question).unsupported_numbers == ()
    # Without the caption it carries, the chunk cannot say what its figures count.
    bare = [s.model_copy(update={"unit": None}) for s in sources]
    assert f"{shares * 1000:,}" not in answer(question, numbered(bare)).text


def test_a_source_whose_title_names_the_subject_is_not_put_last_for_it() -> None:
    # "workers" is in the first source's title (the slide's heading); the second source repeats
    # "workers" in a sentence that does not answer. The row that answers comes first.
    slide = Numbered(1, "architecture.pptx slide 2 · The workers", "\n".join([
        "Part | What it does",
        "Ingest worker | extracts text and cuts it into chunks",
        "Embed worker | turns chunks into vectors and stores them in Chroma",
    ]))
    guide = Numbered(2, "getting-started.md § Running it",
                     "It starts Redis, a Chroma server, the ingest, embed and inference workers "
                     "and the chat gateway.")
    result = answer("What does the embed worker do?", [slide, guide])
    assert result.text.splitlines()[0] == (
        "Embed worker | turns chunks into vectors and stores them in Chroma [1]"), result.text


def test_a_short_definition_is_a_passage_with_the_sentence_after_it() -> None:
    """A list of reasons written "reason: short definition. What to do." (a failure-reasons
    page, a glossary): the short sentence is kept, joined to the next, not dropped as too
    short to be a passage."""
    text = (
        "Why a document can fail to become searchable\n\n"
        "encrypted: the file is password-protected. Upload it again without a password.\n\n"
        "malformed: the file is damaged. Save it again from the application that made it.\n\n"
        "too_large: the file, or what it unpacks to, is over the size limit.\n"
    )
    source = Numbered(1, "failure-reasons.txt", text)
    said = [u.text for u in units(source, 0)]
    assert ("encrypted: the file is password-protected. Upload it again without a password."
            in said)
    assert "malformed: the file is damaged. Save it again from the application that made it." \
        in said
    result = answer("What should I do with an encrypted file?", [source])
    assert result.found and "password-protected" in result.text.splitlines()[0], result.text


def test_a_share_row_does_not_answer_for_the_figure_it_is_a_share_of() -> None:
    """"Percentage of total net sales 7 %" under an expense is that expense's share, not the
    net sales: a question about operating expenses and revenue gets the "Total net sales" row
    of the next source, unless it asks for a percentage."""
    expenses = Numbered(1, "Q1 2023 Form 10-Q", (
        "Operating expenses for the three months ended December 31, 2022 were as follows "
        "(dollars in millions):\n"
        "Three Months Ended\nDecember 31,\n2022\nDecember 25,\n2021\n"
        "Research and development $ 7,709 $ 6,306\n"
        "Percentage of total net sales 7 % 5 %\n"
        "Selling, general and administrative $ 6,607 $ 6,449\n"
        "Percentage of total net sales 6 % 5 %\n"
        "Total operating expenses $ 14,316 $ 12,755\n"
        "Percentage of total net sales 12 % 10 %\n"))
    others = [Numbered(n, "Q1 2023 Form 10-Q", text) for n, text in (
        (2, "The Company's effective tax rate for the first quarter was 15.8%, lower than the "
            "statutory federal rate due to foreign earnings."),
        (3, "The Company had cash and marketable securities of $165.0 billion and total debt of "
            "$111.8 billion at the end of the quarter."),
        (4, "The Company declared a cash dividend of $0.23 per share, payable on February 16."),
    )]
    sales = Numbered(5, "Q1 2023 Form 10-Q", (
        "The following table shows net sales by category (dollars in millions):\n"
        "Three Months Ended\nDecember 31,\n2022\nDecember 25,\n2021\n"
        "iPhone $ 65,775 $ 71,628\n"
        "Services 20,766 19,516\n"
        "Total net sales $ 117,154 $ 123,945\n"))
    asked = ("How did the operating expenses for Q1 2023 compare to its revenue for the same "
             "quarter?")
    result = answer(asked, [expenses, *others, sales])
    assert result.found and "14,316" in result.text and "117,154" in result.text, result.text
    share = answer("What percentage of total net sales was research and development?",
                   [expenses, *others, sales])
    assert "7 %" in share.text.splitlines()[0] or "7%" in share.text.splitlines()[0], share.text


def test_a_row_of_words_under_named_columns_answers_for_its_code() -> None:
    """A table of words (error codes, a settings list) under a title line: each row is a
    passage, however short, located by the title and the column names, and a code the question
    names ("E4") picks its row rather than locating the whole source."""
    manual = Numbered(1, "Aroma300_User_Manual.pdf Brightwater Aroma 300", (
        "No power: check the outlet and the fuse; the machine switches itself off after 30 "
        "minutes\nwithout use. Water under the machine: check that the tank is seated correctly "
        "and that the drip tray is not\noverflowing. Error codes\n"
        "Code | Meaning | What to do\n"
        "E1 | Water tank empty or not seated | Refill the water tank and push it into place\n"
        "E2 | Water flow restricted by scale | Run the descaling cycle\n"
        "E4 | Overheating | Switch off, unplug and let the machine cool for 30 minutes\n"
        "E5 | Drip tray full or missing | Empty the drip tray and put it back\n"))
    result = answer("What does error code E4 mean on the Aroma 300?", [manual])
    assert result.found and result.text.splitlines()[0].startswith("E4 | Overheating"), \
        result.text
    formats = Numbered(1, "formats.html What Parley can read", (
        "Where a citation points\nDocument | A citation shows\nPDF | the page\n"
        "PowerPoint | the slide number and title\nExcel | the sheet name\n"
        "Word, HTML, Markdown | the nearest heading\n"))
    cited = answer("Where does a citation point in Excel?", [formats])
    assert cited.found and "sheet name" in cited.text.splitlines()[0], cited.text


def test_a_name_on_the_title_slide_locates_every_slide_of_the_deck() -> None:
    """The company a question names is on a deck's title slide only: the slide that answers is
    still the company's (its document's), and the title slide, which says nothing but the name,
    is not the answer."""
    deck = "TR_infosec_2025.pptx"
    sources = [
        Numbered(1, f"{deck} Information Security Policy · Passwords and sign-in", (
            "Passwords and sign-in\n\nPasswords must be at least 12 characters; a passphrase "
            "of four random words is easiest to remember. Never reuse a work password anywhere "
            "else. Store passwords in the practice's password manager, not in a notebook."),
            document=deck),
        Numbered(2, "document (3).docx Tamsin & Rowe Architects - Staff Handbook · Security", (
            "Security\n\nEveryone must follow the Information Security Policy, which is "
            "explained at induction and in the annual briefing."), document="document (3).docx"),
        Numbered(3, f"{deck} Information Security Policy",
                 "Information Security Policy\n\nStaff briefing 2025\nTamsin & Rowe Architects",
                 document=deck),
    ]
    result = answer("What is the minimum password length in the Tamsin & Rowe information "
                    "security policy?", sources)
    assert result.found and "12 characters" in result.text.splitlines()[0], result.text


def test_an_amount_in_the_question_picks_its_row() -> None:
    """"Claims over $5,000" names a row of an approval table, as a code does: the row that
    holds the amount answers, not the first row of the same source (a year or a day in a
    question, by contrast, locates every passage of a report of that date)."""
    limits = Numbered(1, "HL-FIN-007.xlsx Travel and expense limits · Approvals", (
        "Claim amount: Up to $1,000 | Approved by: Line manager\n"
        "Claim amount: $1,001 to $4,999 | Approved by: Department director\n"
        "Claim amount: Over $5,000 | Approved by: Chief Financial Officer (CFO)\n"))
    result = answer("Who approves expense claims over $5,000?", [limits])
    assert result.found and "CFO" in result.text.splitlines()[0], result.text


def test_delivery_is_shipping() -> None:
    """A customer asks about delivery; the FAQ says shipping ("shipping" -> "ship", its doubled
    consonant off, as "planned" -> "plan")."""
    faq = [
        Numbered(1, "faq.html Help Centre · Where do you ship?", (
            "Where do you ship?\n\nWe ship to addresses in the United States and Canada. Orders "
            "to Canada may be charged import duties and taxes on delivery, which are the "
            "customer's responsibility.")),
        Numbered(2, "faq.html Help Centre · How much is shipping?", (
            "How much is shipping?\n\nStandard shipping is free on orders over $50; below that "
            "it costs $6.95. Express shipping costs $14.95 and arrives in 1-2 business days.")),
    ]
    result = answer("Is delivery free?", faq)
    assert result.found and "$50" in result.text.splitlines()[0], result.text


def test_a_statement_with_its_years_below_the_groups_answers_the_asked_column() -> None:
    """"Three Months Ended March 31, Nine Months Ended March 31," over "2023 2022 2023 2022"
    (a layout other than the development filings'): the nine-month figure for a nine-month
    question, the year-earlier one for a 2022 question, not the whole row."""
    statement = Numbered(1, "Form 10-Q (quarterly report) · MICROSOFT CORPORATION · 2023-03-31", (
        "INCOME STATEMENTS\n(In millions, except per share amounts) (Unaudited)\n"
        "Three Months Ended March 31, Nine Months Ended March 31,\n2023 2022 2023 2022\n"
        "Revenue:\nProduct $ 15,588 $ 17,366 $ 50,059 $ 54,795\n"
        "Service and other 37,269 31,994 108,807 97,208\n"
        "Total revenue 52,857 49,360 158,866 152,003\n"
        "Net income $ 18,299 $ 16,728 $ 51,858 $ 53,448\n"))
    nine = answer("What was Microsoft's total revenue for the nine months ended March 31, 2023?",
                  [statement]).text.splitlines()[0]
    assert "158,866" in nine and "52,857" not in nine, nine
    prior = answer("What was Microsoft's net income for the three months ended March 31, 2022?",
                   [statement]).text.splitlines()[0]
    assert "16,728" in prior and "18,299" not in prior, prior


def test_dates_after_the_caption_on_one_line_head_the_columns() -> None:
    """Intel's layout: the caption and the column dates on one line, months abbreviated ("Jul 2,
    2022"): that line is the columns' headings, not a row of figures, and "July" in a question
    is the "Jul" of the columns."""
    statement = Numbered(1, "Form 10-Q (quarterly report) · INTEL CORPORATION · 2023-07-01", (
        "Consolidated Condensed Statements of Income\nThree Months Ended Six Months Ended\n"
        "(In Millions, Except Per Share Amounts; Unaudited) Jul 1, 2023 Jul 2, 2022 Jul 1, 2023 "
        "Jul 2, 2022\n"
        "Net revenue $ 12,949 $ 15,321 $ 24,664 $ 33,674\n"
        "Research and development 4,080 4,400 8,189 8,762\n"))
    six = answer("What was Intel's net revenue for the six months ended July 1, 2023?",
                 [statement])
    assert "24,664" in six.text.splitlines()[0] and "12,949" not in six.text.splitlines()[0], \
        six.text
    research = answer("How much did Intel spend on research and development in the quarter "
                      "ended July 2, 2022?", [statement])
    assert research.found and "4,400" in research.text.splitlines()[0], research.text
    assert "4,080" not in research.text.splitlines()[0], research.text


def test_a_segment_table_with_a_change_column_answers_the_asked_period() -> None:
    """Microsoft's segment table: the caption, the period and the change column on one long
    line; the asked period's figure leads, not the caption, not the whole row."""
    table = Numbered(1, "Form 10-Q (quarterly report) · MICROSOFT CORPORATION · 2023-03-31", (
        "SEGMENT RESULTS OF OPERATIONS\n(In millions, except percentages) Three Months Ended "
        "March 31, 2023 2022 Percentage Change\nRevenue\n"
        "Intelligent Cloud 22,081 19,051 16%\nMore Personal Computing 13,260 14,518 (9)%\n"
        "Total $ 52,857 $ 49,360 7%\n"))
    first = answer("What was More Personal Computing revenue in the three months ended March 31, "
                   "2022?", [table]).text.splitlines()[0]
    assert first.startswith("More Personal Computing") and "14,518" in first, first
    assert "13,260" not in first, first


def test_a_row_label_wrapped_onto_two_lines_is_one_row() -> None:
    """Amazon's cash-flow statement wraps a long row label: the line before the figures is the
    start of the row's label, so the question about depreciation gets that row, not another."""
    statement = Numbered(1, "Form 10-Q (quarterly report) · AMAZON.COM, INC. · 2023-06-30", (
        "CONSOLIDATED STATEMENTS OF CASH FLOWS\n(in millions)\n(unaudited)\n"
        "Six Months Ended\nJune 30,\n2022 2023\nOPERATING ACTIVITIES:\n"
        "Net income (loss) $ (5,872) $ 9,922\n"
        "Depreciation and amortization of property and equipment and capitalized content costs,\n"
        "operating lease assets, and other 19,528 23,076\n"
        "Stock-based compensation 9,638 11,561\n"))
    first = answer("How much depreciation and amortization did Amazon record in the six months "
                   "ended June 30, 2023?", [statement]).text.splitlines()[0]
    assert first.startswith("Depreciation and amortization") and "23,076" in first, first


def test_a_paragraph_line_that_ends_in_figures_goes_on_the_sentence_not_a_row() -> None:
    # A PDF's line breaks: the second line starts lower case after a line that ends mid-sentence
    # and ends with a phone number, which made it a table row and cut the sentence in two.
    guide = Numbered(1, "IT Service Guide", (
        "Contacting the IT Service Desk\n"
        "The IT Service Desk is the single point of contact for every IT request. Log a ticket "
        "on the\nservice portal at help.example, or call extension 4400 (+1 612 555 0144\n"
        "from outside the network). The desk is staffed Monday to Friday, 7:00 to 19:00."))
    texts = [u.text for u in units(guide, 0)]
    assert "Log a ticket on the service portal at help.example, or call extension 4400 (+1 612 " \
        "555 0144 from outside the network)." in texts
    assert not any(u.is_row for u in units(guide, 0))
    # A row label wrapped onto two lines is still one row.
    wrapped = Numbered(1, "Cash flows", "Depreciation and amortization of property and content "
                       "costs,\noperating lease assets, and other 19,528 23,076")
    [row] = units(wrapped, 0)
    assert row.is_row and row.text.startswith("Depreciation") and row.text.endswith("23,076")


# A buyback table as 10-Qs lay it out: a caption that declares the unit and ends with a colon,
# its column headings broken over short lines, group lines of dates, a total row; the chunk is
# cut inside the table and the next one carries the caption (``Numbered.unit``).
BUYBACK_CAPTION = ("Share repurchase activity during the three months ended June 30, 2024 was as "
                   "follows (in millions, except number of shares, which are reflected in "
                   "thousands, and per share amounts):")
BUYBACK_HEAD = Numbered(1, "Form 10-Q · Contoso Ltd. · Q2 2024", (
    "Item 2. Unregistered Sales of Equity Securities and Use of Proceeds\n"
    + BUYBACK_CAPTION.replace("(in millions, except", "(in millions, except\n") + "\n"
    "Periods\nTotal Number\nof Shares\nPurchased\nAverage Price\nPaid Per\nShare\n"
    "April 1, 2024 to April 30, 2024:\n"
    "Open market purchases 11,204 $ 52.10 11,204\n"
    "May 1, 2024 to May 31, 2024:\n"), document="contoso-q2.pdf")
BUYBACK_TAIL = Numbered(2, "Form 10-Q · Contoso Ltd. · Q2 2024", (
    "Open market purchases 9,876 $ 54.80 9,876\n"
    "June 1, 2024 to June 30, 2024:\n"
    "Open market purchases 7,310 $ 55.25 7,310\n"
    "Total 28,390 $ 12,450\n"), unit=BUYBACK_CAPTION, document="contoso-q2.pdf")
NINE_MONTHS = Numbered(3, "Form 10-Q · Contoso Ltd. · Q2 2024", (
    "Note 7 – Shareholders' Equity\nShare Repurchase Program\nDuring the six months ended June "
    "30, 2024, the Company repurchased 61 million shares of its common stock for $3.2 billion "
    "under its share repurchase program."), document="contoso-q2.pdf")


def test_column_headings_under_a_caption_are_not_quoted_as_prose() -> None:
    texts = [u.text for u in units(BUYBACK_HEAD, 0) if not u.is_row]
    assert any(t.endswith("per share amounts):") for t in texts), texts
    assert not any("Total Number" in t or "Paid Per" in t for t in texts), texts


def test_a_sentence_about_another_span_than_the_asked_quarter_comes_after_the_table() -> None:
    assert tables.spans("During the six months ended June 30, 2024, the Company ...") == {6}
    assert tables.spans("the quarter ended June 30 and the nine months ended June 30") == {3, 9}
    assert tables.spans("in three months we will know") == set()
    text = answer("Did Contoso report any share repurchase activity in its Q2 2024 10-Q, and "
                  "how many shares were repurchased?", [BUYBACK_HEAD, BUYBACK_TAIL, NINE_MONTHS]
                  ).text
    # The caption says where the answer is; the total row of its table says what it is.
    first = text.splitlines()[0]
    assert first.startswith("Total 28,390") and "28,390,000 shares" in first and "[2]" in first


def _quarters_of(short: str) -> tuple[list[Numbered], list[filings.Report]]:
    """Every quarterly report of ``short``'s among two other companies' reports, as sources."""
    mine = [r for r in FILINGS if r.short == short]
    others = [r for r in FILINGS if r.short != short][:2]
    chosen = [*others[:1], *mine, *others[1:]]
    return filing_sources(chosen), mine


@pytest.mark.parametrize("wording", [
    "How has {short}'s total revenue fluctuated across quarters?",
    "What was {short}'s total revenue in these quarters and how does it compare across the "
    "periods?",
    "Can any trends be identified in {short}'s total revenue?",
    # A second question beside the first: its figures are in the reports, its reading is not.
    "How has {short}'s total revenue changed over the reported quarters, and what might this "
    "indicate about their pricing strategy?",
])
def test_a_figure_across_periods_asked_in_other_words_is_one_line_a_quarter(wording: str) -> None:
    short = FILINGS[0].short
    sources, mine = _quarters_of(short)
    result = answer(wording.format(short=short), sources)
    leads = [line for line in result.text.splitlines() if "):" in line]
    latest = max(mine, key=lambda r: r.period_end)
    assert len(leads) == len(mine) and f"{latest.revenue:,}" in leads[0], result.text
    assert all(f"{r.revenue:,}" in result.text for r in mine), result.text


def test_the_first_of_two_questions_is_answered_when_the_second_is_not() -> None:
    short = FILINGS[0].short
    sources, mine = _quarters_of(short)
    latest = max(mine, key=lambda r: r.period_end)
    question = (f"How much did {short} spend on research and development in {latest.label}, and "
                "what might this indicate about its patent portfolio and drug pipeline?")
    result = answer(question, sources)
    assert result.found and f"{latest.research:,}" in result.text.splitlines()[0], result.text
    # One question about something no report holds is still not in the documents.
    none = answer(f"How many stores does {short} run in Brazil, and what does this indicate?",
                  sources)
    assert not none.found, none.text


def test_a_cause_asked_over_the_periods_is_answered_by_its_wording_not_the_rows() -> None:
    short = FILINGS[0].short
    sources, mine = _quarters_of(short)
    result = answer(f"What drove the trends in {short}'s revenue over the reported quarters?",
                    sources)
    first = result.text.splitlines()[0]
    assert any(r.driver in first for r in mine), result.text


def test_a_light_verb_is_not_what_a_question_asks_about() -> None:
    # "get" says nothing of the subject: a passage that shares it and "time" with the question,
    # and not "baby", does not answer it, whatever its other words.
    sources = [Numbered(1, "Acme Employee Handbook", "To get help at any time, log a ticket on "
                        "the service portal or call extension 4400 from any Acme phone.")]
    assert "get" not in terms("How much time off do I get?") + terms("I got it; it gets done.")
    assert "come" not in terms("Which day do staff come into the studio? It comes, it came.")
    result = answer("How much time off do I get when I have a baby at Acme?", sources)
    assert not result.found, result.text
    assert answer("How do I get help at Acme?", sources).found


# Instructions as the IRS writes them (../shared/corpus/pdf/i1040nr.pdf), a line of the PDF's
# column per line: terms defined by their initials, figures a sentence goes on to on the next
# line, an example that restates the asker's own figures.
INSTRUCTIONS = (
    "What's New for 2007\n"
    "Alternative minimum tax (AMT)\n"
    "exemption amount decreased. The\n"
    "AMT exemption amount is decreased to\n"
    "$33,750 ($45,000 if a qualifying\n"
    "widow(er); $22,500 if married filing\n"
    "separately).\n"
    "Health savings account (HSA)\n"
    "funding distributions. You may be\n"
    "able to elect to exclude from income a\n"
    "distribution made from your IRA to your HSA.\n",
    "Contributions you can deduct. Example. You paid $70 to a charitable\n"
    "organization to attend a fund-raising dinner and the value of the\n"
    "dinner was $40. You can deduct only\n"
    "$30. Gifts of $250 or more. You can\n"
    "deduct a gift of $250 or more only if you\n"
    "have a statement from the charitable organization.\n",
)


def sources_of(title: str, document: str, *texts: str) -> list[Numbered]:
    """One numbered source per text, all of one document."""
    return [Numbered(n, title, text, document=document) for n, text in enumerate(texts, start=1)]


def instructions() -> list[Numbered]:
    return sources_of("2007 Instruction 1040-NR", "i1040nr.pdf", *INSTRUCTIONS)


def test_a_figure_a_sentence_goes_on_to_on_the_next_line_is_quoted_with_it() -> None:
    result = answer("What is the AMT exemption amount?", instructions())
    first = result.text.splitlines()[0]
    assert "is decreased to $33,750 ($45,000 if a qualifying widow(er); $22,500 if married " \
           "filing separately)." in first, result.text


def test_a_term_the_sources_define_by_its_initials_is_the_same_term() -> None:
    # "AMT" says "alternative minimum tax" in the sentence with the figure.
    result = answer("What is the alternative minimum tax exemption amount for 2007?",
                    instructions())
    assert "$33,750" in result.text.splitlines()[0], result.text


def test_the_figures_a_question_gives_are_not_its_answer() -> None:
    # The first sentence says all the question says, with its own figures; the amount asked
    # for is in the second. Before, the first was quoted alone, as a passage with amounts.
    sources = [Numbered(1, "Charitable gifts", "Example. You paid $70 to attend a fund-raising "
                        "dinner whose value was $40 and ask how much you can deduct. You can "
                        "deduct only $30 of what you paid for a fund-raising dinner.")]
    result = answer("I paid $70 to attend a fund-raising dinner whose value was $40. How much "
                    "can I deduct?", sources)
    assert "You can deduct only $30" in result.text, result.text


def test_question_frames_are_not_what_a_question_is_about() -> None:
    # "What's" is "what is"; "how long" asks for a duration; "U.S." is the "US" a question
    # writes. Each weighed the most before (no source says "what's" or "long", and "US" was a
    # name no source held), and the question was answered "not in the documents".
    assert terms("What’s new? What's the penalty?") == ["new", "penalty"]
    assert terms("U.S. and U.S.A. persons") == ["us", "usa", "person"]
    sources = [Numbered(1, "2007 Instruction 1040-NR", text, document="i1040nr.pdf")
               for text in (
                   "Penalty for late filing. If you do not file your return by the due date, the "
                   "penalty is usually 5% of the amount due for each month or part of a month "
                   "your return is late.",
                   "Rollovers. A rollover must be made within 60 days after the day you "
                   "received the distribution from the IRA.",
                   "Social security benefits. 85% of the U.S. social security benefits you "
                   "received are taxable.",
                   "Keep a copy of your tax return and the worksheets you used for 3 years.")]
    for question, expected in (
            ("What's the penalty for filing my return late?", "5%"),
            ("How long do I have to roll over an IRA distribution?", "60 days"),
            ("How much of my US social security benefits is taxable?", "85%")):
        result = answer(question, sources)
        assert expected in result.text.splitlines()[0], (question, result.text)


def test_words_of_a_question_that_a_source_writes_as_initials() -> None:
    # The procedure never spells "personal protective equipment" out.
    sources = [Numbered(1, "240-DOP-1013A Lay Down Tubulars", text, document="procedure.docx")
               for text in ("Key Personnel | Drill Crew and Crane Crew; Specific PPE | Safety "
                            "Harness; Specific Tools | Iron Roughneck, Signalers Vest",
                            "Job Steps | Hazards; 1 | Check elevator and slip size and condition.")]
    result = answer("What personal protective equipment is specific to laying down tubulars?",
                    sources)
    assert "Safety Harness" in result.text.splitlines()[0], result.text


def test_a_sentence_that_announces_a_list_or_is_referred_back_to_brings_the_next() -> None:
    # Alone, "... the following four conditions applies to you. 1." names no condition, and
    # "Keep a copy ... until the statute of limitations runs out" says no time: the next
    # sentence completes each. A sentence that starts another subject is not brought.
    sources = sources_of(
        "2007 Instruction 1040-NR", "i1040nr.pdf",
        "Who Must File\nFile Form 1040NR if any of the\nfollowing four conditions "
        "applies to you. 1. You were a nonresident alien\nengaged in a trade or "
        "business in the\nUnited States during 2007. Amended returns are filed on "
        "Form 1040X.",
        "How Long Should Records Be Kept? Keep a copy of your tax return,\n"
        "worksheets you used, and records of all\nitems appearing on it (such as "
        "Forms\nW-2, 1099, and 1042-S) until the\nstatute of limitations runs out "
        "for that\nreturn. Usually, this is 3 years from the\ndate the return was "
        "due or filed. Amended returns are filed on Form 1040X."
    )
    who = answer("Who has to file Form 1040-NR?", sources).text.splitlines()[0]
    assert "1. You were a nonresident alien engaged in a trade or business" in who, who
    kept = answer("How long should I keep my tax records?", sources).text.splitlines()[0]
    # "... 1042-S) until the" ends on "the": a sentence goes on, not a row of two figures.
    assert "(such as Forms W-2, 1099, and 1042-S) until the statute of limitations" in kept
    assert "Usually, this is 3 years" in kept and "1040X" not in kept, kept


def test_numbers_joined_by_a_hyphen_are_a_code_not_amounts() -> None:
    # A ZIP+4 made "Austin, TX 73301-0215 ..." a row of two figures, cutting the sentence that
    # names the place; "OMB No. 1545-0074" is the number a question asks for by that word.
    assert extractive._amounts("Austin, TX 73301-0215 U.S.A. Estates and trusts. File Form") == 0
    assert extractive._amounts("Call 1-800-661-2638 or 1545-0074") == 0
    assert extractive._amounts("Total 1,234 $ 5,678 -120") == 3
    sources = sources_of(
        "2007 Instruction 1040-NR", "i1040nr.pdf",
        "Where To File\nIndividuals. File Form 1040NR with\nthe Department of the Treasury,\n"
        "Internal Revenue Service Center,\nAustin, TX 73301-0215 U.S.A. Estates and trusts. "
        "File Form\n1040NR with the Department of the\nTreasury, Internal Revenue Service\n"
        "Center, Cincinnati, OH 45999-0048\nU.S.A.")
    result = answer("Where do individuals file Form 1040NR?", sources)
    assert "Internal Revenue Service Center, Austin, TX 73301-0215" in result.text, result.text
    assert terms("OMB No. 1545-0074, policy # 12") == ["omb", "number", "1545", "0074", "policy",
                                                      "number", "12"]


HANDBOOK = (
    "Probation applies to new employees and is reviewed by the line manager with HR at its end.",
    "The probation period for new employees is six months from the start date.",
    "A dependant child counts for the family allowance while under age 18 and living at home "
    "with the employee.",
    "The family allowance is paid with the salary for each dependant child living at home.",
)
ROLLOVERS = (
    "Generally, a qualified rollover must be made within 60 days after the day you received "
    "the distribution.",
    "Enter the total distribution on line 16a if you moved part of it from one IRA to another "
    "IRA of the same type.",
)


@pytest.mark.parametrize(("question", "texts", "expected"), [
    # "how long" asks for a length of time, "how old" for an age: a passage that gives one
    # scores as a figure does for an amount.
    ("How long is probation for new employees?", HANDBOOK, "six months"),
    ("How old can a child be for the family allowance?", HANDBOOK, "under age 18"),
    # Two words the question writes apart and a source as one ("roll over" / "rollover").
    ("How long do I have to roll over an IRA distribution?", ROLLOVERS, "within 60 days"),
])
def test_the_passage_that_gives_what_is_asked_leads(
    question: str, texts: tuple[str, ...], expected: str
) -> None:
    result = answer(question, sources_of("Acme Employee Handbook", "handbook.docx", *texts))
    assert expected in result.text.splitlines()[0], result.text


def test_a_question_about_a_relation_is_answered_side_by_side() -> None:
    # No passage says how inventories "reflect on supply chain efficiency": that is the
    # reader's to judge. The inventories row and the supply sentence are what the filing holds.
    sources = [Numbered(1, "Form 10-Q · Contoso Ltd · Q3 2022 · 2022-06-25",
                        "CONDENSED CONSOLIDATED BALANCE SHEETS (In millions)\nJune 25,\n2022\n"
                        "September 25,\n2021\nInventories 5,433 6,580\nVendor non-trade "
                        "receivables 30,000 25,228\n", document="contoso.pdf"),
               Numbered(2, "Form 10-Q · Contoso Ltd · Q3 2022 · 2022-06-25",
                        "The Company's supply chain relies on outsourcing partners in Asia, and "
                        "component shortages may constrain production.", document="contoso.pdf")]
    question = ("In Contoso's Q3 2022 10-Q, analyze how the changes in Contoso's inventory "
                "levels relate to the discussion of its supply chain.")
    assert extractive._related_parts(question) == (
        "In Contoso's Q3 2022 10-Q, analyze how the changes in Contoso's inventory levels?",
        "In Contoso's Q3 2022 10-Q, the discussion of its supply chain?")
    result = answer(question, sources)
    assert result.found and "5,433" in result.text and "supply chain relies" in result.text, \
        result.text
    assert extractive._related_parts("How do I relate to my manager?") is None
    half = answer("How did Contoso's inventory levels correlate with its cafeteria menu prices?",
                  sources)
    assert "5,433" in half.text, half.text
    assert half.text.splitlines()[-1] == (
        "“its cafeteria menu prices” is not in the documents I searched."), half.text


def test_a_trend_no_table_gives_is_read_from_each_periods_sentence() -> None:
    sources = [Numbered(n, f"Form 10-Q · Contoso Ltd · {label}", text, document=f"{n}.pdf")
               for n, (label, text) in enumerate((
                   ("Q2 2023 · 2023-04-01", "Share Repurchase Program. During the six months "
                    "ended April 1, 2023, the Company repurchased 262 million shares of its "
                    "common stock for $38.1 billion."),
                   ("Q1 2023 · 2022-12-31", "Share Repurchase Program. During the three months "
                    "ended December 31, 2022, the Company repurchased 133 million shares of its "
                    "common stock for $19.0 billion.")), start=1)]
    result = answer("Has Contoso engaged in any share repurchases in the reported quarters?",
                    sources)
    lines = result.text.splitlines()
    assert "262 million" in lines[0] and "133 million" in lines[1], result.text


def test_a_deadline_is_the_due_date_a_source_writes_and_a_response_responds() -> None:
    sources = [Numbered(1, "2007 Instruction 1040-NR", "Extension of time to file. If you cannot "
                        "file your return by the due date, you should file Form 4868.",
                        document="i1040nr.pdf")]
    result = answer("I can't get my return done by the deadline. How do I get more time?",
                    sources)
    assert "Form 4868" in result.text, result.text
    # "responses" was "respons", never the "respond" of a question.
    assert terms("All responses must be sent") == terms("respond must be sent")


def test_what_happens_is_a_frame_and_down_is_what_is_asked() -> None:
    # "happens" is in no passage (so it weighed the most) and "down" was a stop word: the
    # question was refused, its answer among the sources.
    sources = sources_of(
        "How a document travels through Parley", "handbook.pdf",
        "A document uploaded through the portal is stored in the blob store, and an ingest "
        "request is put on the ingest queue.",
        "Nothing is lost if a worker is down: the request waits on the queue until a worker "
        "takes it.")
    result = answer("What happens if a worker is down?", sources)
    assert "waits on the queue" in result.text.splitlines()[0], result.text


def statement(n: int, company: str, label: str, end: str, revenue: str, income: str,
              document: str) -> Numbered:
    """A quarter's statement of operations of ``company``, as one source."""
    return Numbered(n, f"Interim report · {company} · {label} · {end}",
                    f"Condensed Consolidated Statements of Operations (in thousands)\n"
                    f"Three Months Ended\n{end}\nRevenue $ {revenue}\nNet income $ {income}\n",
                    document=document)


def test_two_companies_or_two_quarters_asked_at_once_are_each_answered() -> None:
    sources = [statement(1, "Halvard Shipping Group", "Q2 2025", "2025-06-28", "60,294", "9,120",
                         "halvard-q2.pdf"),
               statement(2, "Marisol Pharmaceuticals", "Q2 2025", "2025-06-28", "53,481",
                         "7,010", "marisol-q2.pdf"),
               statement(3, "Halvard Shipping Group", "Q3 2025", "2025-09-27", "8,805", "1,203",
                         "halvard-q3.pdf")]
    both = answer("Compare Halvard Shipping's and Marisol Pharmaceuticals' revenue in Q2 2025.",
                  sources[:2])
    lines = both.text.splitlines()
    assert lines[0].startswith("Halvard Shipping: ") and "60,294" in lines[0], both.text
    assert any(line.startswith("Marisol Pharmaceuticals: ") and "53,481" in line
               for line in lines), both.text
    assert both.cited == (1, 2)
    for question in ("How did Halvard Shipping's net income change from Q2 2025 to Q3 2025?",
                     "What was Halvard Shipping's net income in the quarter ended June 28, 2025 "
                     "and in the quarter ended September 27, 2025?"):
        result = answer(question, [sources[0], sources[2]])
        assert "9,120" in result.text and "1,203" in result.text, result.text
        assert result.text.index("9,120") < result.text.index("1,203"), result.text
    # A company no source is of, set beside one that is: its side is said to be missing; a
    # place named is no side ("How many robots did Halvard ship to Japan?").
    partial = answer("Compare Halvard Shipping's and Osprey Mining's revenue in Q2 2025.",
                     sources[:1])
    assert partial.found and "60,294" in partial.text, partial.text
    assert partial.text.splitlines()[-1] == "Osprey Mining: not in the documents I searched."
    assert extractive._sides("How many ships did Halvard Shipping send to Japan in Q2 2025?",
                             sources[:1]) is None
    # A side the sources hold no passage for is said, not left out.
    half = extractive._side_by_side([
        ("Halvard Shipping", extractive._not_found(sources[:1], 0.0)),
        ("Marisol Pharmaceuticals", Answer("The order backlog was 12,400 units. [2]", True, (2,),
                                           0.8))])
    assert half.found and half.cited == (2,)
    assert half.text.splitlines() == [
        "Halvard Shipping: not in the documents I searched.",
        "Marisol Pharmaceuticals: The order backlog was 12,400 units. [2]"]


def test_a_question_about_every_company_is_answered_for_each() -> None:
    sources = [statement(1, "Halvard Shipping Group", "Q3 2025", "2025-09-27", "8,805", "1,203",
                         "halvard-q3.pdf"),
               statement(2, "Marisol Pharmaceuticals", "Q3 2025", "2025-09-27", "90,401",
                         "25,550", "marisol-q3.pdf")]
    result = answer("Which company had the highest revenue in Q3 2025?", sources)
    lines = result.text.splitlines()
    assert lines[0].startswith("Halvard Shipping Group: ") and "8,805" in lines[0], result.text
    assert any(line.startswith("Marisol Pharmaceuticals: ") and "90,401" in line
               for line in lines), result.text
    # Documents of different kinds share no part of what they say of themselves: not the
    # reports of several companies, whatever the question's words.
    mixed = [Numbered(1, "notice.pdf Notice of intent · Department of Veterans Affairs",
                      "The contract is awarded to Heads-Up Performance, Inc.",
                      document="notice.pdf"),
             Numbered(2, "schedule.docx Spring 2026 · Week 1", "Test 1 in GL 263.",
                      document="schedule.docx")]
    assert extractive._sides("Which company is the VA awarding the contract to?", mixed) is None


def test_a_name_that_is_not_what_a_document_is_of_is_no_side() -> None:
    # "Wi-Fi" heads a section of one guide and "Duluth" is in a handbook's text: neither is what
    # a document is of, so the question is one question, not two.
    sources = [Numbered(1, "IT guide · Halvorsen Logistics · Wi-Fi", "Connect to the staff "
                        "network with your account.", document="guide.pdf"),
               Numbered(2, "Employee Handbook · Halvorsen Logistics", "This handbook applies in "
                        "the Duluth distribution centre.", document="handbook.docx")]
    assert extractive._sides("What is the guest Wi-Fi password at the Duluth centre?",
                             sources) is None
    # One report that names two companies answers for both itself.
    one = [Numbered(1, "Annual report · Contoso Ltd and Fabrikam Corporation joint venture",
                    "Revenue $ 1,200", document="jv.pdf")]
    assert extractive._sides("Compare Contoso's and Fabrikam's revenue.", one) is None


def test_a_sentence_cut_where_its_chunk_ends_is_completed_from_the_next_chunk() -> None:
    # Two chunks of one report overlap by a few words: the first ends mid-sentence, the next
    # starts by repeating its end and goes on.
    first = ("Net income $ 91,890 $ 84,158\nManagement's Discussion and Analysis\nRevenue "
             "decreased during the quarter compared with the same quarter a year earlier, due")
    second = ("the same quarter a year earlier, due primarily to longer charter contracts for "
              "its container fleet. Liquidity is supported by cash balances.")
    sources = sources_of("Interim report · Halvard Shipping Group · Q2 2025", "halvard.pdf",
                         first, second)
    result = answer("Why did Halvard Shipping's revenue decrease?", sources)
    assert ("a year earlier, due primarily to longer charter contracts for its container fleet. "
            "[1][2]") in result.text, result.text
    assert result.cited[:2] == (1, 2)
    # Only from the same document, and only from where the next chunk starts: a phrase that
    # recurs (a running header) further on in another chunk continues nothing.
    other = sources_of("Interim report · Halvard Shipping Group · Q2 2025", "halvard.pdf",
                       first, "x " * 300 + second)
    cut = answer("Why did Halvard Shipping's revenue decrease?", other)
    assert "charter" not in cut.text, cut.text



CHILD_QUESTION = ("My child is under 18 and has only interest and dividends. Can I report that "
                  "income on my own return?")


@pytest.mark.parametrize("first", [
    # The chunk ends mid-sentence: the next chunk completes it, then goes on.
    "Parents' election to report child's interest and dividends. If your child was under age "
    "18 at the end of 2007 and had income only from interest and dividends, you may be able to "
    "elect to report your",
    # The chunk ends with the sentence: the next one is in the next chunk.
    "Exception for children under age 18. If your child was under age 18 at the end of 2007 "
    "and had income only from interest and dividends, you may be able to elect to report your "
    "child's income on your return.",
], ids=["cut", "whole"])
def test_a_completed_sentence_brings_the_next_where_it_refers_back(first: str) -> None:
    # "... you may be able to elect to report your child's income on your return." said who may,
    # not how: "But you must use Form 8814 to do so." A sentence on another subject does not come.
    second = ("be able to elect to report your child's income on your return. But you must use "
              "Form 8814 to do so. Line 9a. Report all of your taxable interest income.")
    sources = sources_of("2007 Instruction 1040-NR", "i1040nr.pdf", first, second)
    result = answer(CHILD_QUESTION, sources)
    first_line = result.text.splitlines()[0]
    assert first_line.endswith("on your return. But you must use Form 8814 to do so. [1][2]"), \
        result.text
    assert "Line 9a" not in first_line
    if first.endswith("."):
        # A whole sentence inside its chunk is followed by what its own chunk says next, not
        # by another chunk's.
        inside = sources_of("2007 Instruction 1040-NR", "i1040nr.pdf",
                            first + " Line 8. Wages go here.", second)
        assert "Form 8814" not in answer(CHILD_QUESTION, inside).text.splitlines()[0]


# Three columns of an IRS instructions booklet as pypdf reads them: a line per column line, dates
# and years in the middle of sentences.
NARROW_COLUMN = (
    "A\nreturn for the 2007 calendar year is due\nby April 15, 2008. If you did not receive wages "
    "as an\nemployee subject to U.S. income tax\nwithholding, file Form 1040NR by the\n15th day of "
    "the 6th month after your tax\nyear ends. A return for the 2007\ncalendar year is due by June "
    "16, 2008. Estates and trusts. If you file for a\nnonresident alien estate or trust that\nhas "
    "an office in the United States, file\nthe return by the 15th day of the 4th\nmonth after the "
    "tax year ends. If you file\nfor a nonresident alien estate or trust\nthat does not have an "
    "office in the\nUnited States, file the return by the 15th\nday of the 6th month after the "
    "tax year\nends. Note. If the regular due date for filing\nfalls on a Saturday, Sunday, or "
    "legal\nholiday, file by the next business day.")


def test_prose_in_a_narrow_column_is_read_as_sentences_though_its_lines_name_dates() -> None:
    # "by April 15, 2008. If you did not receive wages as an" names a month, and "return for the
    # 2007 calendar year is due" a year: read as column headings, they and the short lines after
    # them were dropped, and with them the sentence that answers.
    [source] = sources_of("2007 Instruction 1040-NR", "i1040nr.pdf", NARROW_COLUMN)
    read = [u.text for u in units(source, 0)]
    assert ("If you did not receive wages as an employee subject to U.S. income tax withholding, "
            "file Form 1040NR by the 15th day of the 6th month after your tax year ends.") in read
    assert "A return for the 2007 calendar year is due by June 16, 2008." in read
    assert ("If you file for a nonresident alien estate or trust that does not have an office in "
            "the United States, file the return by the 15th day of the 6th month after the tax "
            "year ends.") in read
    # Of two sentences that say "a return ... is due by", the one right after the sentence that
    # answers goes on from it (among the other pages of the booklet, which make the answer two
    # sentences long).
    pages = [source, *instructions()]
    result = answer("If you did not receive wages as an employee subject to U.S. income tax "
                    "withholding, by what date is the return for the 2007 calendar year due?",
                    [Numbered(n, s.title, s.text, document=s.of)
                     for n, s in enumerate(pages, start=1)])
    assert result.found
    lines = result.text.splitlines()
    assert lines[0].startswith("If you did not receive wages"), result.text
    assert "June 16, 2008" in lines[1], result.text
    assert "April 15" not in result.text, result.text


def test_a_pages_last_sentence_glued_to_its_running_footer_is_kept() -> None:
    # pypdf puts the footer on the line of the page's last words: the line was a footer (its
    # last cell a page number), dropped with the sentence's end.
    [source] = sources_of(
        "Form 10-Q · Apple Inc. · Q3 2022", "aapl.pdf",
        "The Company believes, in general, gross margins will be subject to volatility and\n"
        "downward pressure. Apple Inc. | Q3 2022 Form 10-Q | 17\nApple Inc. | Q3 2022 Form "
        "10-Q | 18")
    read = [u.text for u in units(source, 0)]
    assert read == ["The Company believes, in general, gross margins will be subject to "
                    "volatility and downward pressure."], read


def test_a_sentence_goes_on_after_an_initial_or_an_abbreviation() -> None:
    [source] = sources_of(
        "Notice", "notice.pdf",
        "During the quarter, Katherine L. Adams, Senior Vice President, entered into a trading "
        "plan. Send the form to the Bureau of the Public Debt, Department G, P.O. Box 2188, "
        "Parkersburg, WV 26106. Most of the sales were made outside the U.S. The rest were "
        "made in Canada and Mexico this year.")
    assert [u.text for u in units(source, 0)] == [
        "During the quarter, Katherine L. Adams, Senior Vice President, entered into a trading "
        "plan.",
        "Send the form to the Bureau of the Public Debt, Department G, P.O. Box 2188, "
        "Parkersburg, WV 26106.",
        "Most of the sales were made outside the U.S.",
        "The rest were made in Canada and Mexico this year."]


def test_a_forms_fields_are_passages_however_short() -> None:
    # A contract notice's DOCX table of fields, no column names above: as prose, a field of
    # fewer than six words was dropped, and the address was cut at "N. Pecos".
    [source] = sources_of(
        "Management Developmental Coaching", "notice.docx",
        "GENERAL INFORMATION\n\nCONTRACTING OFFICE'S ZIP CODE* | 89086\n"
        "SOLICITATION NUMBER* | 36C26123Q1035\nRESPONSE DATE/TIME/ZONE |"
        " 08-01-2023 10AM PACIFIC TIME\nRECOVERY ACT FUNDS | N\nPRODUCT SERVICE CODE* | R799\n"
        "CONTRACTING OFFICE ADDRESS | Network Contracting Office 21, 6900 N. Pecos Road, "
        "Building 6, North Las Vegas NV 89086\nAGENCY'S URL |")
    read = [u.text for u in units(source, 0)]
    assert "SOLICITATION NUMBER* | 36C26123Q1035" in read, read
    assert "RECOVERY ACT FUNDS | N" in read, read
    assert any(u.endswith("6900 N. Pecos Road, Building 6, North Las Vegas NV 89086") for u in read)
    assert "AGENCY'S URL |" not in read  # a field without a value says nothing
    assert answer("What is the solicitation number?", [source]).text == (
        "SOLICITATION NUMBER* | 36C26123Q1035 [1]")


def test_a_year_the_question_names_may_be_in_another_chunk_of_the_passages_document() -> None:
    # The incident's date is in one chunk, its corrective action in the next: the action was
    # halved as "another period's" passage for lacking "2013" itself, and the answer refused.
    sources = sources_of(
        "240-DOP-1013A Lay Down Tubulars · Rowan Companies, Inc.", "procedure.docx",
        "Corrective Action: Chokes or rope stubs are to be used to separate tubulars, escape "
        "routes shall be established before the job begins.\nWork Party Sign: Risks are "
        "acceptable as per the Risk Assessment Procedure.",
        "Lessons Learned From Industry | Incident Date: 14 March 2013\nLaying Out Pipe Causes "
        "Injury to Foot: the joints of drill pipe began to separate and rolled toward the "
        "individual.",
    )
    result = answer("What does the corrective action from the 2013 incident say to use to "
                    "separate tubulars?", sources)
    assert "rope stubs" in result.text.splitlines()[0], result.text
    # An amount the question gives still names a row of its own chunk ("claims over $5,000"):
    # a sentence of another chunk about approvals comes after the rows that hold it.
    other = sources_of("Halvorsen Logistics - Travel and Expense Limits", "limits.xlsx",
                       "Claim amount: $1,000 to $5,000 | Approver: Department director\n"
                       "Claim amount: Over $5,000 | Approver: CFO",
                       "International trips need a travel request approved by your department "
                       "director at least 21 days before departure.")
    result = answer("Who approves Halvorsen expense claims over $5,000?", other)
    assert [line.split(":")[0] for line in result.text.splitlines()[:2]] == [
        "Claim amount", "Claim amount"], result.text


def test_a_question_for_several_things_is_answered_by_the_passage_that_lists_them() -> None:
    # "file", "type" and "read" are all in the first sentence, which names no type; the
    # second names them all without the word "type".
    sources = sources_of("What Parley can read", "formats.html",
                         "The type of a file is decided from its bytes, never from its name: a "
                         "PDF called notes.txt is read as a PDF. Parley reads PDF, Word (.docx), "
                         "PowerPoint (.pptx), Excel (.xlsx), HTML, Markdown and plain text files.")
    result = answer("What file types can Parley read?", sources)
    assert "PowerPoint (.pptx)" in result.text, result.text
    # An index of the documents, first in rank, says "the file types Parley reads" and lists
    # none of them: the kind of thing asked for is what a list of its instances answers.
    index = [Numbered(1, "Examples", "file | kind | what it is about\nformats.html | HTML | the "
                      "file types Parley reads and where citations point", document="README.md")]
    listed = [Numbered(2, "What Parley can read", source.text, document="formats.html")
              for source in sources]
    result = answer("What file types can Parley read?", index + listed)
    assert "Parley reads PDF, Word (.docx), PowerPoint (.pptx)" in result.text, result.text

MANUAL = (
    "Descale the machine every 3 months, or sooner when the DESCALE light flashes.",
    "Cannister filters are rinsed under warm water once a week.",
    "Every password must be at least 12 characters long.",
)


@pytest.mark.parametrize(("typed", "expected"), [
    ("How often should I decsale the machine?", "every 3 months"),  # two letters swapped
    ("How long must a pasword be?", "12 characters"),  # one left out
    ("How often are canister filters rinsed?", "once a week"),  # the source's own spelling
])
def test_a_misspelt_word_is_read_as_the_sources_word(typed: str, expected: str) -> None:
    sources = sources_of("Aroma 300 User Manual", "manual.pdf", *MANUAL)
    result = answer(typed, sources)
    assert result.found and expected in result.text.splitlines()[0], result.text


def test_respelling_leaves_known_words_short_words_and_names_it_cannot_place() -> None:
    sources = sources_of("Aroma 300 User Manual", "manual.pdf", *MANUAL)
    assert extractive.respelled("When is the holiday party?", sources) == \
        "When is the holiday party?"  # known words: "party" is never "parts"
    assert extractive.respelled("Is the pasword long?", sources) == "Is the password long?"
    assert extractive.respelled("the DESCLAE light", sources) == "the DESCALE light"
    assert extractive.respelled("Pemberton filtres", sources) == "Pemberton filters"
    # A word the sources write only as a possessive ("a doctor's note") is theirs too.
    notes = sources_of("Handbook", "handbook.docx", "Absences of more than 3 consecutive "
                       "working days require a doctor's note.")
    assert extractive.respelled("Do I need a dotcor's note?", notes) == "Do I need a doctor's note?"
    assert extractive.respelled("Do I need a note from the dotcor?", notes) == \
        "Do I need a note from the doctor?"
    # A company no source names is still refused, however close its other words come.
    assert not answer("How often does Pemberton Freight decsale its machines?", sources).found


SCHEDULE = (
    "Week | Date | Day | Topics (Sections)\n"
    "Week 9 | 3/2 | Tuesday | Test 2 (1.5, 2.1, 2.2) in GL 263 during class time\n"
    "Week 10 | 3/9 | Tuesday | Math Lab | Pre class assignment HW 10\n"
    "Week 11 | 3/16 | Tuesday | Test 3 (2.7, 3.5, 3.6) in GL 263 during class time\n"
    "Week 13 | 3/30 | Tuesday | Test 4 (4.1, 4.2, 4.3) in GL 263 during class time\n",
    "Grading Component | Weight\nTests | 45%\nFinal Exam | 20%\nMML HW | 15%\nPre-Class | 3%\n",
)


def test_a_thing_named_by_a_word_and_a_number_is_the_passage_that_says_both() -> None:
    # Every row covers "test" and "3" in its source ("Test 2", "3/2", "3/16"); the grading
    # table's "Tests | 45%" came first (a row whose label is the question's word).
    sources = sources_of("Spring 2026 | Week | Day | Topics (Sections)", "schedule.docx",
                         *SCHEDULE)
    result = answer("Which sections are on Test 3?", sources)
    assert result.text.splitlines()[0].startswith("Week 11 |"), result.text
    # ...but a product the document is about names the document, not one of its passages.
    manual = sources_of("Brightwater Aroma 300", "manual.pdf",
                        "Brightwater Aroma 300\nUser manual",
                        "Descale the Aroma 300 every 3 months, or sooner when the light flashes.")
    result = answer("How often should I descale the Aroma 300?", manual)
    assert "every 3 months" in result.text.splitlines()[0], result.text


def test_an_acronym_no_title_holds_is_what_the_question_asks_about() -> None:
    # As a name, "OMB" had located the document: every passage of the instructions whose
    # source says "OMB" once covered it, and the one that says "number" twice came first.
    sources = sources_of(
        "2007 Instruction 1040-NR", "i1040nr.pdf",
        "Paperwork Reduction Act Notice. The OMB control number for this form is shown on it. "
        "Section 6109 requires paid return preparers to provide their identifying number. "
        "Enter your identifying number on Form 1040NR.",
        "Form 1040NR, U.S. Nonresident Alien Income Tax Return, OMB No. 1545-0074, 2007.",
    )
    result = answer("What is the OMB number of Form 1040NR?", sources)
    assert "1545-0074" in result.text.splitlines()[0], result.text


def test_the_period_a_change_is_measured_from_is_no_content_to_cover() -> None:
    # Found live on the development filings: "compared to a year earlier" is said by the table's
    # columns (2023, 2022, Change) and by "compared to the third quarter of 2022"; as words to
    # cover, no passage held "earlier" and the question was refused.
    title = "2023 Q3 AAPL.pdf Form 10-Q (quarterly report) · Apple Inc. · Q3 2023 · 2023-07-01"
    table = ("Products and Services Performance\n"
             "The following table shows net sales by category for the three- and nine-month "
             "periods ended July 1, 2023 and June 25, 2022 (dollars in millions):\n"
             "Three Months Ended Nine Months Ended\n"
             "July 1,\n2023\nJune 25,\n2022 Change\nJuly 1,\n2023\nJune 25,\n2022 Change\n"
             "Net sales by category:\n"
             "iPhone $ 39,669 $ 40,665 (2)% $ 156,778 $ 162,863 (4)%\n"
             "Mac 6,840 7,382 (7)% 21,743 28,669 (24)%\n"
             "Services 21,213 19,604 8 % 62,886 58,941 7 %")
    prose = ("Services\nServices net sales increased during the third quarter of 2023 compared "
             "to the third quarter of 2022 due primarily to higher net sales from advertising, "
             "cloud services and the App Store.")
    sources = [Numbered(1, title, table, document="2023 Q3 AAPL.pdf"),
               Numbered(2, title, prose, document="2023 Q3 AAPL.pdf")]
    result = answer("How did services revenue change in Q3 2023 compared to a year earlier?",
                    sources)
    assert result.found and "21,213" in result.text, result.text
    assert "advertising, cloud services" in result.text, result.text


def test_a_heading_the_sentence_under_it_begins_with_is_quoted_once() -> None:
    # A 10-Q's "Mac" over "Mac net sales decreased ...", read as one line of the paragraph.
    sources = sources_of("Form 10-Q · Q2 2023", "10q.pdf",
                         "Mac\nMac net sales decreased during the second quarter of 2023 due "
                         "primarily to lower net sales of MacBook Pro. iPad iPad net sales "
                         "decreased during the second quarter of 2023 due primarily to lower net "
                         "sales of iPad Air.")
    result = answer("Why did Mac net sales decrease?", sources)
    assert result.text.startswith("Mac net sales decreased"), result.text
    assert "Mac Mac" not in result.text and "iPad iPad" not in result.text, result.text
    written = "The market for pumps grew in 2023. The the end was near for us."
    assert extractive._passages(written) == [  # a repeat in another case is left as written
        "The market for pumps grew in 2023.", "The the end was near for us."]


# --- records that are neither reports nor handbooks (tests/fixtures/records.py) ----------------

MSA_TITLE = "Master Services Agreement · Kestrel Analytics Ltd. · 2025-03-03"


def test_a_numbered_clause_that_starts_its_chunk_is_no_sentence_cut_in_two() -> None:
    # "3.1 Each party's ..." starts with a figure, as the tail of a sentence cut by the chunking
    # does: it lost 0.1 and the clause after it, about other damages, came first.
    sources = [Numbered(1, f"{MSA_TITLE} · 3. Limitation of Liability",
                        "3.1 Each party's total aggregate liability under this Agreement shall not "
                        "exceed the fees paid or payable by Customer in the twelve (12) months "
                        "preceding the claim.\n\n3.2 Neither party is liable for indirect, "
                        "incidental or consequential damages, including lost profits.",
                        document="msa.docx")]
    result = answer("What is the cap on Kestrel's liability?", sources)
    assert "twelve (12) months" in result.text.splitlines()[0], result.text


GOVERNING = [
    Numbered(1, f"{MSA_TITLE} · 5. Governing Law",
             "5.1 This Agreement is governed by the laws of Sweden. Disputes are settled by "
             "arbitration in Stockholm under the rules of the SCC Arbitration Institute.",
             document="msa.docx"),
    Numbered(2, f"{MSA_TITLE} · 2. Fees and Payment",
             "2.2 Late payments bear interest at 1.5% per month or the highest rate permitted by "
             "law, whichever is lower.", document="msa.docx"),
]


def test_initials_no_source_writes_are_the_words_of_a_title_they_spell() -> None:
    # "MSA" is in no source: it weighed the most and the answer was "not in the documents".
    result = answer("Which laws govern the MSA?", GOVERNING)
    assert result.found and "Sweden" in result.text.splitlines()[0], result.text
    assert extractive._spelled_out("Is the MSA in force?", GOVERNING) == {
        "msa": frozenset(terms("Master Services Agreement"))}
    # Initials a source writes itself are read as written.
    assert extractive._spelled_out("What does the SCC do?", GOVERNING) == {}


def test_which_country_is_answered_by_a_name_without_the_word() -> None:
    # "country" is in no source: the passage lost half its score as one that cannot name one
    # ("which bank"), and the word weighed the most.
    result = answer("Which country's law governs the agreement?", GOVERNING)
    assert result.found and "Sweden" in result.text.splitlines()[0], result.text
    assert extractive._names_one("governed by the laws of Sweden.", "country", {"law"})
    assert not extractive._names_one("Either party may end it. Notice is written.", "country",
                                     set())
    assert extractive._names_one("Work is to start in April 2026.", "year", set())


MINUTES = [
    Numbered(1, "Harbourview Housing Cooperative - Board Meeting Minutes",
             "1. Roof repairs. The board approved the quote from Nordtak Roofing of $48,500 for "
             "the replacement of the east wing roof. Work is to start in April 2026 and take six "
             "weeks. 2. Monthly fees. The board agreed to raise the monthly fee by 3.5% from "
             "1 January 2026, to cover higher insurance premiums and the roof works.",
             document="minutes.pdf"),
    Numbered(2, MSA_TITLE,
             "6.2 If availability falls below 99.9%, Customer receives a service credit of 5% of "
             "the monthly fee for each full 0.1% below the target, up to 30% of the monthly fee.",
             document="msa.docx"),
]
DATA_SHEET = [Numbered(
    1, "Velo T4 Thermal Printer - Product Data Sheet",
    "Maximum print speed: 152 mm (6 in) per second. Dimensions: 220 x 180 x 170 mm. Weight: "
    "1.6 kg. Warranty: 24 months on the printer, 6 months or 25 km on the print head, whichever "
    "comes first.", document="datasheet.pdf")]


def test_how_much_something_costs_is_answered_by_a_price_and_only_by_one() -> None:
    roof = answer("How much will the new roof cost?", MINUTES)
    assert roof.found and "$48,500" in roof.text.splitlines()[0], roof.text
    # A data sheet without a price does not say what the printer costs: its weight is no answer.
    printer = answer("How much does the Velo T4 cost?", DATA_SHEET)
    assert not printer.found and NOT_FOUND in printer.text, printer.text


def test_going_up_is_an_increase() -> None:
    # "going" weighed the most, so the service credit's "monthly fee" twice came first.
    result = answer("By how much are monthly fees going up?", MINUTES)
    assert "3.5%" in result.text.splitlines()[0], result.text
    assert terms("fees went up") == terms("fees increased") == terms("fees raised")


def test_initials_spelt_out_by_a_sentence_in_lower_case() -> None:
    sources = [Numbered(1, "Larkspur Cloud - Q3 2026 Business Review · Highlights",
                        "Annual recurring revenue reached $18.4 million, up 31% year over year\n"
                        "Net revenue retention was 117%", document="QBR_Q3.pptx")]
    result = answer("What was Larkspur's ARR in Q3 2026?", sources)
    assert result.found and "$18.4 million" in result.text.splitlines()[0], result.text
    # Lower-case words spell initials only when they are long: not "must send all".
    assert extractive._spelled_out("When is the MSA due?", [Numbered(
        1, "Notes", "Members must send all forms by May.", document="n.docx")]) == {}


POSTMORTEM = [
    Numbered(1, "Incident 2026-014 postmortem · Postmortem: checkout outage on 14 September 2026",
             "Summary: from 09:12 to 10:47 UTC customers could not complete checkout. About "
             "3,800 orders failed.", document="incident.html"),
    Numbered(2, "Incident 2026-014 postmortem · Root cause",
             "A database connection pool limit was lowered from 200 to 20 in a configuration "
             "change that was meant for the staging environment only.", document="incident.html"),
]


def test_a_cause_is_the_passage_under_a_heading_that_names_it() -> None:
    # No causal wording ("due to", "because"), and the outage is named under another heading:
    # the summary, which says "checkout", was quoted as the cause.
    result = answer("What caused the checkout outage?", POSTMORTEM)
    assert result.found and "connection pool" in result.text.splitlines()[0], result.text


ONBOARDING = [
    Numbered(1, "New Starter Checklist - Finch & Moreau · Week one",
             "Day one starts at 9:30 in the Lisbon office, reception on the 4th floor.\n\n"
             "Complete the security awareness course in Learnhub by Friday of your first week.",
             document="onboarding.docx"),
    Numbered(2, "New Starter Checklist - Finch & Moreau · Before day one",
             "Return the signed contract and the bank details form to People Operations.\n\n"
             "Your laptop is shipped to your home address three working days before your start "
             "date.", document="onboarding.docx"),
]


def test_day_one_is_the_first_day_and_go_asks_nothing() -> None:
    # "go" weighed the most (no source says it) and "day one" was not "first day".
    result = answer("Where do I go on my first day?", ONBOARDING)
    assert result.found and "Lisbon" in result.text.splitlines()[0], result.text
    assert terms("on day one") == terms("on the first day")
    assert terms("in week 1") == terms("in the first week")


ROUTER = [Numbered(
    1, "How to reset your Nimbus router · Resetting a Nimbus R7 router",
    "A soft reset restarts the router and keeps your settings. A factory reset erases all "
    "settings, including the Wi-Fi name and password. Press and hold the recessed RESET button "
    "on the back for 10 seconds with a paper clip until the light flashes amber. After a factory "
    "reset the default Wi-Fi password is printed on the label under the router.\n\n"
    "If the light stays red for more than 15 minutes, call support on 0800 555 0199 (8:00 to "
    "22:00 every day).", document="kb-1042.html")]


def test_how_do_i_is_answered_by_what_to_do() -> None:
    # The two sentences that say "factory reset" came first; the one that says what to do
    # does not repeat it.
    result = answer("How do I factory reset the Nimbus router?", ROUTER)
    assert "10 seconds" in result.text, result.text


def test_a_phone_number_asked_for_is_answered_by_one() -> None:
    # "phone" and "number" are in no source: "not in the documents".
    result = answer("What is the support phone number?", ROUTER)
    assert result.found and "0800 555 0199" in result.text.splitlines()[0], result.text
    assert not extractive._PHONE.search("Total net sales 81,797 82,959 (1)%")
    assert extractive._PHONE.search("call +1 612 555 0144 or 1-800-661-2638")


CLINICS = [
    Numbered(1, "Riverside Physio - Clinics and opening hours",
             "Riverside Physio - Clinics and opening hours\n\n"
             "Appointments can be booked online or by phone. Bring your referral letter and a list "
             "of your current medication to the first visit.\n\n"
             "Clinic | Address | Weekdays | Saturday | Parking\n"
             "Northgate | 12 Mill Lane, Northgate | 08:00-19:00 | 09:00-13:00 | Free, 20 spaces\n"
             "Quayside | 3 Harbour Road, Quayside | 07:30-18:00 | Closed | Pay and display",
             document="clinics.docx"),
    Numbered(2, "Riverside Physio - Clinics and opening hours · Prices",
             "Appointment | Length | Price\nFirst assessment | 45 minutes | £65\n"
             "Follow-up | 30 minutes | £48", document="clinics.docx"),
]
TRAVEL = [
    Numbered(1, "Travel Policy - Ostara Biotech · Flights",
             "Economy class for flights under 6 hours. Premium economy is allowed for flights of 6 "
             "hours or more. Business class needs CFO approval.", document="travel.docx"),
    Numbered(2, "Travel Policy - Ostara Biotech · Hotels",
             "The nightly limit is 180 euros in most cities and 260 euros in London, Paris, Zurich "
             "and New York.", document="travel.docx"),
    Numbered(3, "Travel Policy - Ostara Biotech · Booking",
             "All travel must be booked through Navan at least 14 days before departure.",
             document="travel.docx"),
]


def test_a_documents_title_line_is_never_the_answer() -> None:
    # The title line alone was quoted first for "Which clinic is open on Saturday?".
    result = answer("Which clinic is open on Saturday?", CLINICS)
    assert not any(line.startswith("Riverside Physio - Clinics")
                   for line in result.text.splitlines()), result.text


def test_a_measure_the_question_gives_is_held_against_the_limits() -> None:
    # "7" is in no source: as a number the question gives, it halved every passage.
    result = answer("Which class is allowed on a 7 hour flight?", TRAVEL)
    assert result.found and "Premium economy" in result.text.splitlines()[0], result.text
    assert terms("a seven-hour flight") == terms("a 7 hour flight")
    assert terms("Six Months Ended") != terms("6 months ended")  # a period, read as words


def test_days_of_something_else_do_not_answer_how_many_days_of_it() -> None:
    # "within 14 days" had answered both: the days counted were never the leave asked about.
    for question in ("How many days of annual leave does Ostara give?",
                     "How many vacation days do Ostara staff get?"):
        result = answer(question, TRAVEL)
        assert not result.found and NOT_FOUND in result.text, (question, result.text)
    leave = [*TRAVEL, Numbered(4, "Ostara Biotech - Staff handbook · Leave",
                               "Everyone gets 27 days of annual leave a year.",
                               document="handbook.docx")]
    result = answer("How many days of annual leave does Ostara give?", leave)
    assert result.found and "27 days" in result.text.splitlines()[0], result.text
    assert extractive._counted("How many days of paid holiday a year do I get?") == {
        "paid", "holiday"}


def test_how_a_figure_changed_over_time_is_each_periods_figure() -> None:
    # "time" and "changed" are in no statement: every row fell short of the coverage an answer
    # needs, and the answer was "not in the documents".
    def statement(n: int, quarter: int, ended: str, revenue: str) -> Numbered:
        return Numbered(n, f"WINGTIP TOYS CORPORATION · Q{quarter} 2027 Form 10-Q",
                        "INCOME STATEMENTS\n(In millions, except per share amounts)\n"
                        f"Three Months Ended {ended}\nRevenue:\nProduct $ 15,535\n"
                        f"Service and other 34,587\nTotal revenue {revenue}\n"
                        "Total cost of revenue 15,452\nResearch and development 6,628",
                        document=f"wtt-q{quarter}.pdf")

    sources = [statement(1, 3, "March 31, 2027", "52,857"),
               statement(2, 2, "December 31, 2026", "52,747"),
               statement(3, 1, "September 30, 2026", "50,122")]
    result = answer("How has Wingtip's total revenue changed over time?", sources)
    assert result.found, result.text
    assert all(figure in result.text for figure in ("52,857", "52,747", "50,122")), result.text


SEGMENTS = [Numbered(
    1, "WINGTIP TOYS CORPORATION · Q1 2027 Form 10-Q",
    "Segment revenue and operating income were as follows during the periods presented:\n"
    "Three Months Ended September 30,\n(In millions) 2026 2025\nRevenue\n"
    "Toys and Games $ 16,465 $ 15,039\nCloud Play 20,325 17,037\nTotal $ 36,790 $ 32,076\n"
    "Operating Income\nToys and Games $ 8,323 $ 7,750\nCloud Play 8,600 7,997\n"
    "Total $ 16,923 $ 15,747\nLiquidity\nCash rose in the quarter.", document="wtt.pdf")]


def test_a_label_between_rows_names_the_rows_below_it() -> None:
    # "Operating Income" between the rows had been prose: its rows were the revenue rows'
    # equals, and the first, revenue, was quoted for the segment's operating income.
    income = answer("What was the operating income of the Cloud Play segment?", SEGMENTS)
    assert income.text.splitlines()[0].startswith("Cloud Play (Three Months Ended September 30, "
                                                  "2026): 8,600 million"), income.text
    revenue = answer("What was the revenue of the Cloud Play segment?", SEGMENTS)
    assert "20,325 million" in revenue.text.splitlines()[0], revenue.text
    # A short line after a table that no row follows is still prose.
    assert any(u.text.startswith("Liquidity") for u in extractive.units(SEGMENTS[0], 0))


def test_a_share_row_is_of_the_row_above_it() -> None:
    # A filing gives each expense "As a percent of revenue" on the line below it; the share
    # asked for was "Research and development (Percentage Change): 18%".
    sources = [Numbered(1, "Fabrikam Corporation · Q1 2027 Form 10-Q",
                        "(In millions, except percentages) Three Months Ended September 30, 2026 "
                        "2025 Percentage Change\n"
                        "Research and development $ 6,628 $ 5,599 18%\n"
                        "As a percent of revenue 13% 12% 1ppt\n"
                        "Sales and marketing $ 5,126 $ 4,547 13%\n"
                        "As a percent of revenue 10% 10% 0ppt", document="fabrikam.pdf")]
    result = answer("What percentage of Fabrikam's revenue was spent on research and "
                    "development?", sources)
    assert result.text.splitlines()[0].startswith(
        "Research and development, as a percent of revenue (Three Months Ended September 30, "
        "2026): 13%"), result.text


ACTIONS = [
    Numbered(1, "Incident 2026-014 postmortem · Root cause",
             "A database connection pool limit was lowered from 200 to 20.",
             document="incident.html"),
    Numbered(2, "Incident 2026-014 postmortem · Action items",
             "Action items\n\n"
             "Separate staging and production configuration repositories (owner: Priya Nair).\n\n"
             "Alert on connection pool saturation above 80% (owner: Tom Becker).\n\n"
             "Refund shipping fees for affected customers (owner: Customer Care).",
             document="incident.html"),
]


def test_the_items_of_a_section_the_question_names_are_the_answer_together() -> None:
    # One item was quoted: the one that repeats "connection pool" of the question's sources.
    result = answer("What are the action items from the outage?", ACTIONS)
    lines = result.text.splitlines()
    assert [line.split(" (owner")[0] for line in lines] == [
        "Separate staging and production configuration repositories",
        "Alert on connection pool saturation above 80%",
        "Refund shipping fees for affected customers"], result.text
    # Not where the heading does not name what is asked.
    assert extractive._section_items("What are the owners?", extractive.units(ACTIONS[1], 1)[0],
                                     extractive.units(ACTIONS[1], 1), ACTIONS) == []
