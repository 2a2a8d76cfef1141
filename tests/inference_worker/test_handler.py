"""The chat-turn handler on a real Redis, through the real consumer runtime and broker.

Models: a scripted ChatModel where the control path needs exact timing (cancel while the model
is silent, failures before/after the first token); the OpenAI adapter against the chat-completions
stand-in (``tests.peers.openai_chat``) for the rate-limit and unreachable-model paths.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from inference_worker import extractive
from inference_worker.chatmodel import Usage
from inference_worker.extractive import Numbered
from inference_worker.handler import TurnHandler
from inference_worker.openai_backend import OpenAIChatModel
from parley.broker import Message
from parley.contracts import ChatMessage, Source, dump
from parley.errors import ParleyError, Retry, Unsettled
from parley.ids import ChunkId, DocumentId, MessageId
from parley.keys import Keys
from parley.turnstream import TurnWriter, attached_key, cancel
from parley_cli import localstack
from tests.fixtures.turns import tail
from tests.inference_worker.conftest import text_of, turn, worker
from tests.inference_worker.scripted import ScriptedModel, ScriptedStream
from tests.peers.openai_chat import Failure, OpenAIChatPeer

ANSWER = ["Revenue", " grew", " 12%", " [2]", " on", " cloud", " sales", " [2][9]."]


async def test_tokens_arrive_in_order_and_final_has_text_citations_usage_timings(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel(pieces=ANSWER, interval=0.005)
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        done = time.time()
        await w.settled()
    kinds = [e.kind for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "final"
    assert set(kinds[1:-1]) == {"token"}
    assert text_of(events) == "".join(ANSWER)
    assert sum(int(e.data["n"]) for e in events if e.kind == "token") == len(ANSWER)
    final = events[-1].data
    assert final["text"] == "Revenue grew 12% [2] on cloud sales [2]."  # [9]: no such source
    assert final["removed_citations"] == [9] and final["unsupported_numbers"] == []
    assert final["answer_mode"] == "generative" and final["found"] is True
    assert [c["n"] for c in final["citations"]] == [2]
    assert final["citations"][0]["chunk_id"] == "chunk-2"
    assert final["citations"][0]["page"] == 3
    assert final["usage"]["completion_tokens"] == len(ANSWER)
    assert final["usage"]["source"] == "worker" and final["usage"]["prompt_tokens"] > 0
    assert final["finish_reason"] == "stop" and final["model"] == "scripted"
    timings = final["timings"]
    assert timings["queue_ms"] is not None and timings["queue_ms"] >= 0
    assert chat.enqueued_at is not None  # queue wait and run time do not overlap:
    assert timings["queue_ms"] + timings["total_ms"] <= (done - chat.enqueued_at) * 1000 + 1
    assert 0 <= timings["ttft_ms"] <= timings["total_ms"]
    messages, max_tokens, _ = model.calls[0]
    assert messages == list(chat.messages) and max_tokens == 64
    assert w.consumer.stats.handled == 1


async def test_usage_reported_by_the_backend_wins(redis: aioredis.Redis) -> None:
    model = ScriptedModel(pieces=["a", "b"], report=Usage(prompt_tokens=321, completion_tokens=2))
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        final = (await w.events(chat.turn_id))[-1]
    assert final.data["usage"] == {"prompt_tokens": 321, "completion_tokens": 2,
                                   "source": "backend"}


async def test_the_first_token_is_written_at_once(redis: aioredis.Redis) -> None:
    # The second token comes 3 s later: the first must not wait in the batch for it.
    model = ScriptedModel(pieces=["first", " second"], interval=3.0)
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        first = await w.first_token(chat.turn_id)
        assert first.data["text"] == "first"
        assert model.streams[0].yielded == 1  # the second has not been generated yet
        await cancel(redis, chat.turn_id, prefix=w.prefix)
        await w.events(chat.turn_id)


async def test_tokens_buffered_when_the_model_pauses_are_written(
    redis: aioredis.Redis,
) -> None:
    # "b" follows "a" within the batching interval, then the model is silent for 30 s: "b" must
    # not wait in the buffer for "c".
    model = ScriptedModel(pieces=["a", "b", "c"], delays=[0.0, 0.001, 30.0])
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        seen = ""
        async with asyncio.timeout(10):
            async for event in tail(redis, chat.turn_id, prefix=w.prefix, block=0.2):
                seen += str(event.data.get("text", "")) if event.kind == "token" else ""
                if seen == "ab":
                    break
        assert model.streams[0].yielded == 2  # "c" has not been generated
        await cancel(redis, chat.turn_id, prefix=w.prefix)
        assert (await w.events(chat.turn_id))[-1].kind == "cancelled"


async def test_cancel_while_streaming_stops_within_one_second(redis: aioredis.Redis) -> None:
    model = ScriptedModel(pieces=[f" w{i}" for i in range(100_000)], interval=0.01)
    async with worker(redis, model) as w:
        chat = turn(max_tokens=32768)
        await w.ask(chat)
        await w.first_token(chat.turn_id)
        asked = time.monotonic()
        await cancel(redis, chat.turn_id, prefix=w.prefix)
        events = await w.events(chat.turn_id)
        took = time.monotonic() - asked
        await w.settled()
    assert events[-1].kind == "cancelled"
    assert took < 1.0, f"cancel took {took:.2f} s"
    stream = model.streams[0]
    assert stream.closed  # the model's iterator was closed: the backend slot is free
    assert stream.yielded < 1000
    assert events[-1].data["completion_tokens"] >= 1
    assert w.consumer.stats.handled == 1 and w.consumer.stats.retried == 0


async def test_cancel_while_the_model_is_silent_stops_within_one_second(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel(first_delay=60.0)  # a long prefill: no token flow to notice the flag
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        await asyncio.wait_for(model.called.wait(), 10)
        asked = time.monotonic()
        await cancel(redis, chat.turn_id, prefix=w.prefix)
        events = await w.events(chat.turn_id)
        took = time.monotonic() - asked
    assert [e.kind for e in events] == ["sources", "cancelled"]
    assert took < 1.0, f"cancel took {took:.2f} s"
    assert model.streams[0].closed


async def test_a_turn_cancelled_before_it_starts_is_never_answered_by_the_model(
    redis: aioredis.Redis,
) -> None:
    # A served model's request went out with the state read (a first delivery) and is dropped
    # unheard; an in-process model is never asked; a redelivery reads the state first.
    served = ScriptedModel(first_delay=5.0)
    local, again = ScriptedModel(in_process=True), ScriptedModel()
    for model, redelivered in ((served, False), (local, False), (again, True)):
        async with worker(redis, model) as w:
            chat = turn()
            await cancel(redis, chat.turn_id, prefix=w.prefix)
            await w.ask(chat, redelivered=redelivered)
            events = await w.events(chat.turn_id)
            await w.settled()
        assert [e.kind for e in events] == ["sources", "cancelled"]
        assert events[-1].data == {"completion_tokens": 0, "reason": "cancelled"}
    assert served.streams[0].closed and served.streams[0].yielded == 0
    assert local.calls == [] and again.calls == []


async def test_a_first_delivery_asks_the_model_before_its_state_is_read(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state read's round trip is off the time to first token: the model's request goes
    out first, and the first token waits for the later of the two."""
    model = ScriptedModel(pieces=ANSWER, first_delay=0.3)
    read: list[float] = []
    real = TurnHandler._state

    async def slow_state(self: TurnHandler, turn_id: str) -> tuple[str | None, bool]:
        await asyncio.sleep(0.3)
        state = await real(self, turn_id)
        read.append(time.monotonic())
        return state

    monkeypatch.setattr(TurnHandler, "_state", slow_state)
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    final = events[-1].data
    assert [e.kind for e in events][-1] == "final" and text_of(events) == "".join(ANSWER)
    assert model.streams[0].started_at < read[0] - 0.2  # asked while the state was read
    # One after the other they would take 0.6 s to the first token.
    assert final["timings"]["ttft_ms"] < 500, final["timings"]


async def test_redelivery_of_a_finished_turn_is_acked_without_writing(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel()
    async with worker(redis, model) as w:
        chat = turn()
        writer = TurnWriter(redis, chat.turn_id, prefix=w.prefix)
        await writer.emit("sources", {"sources": []})
        await writer.token("done")
        await writer.emit("final", {"text": "done"})
        before = await redis.xlen(writer.key)
        # The crash happened after final, before ack: the turn is delivered again.
        await w.ask(chat, write_sources=False, redelivered=True)
        await w.settled()
        assert await redis.xlen(writer.key) == before
    assert model.calls == []
    assert w.consumer.stats.handled == 1 and w.consumer.stats.dead_lettered == 0


async def test_redelivery_mid_answer_ends_the_turn_with_worker_lost(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel()
    async with worker(redis, model) as w:
        chat = turn()
        writer = TurnWriter(redis, chat.turn_id, prefix=w.prefix)
        await writer.emit("sources", {"sources": []})
        await writer.token("Half an ans")  # what the dead worker got out
        await writer.flush()
        await w.ask(chat, write_sources=False, redelivered=True)
        events = await w.events(chat.turn_id)
        await w.settled()
    assert [e.kind for e in events] == ["sources", "token", "error"]
    assert events[-1].data["code"] == "worker_lost"
    assert "ask again" in events[-1].data["message"]
    assert model.calls == []  # no token is written twice


async def test_malformed_turns_are_dead_lettered_with_the_reason(redis: aioredis.Redis) -> None:
    model = ScriptedModel()
    async with worker(redis, model) as w:
        chat = turn()
        writer = TurnWriter(redis, chat.turn_id, prefix=w.prefix)
        await writer.emit("sources", {"sources": []})
        broken = json.loads(dump(chat))
        del broken["messages"]
        broken["max_tokens"] = -5
        await w.publish(json.dumps(broken).encode(), chat.turn_id)
        await w.publish(b"{not json")
        await w.publish(b'{"schema": ' + b"[" * 20_000)  # json raises RecursionError on this
        future = {**json.loads(dump(turn())), "schema": "parley.chat.v2"}
        await w.publish(json.dumps(future).encode())
        events = await w.events(chat.turn_id)
        await w.settled()
        dead = await w.broker.dead_letters(w.queue.name)
    reasons = sorted(d.reason for d in dead)
    assert len(reasons) == 4
    assert reasons[0].startswith("chat turn is not JSON")
    assert reasons[1].startswith("chat turn is not JSON: JSON nested too deeply")
    assert reasons[2].startswith("malformed chat turn")
    assert "messages: Field required" in reasons[2] and "max_tokens" in reasons[2]
    assert reasons[3].startswith("unknown schema 'parley.chat.v2'")
    assert all(d.attempt == 1 for d in dead)  # rejected at once, not retried
    # The client of the malformed turn is told instead of waiting forever.
    assert events[-1].kind == "error" and events[-1].data["code"] == "bad_turn"
    assert model.calls == []


async def test_rate_limit_is_retried_through_the_queue_then_answered(
    redis: aioredis.Redis,
) -> None:
    peer = OpenAIChatPeer(reply=["Fine", " [1]."]).start()
    peer.fail_next(Failure(status=429, headers={"retry-after-ms": "300"}), times=2)
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    try:
        async with worker(redis, model) as w:
            chat = turn()
            started = time.monotonic()
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            took = time.monotonic() - started
            await w.settled()
    finally:
        await model.close()
        peer.stop()
    kinds = [e.kind for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "final"
    assert set(kinds[1:-1]) == {"token"}  # nothing was written for the 429s
    assert events[-1].data["text"] == "Fine [1]."
    assert events[-1].data["usage"]["source"] == "backend"
    assert len(peer.requests) == 3
    assert took >= 0.6  # it waited as long as the service asked, twice
    assert w.consumer.stats.retried == 2


async def test_rate_limit_past_the_deadline_gives_up_with_retry_after(
    redis: aioredis.Redis,
) -> None:
    peer = OpenAIChatPeer().start()
    peer.fail_next(Failure(status=429, headers={"retry-after": "20"}))
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    try:
        async with worker(redis, model) as w:
            chat = turn(deadline=time.time() + 5)  # 20 s from now is too late
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            await w.settled()
    finally:
        await model.close()
        peer.stop()
    error = events[-1]
    assert error.kind == "error"
    assert error.data["code"] == "rate_limited" and error.data["retry_after"] == 20.0
    assert error.data["message"]
    assert w.consumer.stats.dead_lettered == 0 and w.consumer.stats.retried == 0


async def test_unreachable_model_is_retried_then_reported(redis: aioredis.Redis) -> None:
    model = OpenAIChatModel.compatible(f"http://127.0.0.1:{localstack.free_port()}/v1", "m")
    try:
        async with worker(redis, model, max_attempts=2) as w:
            chat = turn()
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            await w.settled()
    finally:
        await model.close()
    assert [e.kind for e in events] == ["sources", "error"]
    assert events[-1].data["code"] == "model_unavailable"
    assert "cannot reach the model" in events[-1].data["message"]
    assert w.consumer.stats.retried == 1 and w.consumer.stats.dead_lettered == 0


async def test_a_failure_after_tokens_is_final_not_retried(redis: aioredis.Redis) -> None:
    model = ScriptedModel(
        pieces=["one", " two", " three"],
        fail=ParleyError("stream cut", reason="model_unavailable"), fail_after=2,
    )
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    assert text_of(events) == "one two"
    assert events[-1].kind == "error"
    assert events[-1].data["code"] == "model_unavailable"
    assert events[-1].data["completion_tokens"] == 2
    assert len(model.calls) == 1 and w.consumer.stats.retried == 0


async def test_a_turn_past_its_deadline_is_not_started(redis: aioredis.Redis) -> None:
    model = ScriptedModel()
    async with worker(redis, model) as w:
        chat = turn(deadline=time.time() - 1)
        await w.ask(chat)
        events = await w.events(chat.turn_id)
    assert events[-1].kind == "error" and events[-1].data["code"] == "model_unavailable"
    assert model.calls == []


async def test_stopping_worker_ends_a_running_turn_with_worker_lost(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel(pieces=[f" w{i}" for i in range(100_000)], interval=0.01)
    stop = asyncio.Event()
    async with worker(redis, model, drain_seconds=0.3, stop=stop) as w:
        chat = turn(max_tokens=32768)
        await w.ask(chat)
        await w.first_token(chat.turn_id)
        stop.set()  # SIGTERM: the drain time (0.3 s) is shorter than the answer
        events = await w.events(chat.turn_id)
    assert events[-1].kind == "error" and events[-1].data["code"] == "worker_lost"
    assert model.streams[0].closed
    # The message was left unsettled for the broker to redeliver; the next worker will ack it.
    assert await w.broker.depth(w.queue.name) == 1


async def test_a_turn_whose_gateway_died_is_cancelled_as_orphaned(
    redis: aioredis.Redis,
) -> None:
    # The gateway holds <turn>:attached for 3 s and refreshes it every second while it relays;
    # here it "dies" right after the first token: the hold is never refreshed and expires.
    model = ScriptedModel(pieces=[f" w{i}" for i in range(100_000)], interval=0.01)
    async with worker(redis, model, orphan_after=1.0) as w:
        chat = turn(max_tokens=32768)
        await redis.set(attached_key(w.prefix, chat.turn_id), b"gateway-1", px=3000)
        await w.ask(chat)
        await w.first_token(chat.turn_id)
        events = await w.events(chat.turn_id, timeout=10)
        await w.settled()
    assert events[-1].kind == "cancelled"
    assert events[-1].data["reason"] == "orphaned"
    assert model.streams[0].closed
    assert model.streams[0].yielded < 1000  # stopped ~4 s in, not at max_tokens
    assert w.consumer.stats.handled == 1


async def test_concurrent_turns_are_served_together(redis: aioredis.Redis) -> None:
    model = ScriptedModel(pieces=["a"] * 10, interval=0.1)  # 1 s per turn
    async with worker(redis, model) as w:
        chats = [turn() for _ in range(8)]
        for chat in chats:
            await w.ask(chat)
        finals = [(await w.events(c.turn_id))[-1] for c in chats]
    assert all(f.kind == "final" and f.data["text"] == "a" * 10 for f in finals)
    # concurrency 8: every turn had started before the first one finished
    assert max(s.started_at for s in model.streams) < min(s.ended_at for s in model.streams)


async def test_the_local_model_end_to_end(redis: aioredis.Redis) -> None:
    """The in-process numpy model (tiny random weights: gibberish, same streaming path)."""
    from inference_worker.local import LocalChatModel

    model = LocalChatModel.tiny(seed=3)
    try:
        async with worker(redis, model) as w:
            chat = turn(max_tokens=40, temperature=0.0)
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            await w.settled()
    finally:
        await model.close()
    final = events[-1]
    assert final.kind == "final", final
    assert final.data["text"] == text_of(events) and final.data["text"]
    assert final.data["usage"]["source"] == "backend"
    assert 1 <= final.data["usage"]["completion_tokens"] <= 40
    assert final.data["usage"]["prompt_tokens"] > 10
    assert final.data["model"] == "tiny-random-3"


async def test_an_extractive_turn_streams_quoted_passages_without_the_model(
    redis: aioredis.Redis,
) -> None:
    model = ScriptedModel(pieces=ANSWER)
    async with worker(redis, model) as w:
        chat = turn(answer_mode="extractive", question="How did revenue change?")
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    tokens = [e for e in events if e.kind == "token"]
    final = events[-1].data
    assert events[-1].kind == "final" and len(tokens) > 1  # streamed, not one blob
    assert text_of(events) == final["text"]
    assert final["text"].startswith("Revenue grew 12% on cloud sales, says chunk 1. [1]")
    assert final["model"] == "extractive" and final["answer_mode"] == "extractive"
    assert final["found"] is True and final["unsupported_numbers"] == []
    assert final["citations"][0]["n"] == 1
    assert model.calls == []


@pytest.mark.parametrize("mode", ["extractive", "generative"])
async def test_an_extractive_turn_reads_the_question_for_meaning_too(
    redis: aioredis.Redis, mode: str
) -> None:
    # Words alone cover 0.46 of the question ("deadline" is in no source): not found. With
    # the handler's sentence embedder (scripted here) agreeing, the extractive answer quotes the
    # passage. The check beside a generative answer holds the model's first token back: it
    # embeds nothing, and the question its words do not cover is not the model's to answer.
    from tests.inference_worker.test_meaning import DEVICES, STOLEN, TRAVEL, Scripted

    given = [Source(n=s.n, chunk_id=ChunkId(f"chunk-{s.n}"), document_id=DocumentId("doc-1"),
                    document=s.document, snippet=s.text[:40], text=s.text, score=0.8,
                    context=s.title) for s in (DEVICES, TRAVEL)]
    meaning = Scripted({"stolen": 0.6})
    async with worker(redis, ScriptedModel(pieces=ANSWER)) as w:
        chat = turn(answer_mode=mode, question=STOLEN, sources=given)
        assert not extractive.answer(STOLEN, extractive.numbered(chat.sources)).found
        w.handler.meaning = meaning
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    final = events[-1].data
    assert final["answer_mode"] == mode
    if mode == "extractive":
        assert final["found"] is True and "within 24 hours" in final["text"]
        assert [question for question, _ in meaning.asked] == [STOLEN]
    else:
        assert final["found"] is False and meaning.asked == []


async def test_a_question_the_sources_do_not_answer_is_not_guessed(
    redis: aioredis.Redis,
) -> None:
    # The model's first piece is ready before the check has refused: it must not be forwarded.
    model = ScriptedModel(pieces=ANSWER)
    async with worker(redis, model) as w:
        chat = turn(messages=[ChatMessage(role="user", content="Who founded Osprey Mining?")])
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    final = events[-1].data
    expected = extractive.answer("Who founded Osprey Mining?", extractive.numbered(chat.sources))
    assert not expected.found
    assert [e.kind for e in events][-1] == "final"
    assert text_of(events) == expected.text == final["text"]  # none of the model's words
    assert "not in the documents" in final["text"] and final["found"] is False
    assert final["model"] == "extractive" and final["answer_mode"] == "generative"
    assert [c["n"] for c in final["citations"]] == [1, 2]  # the closest sources, shown
    # The model was asked at once (the check ran while it worked) and stopped unheard.
    stream = model.streams[0]
    assert stream.closed and stream.yielded <= 1


def slow_check(
    monkeypatch: pytest.MonkeyPatch, seconds: float, before: Callable[[], object] = lambda: None
) -> list[float]:
    """Make the not-found check hold the worker's loop for ``seconds`` more (as the real one
    does on large sources), calling ``before`` first; returns the checks' start times."""
    real = extractive.answer
    started: list[float] = []

    def check(question: str, sources: Sequence[Numbered], **options: Any) -> extractive.Answer:
        started.append(time.monotonic())
        before()
        time.sleep(seconds)
        return real(question, sources, **options)

    monkeypatch.setattr(extractive, "answer", check)
    return started


async def test_the_check_runs_while_the_model_works_on_its_first_token(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ScriptedModel(pieces=ANSWER, first_delay=0.6)
    started = slow_check(monkeypatch, 0.6)
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    final = events[-1].data
    assert [e.kind for e in events][-1] == "final" and text_of(events) == "".join(ANSWER)
    assert final["found"] is True and final["model"] == "scripted"
    assert model.streams[0].started_at <= started[0]  # the request went out first
    # One after the other they would take 1.2 s to the first token.
    assert final["timings"]["ttft_ms"] < 1000, final["timings"]


async def test_a_model_error_during_a_refusing_check_is_dropped(redis: aioredis.Redis) -> None:
    # Rate limited at once: had the model not been asked (as before), the answer would be "not
    # in the documents"; so it still is, and the turn is not retried.
    model = ScriptedModel(fail=Retry("rate limited", reason="rate_limited", delay=5.0))
    async with worker(redis, model) as w:
        chat = turn(messages=[ChatMessage(role="user", content="Who founded Osprey Mining?")])
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    assert events[-1].kind == "final" and events[-1].data["found"] is False
    assert "not in the documents" in text_of(events)
    assert w.consumer.stats.retried == 0 and model.streams[0].closed


async def test_a_model_error_during_a_passing_check_is_the_turns(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ScriptedModel(fail=ParleyError("the model refused", reason="model_error"))
    slow_check(monkeypatch, 0.2)  # the error is in before the check ends
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    assert [e.kind for e in events] == ["sources", "error"]
    assert events[-1].data["code"] == "model_error"
    assert events[-1].data["message"] == "the model refused"


async def test_a_cancel_during_the_check_stops_the_model_unheard(
    redis: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ScriptedModel(pieces=ANSWER, first_delay=30.0)
    chat = turn()
    flags = SyncRedis.from_url(redis_url)
    prefix: list[str] = []
    slow_check(monkeypatch, 0.3,
               before=lambda: flags.set(Keys(prefix[0]).turn_cancel(chat.turn_id), b"1", ex=60))
    try:
        async with worker(redis, model) as w:
            prefix.append(w.prefix)
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            await w.settled()
    finally:
        flags.close()
    assert [e.kind for e in events] == ["sources", "cancelled"]
    assert events[-1].data == {"completion_tokens": 0, "reason": "cancelled"}
    assert model.streams[0].closed and model.streams[0].yielded == 0


async def test_an_in_process_model_is_asked_only_after_the_check(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ScriptedModel(pieces=ANSWER, in_process=True)
    started = slow_check(monkeypatch, 0.1)
    async with worker(redis, model) as w:
        refused = turn(messages=[ChatMessage(role="user", content="Who founded Osprey Mining?")])
        await w.ask(refused)
        first = await w.events(refused.turn_id)
        assert model.calls == []  # the local model never read the prompt it would not answer
        answered = turn()
        await w.ask(answered)
        second = await w.events(answered.turn_id)
        await w.settled()
    assert first[-1].data["found"] is False and "not in the documents" in text_of(first)
    assert text_of(second) == "".join(ANSWER) and second[-1].data["model"] == "scripted"
    assert model.streams[0].started_at >= started[1] + 0.1  # after the check, as before


class RaisingModel(ScriptedModel):
    """A model whose ``stream`` itself raises (a closed local model, a bad argument)."""

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> ScriptedStream:
        self.calls.append((list(messages), max_tokens, temperature))
        raise ParleyError("the model is closed", reason="model_error")


async def test_a_model_that_cannot_start_is_the_checks_to_judge(redis: aioredis.Redis) -> None:
    model = RaisingModel()
    async with worker(redis, model) as w:
        refused = turn(messages=[ChatMessage(role="user", content="Who founded Osprey Mining?")])
        await w.ask(refused)
        first = await w.events(refused.turn_id)
        answered = turn()
        await w.ask(answered)
        second = await w.events(answered.turn_id)
        await w.settled()
    assert first[-1].kind == "final" and first[-1].data["found"] is False  # as if never asked
    assert [e.kind for e in second] == ["sources", "error"]
    assert second[-1].data["code"] == "model_error"


async def test_a_refused_turn_cancels_the_upstream_request(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model is not charged for an answer the check refuses: its HTTP request, sent at once,
    is dropped while the model is still working on its first token."""
    peer = OpenAIChatPeer(reply=[f" t{i}" for i in range(50)], first_token_delay=5.0).start()
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    try:
        async with worker(redis, model) as w:
            peer.first_token_delay = 0.0
            warm = turn()  # answered: its connection is kept, as in a running worker
            await w.ask(warm)
            assert (await w.events(warm.turn_id))[-1].kind == "final"
            peer.first_token_delay = 5.0
            slow_check(monkeypatch, 0.3)  # the request is at the upstream before the refusal
            chat = turn(messages=[ChatMessage(role="user", content="Who founded Osprey Mining?")])
            await w.ask(chat)
            events = await w.events(chat.turn_id)
            await w.settled()
            assert await asyncio.to_thread(peer.wait_for, lambda p: p.disconnects == 1, 5.0)
    finally:
        await model.close()
        peer.stop()
    assert events[-1].kind == "final" and events[-1].data["found"] is False
    assert "not in the documents" in text_of(events)
    assert len(peer.requests) == 2 and peer.completed == 1  # the refused one never finished


async def test_a_figure_in_no_cited_source_is_flagged_in_final(redis: aioredis.Redis) -> None:
    model = ScriptedModel(pieces=["Revenue", " grew", " 15%", " on cloud sales [1]."])
    async with worker(redis, model) as w:
        chat = turn()
        await w.ask(chat)
        events = await w.events(chat.turn_id)
        await w.settled()
    final = events[-1].data
    assert final["unsupported_numbers"] == ["15%"]
    assert final["text"] == "Revenue grew 15% on cloud sales [1]."


async def test_a_turn_given_up_on_ends_with_worker_lost(redis: aioredis.Redis) -> None:
    """The consumer runtime gives up on a turn whose answering killed the worker again and again
    (``max_deliveries``); the handler's hook ends its stream, so the client is not left waiting
    for the gateway's timeout. A stream that already ended gets nothing more."""
    model = ScriptedModel()
    async with worker(redis, model) as w:
        waiting, finished = turn(), turn()
        for chat in (waiting, finished):
            await TurnWriter(redis, chat.turn_id, prefix=w.prefix).emit("sources", {"sources": []})
        await TurnWriter(redis, finished.turn_id, prefix=w.prefix).emit("cancelled", {})
        for chat in (waiting, finished):
            message = Message(queue=w.queue.name, id=MessageId("1"), body=dump(chat), attempt=4)
            await w.handler.on_retry_exhausted(
                message, chat, Unsettled("max_deliveries: delivered 4 times")
            )
        events = await w.events(waiting.turn_id)
        ended = await w.events(finished.turn_id)
    assert [e.kind for e in events] == ["sources", "error"]
    assert events[-1].data["code"] == "worker_lost"
    assert [e.kind for e in ended] == ["sources", "cancelled"]
    assert model.calls == []


async def test_a_turn_that_failed_every_attempt_ends_with_internal(redis: aioredis.Redis) -> None:
    """Every attempt failed before the turn could start (its stream unreadable, say): the give-up
    hook ends the stream with ``internal``, so the client does not wait for the timeout."""
    model = ScriptedModel()
    async with worker(redis, model) as w:
        chat = turn()
        await TurnWriter(redis, chat.turn_id, prefix=w.prefix).emit("sources", {"sources": []})
        message = Message(queue=w.queue.name, id=MessageId("1"), body=dump(chat), attempt=3)
        await w.handler.on_retry_exhausted(message, chat, ConnectionError("redis is down"))
        events = await w.events(chat.turn_id)
    assert [e.kind for e in events] == ["sources", "error"]
    assert events[-1].data["code"] == "internal" and "3 times" in events[-1].data["message"]
