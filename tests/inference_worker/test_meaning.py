"""The extractive answerer's second reading of a question (a sentence embedder's cosines,
:mod:`inference_worker.meaning`): what it decides beside the words, scripted here so that each
rule is seen alone, and once with the packaged embedder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from inference_worker import extractive
from inference_worker.extractive import Numbered, answer
from inference_worker.meaning import Meaning, Vectors

DEVICES = Numbered(
    1, "Acme Employee Handbook · Equipment",
    "Lost or stolen devices: report a lost or stolen laptop, phone or badge to the IT Service "
    "Desk within 24 hours. Equipment remains the property of Acme and must be returned within "
    "five days of leaving. Personal use of company laptops is allowed within reason, but never "
    "for another business.", None, "handbook.docx")
TRAVEL = Numbered(
    2, "Acme Employee Handbook · Travel",
    "Book flights through the travel desk at least two weeks before you fly. Taxis are "
    "reimbursed only when no train or bus runs at that hour.", None, "handbook.docx")
ABROAD = Numbered(
    1, "Acme Employee Handbook · Remote work",
    "Working from another country under trade sanctions is never allowed for anyone. Working "
    "from another country is allowed for up to 20 working days per calendar year, with your "
    "manager's approval.", None, "handbook.docx")
# "tell someone" is in no source: the words cover 0.46 of the question, short of an answer.
# "deadline" is in no passage and weighs the most: the words alone fall just short.
STOLEN = "My Acme phone was stolen. What is the deadline to tell someone?"


class Scripted:
    """Cosines by a word of the passage (the first of ``by_word`` it holds), else ``other``;
    records what it was asked."""

    def __init__(self, by_word: dict[str, float], other: float = 0.2) -> None:
        self.by_word = by_word
        self.other = other
        self.asked: list[tuple[str, list[str]]] = []

    def __call__(self, question: str, passages: Sequence[str]) -> list[float]:
        self.asked.append((question, list(passages)))
        return [next((c for w, c in self.by_word.items() if w in p), self.other)
                for p in passages]


def test_a_question_just_short_of_words_is_answered_when_meaning_agrees() -> None:
    alone = answer(STOLEN, [DEVICES, TRAVEL])
    assert not alone.found and 0.4 <= alone.coverage < 0.5  # the words alone: not found
    agreed = answer(STOLEN, [DEVICES, TRAVEL], closeness=Scripted({"stolen": 0.6}))
    assert agreed.found and agreed.cited == (1,)
    assert agreed.text.splitlines()[0].startswith("Lost or stolen devices") and "24 hours" in (
        agreed.text)


@pytest.mark.parametrize("closeness", [
    # The closest in meaning is another passage (of those that cover the question at least
    # half as well as the best: the others are not asked).
    Scripted({"Equipment remains": 0.7, "stolen": 0.6}),
    Scripted({"stolen": 0.4}, other=0.1),  # the same passage, but not close enough
], ids=["disagree", "not-close"])
def test_meaning_that_does_not_agree_leaves_it_not_found(closeness: Scripted) -> None:
    assert not answer(STOLEN, [DEVICES, TRAVEL], closeness=closeness).found


def test_a_question_far_short_of_words_is_not_read_for_meaning() -> None:
    far = "Someone took my Acme phone. What is the deadline to report it?"
    closeness = Scripted({"stolen": 0.9})
    refused = answer(far, [DEVICES, TRAVEL], closeness=closeness)
    assert not refused.found and refused.coverage < extractive.AGREE_COVERAGE
    assert closeness.asked == []


def test_of_the_passages_that_cover_a_question_the_one_it_means_comes_first() -> None:
    question = "Is working from another country allowed?"
    assert answer(question, [ABROAD, TRAVEL]).text.startswith("Working from another country under")
    read = answer(question, [ABROAD, TRAVEL], closeness=Scripted({"20 working": 0.75}, other=0.3))
    assert read.found and read.text.startswith("Working from another country is allowed for")


def test_a_question_for_an_amount_the_words_answer_is_not_read_for_meaning() -> None:
    sales = Numbered(1, "Acme Q3 2023 report", "Total revenue 4,812\nNet income 611")
    closeness = Scripted({"Net income": 0.9})
    found = answer("What was Acme's total revenue?", [sales], closeness=closeness)
    assert found.found and "4,812" in found.text.splitlines()[0] and closeness.asked == []


class Counting:
    """An embedder of words to fixed unit vectors: one axis a word."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.axes: dict[str, int] = {}

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i, self.axes.setdefault(word, len(self.axes))] += 1.0
            out[i] /= np.linalg.norm(out[i])
        return out


def test_meaning_gives_cosines_and_keeps_passages_vectors() -> None:
    embedder = Counting()
    meaning = Meaning(embedder, keep=2)
    assert meaning("a b", ["a b", "c", "a c"]) == pytest.approx([1.0, 0.0, 0.5])
    assert embedder.texts == ["a b", "a b", "c", "a c"]
    # The two most recently used passages are kept ("c", "a c"): only the question and the
    # passage let go embed again.
    assert meaning("c", ["a b", "c", "a c"]) == pytest.approx([0.0, 1.0, 2 ** -0.5])
    assert embedder.texts[4:] == ["c", "a b"]


def test_the_packaged_embedder_reads_a_paraphrase() -> None:
    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    meaning = Meaning(LocalEmbedder(LocalEmbedderConfig(threads=1)))
    agreed = answer(STOLEN, [DEVICES, TRAVEL], closeness=meaning)
    assert agreed.found and "24 hours" in agreed.text


def test_a_cosine_does_not_move_with_the_passages_embedded_beside_it() -> None:
    # The int8 graph quantizes activations per batch: embedded together, a passage's vector
    # depended on the others (the same pair's cosine moved by up to ~0.01), so whether a
    # question just short of words was answered depended on what was asked before.
    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    embedder = LocalEmbedder(LocalEmbedderConfig(threads=1))
    others = [TRAVEL.text, ABROAD.text, "Badges", "A much longer passage " * 40]
    alone = Meaning(embedder)(STOLEN, [DEVICES.text])[0]
    beside = Meaning(embedder)(STOLEN, [*others, DEVICES.text])[-1]
    assert alone == beside
