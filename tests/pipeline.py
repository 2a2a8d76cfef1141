"""An in-process ingestion pipeline on real servers (Redis, Chroma) and the real local embedder:
the ingest and embed consumers run as tasks of the test's event loop, exactly as their
``__main__`` modules wire them, with a fresh key prefix, blob folder and tenant per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.clients import Clients, open_clients
from chat_gateway.search import Lexical, Searcher
from embed_worker.handler import EmbedHandler
from ingest_worker.handler import IngestHandler
from ingest_worker.watcher import Watcher
from parley.ids import DocumentId, TenantId, document_id
from parley.runtime.consumer import Consumer
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus
from parley.uploads import upload

ROOT = Path(__file__).resolve().parent.parent


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


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a worker process use ``settings``' servers and prefix."""
    return {
        **os.environ,
        "PARLEY_REDIS_URL": settings.redis_url,
        "PARLEY_CHROMA_URL": settings.chroma_url,
        "PARLEY_BLOB_DIR": str(settings.blob_dir),
        "PARLEY_REDIS_PREFIX": settings.redis_prefix,
        "PARLEY_BLOB_WATCH_SECONDS": "0",
        "PARLEY_CHUNK_TOKENS": str(settings.chunk_tokens),
        "PARLEY_CHUNK_OVERLAP_TOKENS": str(settings.chunk_overlap_tokens),
        "PARLEY_EMBED_BATCH_SIZE": str(settings.embed_batch_size),
        **extra,
    }


def spawn_worker(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m <module>`` from the project root, output appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_workers(workers: Iterable[subprocess.Popen[bytes]], grace: float = 40.0) -> None:
    """SIGTERM all (they drain), then wait; kill what is still running after ``grace``."""
    workers = list(workers)
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()


def idle_queues(settings: Settings) -> Settings:
    """``settings`` whose ingest and embed queues nobody posts to: for an in-process pipeline
    used only for its clients while worker processes do the work."""
    queues = settings.queues.model_copy(
        update={
            "ingest": settings.queues.ingest.model_copy(
                update={"name": f"idle-{uuid.uuid4().hex}"}
            ),
            "embed": settings.queues.embed.model_copy(update={"name": f"idle-{uuid.uuid4().hex}"}),
        }
    )
    return settings.model_copy(update={"queues": queues})


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, *, watch: bool = False) -> AsyncIterator[Pipeline]:
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=True)
        from ingest_worker.extract.isolation import close_default_pool

        stack.push_async_callback(close_default_pool)
        ingest = IngestHandler.from_clients(clients)
        embed = EmbedHandler.from_clients(clients)
        stack.push_async_callback(embed.close)
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
            Searcher(
                clients.embedder, clients.vectors, clients.status,
                lexical=Lexical.for_store(
                    clients.vectors, clients.redis, prefix=settings.redis_prefix
                ),
            ),
            consumers,
        )
        try:
            yield pipeline
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
