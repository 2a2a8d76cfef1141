"""An in-process ingestion pipeline on real servers (Redis, Chroma) and the real local embedder:
the ingest and embed consumers run as tasks of the test's event loop, exactly as their
``__main__`` modules wire them, with a fresh key prefix, blob folder and tenant per test."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embed_worker.handler import EmbedHandler
from ingest_worker.handler import IngestHandler
from parley.clients import Clients, open_clients
from parley.consumer import Consumer
from parley.ids import DocumentId, TenantId, document_id
from parley.search import Searcher
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus
from parley.uploads import upload
from parley.watcher import Watcher


def pipeline_settings(redis_url: str, chroma_url: str, blob_dir: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "chroma_url": chroma_url,
        "blob_dir": blob_dir,
        "redis_prefix": f"t{uuid.uuid4().hex[:8]}",
        "blob_watch_seconds": 0.5,
        "chunk_tokens": 120,
        "chunk_overlap_tokens": 15,
        "embed_batch_size": 8,
        **extra,
    }
    return Settings.model_validate(values)


@dataclass
class Pipeline:
    settings: Settings
    clients: Clients
    tenant: TenantId
    searcher: Searcher
    consumers: list[Consumer] = field(default_factory=list)

    async def upload(self, filename: str, data: bytes, folder: str = "") -> DocumentId:
        request, _ = await upload(
            self.settings,
            blobs=self.clients.blobs,
            broker=self.clients.brokers.for_queue(self.settings.queues.ingest),
            tenant=self.tenant,
            filename=filename,
            data=data,
            folder=folder,
            redis=self.clients.redis,
            status=self.clients.status,
        )
        return document_id(self.tenant, request.path)

    async def wait(
        self,
        documents: Iterable[DocumentId],
        *,
        timeout: float = 60.0,
        until: Any = None,
    ) -> dict[DocumentId, DocumentStatus]:
        """Poll until every document is in a terminal stage (or ``until(status)`` holds)."""
        wanted = list(documents)
        deadline = time.monotonic() + timeout
        done: dict[DocumentId, DocumentStatus] = {}
        while time.monotonic() < deadline:
            for doc in wanted:
                status = await self.clients.status.get(self.tenant, doc)
                ok = until(status) if until else status and status.stage in TERMINAL_STAGES
                if ok and status is not None:
                    done[doc] = status
            if len(done) == len(wanted):
                return done
            await asyncio.sleep(0.1)
        missing = {
            d: await self.clients.status.get(self.tenant, d) for d in wanted if d not in done
        }
        raise AssertionError(f"not finished within {timeout} s: {missing}")


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, *, watch: bool = False) -> AsyncIterator[Pipeline]:
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=True)
        from ingest_worker.isolation import close_default_pool

        stack.push_async_callback(close_default_pool)
        ingest = IngestHandler(
            settings,
            blobs=clients.blobs,
            broker=clients.brokers.for_queue(settings.queues.embed),
            status=clients.status,
            vectors=clients.vectors,
            tokenizer=clients.embedder.tokenizer,
            tokenizer_id=clients.embedder.model_id,
        )
        embed = EmbedHandler(
            embedder=clients.embedder, vectors=clients.vectors, status=clients.status
        )
        queues = settings.queues
        consumers = [
            Consumer(
                clients.brokers.for_queue(queues.ingest),
                queues.ingest,
                ingest,
                receive_wait=0.2,
                backoff_base=0.2,
            ),
            Consumer(
                clients.brokers.for_queue(queues.embed),
                queues.embed,
                embed,
                receive_wait=0.2,
                backoff_base=0.2,
            ),
        ]
        stop = asyncio.Event()
        runners: list[Any] = list(consumers)
        if watch:
            runners.append(
                Watcher(
                    settings,
                    blobs=clients.blobs,
                    redis=clients.redis,
                    broker=clients.brokers.for_queue(queues.ingest),
                )
            )
        tasks = [asyncio.create_task(r.run(stop)) for r in runners]
        pipeline = Pipeline(
            settings,
            clients,
            TenantId(f"tenant{uuid.uuid4().hex[:6]}"),
            Searcher(clients.embedder, clients.vectors, clients.status),
            consumers,
        )
        try:
            yield pipeline
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
