"""Okapi BM25 over counted terms, built with numpy: Lucene's variant (Kamphuis et al., ECIR 2020),
with the parameters and the float32 arithmetic of ``bm25s``' default, which it replaced (same
scores; ``tests/chat_gateway/test_bm25.py`` holds the two side by side).

Why not ``bm25s`` itself (ARCHITECTURE.md, "The retrieval path"): a tenant's index is rebuilt
after every write to its collection, and ``bm25s`` indexes lists of tokens in Python loops (per
document, per term): at 20,000 chunks that was a quarter of a rebuild even once the tokens of
unchanged chunks were reused. Here each chunk is kept as its distinct term ids and their counts,
and the postings of every term are built in a few array operations. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

K1 = 1.5  # bm25s' defaults (measured against other settings: ARCHITECTURE.md)
B = 0.75


def counted(terms: Iterable[str], vocabulary: dict[str, int]) -> np.ndarray:
    """One chunk's terms as a (2, n) int32 array: the ids of its distinct terms in
    ``vocabulary`` (a new term is added to it), then how often each occurs."""
    counts = Counter(terms)
    ids = [vocabulary.setdefault(t, len(vocabulary)) for t in counts]
    return np.array([ids, list(counts.values())], dtype=np.int32).reshape(2, len(ids))


class BM25:
    """The BM25 weight of every (chunk, term) pair of ``rows`` (each one :func:`counted` array,
    term ids below ``n_terms``), kept as one postings list per term."""

    def __init__(self, rows: Sequence[np.ndarray], n_terms: int) -> None:
        self.size = len(rows)
        sizes = np.fromiter((r.shape[1] for r in rows), dtype=np.int64, count=len(rows))
        flat = np.concatenate(rows, axis=1) if rows else np.zeros((2, 0), dtype=np.int32)
        terms, counts = flat[0], flat[1].astype(np.float32)
        chunk = np.repeat(np.arange(len(rows), dtype=np.int32), sizes)
        lengths = np.bincount(chunk, weights=flat[1], minlength=len(rows))  # float64
        frequency = np.bincount(terms, minlength=n_terms)  # chunks holding each term
        idf = np.zeros(n_terms, dtype=np.float32)
        held = frequency > 0
        idf[held] = np.log(1 + (self.size - frequency[held] + 0.5) / (frequency[held] + 0.5))
        average = float(lengths.mean()) if len(rows) else 1.0
        norm = K1 * ((1 - B) + B * lengths / (average or 1.0))
        weights = (idf[terms] * (counts / (norm[chunk] + counts))).astype(np.float32)
        order = np.argsort(terms, kind="stable")
        self._chunks = chunk[order]
        self._weights = weights[order]
        self._starts = np.concatenate([[0], np.cumsum(frequency)])

    def scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """The score of every chunk for a query of these term ids (a repeated term counts each
        time, as in ``bm25s``), float32, in the order the rows were given."""
        out = np.zeros(self.size, dtype=np.float32)
        for term in term_ids:
            start, end = self._starts[term], self._starts[term + 1]
            out[self._chunks[start:end]] += self._weights[start:end]  # a chunk once per term
        return out
