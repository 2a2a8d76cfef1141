"""One contract every embedder keeps, run against each adapter that can run here: the local ONNX
model, and Azure OpenAI against the Azure-shaped fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from backends.azure_embedder import AzureOpenAIEmbedder
from parley.embedder import Embedder, Tokenizer
from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig
from tests.peers.azure_openai import FakeAzureOpenAI

UNICODE = [
    "naïve café — déjà vu",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "emoji 🙂👍🏽 and a zero-width\u200bjoiner",
    "control\x00chars\tand\nnewlines",
    "e\u0301 combining accent",
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAzureOpenAI]:
    # Refuses (400) any input over 8191 words, so an untruncated long input would fail.
    with FakeAzureOpenAI(dimensions=48, max_inputs=8, max_input_words=8191) as server:
        yield server


@pytest.fixture(scope="module", params=["local", "azure-openai"])
async def embedder(
    request: pytest.FixtureRequest, fake: FakeAzureOpenAI
) -> AsyncIterator[Embedder]:
    adapter: Embedder
    if request.param == "local":
        adapter = LocalEmbedder(LocalEmbedderConfig(threads=1, batch_size=4))
    else:
        adapter = AzureOpenAIEmbedder(
            endpoint=fake.url,
            deployment="contract",
            api_version="2024-10-21",
            api_key=fake.api_key,
            dimensions=fake.dimensions,
            max_inputs=fake.max_inputs,
        )
    yield adapter
    await adapter.close()


async def test_it_is_an_embedder(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.tokenizer, Tokenizer)
    assert embedder.model_id and embedder.dimensions > 0 and embedder.max_tokens > 0


async def test_order_is_preserved(embedder: Embedder) -> None:
    # Different lengths, so a length-sorting or request-splitting adapter must put them back.
    texts = [f"{'long ' * (i * 7 % 23)}item {i}" for i in range(20)]
    together = await embedder.embed(texts)
    alone = [(await embedder.embed([text]))[0] for text in texts[::5]]
    # Each text embedded alone is nearest to its own place in the batch. Nearly the same vector,
    # not the very same: the local int8 graph's products vary slightly with a text's batch mates
    # (cosine >= 0.995, ARCHITECTURE.md), while neighbours in this list stay below 0.95.
    for place, vector in zip(range(0, len(texts), 5), alone, strict=True):
        similarities = np.asarray(together) @ np.asarray(vector)
        assert int(np.argmax(similarities)) == place
        assert similarities[place] > 0.995
    assert len({tuple(np.round(v, 4)) for v in together}) == len(texts)


async def test_vectors_have_the_dimension_and_unit_length(embedder: Embedder) -> None:
    vectors = await embedder.embed(["one", "two words", "three whole words"])
    assert [len(v) for v in vectors] == [embedder.dimensions] * 3
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


async def test_no_texts_give_no_vectors(embedder: Embedder) -> None:
    assert await embedder.embed([]) == []


async def test_a_long_input_is_truncated_not_refused(embedder: Embedder) -> None:
    long_text = "The revenue grew steadily across every segment. " * 2000
    assert embedder.tokenizer.count(long_text) > embedder.max_tokens
    (vector,) = await embedder.embed([long_text])
    assert len(vector) == embedder.dimensions
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-4)


async def test_unicode_is_embedded(embedder: Embedder) -> None:
    vectors = await embedder.embed(UNICODE)
    assert len(vectors) == len(UNICODE)
    assert all(np.isfinite(v).all() and len(v) == embedder.dimensions for v in vectors)
    assert all(embedder.tokenizer.count(text) > 0 for text in UNICODE)
