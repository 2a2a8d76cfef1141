"""Kept conversations in a real Redis: per user and tenant, owned by the first asker, titled,
renamed, deleted with their prompt history, idempotent appends, expiring after the retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat_gateway.conversation import Conversations
from chat_gateway.conversation_store import MAX_ENTRIES, ConversationStore, title_of
from parley.contracts import ChatMessage
from parley.ids import ConversationId, TenantId
from parley.keys import Keys

SOURCES = [{"n": 1, "document": "a.pdf", "page": 2, "text": "the passage"}]


@pytest.fixture
async def parts(redis_url: str) -> AsyncIterator[tuple[ConversationStore, Conversations]]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"k{uuid.uuid4().hex[:8]}"
    yield (ConversationStore(client, keys=Keys(prefix), retention=300),
           Conversations(client, prefix=prefix, max_messages=4, ttl=300))
    await client.aclose()


async def test_a_conversation_is_its_first_askers_with_a_transcript(
    parts: tuple[ConversationStore, Conversations],
) -> None:
    store, _ = parts
    assert await store.owned("t", "ann", "c1")  # nobody's yet
    assert await store.record_question("t", "ann", "c1", "turn1", "What is  the\nbudget?")
    assert await store.record_answer("t", "c1", "turn1", text="42 [1]", sources=SOURCES,
                                     citations=SOURCES, model="m1", unsupported=["987"])
    # A relay on a second replica records the same answer once.
    assert not await store.record_answer("t", "c1", "turn1", text="42 [1]", sources=SOURCES,
                                         citations=SOURCES, model="m1")
    assert not await store.record_question("t", "bob", "c1", "turn2", "mine now?")
    assert not await store.owned("t", "bob", "c1")
    assert await store.owned("t", "ann", "c1")

    listed = await store.list("t", "ann")
    assert [(s.id, s.title, s.turns) for s in listed] == [("c1", "What is the budget?", 1)]
    assert await store.list("t", "bob") == []
    assert await store.list("other-tenant", "ann") == []
    transcript = await store.open("t", "ann", "c1")
    assert transcript is not None
    assert [(m["role"], m["content"]) for m in transcript.messages] == [
        ("user", "What is  the\nbudget?"), ("assistant", "42 [1]")]
    question, answer = transcript.turn("turn1")
    assert question is not None and answer is not None
    assert answer["sources"] == SOURCES and answer["model"] == "m1"
    assert answer["unsupported_numbers"] == ["987"]
    assert await store.open("t", "bob", "c1") is None


async def test_the_list_is_most_recent_first_and_rename_and_delete_are_the_owners(
    parts: tuple[ConversationStore, Conversations],
) -> None:
    store, history = parts
    for cid in ("c1", "c2", "c3"):
        await store.record_question("t", "ann", cid, f"turn-{cid}", f"question {cid}")
    await store.record_question("t", "ann", "c1", "turn-again", "follow-up")
    assert [s.id for s in await store.list("t", "ann")] == ["c1", "c3", "c2"]

    assert await store.rename("t", "bob", "c2", "stolen") is None
    renamed = await store.rename("t", "ann", "c2", "  Budget\n talk ")
    assert renamed is not None and renamed.title == "Budget talk"

    await history.append(TenantId("t"), ConversationId("c2"), "turn-c2",
                         ChatMessage(role="user", content="question c2"))
    assert not await store.delete("t", "bob", "c2")
    assert await store.delete("t", "ann", "c2")
    assert await store.open("t", "ann", "c2") is None
    assert await history.history(TenantId("t"), ConversationId("c2")) == []
    assert [s.id for s in await store.list("t", "ann")] == ["c1", "c3"]
    # An answer arriving after the delete does not bring the conversation back.
    assert not await store.record_answer("t", "c2", "turn-c2", text="late", sources=[],
                                         citations=[], model=None)
    assert [s.id for s in await store.list("t", "ann")] == ["c1", "c3"]


async def test_everything_expires_after_the_retention_and_the_transcript_is_bounded(
    parts: tuple[ConversationStore, Conversations],
) -> None:
    store, _ = parts
    for i in range(MAX_ENTRIES // 2 + 3):
        await store.record_question("t", "ann", "c1", f"turn{i}", f"q{i}")
        await store.record_answer("t", "c1", f"turn{i}", text=f"a{i}", sources=[],
                                  citations=[], model=None)
    transcript = await store.open("t", "ann", "c1")
    assert transcript is not None and len(transcript.messages) == MAX_ENTRIES
    assert transcript.messages[-1]["content"] == f"a{MAX_ENTRIES // 2 + 2}"
    keys = Keys(store._keys.prefix)
    for key in (keys.conversation_meta("t", "c1"), keys.conversation_log("t", "c1"),
                keys.conversation_index("t", "ann")):
        assert 0 < await store._redis.ttl(key) <= 300
    # Past the retention the list drops it even if a hash lingered.
    await store._redis.zadd(keys.conversation_index("t", "ann"), {"old": 1.0})
    assert "old" not in [s.id for s in await store.list("t", "ann")]


def test_titles_are_one_line_cut_at_a_word() -> None:
    assert title_of("  a\n b ") == "a b"
    long = "word " * 40
    title = title_of(long)
    assert len(title) <= 81 and title.endswith("…") and not title.endswith(" …")
