"""The local ONNX embedder against the model's own fp32 pipeline (sentence-transformers), in each
of its graphs, plus its pure parts: pooling, batching plan, tokenizer counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from parley.embedder import Embedder
from parley.embedder.local import (
    FP32_MODEL_ID,
    MAX_SEQUENCE,
    MODEL_ID,
    Graph,
    LocalEmbedder,
    LocalEmbedderConfig,
    MiniLMTokenizer,
    mean_pool,
    plan_batches,
)

REFERENCE = Path(__file__).with_name("reference_vectors.json")


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    # A small mini-batch so that the fixtures' few texts still span several batches.
    local = LocalEmbedder(LocalEmbedderConfig(threads=1, batch_size=3))
    yield local
    await local.close()


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.mark.parametrize(
    ("graph", "least"), [("int8", 0.99), ("fp32", 0.999), ("packaged", 0.999)]
)
async def test_vectors_match_the_fp32_reference(graph: Graph, least: float) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    texts = [item["text"] for item in reference["items"]]
    local = LocalEmbedder(LocalEmbedderConfig(threads=1, batch_size=3, graph=graph))
    try:
        vectors = await local.embed(texts)
    finally:
        await local.close()
    for item, vector in zip(reference["items"], vectors, strict=True):
        assert cosine(vector, item["vector"]) >= least, item["text"][:40]
    assert local.model_id == (MODEL_ID if graph == "int8" else FP32_MODEL_ID)


async def test_the_fused_fp32_graph_computes_what_the_packaged_file_does() -> None:
    texts = ["Net sales rose 8% in the third quarter.", "word " * 300, "Short.", "東京"]
    fused = LocalEmbedder(LocalEmbedderConfig(threads=1, graph="fp32"))
    packaged = LocalEmbedder(LocalEmbedderConfig(threads=1, graph="packaged"))
    try:
        a, b = fused.embed_sync(texts), packaged.embed_sync(texts)
    finally:
        await fused.close()
        await packaged.close()
    assert (a * b).sum(axis=1).min() > 0.99999


def test_an_unknown_graph_is_refused() -> None:
    with pytest.raises(ValueError, match="graph"):
        LocalEmbedder(LocalEmbedderConfig(graph="fp16"))  # type: ignore[arg-type]


async def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    query, paraphrase, unrelated = await embedder.embed(
        [
            "How can I change my account password?",
            "Steps to reset the password of your user account.",
            "The river flooded the village after three days of heavy rain.",
        ]
    )
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3


@pytest.mark.parametrize(("graph", "least"), [("fp32", 0.9999), ("int8", 0.995)])
async def test_batching_and_padding_do_not_change_the_vectors(graph: Graph, least: float) -> None:
    # The int8 graph quantizes activations with one scale per mini-batch, so a text's vector
    # depends a little on its batch mates; the fp32 graphs do not.
    texts = ["short", "a somewhat longer sentence about taxes", "x " * 300, "mid length text here"]
    local = LocalEmbedder(LocalEmbedderConfig(threads=1, batch_size=3, graph=graph))
    try:
        together = await local.embed(texts)
        alone = [(await local.embed([text]))[0] for text in texts]
    finally:
        await local.close()
    for a, b in zip(together, alone, strict=True):
        assert cosine(a, b) > least


async def test_it_satisfies_the_protocol(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.model_id, embedder.dimensions, embedder.max_tokens) == (MODEL_ID, 384, 254)
    assert MODEL_ID != FP32_MODEL_ID  # int8 vectors differ: their own collections


async def test_a_closed_embedder_refuses_work() -> None:
    local = LocalEmbedder(LocalEmbedderConfig(threads=1))
    await local.close()
    await local.close()  # idempotent
    with pytest.raises(RuntimeError):
        await local.embed(["x"])


def test_count_is_word_pieces_without_special_tokens_nor_truncation() -> None:
    tokenizer = MiniLMTokenizer()
    assert tokenizer.count("") == 0
    assert tokenizer.count("hello world") == 2
    assert tokenizer.count("unbelievably") > 1  # split into word pieces
    assert tokenizer.count("word " * 1000) == 1000  # not truncated at 256
    assert tokenizer.vocab_size == 30522  # the ONNX model's embedding rows


def test_encodings_are_truncated_to_the_model_sequence() -> None:
    (encoding,) = MiniLMTokenizer().encode_batch(["word " * 1000])
    assert len(encoding.ids) == MAX_SEQUENCE
    assert encoding.ids[0] == 101 and encoding.ids[-1] == 102  # [CLS] ... [SEP]


def test_mean_pool_ignores_padding_and_normalises() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]], dtype=np.int64)
    pooled = mean_pool(hidden, mask)
    np.testing.assert_allclose(pooled, [[2 / np.hypot(2, 2), 2 / np.hypot(2, 2)]], rtol=1e-6)


def test_plan_batches_sorts_by_length_and_covers_every_index() -> None:
    batches = plan_batches([5, 1, 9, 3, 7], 2)
    assert batches == [[1, 3], [0, 4], [2]]
    assert plan_batches([], 4) == []
    with pytest.raises(ValueError):
        plan_batches([1], 0)
