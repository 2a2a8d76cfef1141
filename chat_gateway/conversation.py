"""Server-side conversation history in Redis: a bounded list per (tenant, conversation) that
expires ``ttl`` seconds after its last turn.

Appends are idempotent per (turn, role): two gateway replicas relaying the same turn's final
event (a client resumed elsewhere) record the answer once. The key names the tenant, so a
conversation id from another tenant is simply an empty, separate conversation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis.asyncio as aioredis

from parley.contracts import ChatMessage
from parley.ids import ConversationId, TenantId
from parley.keys import Keys

# KEYS: list, seen-marker; ARGV: entry, max entries, ttl.
_APPEND = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


def new_conversation_id() -> ConversationId:
    return ConversationId(uuid.uuid4().hex)


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
        key = self.key(tenant, conversation)
        entry = json.dumps({"role": message.role, "content": message.content}, ensure_ascii=False)
        done = await self._append(
            keys=[key, f"{key}:seen:{turn_id}:{message.role}"],
            args=[entry, self._max, self._ttl],
        )
        return bool(done)
