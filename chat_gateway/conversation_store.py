"""Conversations kept by the server for each signed-in user (the token's subject) in a tenant:
their list, each one's whole transcript, rename and delete, forgotten ``retention`` seconds after
their last turn (``PARLEY_CONVERSATION_TTL_SECONDS``). Redis is the store, so a conversation
survives a gateway restart and is the same on every replica and every device.

Per conversation: a hash (owner, title, created, updated, turns) and a list of transcript
entries (at most :data:`MAX_ENTRIES`); per user: a sorted set of conversation ids by last
activity. A conversation belongs to the subject that asked its first question: another subject
of the same tenant neither sees nor continues it (:meth:`ConversationStore.owned`). The
prompt's recent history is :class:`chat_gateway.conversation.Conversations` (a short list of its
own); deleting a conversation deletes that too.

Appends are idempotent per (turn, role), like the history's: two replicas relaying the same
final event record the answer once."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from chat_gateway.conversation import ScriptCall
from parley import lua
from parley.keys import Keys

MAX_ENTRIES = 200  # messages kept per conversation (100 questions and their answers)
MAX_LIST = 200  # conversations listed per user
TITLE_CHARS = 80

# KEYS: meta, log, index, seen; ARGV: subject, entry, title, now, ttl, max entries, id.
# -1: owned by another subject; 0: already recorded; 1: recorded.
_QUESTION = lua.script(__package__, "conversation_store_question.lua")

# KEYS: meta, log, index, seen; ARGV: owner, entry, now, ttl, max entries, id.
# 0: gone (deleted meanwhile) or already recorded; 1: recorded.
_ANSWER = lua.script(__package__, "conversation_store_answer.lua")


@dataclass(frozen=True)
class Summary:
    """One conversation as listed."""

    id: str
    title: str
    created: float
    updated: float
    turns: int

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "created": self.created,
                "updated": self.updated, "turns": self.turns}


@dataclass(frozen=True)
class Transcript:
    summary: Summary
    # Oldest first: {"turn_id", "role": "user", "content", "at"} and {"turn_id",
    # "role": "assistant", "content", "sources", "citations", "model", "unsupported_numbers",
    # "at"}.
    messages: tuple[dict[str, Any], ...]

    def turn(self, turn_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(question entry, answer entry) of one turn, either None when not kept."""
        question = answer = None
        for entry in self.messages:
            if entry.get("turn_id") == turn_id:
                if entry.get("role") == "user":
                    question = entry
                elif entry.get("role") == "assistant":
                    answer = entry
        return question, answer


def title_of(question: str) -> str:
    """A conversation's first title: its first question on one line, cut at a word."""
    line = " ".join(question.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0] or line[:TITLE_CHARS]
    return cut + "…"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _summary(conversation_id: str, meta: dict[Any, Any]) -> Summary | None:
    fields = {_text(k): _text(v) for k, v in meta.items()}
    if "owner" not in fields:
        return None
    return Summary(conversation_id, fields.get("title", ""), float(fields.get("created", 0)),
                   float(fields.get("updated", 0)), int(fields.get("turns", 0)))


class ConversationStore:
    def __init__(self, client: aioredis.Redis, *, keys: Keys, retention: int) -> None:
        self._redis = client
        self._keys = keys
        self.retention = retention
        self._question = client.register_script(_QUESTION)
        self._answer = client.register_script(_ANSWER)

    async def owned(self, tenant: str, subject: str, conversation_id: str) -> bool:
        """True when ``subject`` may continue the conversation: it is theirs, or no one's yet
        (a new id, or one forgotten after the retention)."""
        owner = await self._redis.hget(self._keys.conversation_meta(tenant, conversation_id),
                                       "owner")
        return owner is None or _text(owner) == subject

    async def record_question(
        self, tenant: str, subject: str, conversation_id: str, turn_id: str, question: str
    ) -> bool:
        """Add a question (creating the conversation, titled by it, when new); False when the
        conversation is another subject's or the question was already recorded."""
        call = self.question_call(tenant, subject, conversation_id, turn_id, question)
        return int(await call.run()) == 1

    def question_call(
        self, tenant: str, subject: str, conversation_id: str, turn_id: str, question: str
    ) -> ScriptCall:
        """What :meth:`record_question` runs, for a caller's pipeline (its reply: 1 recorded,
        0 already recorded, -1 another subject's)."""
        now = time.time()
        entry = {"turn_id": turn_id, "role": "user", "content": question, "at": now}
        return ScriptCall(
            self._question, self._keys_of(tenant, subject, conversation_id, turn_id, "user"),
            [subject, json.dumps(entry, ensure_ascii=False), title_of(question), now,
             self.retention, MAX_ENTRIES, conversation_id],
        )

    async def record_answer(
        self,
        tenant: str,
        conversation_id: str,
        turn_id: str,
        *,
        text: str,
        sources: Sequence[dict[str, Any]],
        citations: Sequence[dict[str, Any]],
        model: str | None,
        unsupported: Sequence[str] = (),
    ) -> bool:
        """Add a turn's answer with its sources, model and the figures the checks found in none
        of the cited sources; False when the conversation is gone or the answer was already
        recorded."""
        call = await self.answer_call(tenant, conversation_id, turn_id, text=text,
                                      sources=sources, citations=citations, model=model,
                                      unsupported=unsupported)
        return call is not None and int(await call.run()) == 1

    async def answer_call(
        self,
        tenant: str,
        conversation_id: str,
        turn_id: str,
        *,
        text: str,
        sources: Sequence[dict[str, Any]],
        citations: Sequence[dict[str, Any]],
        model: str | None,
        unsupported: Sequence[str] = (),
        owner: str | None = None,
    ) -> ScriptCall | None:
        """What :meth:`record_answer` runs, for a caller's pipeline (its reply: 1 recorded, 0
        not). ``owner``: the subject that asked (the only one whose conversation can hold the
        question; the script records nothing for another), else read; None when the
        conversation is gone."""
        if owner is None:
            stored = await self._redis.hget(
                self._keys.conversation_meta(tenant, conversation_id), "owner")
            if stored is None:
                return None
            owner = _text(stored)
        now = time.time()
        entry = {"turn_id": turn_id, "role": "assistant", "content": text,
                 "sources": list(sources), "citations": list(citations), "model": model,
                 "unsupported_numbers": list(unsupported), "at": now}
        return ScriptCall(
            self._answer, self._keys_of(tenant, owner, conversation_id, turn_id, "assistant"),
            [owner, json.dumps(entry, ensure_ascii=False), now, self.retention, MAX_ENTRIES,
             conversation_id],
        )

    async def list(
        self, tenant: str, subject: str, *, limit: int = MAX_LIST
    ) -> builtins.list[Summary]:
        """The user's conversations, most recently active first."""
        index = self._keys.conversation_index(tenant, subject)
        # Ids past the retention, and ids whose hash expired or was deleted, leave the index.
        await self._redis.zremrangebyscore(index, "-inf", time.time() - self.retention)
        ids = [_text(i) for i in await self._redis.zrevrange(index, 0, max(0, limit - 1))]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(self._keys.conversation_meta(tenant, conversation_id))
            metas = await pipe.execute()
        found: builtins.list[Summary] = []
        gone: builtins.list[str] = []
        for conversation_id, meta in zip(ids, metas, strict=True):
            summary = _summary(conversation_id, meta)
            if summary is None or _text(meta.get(b"owner", meta.get("owner", b""))) != subject:
                gone.append(conversation_id)
            else:
                found.append(summary)
        if gone:
            await self._redis.zrem(index, *gone)
        return found

    async def summary(self, tenant: str, subject: str, conversation_id: str) -> Summary | None:
        meta = await self._redis.hgetall(self._keys.conversation_meta(tenant, conversation_id))
        summary = _summary(conversation_id, meta)
        if summary is None or _text(meta.get(b"owner", meta.get("owner", b""))) != subject:
            return None
        return summary

    async def open(self, tenant: str, subject: str, conversation_id: str) -> Transcript | None:
        """The whole kept transcript; None when the conversation is not this subject's."""
        summary = await self.summary(tenant, subject, conversation_id)
        if summary is None:
            return None
        raw = await self._redis.lrange(self._keys.conversation_log(tenant, conversation_id), 0, -1)
        return Transcript(summary, tuple(json.loads(item) for item in raw))

    async def rename(
        self, tenant: str, subject: str, conversation_id: str, title: str
    ) -> Summary | None:
        """Set the title (one line, at most 200 characters); None when not this subject's."""
        if await self.summary(tenant, subject, conversation_id) is None:
            return None
        title = " ".join(title.split())[:200]
        await self._redis.hset(self._keys.conversation_meta(tenant, conversation_id),
                               "title", title)
        return await self.summary(tenant, subject, conversation_id)

    async def delete(self, tenant: str, subject: str, conversation_id: str) -> bool:
        """Forget the conversation: its transcript, its prompt history and its place in the
        list; False when it is not this subject's."""
        if await self.summary(tenant, subject, conversation_id) is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.conversation_meta(tenant, conversation_id),
                        self._keys.conversation_log(tenant, conversation_id),
                        self._keys.conversation(tenant, conversation_id))
            pipe.zrem(self._keys.conversation_index(tenant, subject), conversation_id)
            await pipe.execute()
        return True

    def _keys_of(
        self, tenant: str, subject: str, conversation_id: str, turn_id: str, role: str
    ) -> builtins.list[str]:
        k = self._keys
        return [k.conversation_meta(tenant, conversation_id),
                k.conversation_log(tenant, conversation_id),
                k.conversation_index(tenant, subject),
                k.conversation_seen(tenant, conversation_id, turn_id, role)]
