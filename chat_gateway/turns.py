"""Starting a chat turn, shared by the websocket and the OpenAI-compatible face:
rate limit (with the history of a follow-up, read meanwhile) -> retrieval -> prompt -> turn
metadata + ``sources`` event in the turn's stream + the question recorded + the
:class:`ChatTurn` published on the chat queue, in one pipeline (a Redis broker; another broker
is published to after it): three round trips in turn before the worker can take it. The
inference worker takes it from there and writes tokens to the same stream;
:mod:`chat_gateway.relay` reads them back.

A turn's metadata (``<prefix>:turn:<id>:meta``: tenant, conversation, trace context) lets any
replica check that a resuming client is of the turn's tenant, record the answer in the
conversation and relay a resumed turn in the turn's own trace."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from chat_gateway import followup, prompt
from chat_gateway.auth import Principal
from chat_gateway.conversation import Conversations, ScriptCall, new_conversation_id, settle
from chat_gateway.conversation_store import ConversationStore
from chat_gateway.protocol import MAX_QUESTION_CHARS, ErrorCode
from chat_gateway.retrieval import Retriever
from parley.broker import Broker
from parley.broker.redis import RedisBroker
from parley.contracts import (
    TRACE_HEADER,
    TURN_HEADER,
    AnswerMode,
    ChatMessage,
    ChatTurn,
    Source,
    dump,
)
from parley.embedder import Tokenizer
from parley.errors import ParleyError, Retry
from parley.ids import ConversationId, TenantId, TurnId, new_turn_id
from parley.keys import Keys
from parley.tracing import inject
from parley.turnevents import SourcesEvent
from parley.turnstream import TurnWriter


@dataclass(frozen=True)
class TurnMeta:
    tenant: TenantId
    conversation_id: ConversationId
    persist: bool  # record the answer in the conversation (websocket turns, not the OpenAI face)
    # The W3C traceparent of the span that started the turn (None outside any, or for a turn
    # stored before it was kept): a resumed relay continues that trace on any replica.
    traceparent: str | None = None
    subject: str | None = None  # who asked (None: a turn stored without it)


@dataclass(frozen=True)
class Started:
    turn_id: TurnId
    conversation_id: ConversationId
    sources: tuple[Source, ...]
    offset: str  # of the ``sources`` event
    meta: TurnMeta  # as stored (the relay's, without reading it back)


@dataclass(frozen=True)
class TurnOptions:
    queue: str
    prefix: str
    stream_ttl: int
    context_tokens: int
    max_tokens: int
    asks_per_minute: int = 60
    # All the users of one tenant together (0: no tenant limit).
    tenant_asks_per_minute: int = 300
    # The gateway gives up on a turn that has produced no event for this long (no worker).
    first_event_timeout: float = 120.0
    answer_mode: AnswerMode = "extractive"  # when a question does not ask for one


def source_event(sources: Sequence[Source], conversation_id: str) -> SourcesEvent:
    return SourcesEvent(conversation_id=conversation_id,
                        sources=[s.model_dump(mode="json") for s in sources])


class Turns:
    def __init__(
        self,
        redis: aioredis.Redis,
        broker: Broker,
        retriever: Retriever,
        conversations: Conversations,
        options: TurnOptions,
        tokenizer: Tokenizer | None = None,
        store: ConversationStore | None = None,
    ) -> None:
        self._redis = redis
        self._broker = broker
        self._retriever = retriever
        self.conversations = conversations
        # The kept transcripts (websocket turns): who owns a conversation, what the portal lists.
        self.store = store
        self.options = options
        self._count = tokenizer.count if tokenizer is not None else prompt.approx_tokens

    def meta_key(self, turn_id: str) -> str:
        return Keys(self.options.prefix).turn_meta(turn_id)

    async def meta(self, turn_id: str) -> TurnMeta | None:
        raw = await self._redis.get(self.meta_key(turn_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return TurnMeta(TenantId(data["tenant"]), ConversationId(data["conversation_id"]),
                        bool(data.get("persist")), data.get("traceparent"), data.get("subject"))

    async def _rate_limit(self, principal: Principal) -> None:
        """Questions per minute, per user (subject) and per tenant (all its users together: one
        tenant cannot take every worker by spreading its questions over many users)."""
        per_user, per_tenant = self.options.asks_per_minute, self.options.tenant_asks_per_minute
        if per_user <= 0 and per_tenant <= 0:
            return
        now = time.time()
        window = int(now // 60)
        keys = Keys(self.options.prefix)
        user_key = keys.rate(principal.tenant, principal.subject, window)
        tenant_key = keys.tenant_rate(principal.tenant, window)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(user_key)
            pipe.expire(user_key, 61)
            pipe.incr(tenant_key)
            pipe.expire(tenant_key, 61)
            user_used, _, tenant_used, _ = await pipe.execute()
        delay = (window + 1) * 60 - now
        if per_user > 0 and int(user_used) > per_user:
            raise Retry(
                f"more than {per_user} questions a minute",
                reason=ErrorCode.RATE_LIMITED, hint="wait and ask again", delay=delay,
            )
        if per_tenant > 0 and int(tenant_used) > per_tenant:
            raise Retry(
                f"your tenant's users asked more than {per_tenant} questions this minute",
                reason=ErrorCode.RATE_LIMITED, hint="wait and ask again", delay=delay,
            )

    async def _history(
        self, principal: Principal, conversation_id: ConversationId
    ) -> list[ChatMessage]:
        """The conversation's recent messages, once it is known to be this subject's (a
        conversation another user of the tenant started is ``not_found`` to them)."""
        if self.store is None:
            return await self.conversations.history(principal.tenant, conversation_id)
        owned, history = await asyncio.gather(
            self.store.owned(principal.tenant, principal.subject, conversation_id),
            self.conversations.history(principal.tenant, conversation_id),
        )
        if not owned:
            raise ParleyError("no such conversation", reason=ErrorCode.NOT_FOUND,
                              hint="start a new conversation")
        return history

    async def start(
        self,
        principal: Principal,
        question: str,
        *,
        conversation_id: str | None = None,
        history: Sequence[ChatMessage] | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.2,
        answer_mode: AnswerMode | None = None,
    ) -> Started:
        """Retrieve, write the ``sources`` event and queue the turn. With ``history`` given (the
        OpenAI face) the conversation is the caller's and nothing is recorded; otherwise the
        conversation ``conversation_id`` (a new one when None) is read and the question recorded.

        A follow-up question is searched with the subject of the conversation
        (:func:`chat_gateway.followup.resolve`); the turn carries that query as its
        ``question``. ``answer_mode`` (None: the gateway's setting) says how the worker makes
        the answer.

        Raises ParleyError with reason ``bad_request`` (a question with nothing in it),
        ``no_documents``, ``rate_limited`` (a Retry with the delay), ``too_large`` (a question
        over :data:`MAX_QUESTION_CHARS`, refused before it is embedded) or
        ``retrieval_unavailable``."""
        if not question.strip():
            raise ParleyError("the question is empty", reason=ErrorCode.BAD_REQUEST,
                              hint="type a question about your documents")
        if len(question) > MAX_QUESTION_CHARS:
            raise ParleyError(
                f"the question is {len(question):,} characters long, over the limit of "
                f"{MAX_QUESTION_CHARS:,}",
                reason=ErrorCode.TOO_LARGE, hint="ask a shorter question",
            )
        tenant = principal.tenant
        persist = history is None
        cid = ConversationId(conversation_id) if conversation_id else new_conversation_id()
        if history is None and conversation_id:
            # Both reads before retrieval, in one wait; a limited question is refused first.
            limited, read = await asyncio.gather(
                self._rate_limit(principal), self._history(principal, cid),
                return_exceptions=True,
            )
            if isinstance(limited, BaseException):
                raise limited
            if isinstance(read, BaseException):
                raise read
            history = read
        else:
            await self._rate_limit(principal)
            history = [] if history is None else history
        try:
            resolved = followup.resolve(question, history)
            sources = await self._retriever.retrieve(tenant, resolved.query)
        except Retry:
            raise
        except ParleyError:
            raise
        except Exception as exc:
            raise ParleyError(
                f"document search failed: {type(exc).__name__}",
                reason=ErrorCode.RETRIEVAL_UNAVAILABLE, hint="try again in a moment",
            ) from exc
        if not sources:
            raise ParleyError(
                "there are no documents to answer from yet",
                reason=ErrorCode.NO_DOCUMENTS,
                hint="upload a document and wait until it shows 'ready'",
            )
        answer_tokens = min(max_tokens or self.options.max_tokens, self.options.max_tokens)
        mode = answer_mode or self.options.answer_mode
        built = prompt.build(
            question, sources, history,
            context_tokens=self.options.context_tokens, answer_tokens=answer_tokens,
            count=self._count,
        )
        # A model reads the sources that fit its context; an extractive answer, made without
        # one, reads every source retrieved.
        given = tuple(sources) if mode == "extractive" else built.sources
        turn_id = new_turn_id()
        headers = dict(inject({TURN_HEADER: turn_id}))  # the current span's context, if any
        meta = {"tenant": tenant, "conversation_id": cid, "persist": persist,
                "traceparent": headers.get(TRACE_HEADER),
                # What feedback on the answer is stored with (chat_gateway/feedback.py).
                "subject": principal.subject, "question": question}
        fields: dict[str, Any] = {
            "turn_id": turn_id,
            "tenant": tenant,
            "conversation_id": cid,
            "messages": [m.model_dump() for m in built.messages],
            "max_tokens": answer_tokens,
            "temperature": temperature,
            "deadline": time.time() + self.options.first_event_timeout,
            "sources": list(given),
            "enqueued_at": time.time(),
            "question": resolved.query,
            "answer_mode": mode,
        }
        body = dump(ChatTurn.model_validate(fields))
        recorded: list[ScriptCall] = []
        if persist:
            recorded.append(self.conversations.append_call(
                tenant, cid, turn_id, ChatMessage(role="user", content=question)))
            if self.store is not None:
                recorded.append(self.store.question_call(
                    tenant, principal.subject, cid, turn_id, question))
        # The ask path is on every question's time to first token: the turn's metadata, its
        # ``sources`` event, the question recorded and (a Redis broker: the same Redis) the
        # turn queued go in one round trip, in that order on one connection, so a worker that
        # takes the turn finds its stream begun and its question already kept.
        writer = TurnWriter(self._redis, turn_id, prefix=self.options.prefix,
                            ttl=self.options.stream_ttl)
        broker = self._broker if isinstance(self._broker, RedisBroker) else None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.meta_key(turn_id), json.dumps(meta), ex=self.options.stream_ttl)
            writer.append(pipe, source_event(given, cid))
            for call in recorded:
                call.queue(pipe)
            if broker is not None:
                broker.publish_on(pipe, self.options.queue, body, headers)
            replies = await pipe.execute(raise_on_error=False)
        entry = replies[1]
        for reply in (*replies[:3], *replies[3 + len(recorded):]):
            if isinstance(reply, Exception):
                raise reply
        await asyncio.gather(
            settle(recorded, replies[3:3 + len(recorded)]),
            *([] if broker else [self._broker.publish(self.options.queue, body, headers)]),
        )
        offset = entry.decode() if isinstance(entry, bytes) else str(entry)
        stored = TurnMeta(tenant, cid, persist, headers.get(TRACE_HEADER), principal.subject)
        return Started(turn_id, cid, built.sources, offset, stored)
