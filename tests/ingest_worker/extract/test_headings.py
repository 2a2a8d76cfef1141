"""Headings found in laid-out page text: what is a heading (short lines over body text, numbered
items and notes, titles in capitals over a table) and what is not (table rows, column names,
wrapped lines of a sentence, labels, list items, running footers)."""

from __future__ import annotations

from ingest_worker.extract.headings import headings, normalized, split_at_headings

BODY = (
    "The Company believes its balances of cash, cash equivalents and unrestricted marketable\n"
    "securities will be sufficient to satisfy its cash requirements over the next 12 months."
)


def found(text: str, **kwargs: frozenset[str]) -> list[str]:
    lines = text.split("\n")
    return [lines[i] for i in sorted(headings(lines, **kwargs))]


def test_short_lines_over_body_text_are_headings() -> None:
    page = f"Liquidity and Capital Resources\n{BODY}\nCapital return program\n{BODY}"
    assert found(page) == ["Liquidity and Capital Resources", "Capital return program"]


def test_numbered_items_and_notes_and_chains_of_headings() -> None:
    page = (
        "PART II — OTHER INFORMATION\n"
        "Item 1A. Risk Factors\n"
        f"{BODY}\n"
        "Note 7 – Shareholders’ Equity\n"
        "Share Repurchase Program\n"
        f"{BODY}\n"
        "Item 2. Management’s Discussion and Analysis of Financial Condition and Results of "
        f"Operations\n{BODY}"
    )
    assert found(page) == [
        "PART II — OTHER INFORMATION",
        "Item 1A. Risk Factors",
        "Note 7 – Shareholders’ Equity",
        "Share Repurchase Program",
        "Item 2. Management’s Discussion and Analysis of Financial Condition and Results of "
        "Operations",
    ]


def test_a_title_in_capitals_heads_a_table_but_its_rows_and_columns_do_not() -> None:
    page = (
        "CONDENSED CONSOLIDATED BALANCE SHEETS (Unaudited)\n"
        "(In millions)\n"
        "Three Months Ended Nine Months Ended\n"
        "Current\n"
        "Marketable\n"
        "Securities\n"
        "Total net sales $ 81,797 $ 82,959 (1)% $ 293,787 $ 304,182 (3)%\n"
        "Research and development 7,442 6,797 22,608 19,490 11,317 12,114 10,229 6,790\n"
        "Net sales by reportable segment:\n"
        "Americas $ 35,383 $ 37,472 (6)%\n"
        "Americas\n"
        "Americas net sales decreased during the third quarter compared to the same quarter of\n"
        "the year before, due primarily to lower net sales of phones and computers."
    )
    assert found(page) == ["CONDENSED CONSOLIDATED BALANCE SHEETS (Unaudited)", "Americas"]


def test_lines_of_sentences_labels_and_lists_are_not_headings() -> None:
    page = (
        "The Company repurchased shares of its common stock during the quarter under the\n"
        "Share Repurchase Program and\n"  # a wrapped sentence: the next line continues it
        "Capital Return Program announced in May, and paid dividends to its shareholders of\n"
        "record.\n"
        "Yes ☐ No ☒\n"
        "15,634,232,000 shares of common stock were issued and outstanding as of July 21, 2023.\n"
        "The following were announced:\n"
        "• New Products\n"
        "• Updates to its operating systems, expected to be available in the fall of the year."
    )
    assert found(page) == []


def test_running_footers_and_a_page_last_line_are_not_headings() -> None:
    footer = "Contoso Ltd. | Q3 2024 Form 10-Q | 7"
    page = f"Overview\n{BODY}\nContoso Ltd | Quarterly Report\n{BODY}\nQuarterly Highlights"
    skip = frozenset({normalized("Contoso Ltd | Quarterly Report"), normalized(footer)})
    assert found(page, skip=skip) == ["Overview"]


def test_split_at_headings_keeps_every_line() -> None:
    page = f"{BODY}\nFiscal Period\n{BODY}\nQuarterly Highlights\n{BODY}"
    parts = split_at_headings(page)
    assert [h for h, _ in parts] == [None, "Fiscal Period", "Quarterly Highlights"]
    assert parts[1][1].startswith("Fiscal Period\nThe Company believes")
    assert "\n".join(text for _, text in parts) == page
