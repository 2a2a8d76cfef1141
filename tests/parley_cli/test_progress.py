"""``parley ingest --wait``'s progress on a real Redis status store: the exit codes, and the hint
when nothing leaves the queue (no ingest worker running against this Redis, or all busy)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from parley.ids import DocumentId, TenantId
from parley.status import Stage, StatusStore
from parley_cli.progress import TIMED_OUT, watch

T = TenantId("acme")
A, B = DocumentId("a"), DocumentId("b")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[StatusStore]:
    client = aioredis.Redis.from_url(redis_url)
    yield StatusStore(client, prefix=f"p{uuid.uuid4().hex[:8]}")
    await client.aclose()


async def test_documents_left_queued_get_a_hint_once_and_time_out(
    store: StatusStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.update(T, A, filename="a.pdf", stage=Stage.QUEUED)
    code = await watch(store, T, [(A, "a.pdf"), (B, "b.pdf")], timeout=1.2, poll=0.05,
                       stalled_after=0.3)
    out = capsys.readouterr().out
    assert code == TIMED_OUT
    assert out.count("Still queued after 0 s: the ingest workers are busy, or none is") == 1
    assert "PARLEY_STATE" in out and "timed out after 1 s" in out


async def test_a_queue_that_moves_gets_no_hint(
    store: StatusStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.update(T, A, filename="a.pdf", stage=Stage.QUEUED)
    await store.update(T, B, filename="b.pdf", stage=Stage.QUEUED)

    async def work() -> None:
        await asyncio.sleep(0.1)
        await store.update(T, A, stage=Stage.READY, chunks=3)
        await asyncio.sleep(0.5)  # b waits behind a, past the hint's time: a worker is there
        await store.update(T, B, stage=Stage.FAILED, reason="empty", message="no text")

    worker = asyncio.create_task(work())
    code = await watch(store, T, [(A, "a.pdf"), (B, "b.pdf")], timeout=10, poll=0.05,
                       stalled_after=0.3)
    await worker
    assert code == 1  # one failed
    assert "Still queued" not in capsys.readouterr().out
