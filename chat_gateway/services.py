"""What a gateway process holds: connections, the seams and the per-process helpers, built once
at startup (:func:`open_services`) or handed in by a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from backends.clients import open_clients
from chat_gateway.auth import Authenticator
from chat_gateway.conversation import Conversations
from chat_gateway.conversation_store import ConversationStore
from chat_gateway.drain import Drain
from chat_gateway.feedback import FeedbackStore
from chat_gateway.progress import ProgressHub
from chat_gateway.relay import Attachments, Relay
from chat_gateway.retrieval import Retriever
from chat_gateway.search import Lexical, ModelSwitch, Searcher, open_switch
from chat_gateway.tailer import TurnTailer
from chat_gateway.turns import TurnOptions, Turns
from parley.broker import Broker
from parley.embedder import Embedder
from parley.runtime import tasks
from parley.settings import Settings
from parley.status import StatusStore
from parley.vectors.store import VectorStore

REDIS_CONNECTIONS = 256


@dataclass(frozen=True)
class GatewayOptions:
    """Gateway behaviour that is not in :class:`Settings` (constructor-level knobs)."""

    # Seconds a turn keeps generating after its client dropped without a clean close,
    # waiting for a resume from any replica. A clean close (code 1000) cancels at once.
    resume_grace: float = 10.0
    # Seconds a connection without a header/query token has to send its ``auth`` message.
    auth_timeout: float = 10.0
    # Transport limit: a bigger frame closes the connection with 1009. Frames between
    # protocol.MAX_MESSAGE_BYTES and this get a ``too_large`` error and the connection carries on.
    ws_max_size: int = 1024 * 1024
    # Questions a minute per user, and per tenant (all its users together).
    asks_per_minute: int = 60
    tenant_asks_per_minute: int = 300
    first_event_timeout: float = 120.0


@dataclass
class Services:
    settings: Settings
    options: GatewayOptions
    redis: aioredis.Redis
    broker: Broker
    embedder: Embedder
    store: VectorStore
    status: StatusStore
    auth: Authenticator
    turns: Turns
    tailer: TurnTailer
    relay: Relay
    hub: ProgressHub
    attachments: Attachments
    transcripts: ConversationStore  # the kept conversations
    feedback: FeedbackStore
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    drain: Drain = field(default_factory=Drain)
    # Closes what open_services opened (None when the parts were handed in).
    stack: contextlib.AsyncExitStack | None = None

    @classmethod
    def assemble(
        cls,
        settings: Settings,
        *,
        redis: aioredis.Redis,
        broker: Broker,
        embedder: Embedder,
        store: VectorStore,
        auth: Authenticator | None = None,
        options: GatewayOptions | None = None,
        stack: contextlib.AsyncExitStack | None = None,
        switch: ModelSwitch | None = None,
    ) -> Services:
        """Wire the parts; ``redis`` must use ``decode_responses=False``. ``switch``: the
        embedding model being left, searched too until each tenant's switch is complete
        (:mod:`chat_gateway.search`)."""
        options = options or GatewayOptions()
        prefix = settings.redis_prefix
        conversations = Conversations(
            redis, prefix=prefix, max_messages=2 * settings.history_turns,
            ttl=settings.conversation_ttl_seconds,
        )
        transcripts = ConversationStore(redis, keys=settings.keys,
                                        retention=settings.conversation_ttl_seconds)
        turn_options = TurnOptions(
            queue=settings.queues.chat.name,
            prefix=prefix,
            stream_ttl=settings.stream_ttl_seconds,
            context_tokens=settings.chat_context_tokens,
            max_tokens=settings.chat_max_tokens,
            asks_per_minute=options.asks_per_minute,
            tenant_asks_per_minute=options.tenant_asks_per_minute,
            first_event_timeout=options.first_event_timeout,
            answer_mode=settings.answer_mode,
        )
        status = StatusStore(redis, prefix=prefix)
        retriever = Retriever(
            Searcher(
                embedder, store, status, switch=switch,
                lexical=Lexical.for_store(store, redis, prefix=prefix),
            ),
            k=settings.retrieval_k,
        )
        attachments = Attachments(redis, prefix)
        tailer = TurnTailer(redis, prefix=prefix, stream_ttl=settings.stream_ttl_seconds)
        return cls(
            settings=settings,
            options=options,
            redis=redis,
            broker=broker,
            embedder=embedder,
            store=store,
            status=status,
            auth=auth or Authenticator.from_settings(settings),
            turns=Turns(redis, broker, retriever, conversations, turn_options,
                        tokenizer=getattr(embedder, "tokenizer", None), store=transcripts),
            tailer=tailer,
            relay=Relay(redis, conversations, attachments, tailer, prefix=prefix,
                        stream_ttl=settings.stream_ttl_seconds,
                        idle_timeout=options.first_event_timeout, store=transcripts),
            hub=ProgressHub(redis, prefix=prefix),
            attachments=attachments,
            transcripts=transcripts,
            feedback=FeedbackStore(redis, keys=settings.keys),
            stack=stack,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, kept referenced until it ends."""
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        task.add_done_callback(tasks.log_failure)
        return task

    async def close(self) -> None:
        """Stop the background readers. Pending resume-grace timers are dropped: their turns
        run to their end (bounded by max_tokens) unless a client cancels them elsewhere."""
        await asyncio.gather(*(tasks.stop(task) for task in list(self.background)))
        await self.hub.close()
        await self.tailer.close()
        await self.attachments.close()
        if self.stack is not None:
            await self.stack.aclose()


async def open_services(settings: Settings, options: GatewayOptions | None = None) -> Services:
    """Connect to Redis, the chat queue's broker, the embedder and the Chroma server named by
    the settings, and the previous embedding model's when ``PARLEY_EMBEDDING_PREVIOUS__*`` is
    set (closed again by :meth:`Services.close`)."""
    stack = contextlib.AsyncExitStack()
    try:
        clients = await open_clients(stack, settings, vectors=True, embedder=True)
        # The gateway's own pool: a burst of asks must wait for a connection, not fail with
        # MaxConnectionsError (redis-py's default pool holds 100 and raises beyond).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=10,
            health_check_interval=30,
        )
        redis = aioredis.Redis(connection_pool=pool)
        stack.push_async_callback(pool.aclose)
        stack.push_async_callback(redis.aclose)
        switch = await open_switch(stack, settings, redis)
        return Services.assemble(
            settings, redis=redis, broker=clients.brokers.for_queue(settings.queues.chat),
            embedder=clients.embedder, store=clients.vectors, options=options, stack=stack,
            switch=switch,
        )
    except BaseException:
        await stack.aclose()
        raise


class Host(Protocol):
    """What a route module (documents, the OpenAI face) needs of the gateway that serves its
    routes: its settings, and its services once the lifespan has opened them."""

    settings: Settings

    @property
    def services(self) -> Services: ...
