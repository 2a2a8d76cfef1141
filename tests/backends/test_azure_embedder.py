"""The Azure OpenAI embedder against a real HTTP server speaking Azure's embeddings API
(:mod:`tests.peers.azure_openai`): results, order, throttling, batching, errors."""

from __future__ import annotations

import email.utils
import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from backends.azure_embedder import (
    ApproxCl100kTokenizer,
    AzureOpenAIEmbedder,
    backoff,
    plan_requests,
)
from backends.throttling import retry_after
from parley.errors import ConfigError, Reject, Retry
from tests.peers.azure_openai import FakeAzureOpenAI

DIMS = 32


@pytest.fixture
def fake() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI(dimensions=DIMS, max_inputs=16, max_input_words=8191) as server:
        yield server


def make(fake: FakeAzureOpenAI, **options: object) -> AzureOpenAIEmbedder:
    kwargs: dict[str, object] = {
        "endpoint": fake.url,
        "deployment": "embeddings",
        "api_version": "2024-10-21",
        "api_key": fake.api_key,
        "dimensions": DIMS,
    }
    kwargs.update(options)
    return AzureOpenAIEmbedder(**kwargs)  # type: ignore[arg-type]


async def test_vectors_come_back_in_input_order(fake: FakeAzureOpenAI) -> None:
    embedder = make(fake, max_inputs=4)
    texts = [f"text number {i}" for i in range(10)]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()
    expected = [FakeAzureOpenAI.vector(t, DIMS) for t in texts]
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [len(r.inputs) for r in fake.requests] == [4, 4, 2]
    request = fake.requests[0]
    assert (request.deployment, request.api_version, request.auth, request.dimensions) == (
        "embeddings",
        "2024-10-21",
        "api-key",
        DIMS,
    )


async def test_429_waits_what_the_server_asks_then_succeeds(fake: FakeAzureOpenAI) -> None:
    fake.rate_limit(3, retry_after=0.2)
    embedder = make(fake)
    try:
        vectors = await embedder.embed(["a", "b"])
    finally:
        await embedder.close()
    assert len(vectors) == 2
    log = fake.requests
    assert [r.status for r in log] == [429, 429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(log)]
    assert all(gap >= 0.2 for gap in gaps), gaps


async def test_a_persistent_429_ends_in_retry_with_the_server_delay(fake: FakeAzureOpenAI) -> None:
    fake.rate_limit(1000, retry_after=0.05)
    embedder = make(fake, max_attempts=3)
    try:
        with pytest.raises(Retry) as caught:
            await embedder.embed(["a"])
    finally:
        await embedder.close()
    assert caught.value.delay == pytest.approx(0.05)
    assert caught.value.reason == "embedder_throttled"
    assert len(fake.requests) == 3


async def test_a_long_retry_after_is_handed_to_the_queue_at_once(fake: FakeAzureOpenAI) -> None:
    fake.rate_limit(1, retry_after=45.0)
    embedder = make(fake, max_inline_delay=20.0)
    try:
        with pytest.raises(Retry) as caught:
            await embedder.embed(["a"])
    finally:
        await embedder.close()
    assert caught.value.delay == pytest.approx(45.0)
    assert len(fake.requests) == 1


async def test_throttling_for_a_while_loses_nothing(fake: FakeAzureOpenAI) -> None:
    # What the queue does: call again after the Retry's delay until it goes through.
    fake.rate_limit(7, retry_after=0.01)
    embedder = make(fake, max_attempts=2, max_inputs=3)
    texts = [f"chunk {i}" for i in range(8)]
    retries = 0
    try:
        while True:
            try:
                vectors = await embedder.embed(texts)
                break
            except Retry:
                retries += 1
    finally:
        await embedder.close()
    assert retries >= 1
    expected = [FakeAzureOpenAI.vector(t, DIMS) for t in texts]
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


async def test_requests_respect_the_input_and_token_limits(fake: FakeAzureOpenAI) -> None:
    embedder = make(fake, max_inputs=5, max_request_tokens=400)
    texts = [("word " * (20 + 7 * i)).strip() for i in range(23)]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()
    assert len(vectors) == 23
    tokenizer = ApproxCl100kTokenizer()
    for request in fake.requests:
        assert len(request.inputs) <= 5
        assert sum(tokenizer.count(t) for t in request.inputs) <= 400
    assert fake.embedded == texts


async def test_server_errors_are_retried_then_become_retry(fake: FakeAzureOpenAI) -> None:
    fake.fail(1, status=503)
    embedder = make(fake, max_attempts=2)
    try:
        assert len(await embedder.embed(["a"])) == 1
        fake.fail(5, status=500)
        with pytest.raises(Retry) as caught:
            await embedder.embed(["a"])
    finally:
        await embedder.close()
    assert caught.value.reason == "embedder_unavailable"
    assert [r.status for r in fake.requests] == [503, 200, 500, 500]


async def test_an_unreachable_service_is_retry() -> None:
    fake = FakeAzureOpenAI().start()
    url = fake.url
    fake.stop()
    embedder = AzureOpenAIEmbedder(
        endpoint=url,
        deployment="embeddings",
        api_version="2024-10-21",
        api_key="k",
        dimensions=DIMS,
        max_attempts=1,
    )
    try:
        with pytest.raises(Retry) as caught:
            await embedder.embed(["a"])
    finally:
        await embedder.close()
    assert caught.value.reason == "embedder_unreachable"


async def test_a_refused_input_is_rejected_with_the_service_message() -> None:
    with FakeAzureOpenAI(dimensions=DIMS, max_input_words=3) as fake:
        embedder = make(fake)
        try:
            with pytest.raises(Reject) as caught:
                await embedder.embed(["one two three four five"])
        finally:
            await embedder.close()
    assert "maximum context length" in str(caught.value)
    assert caught.value.reason == "embedding_input_too_long"


async def test_a_very_long_input_is_truncated_before_sending(fake: FakeAzureOpenAI) -> None:
    embedder = make(fake)
    try:
        (vector,) = await embedder.embed(["lorem " * 20_000])
    finally:
        await embedder.close()
    assert len(vector) == DIMS
    (sent,) = fake.requests[0].inputs
    assert len(sent.split()) < 8191


async def test_a_wrong_key_or_dimension_is_a_config_error(fake: FakeAzureOpenAI) -> None:
    wrong_key = make(fake, api_key="nope")
    wrong_dims = make(fake, dimensions=None, deployment="text-embedding-3-small")
    try:
        with pytest.raises(ConfigError):
            await wrong_key.embed(["a"])
        with pytest.raises(ConfigError):  # the deployment answers 32-dim, 1536 was expected
            await wrong_dims.embed(["a"])
    finally:
        await wrong_key.close()
        await wrong_dims.close()


def test_an_unknown_deployment_needs_its_dimensions() -> None:
    with pytest.raises(ConfigError):
        AzureOpenAIEmbedder(endpoint="http://127.0.0.1:1", deployment="my-emb", api_version="v")
    known = AzureOpenAIEmbedder(
        endpoint="http://127.0.0.1:1",
        deployment="text-embedding-3-large",
        api_version="v",
        api_key="k",
    )
    assert (known.dimensions, known.model_id) == (3072, "azure-openai/text-embedding-3-large/3072")


def test_retry_after_reads_ms_then_seconds_then_a_date() -> None:
    assert retry_after({"Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after({"retry-after": "2"}) == 2.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after({"retry-after": date}, now=1_000_000.0) == 30.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    assert [backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 8.0]


def test_plan_requests_keeps_order_within_limits() -> None:
    assert plan_requests([1, 1, 1, 1, 1], max_inputs=2, max_tokens=100) == [
        range(0, 2),
        range(2, 4),
        range(4, 5),
    ]
    assert plan_requests([60, 60, 30, 200, 10], max_inputs=10, max_tokens=100) == [
        range(0, 1),
        range(1, 3),
        range(3, 4),
        range(4, 5),
    ]
    assert plan_requests([], max_inputs=2, max_tokens=100) == []


def test_the_token_estimate_is_close_to_cl100k_and_truncation_fits() -> None:
    tokenizer = ApproxCl100kTokenizer()
    # Their cl100k_base counts are 10 and 11 (measured with bpe-openai, tiktoken-compatible).
    assert 10 <= tokenizer.count("The quick brown fox jumps over the lazy dog.") <= 13
    assert 11 <= tokenizer.count("東京は日本の首都です。") <= 22
    cut = tokenizer.truncate("alpha beta gamma " * 100, 10)
    assert tokenizer.count(cut) <= 10
    assert "alpha beta gamma".startswith(cut.split(" gamma")[0].strip())


async def test_without_a_key_it_uses_entra_id_and_closes_the_credential() -> None:
    # Only construction and close: asking for a token would probe the cloud's identity endpoints.
    embedder = AzureOpenAIEmbedder(
        endpoint="https://example.openai.azure.com",
        deployment="text-embedding-3-small",
        api_version="2024-10-21",
    )
    assert type(embedder._credential).__name__ == "DefaultAzureCredential"
    await embedder.close()
