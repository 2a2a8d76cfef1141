"""Faults on a run of 50 documents with real worker processes: SIGKILL the ingest worker and the
embed worker mid-work, start new ones, and check that nothing is lost or doubled.

- every document ends ``ready`` exactly once (one ``ready`` progress event per document);
- chunk counts equal a clean run's (computed here with the same extraction and chunking code);
- no duplicate chunk ids in Chroma, nothing left over;
- the messages the killed workers held are finished within 60 s of the kill (lease 5 s).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingest_worker.chunking import chunk
from ingest_worker.extract.dispatch import extract
from parley.broker.redis import GROUP
from parley.embedder.local import MiniLMTokenizer
from parley.ids import DocumentId
from parley.status import Stage
from tests.fixtures import documents
from tests.pipeline import (
    idle_queues,
    pipeline_settings,
    running_pipeline,
    spawn_worker,
    stop_workers,
    worker_env,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = 50
LEASE = 5.0


def corpus() -> dict[str, bytes]:
    files = {}
    for i in range(DOCS):
        pages = [documents.lorem(90 + 7 * (i % 5), seed=i * 10 + p) for p in range(2 + i % 3)]
        files[f"doc{i:02}.pdf"] = documents.text_pdf(pages)
    return files


def clean_chunk_count(data: bytes, chunk_tokens: int, overlap: int) -> int:
    extraction = extract(data, "x.pdf", max_pages=100, max_bytes=10**8)
    drafts = chunk(
        extraction.blocks,
        tokenizer=MiniLMTokenizer(),
        max_tokens=chunk_tokens,
        overlap_tokens=overlap,
    )
    return len(drafts)


@pytest.mark.slow
async def test_sigkill_workers_mid_work_loses_and_doubles_nothing(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(
        redis_url, chroma_url, tmp_path / "blobs", blob_watch_seconds=0, embed_batch_size=4
    )
    env = worker_env(
        settings,
        PARLEY_QUEUES__INGEST__LEASE_SECONDS=str(LEASE),
        PARLEY_QUEUES__EMBED__LEASE_SECONDS=str(LEASE),
        PARLEY_EMBED_THREADS="1",
    )
    files = corpus()
    expected = {
        name: clean_chunk_count(data, settings.chunk_tokens, settings.chunk_overlap_tokens)
        for name, data in files.items()
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    redis = aioredis.Redis.from_url(redis_url)
    # The in-process pipeline is only used for its clients (upload, status, Chroma).
    probe = idle_queues(settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with running_pipeline(probe) as helper:
            helper.settings = settings  # upload to the real ingest queue
            ids: dict[str, DocumentId] = {}
            for name, data in files.items():
                ids[name] = await helper.upload(name, data)
            tenant = helper.tenant

            ingest = spawn_worker("ingest_worker", env, logs / "ingest-1.log")
            embed = spawn_worker("embed_worker", env, logs / "embed-1.log")
            workers += [ingest, embed]

            # Kill both once real work is under way: some documents done, most not.
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                states = Counter(
                    [
                        (await helper.clients.status.get(tenant, d)).stage  # type: ignore[union-attr]
                        for d in ids.values()
                    ]
                )
                if states[Stage.READY] >= 5 and states[Stage.EMBEDDING] >= 3:
                    break
                await asyncio.sleep(0.2)
            held: list[tuple[str, Any]] = []
            for queue in (settings.queues.ingest.name, settings.queues.embed.name):
                key = f"{settings.redis_prefix}:q:{queue}"
                for entry in await redis.xpending_range(key, GROUP, min="-", max="+", count=100):
                    held.append((key, entry["message_id"]))
            ingest.send_signal(signal.SIGKILL)
            embed.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            ingest.wait()
            embed.wait()
            assert held, "the workers held no message when killed: the test proved nothing"

            workers += [
                spawn_worker("ingest_worker", env, logs / "ingest-2.log"),
                spawn_worker("embed_worker", env, logs / "embed-2.log"),
            ]
            # The killed workers' messages are redelivered after the lease and finished.
            while held and time.monotonic() - killed_at < 60:
                still = []
                for key, entry_id in held:
                    if await redis.xrange(key, min=entry_id, max=entry_id):
                        still.append((key, entry_id))
                held = still
                await asyncio.sleep(0.25)
            recovery = time.monotonic() - killed_at
            assert not held, f"messages held by the killed workers not done after {recovery:.0f} s"

            done = await helper.wait(ids.values(), timeout=300)
            progress: Any = await redis.xrange(f"{settings.redis_prefix}:progress:{tenant}")
            ready_events = Counter(
                json.loads(fields[b"d"])["document_id"]
                for _id, fields in progress
                if json.loads(fields[b"d"])["stage"] == "ready"
            )
            for name, doc in ids.items():
                status = done[doc]
                assert status.stage == Stage.READY, (name, status)
                assert status.chunks == expected[name], name
                assert ready_events[doc] == 1, (name, ready_events[doc])
                chunk_ids = await helper.clients.vectors.ids(tenant, doc)
                assert len(chunk_ids) == len(set(chunk_ids)) == expected[name], name
            total = await helper.clients.vectors.count(tenant)
            assert total == sum(expected.values())
            print(f"\nrecovery after SIGKILL: {recovery:.1f} s; chunks: {total}")
    finally:
        stop_workers(workers, grace=30)
        await redis.aclose()
