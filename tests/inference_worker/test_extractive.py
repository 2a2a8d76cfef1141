"""The extractive answerer on generated quarterly reports of several companies and quarters: the
right report's passage, quoted with its number, among look-alike reports; "not in the
documents" when no report holds the answer."""

from __future__ import annotations

import random

import pytest

from inference_worker.extractive import NOT_FOUND, Numbered, answer, period_key, terms, units
from tests.fixtures.quarterlies import Question, Report, questions, reports, unanswerable

DOCS = reports()


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
    # Every line is a quote of one source, cited.
    for line in result.text.splitlines():
        n = int(line.rsplit("[", 1)[1].rstrip("]"))
        quoted = line.rsplit(" [", 1)[0].split(" (columns: ")[0]
        assert " ".join(quoted.split()) in " ".join(sources[n - 1].text.split())


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
