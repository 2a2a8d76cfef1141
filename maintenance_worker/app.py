"""Scheduled maintenance on Celery: ``python -m maintenance_worker beat`` emits the sweeps and
``python -m maintenance_worker worker`` runs them (k8s/base/maintenance.yaml).

The broker is Parley's Redis (``PARLEY_REDIS_URL``), with Celery's keys under
``<prefix>:celery:`` and its own queue ``parley-maintenance``; no result backend. Over TLS
(``rediss://``, Azure Managed Redis) the broker's certificate is verified. Celery is only
the clock and the runner here: the sweeps are functions of :mod:`maintenance_worker.reconcile`
and :mod:`maintenance_worker.reembedding`, and the event path never goes through Celery
(ARCHITECTURE.md, "Celery only for maintenance").

Safe on several replicas at once: each run takes a lease in Redis for its sweep
(redis-py's ``Lock`` on ``<p>:maintenance:lease:<sweep>``: ``SET NX PX`` with an owner token),
renewed while it runs and released only by its owner, so a second beat or worker replica that
emits or picks up the same sweep meanwhile skips it. Sweeps are idempotent besides, so a run
after a lost lease only repeats harmless work. Beat messages expire after one interval: a worker
that was down does not run a pile of stale sweeps when it comes back. The last report of each
sweep is kept in ``<p>:maintenance:last:<sweep>`` (``parley doctor`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from celery import Celery
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from backends.clients import Clients, open_clients
from maintenance_worker import reconcile, reembedding
from parley import logs
from parley.settings import Settings

log = structlog.get_logger(__name__)

QUEUE = "parley-maintenance"
SWEEP_NAMES = ("reconcile", "stuck", "expire", "reembed")
_LEASE_SECONDS = 120

class Lease:
    """A Redis lease with an owner token (redis-py's :class:`~redis.asyncio.lock.Lock`, not
    blocking), renewed to its full ttl every third of it while held.

    ``async with lease as held:`` — ``held`` is False when another owner has it; the body
    should then do nothing. On exit the lease is released if still ours; cancelling the body
    releases it too."""

    def __init__(self, client: aioredis.Redis, key: str, *, ttl: int = _LEASE_SECONDS) -> None:
        self.key = key
        self.ttl = ttl
        self.token = uuid.uuid4().hex
        self.lost = False
        # Not thread-local: the keeper task renews what the sweep's task acquired.
        self._lock = Lock(client, key, timeout=ttl, blocking=False, thread_local=False)
        self._keeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> bool:
        held = bool(await self._lock.acquire(token=self.token))
        if held:
            self._keeper = asyncio.create_task(self._keep(), name=f"lease:{self.key}")
        return held

    async def __aexit__(self, *exc: object) -> None:
        if self._keeper is None:
            return
        self._keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keeper
        # Deletes the key only while it still holds our token (else it is someone else's now).
        with contextlib.suppress(LockNotOwnedError):
            await asyncio.shield(self._lock.release())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._lock.reacquire()
            except LockNotOwnedError:
                self.lost = True
                log.warning("lease_lost", lease=self.key)
                return
            except Exception as exc:  # a blip: the next round tries again within the ttl
                log.warning("lease_extend_failed", lease=self.key, error=str(exc))


Sweep = Callable[[Settings, Clients], Awaitable[reconcile.SweepReport]]


async def _reconcile(settings: Settings, clients: Clients) -> reconcile.SweepReport:
    return await reconcile.reconcile_blobs(
        settings,
        redis=clients.redis,
        blobs=clients.blobs,
        status=clients.status,
        store=_chroma(clients),
        broker=clients.brokers.for_queue(settings.queues.ingest),
    )


async def _stuck(settings: Settings, clients: Clients) -> reconcile.SweepReport:
    return await reconcile.retry_stuck(
        settings,
        redis=clients.redis,
        status=clients.status,
        broker=clients.brokers.for_queue(settings.queues.ingest),
    )


async def _expire(settings: Settings, clients: Clients) -> reconcile.SweepReport:
    return await reconcile.expire_chat_state(settings, redis=clients.redis)


async def _reembed(settings: Settings, clients: Clients) -> reconcile.SweepReport:
    from backends.factory import model_id_of, previous_settings

    # PARLEY_EMBEDDING_PREVIOUS__* here says which model a switch leaves: only needed to go
    # back to a model the deployment left before (maintenance_worker.reembedding.next_target).
    before = previous_settings(settings)
    return await reembedding.reembed(
        settings,
        redis=clients.redis,
        status=clients.status,
        store=_chroma(clients),
        embedder=clients.embedder,
        broker=clients.brokers.for_queue(settings.queues.ingest),
        previous_model=await model_id_of(before) if before is not None else None,
    )


def _chroma(clients: Clients) -> Any:
    from parley.vectors.chroma import ChromaStore

    store = clients.vectors
    if not isinstance(store, ChromaStore):
        raise TypeError("the maintenance sweeps need the Chroma vector store")
    return store


# sweep -> (function, needs blobs, needs vectors + embedder)
SWEEPS: dict[str, tuple[Sweep, bool, bool]] = {
    "reconcile": (_reconcile, True, True),
    "stuck": (_stuck, False, False),
    "expire": (_expire, False, False),
    "reembed": (_reembed, False, True),
}


def last_key(settings: Settings, sweep: str) -> str:
    return settings.keys.sweep_last(sweep)


async def run_sweep(sweep: str, settings: Settings) -> dict[str, Any]:
    """Run one sweep under its lease; returns its report (``skipped`` when another replica
    holds the lease). The report is also stored as the sweep's last run."""
    function, blobs, vectors = SWEEPS[sweep]
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=blobs, vectors=vectors)
        lease = Lease(clients.redis, settings.keys.sweep_lease(sweep))
        started = time.time()
        async with lease as held:
            if not held:
                log.info("sweep_skipped", sweep=sweep, why="another replica holds the lease")
                return {"sweep": sweep, "skipped": "another replica holds the lease"}
            report = await function(settings, clients)
        result = {
            **report.as_json(),
            "started_at": started,
            "seconds": round(time.time() - started, 3),
            "lease_lost": lease.lost,
        }
        await clients.redis.set(last_key(settings, sweep), json.dumps(result))
        log.info("sweep_done", **{k: v for k, v in result.items() if k != "notes"})
        for note in report.notes:
            log.info("sweep_action", sweep=sweep, action=note)
        return result


def run(sweep: str) -> dict[str, Any]:
    """A Celery task body: settings from the environment, one event loop per run."""
    settings = Settings()
    logs.configure(settings.log_level, json=settings.log_json, component="maintenance")
    return asyncio.run(run_sweep(sweep, settings))


def task_name(sweep: str) -> str:
    """A sweep's Celery task name: what beat sends and the worker runs, so it stays the same
    across versions (beat and worker replicas of two versions run together in a rollout)."""
    return f"parley.maintenance.{sweep}"


def create_app(settings: Settings | None = None) -> Celery:
    """The Celery app for ``settings`` (from the environment when None). Built on demand, never
    at import: importing this module reads no settings and opens nothing."""
    settings = settings or Settings()
    celery = Celery("parley", broker=settings.redis_url, set_as_current=False)
    every = settings.maintenance_interval_seconds
    if settings.redis_url.startswith("rediss://"):
        # kombu connects to a rediss:// broker with ssl_cert_reqs=CERT_NONE unless told: verify
        # the server's certificate as redis-py does for Parley's own connections.
        celery.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    celery.conf.update(
        broker_transport_options={"global_keyprefix": settings.keys.celery()},
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            name: {
                "task": task_name(name),
                # Expired in the queue after one interval: the next emission replaces it.
                "schedule": every if name != "expire" else max(every, 3600.0),
                "options": {"expires": every},
            }
            for name in SWEEP_NAMES
        },
    )
    for name in SWEEP_NAMES:
        _register(celery, name)
    return celery


def _register(celery: Celery, sweep: str) -> None:
    def task() -> dict[str, Any]:
        return run(sweep)

    task.__name__ = sweep
    task.__doc__ = f"The {sweep!r} sweep (maintenance_worker.reconcile), under its lease."
    celery.task(name=task_name(sweep), shared=False)(task)

