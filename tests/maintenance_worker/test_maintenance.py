"""The Celery wiring of the sweeps and their leases: two replicas at once do the work once;
the tasks run through Celery (eager, then a real worker with beat on the test Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from backends.clients import Clients, open_clients
from maintenance_worker import app as maintenance
from parley.ids import TenantId, document_id
from parley.settings import Settings
from parley.status import Stage
from tests.pipeline import pipeline_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(redis_url: str, chroma_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(
        redis_url, chroma_url, tmp_path / "blobs",
        reconcile_grace_seconds=0, stuck_after_seconds=0.2, stuck_max_retries=2,
    )


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The settings as the PARLEY_* variables a Celery process reads."""
    return {
        "PARLEY_REDIS_URL": settings.redis_url,
        "PARLEY_REDIS_PREFIX": settings.redis_prefix,
        "PARLEY_CHROMA_URL": settings.chroma_url,
        "PARLEY_BLOB_DIR": str(settings.blob_dir),
        "PARLEY_RECONCILE_GRACE_SECONDS": str(settings.reconcile_grace_seconds),
        "PARLEY_STUCK_AFTER_SECONDS": str(settings.stuck_after_seconds),
        "PARLEY_STUCK_MAX_RETRIES": str(settings.stuck_max_retries),
        "PARLEY_LOG_JSON": "false",
        **extra,
    }


@contextlib.asynccontextmanager
async def clients_for(settings: Settings) -> AsyncIterator[Clients]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_clients(stack, settings, blobs=True)


async def test_two_replicas_running_one_sweep_do_the_work_once(settings: Settings) -> None:
    # A blob is re-posted at most once per stuck_after_seconds: long enough for this test.
    settings = settings.model_copy(update={"stuck_after_seconds": 600.0})
    async with clients_for(settings) as clients:
        await clients.blobs.put("acme/missed.pdf", b"%PDF-1.4 not really", metadata={})
        first, second = await asyncio.gather(
            maintenance.run_sweep("reconcile", settings),
            maintenance.run_sweep("reconcile", settings),
        )
        skipped = [r for r in (first, second) if "skipped" in r]
        done = [r for r in (first, second) if "skipped" not in r]
        assert len(skipped) == 1 and len(done) == 1
        assert done[0]["counts"]["reposted"] == 1
        ingest = clients.brokers.for_queue(settings.queues.ingest)
        assert await ingest.depth(settings.queues.ingest.name) == 1
        # The lease was released by its owner: a later run goes ahead (and finds nothing new).
        later = await maintenance.run_sweep("reconcile", settings)
        assert "skipped" not in later and "reposted" not in later["counts"]
        assert await ingest.depth(settings.queues.ingest.name) == 1
        raw = await clients.redis.get(maintenance.last_key(settings, "reconcile"))
        stored = json.loads(raw or "{}")
        assert stored["counts"] == later["counts"]


async def test_a_lease_is_kept_while_held_and_released_only_by_its_owner(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        key = f"lease-test-{time.time_ns()}"
        lease = maintenance.Lease(client, key, ttl=1)
        async with lease as held:
            assert held
            async with maintenance.Lease(client, key, ttl=1) as other:
                assert not other  # a second replica is refused, and its exit frees nothing
            assert await client.get(key) == lease.token.encode()
            await asyncio.sleep(2.5)  # beyond the ttl: renewed by the keeper
            assert await client.get(key) == lease.token.encode()
            assert not lease.lost
        assert await client.get(key) is None
        # Someone else's lease (this one's expired and was taken) is not released by us.
        stale = maintenance.Lease(client, key, ttl=1)
        async with stale as held:
            assert held
            await client.set(key, b"someone-else")
        assert await client.get(key) == b"someone-else"
    finally:
        await client.aclose()


def test_tasks_run_through_celery_eager(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(settings).items():
        monkeypatch.setenv(name, value)
    app = maintenance.create_app(Settings())
    app.conf.task_always_eager = True
    assert set(app.conf.beat_schedule) == set(maintenance.SWEEP_NAMES)
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks
        assert entry["options"]["expires"] == settings.maintenance_interval_seconds

    tenant = TenantId("eager")
    doc = document_id(tenant, "eager/a.pdf")

    async def make_stuck() -> None:
        async with clients_for(settings) as clients:
            await clients.status.update(tenant, doc, stage=Stage.CHUNKING, path="eager/a.pdf")

    asyncio.run(make_stuck())
    time.sleep(0.3)
    result: dict[str, Any] = app.tasks[maintenance.task_name("stuck")].apply().get()
    assert result["counts"] == {"retried": 1}

    async def stage() -> Stage | None:
        async with clients_for(settings) as clients:
            status = await clients.status.get(tenant, doc)
            return status.stage if status else None

    assert asyncio.run(stage()) is Stage.QUEUED


@pytest.fixture
def celery_with_beat(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **environment(settings, PARLEY_MAINTENANCE_INTERVAL_SECONDS="1"),
    }
    with (tmp_path / "celery.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "maintenance_worker", "worker", "--beat",
                "--pool", "solo", "--loglevel", "WARNING",
                "--schedule", str(tmp_path / "beat-schedule"), "--hostname", "test@%h",
            ],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_beat_and_a_real_worker_run_the_sweeps(
    settings: Settings, celery_with_beat: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    tenant = TenantId("beat")
    doc = document_id(tenant, "beat/b.pdf")
    async with clients_for(settings) as clients:
        # The blob exists (else the reconcile sweep, also on the schedule, purges the record).
        await clients.blobs.put("beat/b.pdf", b"%PDF-1.4 stand-in")
        await clients.status.update(
            tenant, doc, stage=Stage.EMBEDDING, path="beat/b.pdf",
            etag=(await clients.blobs.stat("beat/b.pdf")).etag,  # type: ignore[union-attr]
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = await clients.status.get(tenant, doc)
            assert status is not None
            if status.stage is Stage.FAILED:
                break
            assert celery_with_beat.poll() is None, (tmp_path / "celery.log").read_text()
            await asyncio.sleep(0.5)
        else:
            raise AssertionError((tmp_path / "celery.log").read_text()[-3000:])
        # Beat emitted the stuck sweep every second; the worker retried twice, then failed it.
        assert status.reason == "stuck" and "after 2 retries" in (status.message or "")
        last = json.loads(await clients.redis.get(maintenance.last_key(settings, "stuck")) or "{}")
        assert last["sweep"] == "stuck"
        ingest = clients.brokers.for_queue(settings.queues.ingest)
        assert await ingest.depth(settings.queues.ingest.name) == 2  # the two re-posts


def _broker_connection_parameters(app: Any) -> dict[str, Any]:
    """What kombu's Redis transport hands redis-py for the app's broker, without connecting
    (kombu builds them on a channel; a bare one is enough to ask)."""
    from kombu.transport import redis as kombu_redis

    transport = app.connection_for_write().transport
    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)
    channel.connection = transport
    params: dict[str, Any] = channel._connparams()  # type: ignore[no-untyped-call]
    return params


def test_the_broker_over_tls_verifies_its_certificate() -> None:
    # Azure Managed Redis: rediss://, with an access key that may hold '/', '+' or '='.
    url = "rediss://:Ab%2Fcd%2BE%3D@redis-x.westeurope.redis.azure.net:10000/0"
    params = _broker_connection_parameters(maintenance.create_app(Settings(redis_url=url)))
    assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert (params["host"], params["port"], params["password"]) == (
        "redis-x.westeurope.redis.azure.net", 10000, "Ab/cd+E="
    )
    plain = _broker_connection_parameters(
        maintenance.create_app(Settings(redis_url="redis://127.0.0.1:6379/0"))
    )
    assert "ssl_cert_reqs" not in plain
