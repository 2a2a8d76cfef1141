"""The turn stream's event contracts: every kind round-trips through a stream entry unchanged
(the wire the gateway relays), readers keep fields they do not know, and an entry that is not an
event fails with an error naming the entry, the kind and the field."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley.turnevents import (
    KINDS,
    TERMINAL,
    CancelledEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    MalformedEvent,
    SourcesEvent,
    TokenEvent,
    UnknownEvent,
    fields,
    make,
    parse,
)
from parley.turnstream import TurnWriter
from tests.fixtures.turns import tail

SOURCE = {"n": 1, "chunk_id": "c1", "document_id": "d1", "document": "q3.pdf", "page": 4,
          "heading": None, "location": "page 4", "ocr": False, "snippet": "Revenue rose",
          "text": "Revenue rose 4%.", "score": 0.8, "context": ""}
EVENTS: list[Event] = [
    SourcesEvent(conversation_id="c-1", sources=[SOURCE]),
    TokenEvent(text="Revenue rose ", n=3),
    TokenEvent(text="é ✓ \"quoted\""),
    FinalEvent(text="Revenue rose 4% [1].", citations=[{"n": 1, "document": "q3.pdf"}],
               unsupported_numbers=["7%"], removed_citations=[9], answer_mode="generative",
               found=True, finish_reason="stop", model="m",
               usage={"prompt_tokens": 10, "completion_tokens": 5, "source": "backend"},
               timings={"queue_ms": 1.5, "ttft_ms": None, "total_ms": 20.0}),
    ErrorEvent(code="rate_limited", message="slow down", hint="wait and ask again",
               retry_after=2.5),
    CancelledEvent(completion_tokens=4, reason="orphaned"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_every_event_round_trips_through_a_stream_entry(event: Event) -> None:
    entry = fields(event)
    assert entry["k"] == event.kind
    # As Redis returns it: bytes keys and values.
    read = parse("5-1", {k.encode(): v.encode() for k, v in entry.items()})
    assert read.offset == "5-1" and read.kind == event.kind
    assert read.event == event
    assert fields(read.event) == entry
    assert read.terminal == (event.kind in TERMINAL)


def test_every_kind_has_a_contract() -> None:
    assert set(KINDS) == {"sources", "token", "final", "error", "cancelled"}
    assert {"final", "error", "cancelled"} == TERMINAL


def test_the_wire_holds_what_was_set_and_nothing_more() -> None:
    # Defaults a writer did not set stay off the wire (and out of the client's frame).
    assert json.loads(fields(ErrorEvent(code="internal", message="boom"))["d"]) == {
        "code": "internal", "message": "boom"}
    assert json.loads(fields(TokenEvent(text="a", n=1))["d"]) == {"text": "a", "n": 1}


def test_readers_keep_fields_they_do_not_know() -> None:
    entry = {"k": "final", "d": json.dumps({"text": "ok", "confidence": 0.7})}
    event = parse("1-0", entry)
    assert isinstance(event.event, FinalEvent) and event.event.text == "ok"
    assert event.data == {"text": "ok", "confidence": 0.7}


def test_an_old_error_naming_its_code_reason_still_reads() -> None:
    event = parse("1-0", {"k": "error", "d": json.dumps({"reason": "worker_lost"})})
    assert isinstance(event.event, ErrorEvent)
    assert event.event.code == "worker_lost" and event.event.message


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"k": "token", "d": '{"n": 2}'}, ["entry 7-0", "'token'", "text"]),
        ({"k": "token", "d": '{"text": "a", "n": 0}'}, ["'token'", "n"]),
        ({"k": "final", "d": "{not json"}, ["entry 7-0", "'final'", "JSON"]),
        ({"k": "error", "d": '{"code": "", "message": "x"}'}, ["'error'", "code"]),
        ({"k": "cancelled", "d": '{"completion_tokens": -1}'}, ["completion_tokens"]),
        ({"d": "{}"}, ["entry 7-0", "no kind"]),
    ],
)
def test_a_malformed_entry_says_which_entry_and_field(
    entry: dict[str, Any], says: list[str]
) -> None:
    with pytest.raises(MalformedEvent) as raised:
        parse("7-0", entry)
    assert not isinstance(raised.value, UnknownEvent)
    for part in says:
        assert part in str(raised.value), (part, str(raised.value))
    assert raised.value.reason == "bad_event"


def test_an_unknown_kind_is_told_apart_so_a_reader_may_skip_it() -> None:
    with pytest.raises(UnknownEvent, match="'heartbeat'"):
        parse("7-0", {"k": "heartbeat", "d": "{}"})


def test_making_an_event_from_its_kind_validates_it() -> None:
    assert make("token", {"text": "a"}) == TokenEvent(text="a")
    with pytest.raises(MalformedEvent, match="text"):
        make("token", {"n": 1})
    with pytest.raises(UnknownEvent):
        make("tokens", {"text": "a"})


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_the_writer_appends_typed_events_that_the_reader_reads_back(
    client: aioredis.Redis,
) -> None:
    prefix, turn_id = f"te{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, ttl=60)
    async with client.pipeline(transaction=False) as pipe:
        writer.append(pipe, EVENTS[0])
        writer.append(pipe, EVENTS[1], expire=False)
        offset, _, second = await pipe.execute()
    await writer.emit("final", {"text": "done"})
    read = [e async for e in tail(client, turn_id, prefix=prefix, block=0.1)]
    assert [e.event for e in read] == [EVENTS[0], EVENTS[1], FinalEvent(text="done")]
    assert read[0].offset == offset.decode() and read[1].offset == second.decode()
    assert 0 < await client.ttl(writer.key) <= 60


async def test_the_writer_refuses_a_malformed_event_and_writes_nothing(
    client: aioredis.Redis,
) -> None:
    prefix, turn_id = f"te{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, ttl=60)
    with pytest.raises(MalformedEvent, match="code"):
        await writer.emit("error", {"code": "", "message": "x"})
    assert await client.exists(writer.key) == 0
