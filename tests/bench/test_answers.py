"""``bench answers --feedback``: the evaluation set ``parley feedback export --json`` writes is
read back and answered over the sources each rated answer was given."""

from __future__ import annotations

import json
from pathlib import Path

from bench.answers import Row, correct, extractive_answer, feedback_set, summary


async def test_a_feedback_export_is_an_evaluation_set(tmp_path: Path) -> None:
    source = {"n": 1, "document": "q3.pdf", "document_id": "d1", "page": 4,
              "text": "Total net sales were $81,797 million for the quarter ended July 1, 2023."}
    lines = [
        {"question": "What were total net sales for the quarter ended July 1, 2023?",
         "answer": "Net sales were $81,797 million [1].", "reference": "$81,797 million",
         "sources": [source], "rating": "up", "comment": None, "model": "m", "turn_id": "t1"},
        {"question": "What were total net sales?", "answer": "I do not know.",
         "reference": None, "sources": [source], "rating": "down", "comment": "wrong",
         "model": "m", "turn_id": "t2"},
    ]
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    items = feedback_set(path)
    assert [i.graded for i, _ in items] == [True, False]  # only a filled-in reference grades
    assert items[0][0].figures == ("81797",)
    assert [c.document for c in items[0][1]] == ["q3.pdf"]

    row = Row("extractive", "feedback")
    for item, chunks in items:
        row.outcomes.append((item, await extractive_answer(item.question, chunks, object())))
    first = row.outcomes[0][1]
    assert correct(items[0][0], first.text) and first.cited and "[1]" in first.text
    cells = summary(row)
    assert cells[2] == "1.00 (1/1)"  # correct: graded lines only
    assert cells[3] == "1.00 (1/1)"  # figures: of the lines whose reference gives one
    assert cells[4] == "1.00 (2/2)"  # cited: every line


def test_a_figure_of_another_column_in_the_first_line_is_wrong() -> None:
    from bench.answers import Item

    item = Item("Revenue for the nine months ended June 28, 2025?", figures=("121466",),
                decoys=("60294", "74370", "149540"))
    right = ("Revenue (Six Months Ended June 28, 2025): $121,466 [1]\n"
             "Revenue $ 60,294 $ 74,370 $ 121,466 $ 149,540 (columns: ...) [1]")
    whole_row = "Revenue $ 60,294 $ 74,370 $ 121,466 $ 149,540 (columns: ...) [1]"
    assert correct(item, right)
    assert not correct(item, whole_row)  # the figure is there, but so are three others


def test_figures_count_each_reference_figure_of_graded_and_ungraded_questions() -> None:
    from bench.answers import Item, Outcome, Row, summary

    row = Row("extractive", "dev")
    long = Item("How have net sales changed?", figures=("81797", "94836"), graded=False)
    short = Item("Net sales in Q3 2023?", figures=("81797",))
    row.outcomes.append((long, Outcome("Net sales $81,797 [1]", True, (), (), 0.0, 0.0)))
    row.outcomes.append((short, Outcome("Net sales $81,797 [1]", True, (), (), 0.0, 0.0)))
    cells = summary(row)
    assert cells[2] == "1.00 (1/1)"  # correct: the graded question only
    assert cells[3] == "0.67 (2/3)"  # figures: one of the long answer's two, the short one's one
