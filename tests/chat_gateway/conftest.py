"""Real parts for the gateway's tests: Redis and the Chroma server (session fixtures), the local
ONNX embedder, the status store; a stand-in inference worker that consumes the chat queue and
writes tokens with :class:`parley.turnstream.TurnWriter` (the real worker is tested in
tests/inference_worker).

Chunks are indexed once per session under tenants unique to the session; each test gets its
own Redis prefix (queues, streams, status records, conversations) and marks the documents
served there."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from chat_gateway.app import Gateway
from chat_gateway.auth import Authenticator
from chat_gateway.server import running
from chat_gateway.services import GatewayOptions, Services
from parley.broker import Broker
from parley.broker.redis import RedisBroker
from parley.contracts import ChatTurn
from parley.embedder.local import LocalEmbedder
from parley.ids import ChunkId, DocumentId, TenantId
from parley.runtime import tasks
from parley.settings import Settings
from parley.status import Stage, StatusStore
from parley.turnstream import TurnWriter
from parley.vectors.chroma import ChromaStore
from parley.vectors.store import ChunkRecord
from tests.fixtures.quarterlies import reports

RUN = uuid.uuid4().hex[:6]
ALPHA = TenantId(f"alpha{RUN}")
BETA = TenantId(f"beta{RUN}")
EMPTY = TenantId(f"empty{RUN}")
GAMMA = TenantId(f"gamma{RUN}")  # look-alike reports of several companies, and a policy
TOKENS = {"tok-alpha": ALPHA, "tok-beta": BETA, "tok-empty": EMPTY, "tok-gamma": GAMMA}
REPORTS = [r for r in reports() if r.quarter == 1]

DOCUMENTS: dict[TenantId, list[tuple[str, str, list[tuple[int, str]]]]] = {
    ALPHA: [
        ("alpha-doc-1", "orchard-annual-report.pdf", [
            (3, "Orchard Computers reported total revenue of 383 billion dollars in fiscal 2023, "
                "down three percent from the previous year."),
            (7, "Orchard Computers employed about 161,000 full-time people at the end of 2023."),
        ]),
        ("alpha-doc-2", "orchard-supply-chain.docx", [
            (1, "Most Orchard devices are assembled by contract manufacturers in Asia."),
        ]),
    ],
    GAMMA: [
        *((f"gamma-{r.filename}", r.filename, [(1, r.text)]) for r in REPORTS),
        ("gamma-travel", "travel-policy.docx", [
            (1, "Travel policy. Hotel rooms may cost at most 180 euros a night in Europe and "
                "250 dollars elsewhere; the employee books them through the travel desk."),
            (2, "Flights longer than six hours may be booked in premium economy; shorter flights "
                "in economy. Train travel is preferred for trips under four hours."),
        ]),
    ],
    BETA: [
        ("beta-doc-1", "zebra-pricing.pdf", [
            (2, "Zebra Printing charges 40 euros per barcode printer ribbon in 2024."),
            (5, "Zebra Printing revenue was 12 million euros, confidential to beta."),
        ]),
    ],
}


@pytest.fixture(scope="session")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    model = LocalEmbedder()
    yield model
    await model.close()


@pytest.fixture(scope="session")
async def indexed(chroma_url: str, embedder: LocalEmbedder) -> AsyncIterator[ChromaStore]:
    """The Chroma store with both tenants' chunks (version ``v1``)."""
    store = await ChromaStore.connect(chroma_url, embedder.model_id)
    for tenant, docs in DOCUMENTS.items():
        records = []
        for doc_id, filename, pages in docs:
            vectors = await embedder.embed([text for _page, text in pages])
            for i, ((page, text), vector) in enumerate(zip(pages, vectors, strict=True)):
                records.append(ChunkRecord(
                    chunk_id=ChunkId(f"{doc_id}-{i}"), document_id=DocumentId(doc_id),
                    version="v1", text=text, embedding=vector,
                    metadata={"filename": filename, "page": page, "ordinal": i},
                ))
        await store.upsert(tenant, records)
    yield store
    await store.close()


@dataclass
class StandInWorker:
    """Consumes the chat queue; answers every turn with ``answer`` one word per ``delay``
    seconds, honouring the cancel flag the way the real worker does (on every flush)."""

    redis: aioredis.Redis
    broker: RedisBroker
    settings: Settings
    delay: float = 0.002
    answer: str = "Orchard reported revenue of 383 billion dollars [1]. Staff was 161,000 [2]."
    final_extra: dict[str, Any] = field(default_factory=dict)  # merged into final events
    turns: list[ChatTurn] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)  # turn id -> tokens written
    ended: dict[str, str] = field(default_factory=dict)  # turn id -> terminal event
    ended_at: dict[str, float] = field(default_factory=dict)
    _done: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _event(self, turn_id: str) -> asyncio.Event:
        return self._done.setdefault(turn_id, asyncio.Event())

    async def wait_ended(self, turn_id: str) -> str:
        await self._event(turn_id).wait()
        return self.ended[turn_id]

    async def run(self) -> None:
        queue = self.settings.queues.chat.name
        while True:
            for message in await self.broker.receive(queue, max_messages=8, wait=0.5):
                turn = ChatTurn.model_validate_json(message.body)
                self.turns.append(turn)
                task = asyncio.create_task(self._answer(turn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                await self.broker.ack(message)

    async def _answer(self, turn: ChatTurn) -> None:
        writer = TurnWriter(self.redis, turn.turn_id, prefix=self.settings.redis_prefix,
                            flush_interval=0.01)
        words = self.answer.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        for piece in pieces:
            if not await writer.token(piece):
                break
            self.written[turn.turn_id] = writer.tokens
            await asyncio.sleep(self.delay)
        if writer.cancelled or not await writer.flush():
            await writer.emit("cancelled", {"completion_tokens": writer.tokens})
            self.ended[turn.turn_id] = "cancelled"
        else:
            cited = [s.model_dump(mode="json", exclude={"text"}) for s in turn.sources[:2]]
            await writer.emit("final", {
                "text": "".join(pieces), "citations": cited, "finish_reason": "stop",
                "usage": {"prompt_tokens": 50, "completion_tokens": len(pieces)},
                "timings": {"ttft_ms": 1.0}, **self.final_extra,
            })
            self.ended[turn.turn_id] = "final"
        self.ended_at[turn.turn_id] = asyncio.get_running_loop().time()
        self._event(turn.turn_id).set()


@dataclass
class World:
    settings: Settings
    redis: aioredis.Redis
    status: StatusStore
    worker: StandInWorker
    make_gateway: Callable[..., contextlib.AbstractAsyncContextManager[str]]


def ws_url(base: str, token: str | None = None) -> str:
    url = base.replace("http://", "ws://") + "/ws"
    return f"{url}?token={token}" if token else url


@pytest.fixture
async def world(
    redis_url: str, chroma_url: str, indexed: ChromaStore, embedder: LocalEmbedder
) -> AsyncIterator[World]:
    prefix = f"gw{uuid.uuid4().hex[:10]}"
    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, redis_prefix=prefix,
        local_tokens=SecretStr(",".join(f"{t}:{tenant}" for t, tenant in TOKENS.items())),
    )
    redis = aioredis.Redis.from_url(redis_url)
    status = StatusStore(redis, prefix=prefix)
    for tenant, docs in DOCUMENTS.items():
        for doc_id, filename, _pages in docs:
            await status.update(tenant, DocumentId(doc_id), filename=filename, version="v1",
                                stage=Stage.READY)
    worker = StandInWorker(redis, RedisBroker(redis, prefix=prefix), settings)
    worker_task = asyncio.create_task(worker.run())

    @contextlib.asynccontextmanager
    async def make_gateway(
        options: GatewayOptions | None = None, auth: Authenticator | None = None,
        server: dict[str, Any] | None = None,
        broker: Callable[[aioredis.Redis], Broker] | None = None, **overrides: Any,
    ) -> AsyncIterator[str]:
        """A gateway replica; ``overrides`` change its settings (``allowed_origins=...``),
        ``server`` its uvicorn configuration (``{"ws_ping_interval": 0.2}``), ``broker``
        makes its chat queue's broker from its Redis client (a RedisBroker by default)."""
        # Each gateway has its own connections, as a separate replica would.
        client = aioredis.Redis.from_url(redis_url)
        gateway_settings = settings.model_copy(update=overrides) if overrides else settings
        services = Services.assemble(
            gateway_settings, redis=client,
            broker=broker(client) if broker else RedisBroker(client, prefix=prefix),
            embedder=embedder, store=indexed, auth=auth,
            options=options or GatewayOptions(resume_grace=10.0),
        )
        gateway = Gateway(gateway_settings, services=services)
        try:
            async with running(gateway, **(server or {})) as url:
                yield url
        finally:
            await services.close()
            await client.aclose()

    yield World(settings, redis, status, worker, make_gateway)
    # Cancelled until it ends: redis-py can swallow one cancel, and a single cancel then left
    # this teardown waiting forever (the 600 s hangs seen in CI).
    await tasks.stop(worker_task)
    await redis.aclose()


async def receive_until(ws: Any, kinds: set[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Events until one of ``kinds`` (inclusive)."""
    import json

    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            events.append(event)
            if event["type"] in kinds:
                return events
