"""The OpenAI-compatible face, driven by the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from parley import turnstream
from tests.chat_gateway.conftest import World


def sdk(base: str, token: str = "tok-alpha") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)


async def test_models_lists_the_chat_model(world: World) -> None:
    async with world.make_gateway() as base:
        models = await sdk(base).models.list()
    assert [m.id for m in models.data] == [world.settings.chat_model]


async def test_non_streaming_completion_with_citations(world: World) -> None:
    async with world.make_gateway() as base:
        completion = await sdk(base).chat.completions.create(
            model="parley",
            messages=[{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "What was Orchard's revenue?"}],
        )
    assert completion.choices[0].message.content == world.worker.answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extension: dict[str, Any] = (completion.model_extra or {})["parley"]
    assert extension["sources"][0]["document"] == "orchard-annual-report.pdf"
    assert [c["n"] for c in extension["citations"]] == [1, 2]
    assert extension["citations"][0]["page"] == 3
    assert extension["unsupported_numbers"] == []
    assert world.worker.turns[-1].answer_mode == "extractive"  # the gateway's default


async def test_a_request_chooses_the_answer_mode_and_sees_the_checks(world: World) -> None:
    world.worker.final_extra = {"unsupported_numbers": ["161,000"],
                                "text": "Orchard reported 383 billion dollars [1]."}
    async with world.make_gateway() as base:
        completion = await sdk(base).chat.completions.create(
            model="parley", messages=[{"role": "user", "content": "What was Orchard's revenue?"}],
            extra_body={"answer_mode": "generative"},
        )
        stream = await sdk(base).chat.completions.create(
            model="parley", stream=True, extra_body={"answer_mode": "generative"},
            messages=[{"role": "user", "content": "What was Orchard's revenue?"}],
        )
        chunks = [chunk async for chunk in stream]
    assert completion.choices[0].message.content == "Orchard reported 383 billion dollars [1]."
    assert (completion.model_extra or {})["parley"]["unsupported_numbers"] == ["161,000"]
    last = (chunks[-1].model_extra or {})["parley"]
    assert last["unsupported_numbers"] == ["161,000"]
    assert last["text"] == "Orchard reported 383 billion dollars [1]."
    assert [t.answer_mode for t in world.worker.turns] == ["generative", "generative"]


async def test_streaming_completion(world: World) -> None:
    async with world.make_gateway() as base:
        stream = await sdk(base).chat.completions.create(
            model="parley", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "revenue?"},
                      {"role": "assistant", "content": "Which company?"},
                      {"role": "user", "content": "Orchard, in 2023"}],
        )
        chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == world.worker.answer
    first, last_choice = chunks[0], [c for c in chunks if c.choices][-1]
    assert (first.model_extra or {})["parley"]["sources"][0]["page"] == 3
    assert last_choice.choices[0].finish_reason == "stop"
    assert [c["n"] for c in (last_choice.model_extra or {})["parley"]["citations"]] == [1, 2]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    # The caller's history reached the worker (the face stores nothing itself).
    turn = world.worker.turns[-1]
    assert [m.role for m in turn.messages] == ["system", "user", "assistant", "user"]


async def test_unauthenticated_and_bad_requests(world: World) -> None:
    async with world.make_gateway() as base:
        with pytest.raises(openai.AuthenticationError):
            await sdk(base, "wrong").models.list()
        with pytest.raises(openai.AuthenticationError):
            await sdk(base, "wrong").chat.completions.create(
                model="x", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk(base).chat.completions.create(
                model="x", messages=[{"role": "assistant", "content": "hi"}])
        assert "last message" in str(bad.value)
        with pytest.raises(openai.BadRequestError) as empty:
            await sdk(base, "tok-empty").chat.completions.create(
                model="x", messages=[{"role": "user", "content": "hi"}])
        assert empty.value.code == "no_documents" and "upload" in empty.value.message
        with pytest.raises(openai.BadRequestError) as blank:
            await sdk(base).chat.completions.create(
                model="x", messages=[{"role": "user", "content": "  \n "}])
        assert blank.value.code == "bad_request" and "empty" in blank.value.message
        with pytest.raises(openai.APIStatusError) as huge:
            await sdk(base).chat.completions.create(
                model="x", messages=[{"role": "user", "content": "revenue " * 2048}])
        assert huge.value.status_code == 413 and "over the limit" in huge.value.message
        async with httpx.AsyncClient(base_url=base) as http:
            broken = await http.post("/v1/chat/completions", content=b"{",
                                     headers={"Authorization": "Bearer tok-alpha"})
            assert broken.status_code == 400 and broken.json()["error"]["code"] == "bad_request"


async def test_client_disconnect_mid_stream_cancels_the_turn(world: World) -> None:
    world.worker.delay = 0.05
    world.worker.answer = " ".join(f"w{i}" for i in range(400))
    async with world.make_gateway() as base:
        stream = await sdk(base).chat.completions.create(
            model="parley", stream=True, messages=[{"role": "user", "content": "revenue?"}])
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
        [turn] = world.worker.turns
        ended = await asyncio.wait_for(world.worker.wait_ended(turn.turn_id), 3.0)
    assert ended == "cancelled"
    assert await turnstream.is_cancelled(world.redis, turn.turn_id,
                                         prefix=world.settings.redis_prefix)
