"""BM25 built with numpy against ``bm25s``, the library it replaced (a dev dependency for this
test): the same scores, to the bit, for the same terms."""

from __future__ import annotations

import random

import bm25s
import numpy as np

from chat_gateway.bm25 import BM25, counted
from chat_gateway.lexical import known_words, tokenize


def test_the_scores_are_bm25s_lucene_scores() -> None:
    rng = random.Random(7)
    words = sorted(known_words())[:2000]
    # Chunks of every length, empty ones included; words repeat within a chunk.
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 250))) for _ in range(600)]
    corpus = [tokenize(t) for t in texts]
    oracle = bm25s.BM25()
    oracle.index(corpus, show_progress=False)
    vocab: dict[str, int] = {}
    ours = BM25([counted(c, vocab) for c in corpus], len(vocab))
    compared = 0
    for _ in range(200):
        query = [rng.choice(c) for c in rng.sample([c for c in corpus if c], rng.randint(1, 6))]
        query.append(query[0])  # a repeated term counts twice in both
        expected = oracle.get_scores(query)
        assert expected.any()
        assert np.array_equal(ours.scores([vocab[t] for t in query]), expected)
        compared += 1
    assert compared == 200


def test_counted_terms_and_an_empty_index() -> None:
    vocabulary = {"pump": 0}
    assert counted(["seal", "pump", "seal", "seal"], vocabulary).tolist() == [[1, 0], [3, 1]]
    assert vocabulary == {"pump": 0, "seal": 1}
    assert counted([], vocabulary).shape == (2, 0)
    assert BM25([], 0).scores([]).shape == (0,)
    only = BM25([counted(["pump", "pump", "seal"], vocabulary), counted([], vocabulary)], 2)
    scores = only.scores([0])
    assert scores[0] > 0 and scores[1] == 0
