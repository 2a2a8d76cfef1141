"""The checks every answer goes through before its final event: unknown citations removed,
uncited sentences attributed, figures missing from the cited sources reported."""

from __future__ import annotations

from inference_worker.grounding import (
    attribute,
    check,
    derived,
    figures,
    scaled_figures,
    strip_unknown,
)
from parley.contracts import Source


def source(n: int, text: str, context: str = "") -> Source:
    return Source(n=n, chunk_id=f"c{n}", document_id=f"d{n}", document=f"doc{n}.pdf",
                  snippet=text[:40], text=text, score=0.5, context=context)


SOURCES = [
    source(1, "Total net sales 81,797 82,959 293,787 304,182", "Kestrel Avionics Q3 2023"),
    source(2, "Research and development expense was $7,457 million. Effective tax rate 12.5 %."),
]


def test_unknown_citation_numbers_are_removed_and_reported() -> None:
    text, removed = strip_unknown("Sales were 81,797 [1][7]. R&D was 7,457 [2, 9]. Fine [3-4].",
                                  {1, 2})
    assert text == "Sales were 81,797 [1]. R&D was 7,457 [2]. Fine."
    assert removed == [7, 9, 3, 4]
    assert strip_unknown("Nothing cited.", {1}) == ("Nothing cited.", [])


def test_a_figure_in_no_cited_source_is_unsupported() -> None:
    checked = check("Net sales were $81,797 million [1]; R&D was $7,460 million [2].", SOURCES)
    assert checked.unsupported_numbers == ("$7,460",)
    assert checked.cited == (1, 2)
    # In a source, but not one the answer cites: still unsupported.
    checked = check("R&D was 7,457 and net sales 81,797 [1].", SOURCES)
    assert checked.unsupported_numbers == ("7,457",)


def test_figures_compare_without_formatting_and_the_question_counts() -> None:
    checked = check("The rate was 12.50% [2] in 2023, against 81797 [1].", SOURCES,
                    question="What was the rate in 2023?")
    assert checked.unsupported_numbers == ()
    assert check("In 2023 the rate was 12.5% [2].", SOURCES).unsupported_numbers == ("2023",)


def test_an_answer_citing_nothing_has_every_figure_unsupported() -> None:
    checked = check("Net sales were 81,797.", SOURCES)
    assert checked.cited == () and checked.unsupported_numbers == ("81,797",)


def test_list_numbers_citations_and_small_counts_are_not_figures() -> None:
    assert figures("1. Sales rose [1].\n2) Costs fell 3 times [2, 3].") == []
    assert [w for w, _ in figures("Up 5% to $3 and 1,680.")] == ["5%", "$3", "1,680"]


def test_uncited_sentences_get_the_source_that_holds_them() -> None:
    text = "Research and development expense was 7,457 million. The weather was nice."
    attributed = attribute(text, SOURCES)
    assert attributed == ("Research and development expense was 7,457 million [2]. "
                          "The weather was nice.")
    checked = check(text, SOURCES, attribute_uncited=True)
    assert checked.cited == (2,) and checked.unsupported_numbers == ()
    assert attribute("Already cited [1].", SOURCES) == "Already cited [1]."


def test_a_share_worked_out_from_supported_figures_is_supported_when_right() -> None:
    sources = [source(1, "Services 21,213 19,604\nTotal net sales 81,797 82,959")]
    right = "Services / Total net sales: 21,213 / 81,797 × 100 = 25.93% [1]"
    assert check(right, sources).unsupported_numbers == ()
    assert derived("21,213 / 81,797 × 100 = 25.9%", {"21213", "81797"}) == {"100", "25.9"}
    # A wrong result, or a working from figures no cited source holds, proves nothing.
    assert check(right.replace("25.93", "26.93"), sources).unsupported_numbers == (
        "100", "26.93%")
    assert check("5,000 / 81,797 × 100 = 6.11% [1]", sources).unsupported_numbers == (
        "5,000", "100", "6.11%")


def test_a_figure_in_full_is_supported_only_where_the_cited_source_declares_its_unit() -> None:
    sources = [
        source(1, "Share repurchases (in thousands, except per share amounts)\n"
                  "Shares repurchased 102,673"),
        source(2, "Shares repurchased 102,673"),
        source(3, "The Company repurchased $18.0 billion of its common stock."),
    ]
    assert check("102,673 thousand shares (102,673,000) [1]", sources).unsupported_numbers == ()
    # The same figure from a source that declares no unit: the full one is not vouched for.
    assert check("102,673 thousand shares (102,673,000) [2]", sources).unsupported_numbers == (
        "102,673,000",)
    # Nor times a unit the source does not declare.
    assert check("102,673,000,000 [1]", sources).unsupported_numbers == ("102,673,000,000",)
    # A figure written with its unit word stands for itself in full.
    assert check("$18,000,000,000 [3]", sources).unsupported_numbers == ()
    # A source that continues the table carries its caption (Source.unit): it vouches too.
    carried = source(4, "Shares repurchased 102,673").model_copy(
        update={"unit": "Share repurchases (in thousands, except per share amounts)"})
    assert check("102,673 thousand shares (102,673,000) [4]", [carried]).unsupported_numbers == ()
    assert scaled_figures("365 million shares; (In millions) Net sales 81,797") >= {
        "365000000", "81797000000"}
    assert "81797000" not in scaled_figures("(In millions) Net sales 81,797")
