"""The relay's token frames (written out by hand, the same text as ``json.dumps``) and the
attachment holds it refreshes while it relays."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat_gateway import relay
from chat_gateway.relay import Attachments, token_frame
from parley.turnevents import FinalEvent, TokenEvent, TurnEvent


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.mark.parametrize("texts", [
    ["plain"],
    [" Revenue", " rose", " 3%"],
    ['quote " and \\ backslash', "\n\t\r\x00\x1f control"],
    ["é ü 漢字 😀", "\u2028\u2029", "</script>"],
    ["lone \ud800 surrogate"],
    [""],
])
def test_a_token_frame_is_the_json_of_its_fields(texts: list[str]) -> None:
    events = [TurnEvent(f"1733490000{i}-{i}", TokenEvent(text=t, n=i + 1))
              for i, t in enumerate(texts)]
    events.append(TurnEvent("9-9", FinalEvent(text="not a token")))  # left out of the text
    turn_id = 'turn "1"'
    expected = json.dumps(
        {"type": "token", "turn_id": turn_id, "offset": "9-9", "text": "".join(texts),
         "n": sum(range(1, len(texts) + 1))},
        separators=(",", ":"), ensure_ascii=False,
    )
    assert token_frame(turn_id, events) == expected


async def test_a_held_turn_is_refreshed_past_its_ttl_and_released_after(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "ATTACH_TTL_MS", 300)
    monkeypatch.setattr(relay, "ATTACH_REFRESH", 0.1)
    attachments = Attachments(client, f"rel{uuid.uuid4().hex[:8]}")
    turns = [uuid.uuid4().hex for _ in range(3)]
    async with attachments.hold(turns[0]), attachments.hold(turns[1]):
        async with attachments.hold(turns[2]):
            pass  # released at once
        await asyncio.sleep(1.0)  # three TTLs
        assert [await attachments.is_held(t) for t in turns] == [True, True, False]
        assert 0 < await client.pttl(attachments.key(turns[0])) <= 300
    assert [await attachments.is_held(t) for t in turns] == [False, False, False]
    await attachments.close()
