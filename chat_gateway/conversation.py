"""Server-side conversation history in Redis: a bounded list per (tenant, conversation) that
expires ``ttl`` seconds after its last turn.

Appends are idempotent per (turn, role): two gateway replicas relaying the same turn's final
event (a client resumed elsewhere) record the answer once. The key names the tenant, so a
conversation id from another tenant is simply an empty, separate conversation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from parley import lua
from parley.contracts import ChatMessage
from parley.ids import ConversationId, TenantId
from parley.keys import Keys

# KEYS: list, seen-marker; ARGV: entry, max entries, ttl.
_APPEND = lua.script(__package__, "conversation_append.lua")


def new_conversation_id() -> ConversationId:
    return ConversationId(uuid.uuid4().hex)


@dataclass(frozen=True)
class ScriptCall:
    """One run of a registered Lua script: run alone (:meth:`run`: ``EVALSHA``, loading the
    script when Redis lacks it) or queued on a caller's pipeline (:meth:`queue`: ``EVALSHA``
    alone, one reply; a ``NOSCRIPT`` reply there means :meth:`run` it, the scripts being
    idempotent). Redis-py's own pipelined scripts cost a ``SCRIPT EXISTS`` round trip more."""

    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int | float]

    async def run(self) -> Any:
        return await self.script(keys=list(self.keys), args=list(self.args))

    def queue(self, pipe: Pipeline) -> None:
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)


async def settle(calls: Sequence[ScriptCall], replies: Sequence[Any]) -> list[Any]:
    """The replies of ``calls`` queued on a pipeline executed with ``raise_on_error=False``:
    each ``NOSCRIPT`` run again (loading its script), any other error reply raised."""
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
            raise reply
    settled = list(replies)
    again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    for i, reply in zip(again, await asyncio.gather(*(calls[i].run() for i in again)),
                        strict=True):
        settled[i] = reply
    return settled


async def pipelined(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run ``calls`` in one round trip (their replies, as :func:`settle` gives them)."""
    if not calls:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            call.queue(pipe)
        replies = await pipe.execute(raise_on_error=False)
    return await settle(calls, replies)


class Conversations:
    def __init__(
        self, client: aioredis.Redis, *, prefix: str, max_messages: int, ttl: int
    ) -> None:
        self._redis = client
        self._keys = Keys(prefix)
        self._max = max(2, max_messages)
        self._ttl = ttl
        self._append = client.register_script(_APPEND)

    def key(self, tenant: TenantId, conversation: ConversationId) -> str:
        return self._keys.conversation(tenant, conversation)

    async def history(self, tenant: TenantId, conversation: ConversationId) -> list[ChatMessage]:
        """The kept messages, oldest first ([] for an unknown or expired conversation)."""
        raw: list[Any] = await self._redis.lrange(
            self.key(tenant, conversation), -self._max, -1
        )
        return [ChatMessage.model_validate_json(item) for item in raw]

    async def append(
        self,
        tenant: TenantId,
        conversation: ConversationId,
        turn_id: str,
        message: ChatMessage,
    ) -> bool:
        """Record one message of ``turn_id``; False when it was already recorded."""
        return bool(await self.append_call(tenant, conversation, turn_id, message).run())

    def append_call(
        self,
        tenant: TenantId,
        conversation: ConversationId,
        turn_id: str,
        message: ChatMessage,
    ) -> ScriptCall:
        """What :meth:`append` runs, for a caller's pipeline."""
        key = self.key(tenant, conversation)
        entry = json.dumps({"role": message.role, "content": message.content}, ensure_ascii=False)
        return ScriptCall(self._append, [key, f"{key}:seen:{turn_id}:{message.role}"],
                          [entry, self._max, self._ttl])
