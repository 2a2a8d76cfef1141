"""What the extractive answerer reads beside a question's words: the cosine of the question to
each passage by the packaged sentence embedder (all-MiniLM-L6-v2, :mod:`parley.embedder.local`;
nothing is downloaded), as :data:`inference_worker.extractive.Closeness`.

The answerer asks it only for a question it cannot settle by words alone (see
:func:`inference_worker.extractive.answer`), and only of the passages that cover the question
at least half as well as the best: ~20 sentences, ~150 ms on one shared core (``bench answers``
prints the time to first token), one text a call (below: ~1.4x the time of one batch, 114 vs
79 ms for 21 texts, measured in session 18). A passage's vector is kept (by its text) for the
next turns: a conversation asks about the same sources again. Blocking: the handler calls the
answerer on a thread when it has one of these; concurrent turns take turns here (one lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class Embeds(Protocol):
    """What is needed of an embedder: unit-length vectors, one row a text, blocking."""

    def embed_sync(self, texts: Sequence[str]) -> Vectors: ...


class Meaning:
    """``meaning(question, passages)``: the cosine of ``question`` to each passage, in order.
    Passages' vectors are kept for the next calls (the ``keep`` most recently used)."""

    def __init__(self, embedder: Embeds, keep: int = 4096) -> None:
        self._embedder = embedder
        self._keep = keep
        self._kept: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, question: str, passages: Sequence[str]) -> list[float]:
        with self._lock:
            return self._cosines(question, passages)

    def _cosines(self, question: str, passages: Sequence[str]) -> list[float]:
        new = [p for p in dict.fromkeys(passages) if p not in self._kept]
        # One text a call: the int8 graph quantizes its activations per batch, so a text's
        # vector moves with the texts embedded beside it (a cosine by up to ~0.01, measured),
        # and the same question over the same passages would be answered differently after
        # other turns (whose passages are kept) or beside other passages.
        asked = self._embedder.embed_sync([question])[0]
        for text in new:
            self._kept[text] = self._embedder.embed_sync([text])[0]
        out = []
        for p in passages:
            self._kept.move_to_end(p)
            out.append(float(self._kept[p] @ asked))
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return out

