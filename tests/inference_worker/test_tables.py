"""Table rows read back into cells, and the column a question asks for: PDF-rendered rows under
broken column headings, cell-separated rows (DOCX, HTML, Markdown, XLSX)."""

from __future__ import annotations

import pytest

from inference_worker.tables import (
    Cell,
    Row,
    Scale,
    best_cell,
    cell_unit,
    column_headings,
    is_figure,
    is_rule,
    names_columns,
    pdf_row,
    period,
    pipe_rows,
    scale,
    scaled,
    split_cells,
    split_figures,
)

FILING_HEADINGS = ("Three Months Ended Nine Months Ended July 1, 2023 June 25, 2022 "
                   "July 1, 2023 June 25, 2022")
WORDS = {"revenue"}


def test_a_pdf_row_is_its_label_and_its_figures() -> None:
    assert split_figures("Net sales $ 81,797 $ 82,959 $ 293,787 $ 304,182") == (
        "Net sales", ["$ 81,797", "$ 82,959", "$ 293,787", "$ 304,182"])
    assert split_figures("Effective tax rate 12.5 % 15.7 %") == (
        "Effective tax rate", ["12.5 %", "15.7 %"])
    assert split_figures("Other income/(expense), net (265) (10) — —") == (
        "Other income/(expense), net", ["(265)", "(10)", "—", "—"])
    assert split_figures("Total 102,673 $ 94,569") == ("Total", ["102,673", "$ 94,569"])
    # A change in percentage points, glued to its figure or after it.
    assert split_figures("As a percent of revenue 13% 12% 1ppt") == (
        "As a percent of revenue", ["13%", "12%", "1ppt"])
    assert split_figures("Gross margin 74.0 % 53.6 % 20.4 pts") == (
        "Gross margin", ["74.0 %", "53.6 %", "20.4 pts"])


def test_a_share_asked_for_is_not_the_percentage_change_column() -> None:
    headings = "Three Months Ended September 30, 2026 2025 Percentage Change"
    row = pdf_row("As a percent of revenue 13% 12% 1ppt", headings)
    assert row is not None
    share = best_cell(row, "What percentage of revenue went to research?",
                      {"percentage", "revenue", "research"})
    assert share is not None and share.value == "13%"
    change = best_cell(row, "What was the percentage change in the share of revenue?",
                       {"percentage", "change", "share", "revenue"})
    assert change is not None and change.value == "1ppt"


def test_column_headings_broken_a_date_piece_a_line_are_put_back_under_their_groups() -> None:
    assert column_headings(FILING_HEADINGS, 4) == [
        "Three Months Ended July 1, 2023", "Three Months Ended June 25, 2022",
        "Nine Months Ended July 1, 2023", "Nine Months Ended June 25, 2022"]
    assert column_headings("July 1, 2023 September 24, 2022", 2) == [
        "July 1, 2023", "September 24, 2022"]
    assert column_headings("2024 2023", 2) == ["2024", "2023"]
    assert column_headings("Q1 2024 Q2 2024 Q3 2024", 3) == ["Q1 2024", "Q2 2024", "Q3 2024"]
    # Headings that do not fit the row name no column rather than a wrong one.
    assert column_headings(FILING_HEADINGS, 3) == ["", "", ""]


def test_the_column_the_question_asks_for() -> None:
    row = pdf_row("Net sales $ 81,797 $ 82,959 $ 293,787 $ 304,182", FILING_HEADINGS)
    assert row is not None

    def value(question: str) -> str:
        cell = best_cell(row, question, WORDS)
        assert cell is not None
        return cell.value

    assert value("What were net sales in Q3 2023?") == "$ 81,797"  # a quarter, the current one
    assert value("What were net sales for the nine months ended July 1, 2023?") == "$ 293,787"
    assert value("What were net sales in the quarter ended June 25, 2022?") == "$ 82,959"
    assert value("Net sales in the first nine months of 2022?") == "$ 304,182"
    assert value("What were net sales?") == "$ 81,797"  # nothing said: the first column
    assert value("Net sales in the same quarter a year earlier?") == "$ 82,959"


def test_a_question_names_its_period() -> None:
    asked = period("Revenue for the nine months ended September 27, 2025 versus 2024?")
    assert asked.dates == {(2025, 9, 27)} and asked.years == {2024, 2025} and asked.span == 9
    assert period("Revenue in the second quarter of 2024").span == 3
    assert period("Revenue a year earlier").prior and period("Revenue a year earlier").span == 0


def test_cell_rows_under_a_heading_row_and_spreadsheet_rows_naming_their_columns() -> None:
    rows = pipe_rows(["Region | Q1 2024 | Q2 2024", "North | 1,200 | 1,350",
                      "Notes | none | none"])
    assert rows == [None, Row("North", (Cell("Q1 2024", "1,200"), Cell("Q2 2024", "1,350"))),
                    None]
    named = pipe_rows(["Warehouse: Zephyr | Pallets: 4812 | Forklifts: 17"])
    assert named == [Row("Zephyr", (Cell("Pallets", "4812"), Cell("Forklifts", "17")))]
    assert best_cell(named[0] or Row("", ()), "How many forklifts at Zephyr?",
                     {"forklifts", "zephyr"}) == Cell("Forklifts", "17")
    # A spreadsheet whose first row is text: each cell names its column, so it is a row, not
    # the table's heading row (which would have named the columns of every row below).
    settings = pipe_rows(["Setting: PARLEY_OCR | Default: local | What it does: OCR of scans",
                          "Setting: PARLEY_CHUNK_TOKENS | Default: 200 | What it does: chunk size"])
    assert settings == [None, Row("PARLEY_CHUNK_TOKENS chunk size", (Cell("Default", "200"),))]


def test_a_forms_row_of_fields_is_no_heading_row() -> None:
    # A DOCX form's first row holds fields and their values ("Job Location: | Rig Floor"): read
    # as the heading row of a table it was never quoted, and "where is the job performed?"
    # found no passage.
    assert names_columns("Setting | Default | What it does")
    assert not names_columns("Task Name: | Lay Down Tubulars | Job Location: | Rig Floor")
    assert names_columns("Job Location: | | Notes:")  # a field with no value names a column


@pytest.mark.parametrize(("line", "cells"), [
    ("a | b | c", ["a", "b", "c"]),
    ("| a | b |", ["a", "b"]),  # Markdown's outer pipes
    ("| 2025 | 2024", ["", "2025", "2024"]),  # an empty first cell over the row labels
])
def test_cells_of_a_line(line: str, cells: list[str]) -> None:
    assert split_cells(line) == cells


def test_figures_and_rules() -> None:
    assert all(is_figure(c) for c in ("1,200", "$ 3.5", "(7,709)", "12.5 %", "—", "€ 40"))
    assert not any(is_figure(c) for c in ("North", "Q1 2024 notes", ""))
    assert is_rule("|---|:---:|") and not is_rule("| a | b |")


@pytest.mark.parametrize(("caption", "declared"), [
    ("Condensed Consolidated Statements of Operations (in thousands)", Scale("thousand", "")),
    ("(In millions)", Scale("million", "")),
    ("were as follows (dollars in millions, except per share amounts):", Scale("million", "")),
    ("(in millions, except number of shares, which are reflected in thousands, and per share "
     "amounts)", Scale("million", "thousand")),
    ("(net income in millions and shares in thousands):", Scale("million", "thousand")),
    ("Revenue grew in the quarter.", None),
])
def test_the_unit_a_caption_declares(caption: str, declared: Scale | None) -> None:
    assert scale(caption) == declared


def test_the_unit_of_a_cell() -> None:
    money = Scale("million", "")
    apart = Scale("million", "thousand")
    sales = Row("Net sales", (Cell("Three Months Ended July 1, 2023", "$ 81,797"),))
    assert cell_unit(money, sales, sales.cells[0]) == "million"
    assert cell_unit(None, sales, sales.cells[0]) == ""
    # Prices, per-share amounts, rates and figures to the cent are not scaled.
    eps = Row("Diluted earnings per-share amount", (Cell("", "$ 1.3"),))
    assert cell_unit(money, eps, eps.cells[0]) == ""
    rate = Row("Effective tax rate", (Cell("", "14.9 %"),))
    assert cell_unit(money, rate, rate.cells[0]) == ""
    # A margin in money is scaled ("34,670" had been left without its "million"); one with a
    # decimal point is a ratio.
    margin = Row("Gross margin", (Cell("", "34,670"), Cell("", "44.5")))
    assert [cell_unit(money, margin, c) for c in margin.cells] == ["million", ""]
    # Shares counted in a unit of their own: a figure naming shares, or a bare figure in a table
    # whose columns count shares; money stays in the main unit; a bare figure that names
    # neither is not told.
    total = Row("Total", (Cell("", "102,673"), Cell("", "$ 94,569")))
    columns = "Total Number of Shares Purchased Approximate Dollar Value"
    assert [cell_unit(apart, total, c, columns) for c in total.cells] == [
        "thousand shares", "million"]
    assert cell_unit(apart, total, total.cells[0], "Three Months Ended") == ""
    # A caption's declaration says "shares" without naming a column of them: term debt on a
    # balance sheet "(In millions, except number of shares, ...)" is not a count of shares.
    debt = Row("Term debt", (Cell("", "9,740"), Cell("", "11,128")))
    caption = ("CONDENSED CONSOLIDATED BALANCE SHEETS (Unaudited) (In millions, except number of "
               "shares, which are reflected in thousands, and par value)")
    assert [cell_unit(apart, debt, c, caption) for c in debt.cells] == ["", ""]
    weighted = Row("Weighted-average shares outstanding", (Cell("", "15,787,154"),))
    assert cell_unit(apart, weighted, weighted.cells[0]) == "thousand shares"


def test_a_figure_in_full() -> None:
    assert scaled("102,673", "thousand shares") == "102,673,000"
    assert scaled("$ 81,797", "million") == "$81,797,000,000"
    assert scaled("1.5", "billion") == "1,500,000,000"
    assert scaled("(1,680)", "thousand") == "-1,680,000"
    assert scaled("12.5 %", "") == ""


@pytest.mark.parametrize(("headings", "count", "expected"), [
    # The day with each group, the years on the line below (Microsoft's, Amazon's statements).
    ("Three Months Ended March 31, Nine Months Ended March 31, 2023 2022 2023 2022", 4,
     ["Three Months Ended March 31, 2023", "Three Months Ended March 31, 2022",
      "Nine Months Ended March 31, 2023", "Nine Months Ended March 31, 2022"]),
    ("Six Months Ended June 30, 2023 2022", 2,
     ["Six Months Ended June 30, 2023", "Six Months Ended June 30, 2022"]),
    # A day a column over a line of years (NVIDIA's).
    ("Three Months Ended July 30, July 31, 2023 2022", 2,
     ["Three Months Ended July 30, 2023", "Three Months Ended July 31, 2022"]),
])
def test_a_group_day_over_a_line_of_years_names_each_column(
    headings: str, count: int, expected: list[str]
) -> None:
    assert column_headings(headings, count) == expected


def test_a_last_column_of_change_is_named_after_the_periods() -> None:
    """"... 2023 2022 Percentage Change" over "Intelligent Cloud 22,081 19,051 16%": two periods
    and the change between them, also with a group line ("Revenue") read under the headings."""
    headings = ("(In millions, except percentages) Three Months Ended March 31, 2023 2022 "
                "Percentage Change Revenue")
    assert column_headings(headings, 3) == [
        "Three Months Ended March 31, 2023", "Three Months Ended March 31, 2022",
        "Percentage Change"]
    assert column_headings("Three Months Ended July 1, 2023 June 25, 2022 Change", 3) == [
        "Three Months Ended July 1, 2023", "Three Months Ended June 25, 2022", "Change"]
