"""Which caption declares the unit of the table a point of a section is in: carried over the
table's rows, column headings and group labels, ended by prose or replaced by the next caption."""

from __future__ import annotations

import pytest

from ingest_worker.declared import continues, declares, follow

CAPTION = "Share Repurchases (in thousands, except per share amounts)"


def test_a_caption_holds_over_its_tables_rows_and_headings_until_prose() -> None:
    texts = [
        "Issuer purchases of equity securities.",
        CAPTION,
        "Three Months Ended\nJune 28,\n2025",
        "Open market purchases:\nDay 1 purchases 1,204 $ 25.14",
        "Total 5,328 $ 25.17",
        "The programs do not oblige the company to buy any shares.",
        "Headcount 1,204",
    ]
    assert follow(texts) == [None, None, CAPTION, CAPTION, CAPTION, CAPTION, None]


def test_the_next_caption_replaces_it_and_cells_are_rows() -> None:
    texts = ["(In millions)", "Net sales | 81,797 | 82,959", "(in thousands)", "North | 1,200"]
    assert follow(texts) == [None, "(In millions)", "(In millions)", "(in thousands)"]
    assert follow(["North | 1,200"], "(in thousands)") == ["(in thousands)"]


def test_a_caption_cut_by_a_line_break_is_carried_whole() -> None:
    texts = ["Share repurchases were as follows (in thousands, except\nper share amounts):",
             "Total 5,328 $ 25.17"]
    assert follow(texts)[1] == ("Share repurchases were as follows (in thousands, except per "
                                "share amounts):")


@pytest.mark.parametrize(("line", "caption"), [
    ("(In millions, except number of shares, which are reflected in thousands)", True),
    ("The notional amounts were as follows (in millions):", True),
    ("Total net sales (in millions) 81,797 82,959", False),  # a row that names its unit
    ("Net sales were $81.8 billion in the quarter.", False),  # says no unit for a table
    ("Revenue grew in the quarter ended July 1, 2023.", False),
])
def test_what_declares_a_unit(line: str, caption: bool) -> None:
    assert declares(line) is caption


@pytest.mark.parametrize(("text", "inside"), [
    ("Total 102,673 $ 94,569\n(1) On April 28, 2022, the Board authorized ...", True),
    ("North | 1,200 | 1,350", True),
    ("Three Months Ended\nJuly 1,\n2023\nNet sales $ 81,797", True),
    ("Americas net sales decreased during the third quarter compared to the same periods in "
     "2022 due primarily to lower net sales of\niPhone and Mac.", False),
    ("RSUs was $7.0 billion and $14.9 billion for the three- and nine-month periods ended July "
     "1, 2023,\nrespectively.", False),
])
def test_a_chunk_continues_a_table_when_it_starts_with_a_row_or_a_heading(
        text: str, inside: bool) -> None:
    assert continues(text) is inside
