"""Dead letters on both broker adapters (Redis Streams; the real Service Bus SDK against the AMQP
peer): a poison message shows up with its reason, replaying it after the cause is fixed ingests
it, purge removes them; and ``parley dlq`` on the command line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley.broker.redis import RedisBroker
from parley.contracts import IngestRequest, dump
from parley.errors import NotFound, ParleyError
from parley.ids import TenantId, document_id
from parley.settings import Settings
from parley.status import Stage
from parley_cli import deadletters
from parley_cli.main import main
from tests.fixtures import documents
from tests.peers.servicebus import ServiceBusPeer
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline


@pytest.fixture(scope="module")
def peer() -> Iterator[ServiceBusPeer]:
    with ServiceBusPeer() as running:
        yield running


def settings_for(
    backend: str, redis_url: str, chroma_url: str, blob_dir: Path, peer: ServiceBusPeer | None,
    **extra: Any,
) -> Settings:
    if backend == "redis":
        return pipeline_settings(redis_url, chroma_url, blob_dir, **extra)
    assert peer is not None
    return pipeline_settings(
        redis_url, chroma_url, blob_dir,
        servicebus_connection_string=peer.connection_string,
        queues={"ingest": {"backend": "servicebus", "name": f"ingest-{uuid.uuid4().hex[:8]}"}},
        **extra,
    )


async def wait_for_letters(pipeline: Pipeline, n: int) -> list[deadletters.Found]:
    for _ in range(200):
        found = await deadletters.dead_letters(
            pipeline.clients.brokers, pipeline.settings, queue="ingest"
        )
        if len(found) >= n:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} dead letters, have {len(found)}")


# Service Bus: ~17 s, most of it the SDK opening and closing links (pipeline twice, DLQ peeks).
@pytest.mark.parametrize(
    "backend", ["redis", pytest.param("servicebus", marks=pytest.mark.slow)]
)
async def test_poison_message_listed_replayed_after_the_fix_and_purged(
    backend: str, redis_url: str, chroma_url: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    peer = request.getfixturevalue("peer") if backend == "servicebus" else None
    wrong = settings_for(backend, redis_url, chroma_url, tmp_path / "blobs", peer)
    tenant = TenantId("acme")
    path = f"{tenant}/inbox/memo.pdf"
    poison = IngestRequest(container="incoming", path=path, tenant=tenant)

    # This deployment ingests 'documents'; an event for 'incoming' is rejected.
    async with running_pipeline(wrong) as pipeline:
        ingest = pipeline.clients.brokers.for_queue(wrong.queues.ingest)
        await ingest.publish(wrong.queues.ingest.name, dump(poison), {"origin": "event-grid"})
        [found] = await wait_for_letters(pipeline, 1)
    letter = found.letter
    assert found.queue.name == wrong.queues.ingest.name
    assert "container 'incoming'" in letter.reason and "unknown_container" in letter.reason
    assert letter.attempt == 1
    assert IngestRequest.model_validate_json(letter.body) == poison
    assert letter.headers.get("origin") == "event-grid"
    shown = deadletters.details(found)
    assert "unknown_container" in shown and '"container": "incoming"' in shown

    # The cause is fixed: the deployment now ingests the 'incoming' container.
    fixed = wrong.model_copy(update={"blob_container": "incoming"})
    async with running_pipeline(fixed) as pipeline:
        await pipeline.clients.blobs.put(
            path, documents.text_pdf(["Iota memo: the audit is on May 4. " + documents.lorem(40)]),
            content_type="application/pdf",
        )
        replayed = await deadletters.replay(pipeline.clients.brokers, fixed, letter.id)
        assert replayed.letter.id == letter.id
        doc = document_id(tenant, path)
        for _ in range(600):
            status = await pipeline.clients.status.get(tenant, doc)
            if status is not None and status.stage is Stage.READY:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"not ready: {status}")
        assert status.chunks > 0
        assert await deadletters.dead_letters(pipeline.clients.brokers, fixed) == []
        with pytest.raises(NotFound):
            await deadletters.replay(pipeline.clients.brokers, fixed, letter.id)

        # Two more poison messages; purge removes them.
        broker = pipeline.clients.brokers.for_queue(fixed.queues.ingest)
        for name in ("a.pdf", "b.pdf"):
            other = IngestRequest(container="elsewhere", path=f"{tenant}/{name}", tenant=tenant)
            await broker.publish(fixed.queues.ingest.name, dump(other))
        await wait_for_letters(pipeline, 2)
        purged = await deadletters.purge(pipeline.clients.brokers, fixed, queue="ingest")
        assert purged == {fixed.queues.ingest.name: 2}
        assert await deadletters.dead_letters(pipeline.clients.brokers, fixed) == []


def test_dlq_command_line(
    redis_url: str, chroma_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    monkeypatch.setenv("PARLEY_REDIS_URL", redis_url)
    monkeypatch.setenv("PARLEY_REDIS_PREFIX", settings.redis_prefix)

    async def poison(n: int) -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        broker = RedisBroker(client, prefix=settings.redis_prefix)
        queue = settings.queues.embed.name
        try:
            for i in range(n):
                await broker.publish(queue, b'{"schema": "parley.chunks.v9"}', {"n": str(i)})
            for message in await broker.receive(queue, max_messages=n, wait=1):
                await broker.dead_letter(message, reason="malformed_message: unknown schema")
            return [d.id for d in await broker.dead_letters(queue)]
        finally:
            await broker.close()
            await client.aclose()

    ids = asyncio.run(poison(3))
    assert main(["dlq", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(i in listed for i in ids) and "malformed_message" in listed, (ids, listed)
    assert main(["dlq", "show", ids[0]]) == 0
    shown = capsys.readouterr().out
    assert "parley.chunks.v9" in shown and "attempts   1" in shown
    assert main(["dlq", "show", "0-1"]) == 2  # no such id: told so, non-zero
    assert "no dead letter" in capsys.readouterr().err
    assert main(["dlq", "replay", ids[0], "--queue", "embed"]) == 0
    assert f"replayed {ids[0]} on {settings.queues.embed.name}" in capsys.readouterr().out
    assert main(["dlq", "replay", "--all"]) == 0
    assert f"replayed 2 on {settings.queues.embed.name}" in capsys.readouterr().out
    asyncio.run(poison(1))
    assert main(["dlq", "purge", "--queue", "embed"]) == 0
    assert f"purged 1 from {settings.queues.embed.name}" in capsys.readouterr().out
    assert main(["dlq", "list"]) == 0
    assert "no dead letters" in capsys.readouterr().out

    async def depth() -> int:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await RedisBroker(client, prefix=settings.redis_prefix).depth(
                settings.queues.embed.name
            )
        finally:
            await client.aclose()

    assert asyncio.run(depth()) == 3  # the three replayed messages wait on the queue again


def test_unknown_queue_is_named(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    with pytest.raises(ParleyError, match="parley-ingest"):
        deadletters.queues(settings, "ingset")
    assert [q.name for q in deadletters.queues(settings, "parley-chat")] == ["parley-chat"]
