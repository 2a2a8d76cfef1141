"""Conversation history in Redis: bounded, idempotent per turn, expiring, tenant-scoped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat_gateway.conversation import Conversations
from parley.contracts import ChatMessage
from parley.ids import ConversationId, TenantId

A, B = TenantId("a"), TenantId("b")


@pytest.fixture
async def conversations(redis_url: str) -> AsyncIterator[Conversations]:
    client = aioredis.Redis.from_url(redis_url)
    yield Conversations(client, prefix=f"c{uuid.uuid4().hex[:8]}", max_messages=4, ttl=120)
    await client.aclose()


def msg(role: str, text: str) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": text})


async def test_bounded_idempotent_and_scoped(conversations: Conversations) -> None:
    cid = ConversationId("c1")
    for i in range(3):
        assert await conversations.append(A, cid, f"t{i}", msg("user", f"q{i}"))
        assert await conversations.append(A, cid, f"t{i}", msg("assistant", f"a{i}"))
    assert not await conversations.append(A, cid, "t2", msg("assistant", "a2 again"))
    history = await conversations.history(A, cid)
    assert [m.content for m in history] == ["q1", "a1", "q2", "a2"]
    assert await conversations.history(B, cid) == []
    ttl = await conversations._redis.ttl(conversations.key(A, cid))
    assert 0 < ttl <= 120
