"""The embedder seam: text -> unit-length vectors. Adapters: a local ONNX MiniLM shipped inside a
PyPI package (CPU; no download at run time), sentence-transformers on a GPU (the ``gpu`` extra),
and Azure OpenAI embeddings (:mod:`backends.azure_embedder`; :mod:`backends.factory` picks one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens the way the embedding model does, so chunks are sized in its tokens."""

    def count(self, text: str) -> int: ...


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # names the vector space; a new model_id means a new collection
    dimensions: int
    max_tokens: int  # input beyond this is truncated by the model
    tokenizer: Tokenizer

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Raises :class:`parley.errors.Retry` on a transient
        failure (429, timeout) with the delay the service asked for."""
        ...

    async def close(self) -> None: ...
