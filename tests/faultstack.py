"""A small ingestion stack of real processes to break on purpose: a private Redis, a Chroma
server, the ingest worker (with its blob watcher) and the embed worker as ``python -m`` child
processes. Used by the fault suite (tests/test_fault_recovery.py) and the soak benchmark
(``python -m bench soak``).

What it measures afterwards, from the real parts:

- **lost**: documents that are not ``ready`` in the end;
- **duplicated**: chunks stored beyond a clean run's count for the document, or of another
  version than the served one;
- **embedded again**: chunks embedded more than once, from the embed workers' ``batch_embedding``
  log events of every process that ran (a killed worker's included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.clients import Clients, open_clients
from ingest_worker.chunking import chunk
from ingest_worker.extract.dispatch import extract
from parley.embedder.local import MiniLMTokenizer
from parley.ids import DocumentId, TenantId, document_id
from parley.settings import Settings
from parley.status import Stage
from parley.uploads import upload
from parley_cli import localstack
from tests.fixtures import documents

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("ingest_worker", "embed_worker")
TENANT = TenantId("faults")


def corpus(count: int, *, seed: int = 0) -> dict[str, bytes]:
    """``count`` small PDFs of 2 to 4 pages of distinct text."""
    files = {}
    for i in range(count):
        pages = [
            documents.lorem(90 + 7 * (i % 5), seed=seed + i * 10 + p) for p in range(2 + i % 3)
        ]
        files[f"doc{i:03}.pdf"] = documents.text_pdf(pages)
    return files


def clean_chunks(data: bytes, settings: Settings) -> int:
    """How many chunks a clean run makes of ``data`` (the workers' own code)."""
    blocks = extract(data, "x.pdf", max_pages=100, max_bytes=10**8).blocks
    return len(chunk(blocks, tokenizer=MiniLMTokenizer(), max_tokens=settings.chunk_tokens,
                     overlap_tokens=settings.chunk_overlap_tokens))


@dataclass
class Outcome:
    documents: int
    ready: int
    lost: int
    duplicated: int
    embedded: int  # chunk embeddings computed, all processes together
    embedded_again: int
    chunks: int  # stored in the end


@dataclass
class FaultStack:
    state: Path
    settings: Settings
    env: dict[str, str]
    redis: localstack.Server
    persist: bool
    clients: Clients
    tenant: TenantId = TENANT
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    incarnations: Counter[str] = field(default_factory=Counter)
    expected: dict[DocumentId, int] = field(default_factory=dict)
    # Each worker's /readyz and /metrics port (kept by the process started after a kill).
    ports: dict[str, int] = field(
        default_factory=lambda: {m: localstack.free_port() for m in WORKERS})

    # processes ----------------------------------------------------------------------------------
    def log_path(self, module: str, incarnation: int) -> Path:
        return self.state / "logs" / f"{module}-{incarnation}.log"

    def start(self, module: str) -> subprocess.Popen[bytes]:
        self.incarnations[module] += 1
        path = self.log_path(module, self.incarnations[module])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**self.env, "PARLEY_METRICS_PORT": str(self.ports[module]),
                     # One name per slot, as ``parley up`` gives: a worker started in a killed
                     # one's place takes the messages it left at once (parley.broker.redis).
                     "PARLEY_CONSUMER_NAME": f"{module}-{self.tenant}"},
            )
        self.workers[module] = process
        return process

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` of every worker log of this stack, for an assertion's message: a
        wait that fails in CI says what the workers were doing."""
        tails = []
        for path in sorted((self.state / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(tails)

    def kill(self, module: str) -> None:
        """SIGKILL the worker and start a new one at once (what a supervisor does)."""
        process = self.workers[module]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.start(module)

    def redis_down(self, *, keep_data: bool) -> None:
        """SIGKILL Redis; ``keep_data=False`` also drops its append-only file, so that it
        comes back empty, as after a failover to a replica that had nothing."""
        self.redis.process.send_signal(signal.SIGKILL)
        self.redis.process.wait()
        if not keep_data:
            shutil.rmtree(self.state / "redis" / "appendonlydir", ignore_errors=True)

    def redis_up(self) -> None:
        """Start Redis again on its port (the URL every process was given)."""
        self.redis = localstack.start_redis(self.state / "redis", self.redis.port,
                                            persist=self.persist)

    def ready(self, module: str) -> bool | None:
        """The worker's /readyz: True (200), False (503), None (no answer)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[module]}/readyz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            return False if exc.code == 503 else None
        except OSError:
            return None

    # work ---------------------------------------------------------------------------------------
    async def upload(self, files: dict[str, bytes]) -> list[DocumentId]:
        ids = []
        broker = self.clients.brokers.for_queue(self.settings.queues.ingest)
        for name, data in files.items():
            request, _ = await upload(
                self.settings, blobs=self.clients.blobs, broker=broker, tenant=self.tenant,
                filename=name, data=data, redis=self.clients.redis, status=self.clients.status,
            )
            doc = document_id(self.tenant, request.path)
            self.expected[doc] = clean_chunks(data, self.settings)
            ids.append(doc)
        return ids

    async def stages(self) -> Counter[str]:
        """How many documents are at each stage now ("missing": no record)."""
        found: Counter[str] = Counter()
        for doc in self.expected:
            try:
                status = await self.clients.status.get(self.tenant, doc)
            except Exception:  # Redis down: nothing known right now
                return Counter({"unknown": len(self.expected)})
            found[status.stage.value if status else "missing"] += 1
        return found

    async def wait_ready(self, timeout: float) -> float:
        """Seconds until every document is ready (or ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (await self.stages())[Stage.READY.value] == len(self.expected):
                break
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def embed_events(self) -> Iterable[dict[str, Any]]:
        for path in sorted((self.state / "logs").glob("embed_worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if '"batch_embedding"' in line:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    async def outcome(self) -> Outcome:
        ready = lost = duplicated = chunks = 0
        for doc, count in self.expected.items():
            status = await self.clients.status.get(self.tenant, doc)
            if status is None or status.stage != Stage.READY:
                lost += 1
                continue
            ready += 1
            # Every version's chunks: a stale version left behind counts as duplicated too.
            stored = await self.clients.vectors.ids(self.tenant, doc)
            chunks += len(stored)
            duplicated += len(stored) - len(set(stored)) + max(0, len(stored) - count)
        per_batch: Counter[tuple[str, str, int]] = Counter()
        size: dict[tuple[str, str, int], int] = {}
        embedded = 0
        for event in self.embed_events():
            key = (str(event.get("document_id")), str(event.get("version")),
                   int(event.get("batch", -1)))
            per_batch[key] += int(event["embedded"])
            size[key] = int(event["chunks"])
            embedded += int(event["embedded"])
        again = sum(max(0, n - size[key]) for key, n in per_batch.items())
        return Outcome(len(self.expected), ready, lost, duplicated, embedded, again, chunks)

    def stop(self, grace: float = 30.0) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def fault_stack(
    state: Path, chroma_url: str, *, persist: bool, lease: float = 5.0, **settings: Any
) -> AsyncIterator[FaultStack]:
    """A fresh Redis (``persist``: with its append-only file) and the two workers, on
    ``chroma_url``; everything stopped on exit."""
    redis = localstack.start_redis(state / "redis", persist=persist)
    values: dict[str, Any] = {
        "redis_url": redis.url, "chroma_url": chroma_url, "blob_dir": state / "blobs",
        "redis_prefix": "parley", "blob_watch_seconds": 0.5, "chunk_tokens": 120,
        "chunk_overlap_tokens": 15, "embed_batch_size": 8, **settings,
    }
    config = Settings.model_validate(values)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PARLEY_REDIS_URL": config.redis_url, "PARLEY_CHROMA_URL": config.chroma_url,
        "PARLEY_BLOB_DIR": str(config.blob_dir), "PARLEY_REDIS_PREFIX": config.redis_prefix,
        "PARLEY_BLOB_WATCH_SECONDS": str(config.blob_watch_seconds),
        "PARLEY_CHUNK_TOKENS": str(config.chunk_tokens),
        "PARLEY_CHUNK_OVERLAP_TOKENS": str(config.chunk_overlap_tokens),
        "PARLEY_EMBED_BATCH_SIZE": str(config.embed_batch_size),
        "PARLEY_QUEUES__INGEST__LEASE_SECONDS": str(lease),
        "PARLEY_QUEUES__EMBED__LEASE_SECONDS": str(lease),
        "PARLEY_EMBED_THREADS": "1",
        "PARLEY_DRAIN_SECONDS": "5",
        "PARLEY_LOG_JSON": "true",
        "ANONYMIZED_TELEMETRY": "False",
    }
    stack = contextlib.AsyncExitStack()
    try:
        clients = await open_clients(stack, config, blobs=True, vectors=True)
        # A tenant of its own: chunks another run left in a shared Chroma must not count.
        tenant = TenantId(f"{TENANT}{uuid.uuid4().hex[:6]}")
        faults = FaultStack(state, config, env, redis, persist, clients, tenant)
        for module in WORKERS:
            faults.start(module)
        yield faults
    finally:
        with contextlib.suppress(NameError):
            faults.stop()
        await stack.aclose()
        with contextlib.suppress(NameError):
            faults.redis.stop()
        redis.stop()
