"""Which documents a question is about (chat_gateway.focus) and the period vocabulary it reads
(parley.periods). Pure."""

from __future__ import annotations

import datetime as dt

import pytest

from chat_gateway.focus import entity_key, expanded, focus
from parley.contracts import DocumentContext
from parley.ids import DocumentId
from parley.periods import fiscal_year, parse_date, quarter_label


@pytest.mark.parametrize(("text", "label"), [
    ("What happened in Q3 2023?", "Q3 2023"),
    ("revenue in Q1 FY24", "Q1 2024"),
    ("the 2Q23 results", "Q2 2023"),
    ("In the second quarter of 2023, what drove sales?", "Q2 2023"),
    ("the third quarter of fiscal 2024", "Q3 2024"),
    ("FY2022 Q4 margins", "Q4 2022"),
    ("2023 Q1 MSFT.pdf", "Q1 2023"),  # a year first, as filings' file names often have it
    ("sales in 2023", None),
])
def test_quarter_labels(text: str, label: str | None) -> None:
    assert quarter_label(text) == label


def test_dates_and_fiscal_years() -> None:
    assert parse_date("the quarter ended July 1, 2023") == dt.date(2023, 7, 1)
    assert parse_date("as of Sept. 30 2024") == dt.date(2024, 9, 30)
    assert parse_date("February 30, 2024") is None
    assert fiscal_year("in fiscal 2022") == 2022
    assert fiscal_year("FY23 guidance") == 2023
    assert fiscal_year("in 2022") is None


D = DocumentId
CONTEXTS = {
    D("c1"): DocumentContext(entity="Contoso Ltd.", period="Q1 2024", period_end="2024-03-31"),
    D("c2"): DocumentContext(entity="Contoso Ltd.", period="Q2 2024", period_end="2024-06-30"),
    D("f1"): DocumentContext(entity="Fabrikam Corporation", period="Q1 2024",
                             period_end="2023-09-30"),
    D("f2"): DocumentContext(entity="Fabrikam Corporation", period="Q2 2024",
                             period_end="2023-12-31"),
    D("memo"): DocumentContext(title="Holiday schedule"),
}


@pytest.mark.parametrize(("question", "documents", "reason"), [
    ("Revenue for the quarter ended June 30, 2024?", {"c2"}, "date"),
    ("Revenue for the quarter ended July 1, 2024?", {"c2"}, "date"),  # within 3 days
    ("Contoso's revenue in Q1 2024?", {"c1"}, "quarter"),
    ("Revenue in Q1 2024?", {"c1", "f1"}, "quarter"),
    ("Fabrikam's net income in the second quarter of fiscal 2024", {"f2"}, "quarter"),
    ("What did Fabrikam report in fiscal 2024?", {"f1", "f2"}, "fiscal_year"),
    ("What did Contoso say in its latest report?", {"c2"}, "latest"),
    ("What does the most recent filing say?", {"c2"}, "latest"),
    ("How is Fabrikam doing?", {"f1", "f2"}, "entity"),
    ("What is the holiday schedule?", None, ""),
])
def test_focus(question: str, documents: set[str] | None, reason: str) -> None:
    found = focus(question, CONTEXTS)
    assert found.documents == (None if documents is None else {D(d) for d in documents})
    assert found.reason == reason


def test_questions_spanning_periods_spread_over_documents() -> None:
    assert focus("How has Contoso's revenue changed over time?", CONTEXTS).spread
    assert focus("Were there acquisitions in these 10-Qs?", CONTEXTS).spread
    latest = focus("How does R&D in the most recent quarter compare to previous quarters?",
                   CONTEXTS)
    assert latest.reason == "latest" and latest.spread
    # A named quarter is one document's question, whatever else it says.
    assert not focus("Q1 2024 revenue across segments", CONTEXTS).spread
    assert not focus("What was the revenue?", CONTEXTS).spread


@pytest.mark.parametrize(("question", "documents", "reason"), [
    ("How did Contoso's revenue change from Q1 2024 to Q2 2024?", {"c1", "c2"}, "quarter"),
    ("Contoso's revenue for the quarters ended March 31, 2024 and June 30, 2024", {"c1", "c2"},
     "date"),
    ("Compare Q1 2024 with Q2 2024", {"c1", "c2", "f1", "f2"}, "quarter"),
])
def test_two_periods_named_focus_both_reports_a_chunk_of_each_first(
    question: str, documents: set[str], reason: str
) -> None:
    found = focus(question, CONTEXTS)
    assert found.documents == frozenset(D(d) for d in documents)
    assert found.reason == reason
    assert found.spread


def test_a_question_about_every_company_gets_a_chunk_of_each_report_first() -> None:
    found = focus("Which company had the highest revenue in Q1 2024?", CONTEXTS)
    assert found.documents == frozenset({D("c1"), D("f1")})
    assert (found.reason, found.spread) == ("quarter", True)
    assert focus("How did the companies do?", CONTEXTS).spread
    assert not focus("Which segment grew in Q1 2024?", CONTEXTS).spread


def test_the_latest_of_each_company_named() -> None:
    found = focus("Compare Contoso's and Fabrikam's revenue in their latest quarters", CONTEXTS)
    assert found.documents == frozenset({D("c2"), D("f2")})  # f2 ended half a year before c2
    assert (found.reason, found.spread) == ("latest_each", True)
    assert focus("Contoso's latest revenue", CONTEXTS).reason == "latest"


def test_two_companies_named_share_the_ranks_of_their_reports() -> None:
    # One quarter, two companies: a chunk of each report first, then each in turn (search).
    found = focus("Compare Contoso's and Fabrikam's revenue in Q1 2024", CONTEXTS)
    assert found.documents == frozenset({D("c1"), D("f1")})
    assert (found.reason, found.spread, found.within) == ("quarter", True, True)
    every = focus("Compare Contoso's and Fabrikam's revenue", CONTEXTS)
    assert (every.reason, every.spread, every.within) == ("entity", True, True)
    one = focus("Contoso's revenue in Q1 2024", CONTEXTS)
    assert (one.spread, one.within) == (False, True)
    assert not focus("Contoso's revenue", CONTEXTS).spread


def test_a_second_period_no_report_holds_is_one_period_asked() -> None:
    found = focus("Contoso's revenue in Q2 2024 against Q2 2023", CONTEXTS)
    assert found.documents == frozenset({D("c2")})
    assert not found.spread


def test_one_entity_only_focuses_nothing_by_name() -> None:
    one = {d: c for d, c in CONTEXTS.items() if d.startswith("c")}
    assert focus("How is Contoso doing?", one).documents is None
    assert focus("Northwind's revenue in Q2 2024?", one).documents == frozenset({D("c2")})


def test_an_entity_is_named_by_its_whole_name_or_its_first_word_as_a_name() -> None:
    contexts = {
        D("n"): DocumentContext(entity="Northwind Traders Inc."),
        D("c"): DocumentContext(entity="Contoso Ltd."),
    }
    assert focus("What did Northwind report?", contexts).documents == frozenset({D("n")})
    assert focus("what did northwind traders report?", contexts).documents == frozenset({D("n")})
    assert focus("the northwind wind farm", contexts).documents is None


def test_entity_keys_drop_legal_suffixes() -> None:
    assert entity_key("Apple Inc.") == "apple"
    assert entity_key("Fabrikam Corporation") == "fabrikam"
    assert entity_key("Litware Holdings plc") == "litware"
    assert entity_key("Northwind Traders, Inc.") == "northwind traders"
    # As filings' covers write them.
    assert entity_key("AMAZON.COM, INC.") == "amazon"
    assert entity_key("The Coca-Cola Company") == "coca-cola"
    assert entity_key("JPMorgan Chase & Co.") == "jpmorgan chase"


@pytest.mark.parametrize(("entity", "question"), [
    ("AMAZON.COM, INC.", "What was Amazon's operating income in Q3 2023?"),
    ("The Coca-Cola Company", "How did Coca-Cola's unit case volume change?"),
    ("JPMorgan Chase & Co.", "What was JPMorgan's net interest income?"),
    ("NVIDIA CORPORATION", "Data center revenue of NVIDIA in the latest quarter?"),
    ("Advanced Micro Devices, Inc.", "How did AMD's gross margin change?"),
    ("The Procter & Gamble Company", "What did P&G say about pricing?"),
])
def test_an_entity_is_named_as_people_ask_for_it(entity: str, question: str) -> None:
    contexts = {D("a"): DocumentContext(entity=entity),
                D("b"): DocumentContext(entity="Fabrikam Corporation")}
    assert focus(question, contexts).documents == frozenset({D("a")})


@pytest.mark.parametrize("question", [
    "How did the amd driver change?",  # initials name an entity only in capitals
    "What did the jpmorgan report say?",  # a first word only as a name
    "What is a GE turbine?",  # two initials are too few to tell an entity by
])
def test_words_that_only_look_like_an_entity_pick_nothing(question: str) -> None:
    contexts = {D("a"): DocumentContext(entity="Advanced Micro Devices, Inc."),
                D("j"): DocumentContext(entity="JPMorgan Chase & Co."),
                D("g"): DocumentContext(entity="General Electric Company")}
    assert focus(question, contexts).documents is None


def test_abbreviations_are_spelled_out_for_the_search() -> None:
    assert expanded("How did R&D spending change?") == (
        "How did R&D spending change? (research and development)")
    assert expanded("SG&A and FX effects") == (
        "SG&A and FX effects (selling, general and administrative; foreign exchange currency)")
    assert expanded("Effects on the fxo desk and R&Dx") == "Effects on the fxo desk and R&Dx"
