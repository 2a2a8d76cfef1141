"""Open the clients a process needs, on one :class:`contextlib.AsyncExitStack`, so they close in
reverse order of opening when the process stops. Each logical queue maps to a broker backend by
settings (:class:`Brokers`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis

from parley.blobstore import BlobStore
from parley.broker import Broker
from parley.broker.redis import RedisBroker
from parley.embedder import Embedder
from parley.errors import ConfigError
from parley.settings import BrokerBackend, QueueSettings, Settings
from parley.status import StatusStore
from parley.vectors.store import VectorStore


class Brokers:
    """The broker of each backend, opened on first use and closed together."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._open: dict[BrokerBackend, Broker] = {}

    def for_queue(self, queue: QueueSettings) -> Broker:
        broker = self._open.get(queue.backend)
        if broker is None:
            broker = self._build(queue.backend)
            self._open[queue.backend] = broker
        return broker

    def _build(self, backend: BrokerBackend) -> Broker:
        queues = self._settings.queues
        leases = {q.name: q.lease_seconds for q in (queues.ingest, queues.embed, queues.chat)}
        if backend is BrokerBackend.REDIS:
            return RedisBroker(
                self._redis, prefix=self._settings.redis_prefix, lease_seconds=leases,
                consumer=self._settings.consumer_name,
            )
        from backends.servicebus import ServiceBusBroker

        if not (self._settings.servicebus_namespace or self._settings.servicebus_connection_string):
            raise ConfigError(
                "a queue is mapped to Service Bus but no namespace is configured",
                hint="set PARLEY_SERVICEBUS_NAMESPACE (Entra ID) or "
                "PARLEY_SERVICEBUS_CONNECTION_STRING",
            )
        return ServiceBusBroker.from_settings(self._settings)

    async def close(self) -> None:
        for broker in reversed(list(self._open.values())):
            await broker.close()
        self._open.clear()


@dataclass
class Clients:
    settings: Settings
    redis: aioredis.Redis
    brokers: Brokers
    status: StatusStore
    opened_blobs: BlobStore | None = None
    opened_vectors: VectorStore | None = None
    opened_embedder: Embedder | None = None
    # The configured embedding model's id, set with the vector store or the embedder.
    opened_model_id: str | None = None

    @property
    def blobs(self) -> BlobStore:
        return _required(self.opened_blobs, "blobs")

    @property
    def vectors(self) -> VectorStore:
        return _required(self.opened_vectors, "vectors")

    @property
    def embedder(self) -> Embedder:
        return _required(self.opened_embedder, "embedder")

    @property
    def model_id(self) -> str:
        return _required(self.opened_model_id, "vectors")


T = TypeVar("T")


def _required(value: T | None, name: str) -> T:
    if value is None:
        raise RuntimeError(f"open_clients(..., {name}=True) was not asked for {name}")
    return value


async def open_clients(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    *,
    blobs: bool = False,
    vectors: bool = False,
    embedder: bool | None = None,
) -> Clients:
    """Redis, brokers and status always; the rest when asked. Unrequested ones are left unset
    (accessing them is a programming error and fails loudly). ``embedder=None`` opens the
    embedder with the vector store; ``vectors=True, embedder=False`` opens the store under the
    configured model's id without loading the model (a process that only sizes chunks or
    deletes)."""
    redis = aioredis.Redis.from_url(settings.redis_url, health_check_interval=30)
    stack.push_async_callback(redis.aclose)
    brokers = Brokers(settings, redis)
    stack.push_async_callback(brokers.close)
    clients = Clients(settings, redis, brokers, StatusStore(redis, prefix=settings.redis_prefix))
    if embedder or (embedder is None and vectors):
        from backends.factory import build_embedder

        clients.opened_embedder = build_embedder(settings)
        clients.opened_model_id = clients.opened_embedder.model_id
        stack.push_async_callback(clients.embedder.close)
    if blobs:
        from backends.factory import open_blob_store

        clients.opened_blobs = open_blob_store(settings)
        stack.push_async_callback(clients.blobs.close)
    if vectors:
        from parley.vectors.chroma import ChromaStore
        from parley.vectors.generations import Generations

        if clients.opened_model_id is None:
            from backends.factory import model_id_of

            clients.opened_model_id = await model_id_of(settings)
        # Every write bumps the tenant's chunk generation: lexical indexes rebuild on it.
        clients.opened_vectors = await ChromaStore.connect(
            settings.chroma_url,
            clients.model_id,
            on_write=Generations(redis, prefix=settings.redis_prefix).bump,
        )
        stack.push_async_callback(clients.vectors.close)
    return clients
