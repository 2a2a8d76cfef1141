"""``parley doctor``: check the configuration and every dependency, and say in plain words what
is wrong and how to fix it. Exit code 0 when nothing failed (warnings allowed), 1 otherwise.

Checks, all at once, each with a time limit: the settings themselves (pure; sign-in by the
gateway's own rules: Entra ID half configured, the built-in dev token on a public bind, nobody
able to sign in), Redis, Chroma,
the blob store, every queue on its backend (reachable, backlog, dead letters), the embedder
(one real embedding), the chat model (the local model file, or one streamed token from the
endpoint), whether the maintenance sweeps have been running, and whether a switch of embedding
model is under way with searches that cannot see the old collection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import httpx
import redis.asyncio as aioredis
from pydantic import ValidationError

from chat_gateway import auth
from parley.errors import ParleyError
from parley.settings import BrokerBackend, QueueSettings, Settings

TIMEOUT = 10.0


class Outcome(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None


def ok(name: str, detail: str) -> Check:
    return Check(name, Outcome.OK, detail)


def warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, Outcome.WARN, detail, fix)


def fail(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, Outcome.FAIL, detail, fix)


def explain_settings_error(exc: ValidationError) -> str:
    """A settings validation error as lines naming the environment variable of each problem."""
    lines = ["parley: the configuration is invalid:"]
    for error in exc.errors():
        variable = "PARLEY_" + "__".join(str(p).upper() for p in error["loc"])
        lines.append(f"  {variable}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


# --- configuration (pure) ------------------------------------------------------------------------


def configuration(settings: Settings) -> list[Check]:
    found: list[Check] = []
    queues = [settings.queues.ingest, settings.queues.embed, settings.queues.chat]
    on_servicebus = [q.name for q in queues if q.backend is BrokerBackend.SERVICEBUS]
    if on_servicebus and not (
        settings.servicebus_namespace or settings.servicebus_connection_string
    ):
        found.append(fail(
            "config", f"{', '.join(on_servicebus)} mapped to Service Bus, but no namespace is set",
            "set PARLEY_SERVICEBUS_NAMESPACE=<name>.servicebus.windows.net (Entra ID) or "
            "PARLEY_SERVICEBUS_CONNECTION_STRING",
        ))
    if len({q.name for q in queues}) != len(queues):
        found.append(fail("config", "two logical queues share one queue name",
                          "give each of PARLEY_QUEUES__{INGEST,EMBED,CHAT}__NAME its own name"))
    if settings.embedder == "azure-openai" and not settings.azure_openai_endpoint:
        found.append(fail("config", "the azure-openai embedder has no endpoint",
                          "set PARLEY_AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com"))
    if settings.chat_backend == "azure-openai" and not settings.azure_openai_endpoint:
        found.append(fail("config", "the azure-openai chat backend has no endpoint",
                          "set PARLEY_AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com"))
    if settings.chat_backend == "openai-compatible" and not settings.chat_base_url:
        found.append(fail("config", "the openai-compatible chat backend has no URL",
                          "set PARLEY_CHAT_BASE_URL, e.g. http://workspace-phi-4-mini/v1"))
    if settings.blob_backend == "azure" and not (
        settings.blob_account_url or settings.blob_connection_string
    ):
        found.append(fail("config", "the azure blob backend has no account",
                          "set PARLEY_BLOB_ACCOUNT_URL or PARLEY_BLOB_CONNECTION_STRING"))
    if settings.chunk_overlap_tokens >= settings.chunk_tokens:
        found.append(fail(
            "config",
            f"chunk overlap ({settings.chunk_overlap_tokens}) is not below the chunk size "
            f"({settings.chunk_tokens})",
            "lower PARLEY_CHUNK_OVERLAP_TOKENS (30 is the default)",
        ))
    slowest = max(q.lease_seconds for q in queues)
    if settings.stuck_after_seconds < 2 * slowest:
        found.append(warn(
            "config",
            f"documents count as stuck after {settings.stuck_after_seconds:.0f} s, under twice "
            f"the longest lease ({slowest:.0f} s): slow ones will be retried needlessly",
            "raise PARLEY_STUCK_AFTER_SECONDS",
        ))
    # Sign-in: the gateway's own startup rule (chat_gateway.auth.problems).
    for problem in auth.problems(settings):
        make = fail if problem.severity == "error" else warn
        found.append(make("auth", problem.message, problem.fix))
    if not found:
        found.append(ok("config", "settings are consistent"))
    return found


# --- dependencies ----------------------------------------------------------------------------


async def check_redis(settings: Settings) -> Check:
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        started = time.perf_counter()
        await client.ping()
        took = (time.perf_counter() - started) * 1000
        info: Any = await client.info("server")
        version = info.get("redis_version") or info.get("valkey_version") or "?"
        return ok("redis", f"{_redact(settings.redis_url)}: version {version}, ping {took:.1f} ms")
    except Exception as exc:
        return fail("redis", f"cannot reach {_redact(settings.redis_url)} ({_error(exc)})",
                    "start Redis (`parley up` runs one locally) or set PARLEY_REDIS_URL")
    finally:
        await client.aclose()


async def check_chroma(settings: Settings) -> Check:
    url = settings.chroma_url.rstrip("/") + "/api/v2/heartbeat"
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return fail("chroma", f"cannot reach {settings.chroma_url} ({_error(exc)})",
                    "start Chroma (`chroma run`; `parley up` runs one) or set PARLEY_CHROMA_URL")
    if response.status_code != 200:
        return fail("chroma", f"{url} answered HTTP {response.status_code}",
                    "is PARLEY_CHROMA_URL a Chroma 1.x server?")
    return ok("chroma", f"{settings.chroma_url} answers")


async def check_blobs(settings: Settings) -> Check:
    from backends.factory import open_blob_store

    where = (f"{settings.blob_dir}" if settings.blob_backend == "local"
             else f"{settings.blob_account_url or 'connection string'}")
    store = open_blob_store(settings)
    try:
        count = 0
        async for _info in store.list():
            count += 1
            if count >= 1000:
                break
        more = "+" if count >= 1000 else ""
        if settings.blob_backend == "local" and not settings.blob_dir.is_dir():
            return warn("blobs", f"{where} does not exist yet (created on the first upload)",
                        "if documents should be there, check PARLEY_BLOB_DIR")
        return ok("blobs", f"container {settings.blob_container!r} at {where}: "
                           f"{count}{more} blobs")
    except Exception as exc:
        fix = ("check PARLEY_BLOB_DIR exists and is writable" if settings.blob_backend == "local"
               else "check PARLEY_BLOB_ACCOUNT_URL, the container name (PARLEY_BLOB_CONTAINER) "
               "and the identity's 'Storage Blob Data Contributor' role")
        return fail("blobs", f"cannot list container {settings.blob_container!r} at {where} "
                             f"({_error(exc)})", fix)
    finally:
        await store.close()


async def check_queue(settings: Settings, queue: QueueSettings, brokers: Any) -> Check:
    name = f"queue {queue.name}"
    try:
        broker = brokers.for_queue(queue)
        depth = await broker.depth(queue.name)
        oldest = await broker.oldest_message_age(queue.name)
        dead = len(await broker.dead_letters(queue.name, limit=1000))
    except ParleyError as exc:
        return fail(name, exc.message, exc.hint)
    except Exception as exc:
        fix = ("check PARLEY_REDIS_URL" if queue.backend is BrokerBackend.REDIS else
               "check the namespace, that the queue exists (Terraform creates it) and the "
               "identity's 'Azure Service Bus Data Sender/Receiver' roles")
        return fail(name, f"{queue.backend.value}: {_error(exc)}", fix)
    backlog = "backlog unknown (needs Manage rights)" if depth < 0 else f"{depth} waiting"
    if oldest:
        backlog += f", oldest {oldest:.0f} s"
    detail = f"{queue.backend.value}: {backlog}"
    if dead:
        return warn(name, f"{detail}; {dead}{'+' if dead >= 1000 else ''} dead letters",
                    f"see why: parley dlq list --queue {queue.name}")
    return ok(name, detail)


async def check_embedder(settings: Settings) -> Check:
    from backends.factory import build_embedder

    try:
        embedder = build_embedder(settings)
    except ParleyError as exc:
        return fail("embedder", exc.message, exc.hint)
    try:
        [vector] = await embedder.embed(["parley doctor"])
        return ok("embedder", f"{embedder.model_id}: {len(vector)} dimensions")
    except ParleyError as exc:
        return fail("embedder", f"{embedder.model_id}: {exc.message}", exc.hint)
    except Exception as exc:
        return fail("embedder", f"{embedder.model_id}: {_error(exc)}",
                    "check PARLEY_EMBEDDER and its endpoint settings")
    finally:
        await embedder.close()


async def check_chat_model(settings: Settings) -> Check:
    if settings.chat_backend == "local":
        try:
            from inference_worker.local import find_gguf

            path = find_gguf()
        except ParleyError as exc:
            return fail("chat model", exc.message, exc.hint)
        return ok("chat model", f"local model file {path.name}")
    from inference_worker.backend import build_chat_model
    from parley.contracts import ChatMessage

    try:
        model = build_chat_model(settings)
    except ParleyError as exc:
        return fail("chat model", exc.message, exc.hint)
    where = settings.chat_base_url or settings.azure_openai_endpoint
    fix = (
        "is the model server up? check PARLEY_CHAT_BASE_URL, PARLEY_CHAT_MODEL and "
        "PARLEY_CHAT_API_KEY" if settings.chat_backend == "openai-compatible" else
        "check PARLEY_AZURE_OPENAI_ENDPOINT, PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT and the key "
        "or the identity's 'Cognitive Services OpenAI User' role"
    )
    try:
        stream = model.stream([ChatMessage(role="user", content="Say OK.")], max_tokens=1,
                              temperature=0.0)
        async for _token in stream:
            break
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()
        return ok("chat model", f"{settings.chat_backend} at {where} streamed a token")
    except ParleyError as exc:
        return fail("chat model", f"{settings.chat_backend} at {where}: {exc.message}", fix)
    except Exception as exc:
        return fail("chat model", f"{settings.chat_backend} at {where}: {_error(exc)}", fix)
    finally:
        await model.close()


def local_stack(settings: Settings) -> bool:
    """True when these settings are the running local stack's: ``parley up`` wrote its env file
    (read by every command from the same folder) naming this Redis, or naming none (the stack
    then uses ``PARLEY_REDIS_URL`` from the environment, as these settings do)."""
    env_file = settings.model_config.get("env_file")
    path = Path(str(env_file)) if isinstance(env_file, str | Path) else None
    if path is None or not path.is_file():
        return False
    for line in path.read_text(errors="replace").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "PARLEY_REDIS_URL":
            return value.strip() == settings.redis_url
    return True


async def check_maintenance(settings: Settings) -> Check:
    from maintenance_worker.app import SWEEP_NAMES, last_key

    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        raw = [await client.get(last_key(settings, name)) for name in SWEEP_NAMES]
    except Exception as exc:
        return warn("maintenance", f"cannot read the sweeps' last runs ({_error(exc)})")
    finally:
        await client.aclose()
    runs = {name: json.loads(r) for name, r in zip(SWEEP_NAMES, raw, strict=True) if r}
    fix = "deploy the Celery beat and worker (python -m maintenance_worker beat / worker)"
    latest = max((float(r.get("started_at", 0)) for r in runs.values()), default=0.0)
    age = time.time() - latest
    stale = age > 3 * max(settings.maintenance_interval_seconds, 3600 / 3)
    if (not runs or stale) and local_stack(settings):
        # `parley up` runs no beat: its sweeps repair what a long-lived deployment drifts into.
        return ok("maintenance", "the local stack runs no maintenance sweeps (a deployment "
                                 "does: python -m maintenance_worker beat / worker)")
    if not runs:
        return warn("maintenance", "no maintenance sweep has run yet", fix)
    if stale:
        return warn("maintenance", f"the last sweep ran {age / 60:.0f} min ago", fix)
    return ok("maintenance", f"last sweep {age:.0f} s ago ({', '.join(sorted(runs))})")


async def check_model_switch(settings: Settings) -> Check:
    """Tenants with a collection of another embedding model whose marker does not name the
    current one are mid-switch (:mod:`chat_gateway.search`): searches see every document only when
    ``PARLEY_EMBEDDING_PREVIOUS__*`` names that model. One collection listing per tenant."""
    from backends.factory import model_id_of, previous_settings
    from chat_gateway.search import ModelMarkers
    from parley.status import StatusStore
    from parley.vectors.chroma import ChromaStore

    name = "model switch"
    try:
        current = await model_id_of(settings)
        before = previous_settings(settings)
        previous = await model_id_of(before) if before is not None else None
    except ParleyError as exc:
        return fail(name, exc.message, exc.hint)
    if previous == current:
        return fail(name, f"PARLEY_EMBEDDING_PREVIOUS__* names the current model {current}",
                    "set them to the model being switched away from, or unset them")
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    store = await ChromaStore.connect(settings.chroma_url, current)
    try:
        markers = ModelMarkers(client, prefix=settings.redis_prefix)
        switching: dict[str, list[str]] = {}
        for tenant in sorted(await StatusStore(client, prefix=settings.redis_prefix).tenants()):
            if await markers.model(tenant) == current:
                continue
            older = [m for m in await store.models(tenant) if m != current]
            if older:
                switching[tenant] = older
    finally:
        await store.close()
        await client.aclose()
    if not switching:
        if previous is not None:
            return ok(name, f"no tenant is still switching from {previous}; "
                            "PARLEY_EMBEDDING_PREVIOUS__* can be removed")
        return ok(name, f"every tenant is on {current}")
    olds = sorted({m for models in switching.values() for m in models})
    what = (f"{len(switching)} tenant{'s' * (len(switching) > 1)} still being re-embedded from "
            f"{', '.join(olds)} to {current}")
    sweep = "and keep the maintenance worker running: its reembed sweep completes the switch"
    if previous is None:
        return warn(
            name, f"{what}; until that is done searches see only the documents already in "
                  f"{current}",
            "where searches run (gateway, CLI), set PARLEY_EMBEDDING_PREVIOUS__EMBEDDER and the "
            f"other PARLEY_EMBEDDING_PREVIOUS__* settings of {olds[-1]} so searches read its "
            f"collection too; {sweep}",
        )
    unread = [m for m in olds if m != previous]
    if unread:
        return warn(
            name, f"{what}, but PARLEY_EMBEDDING_PREVIOUS__* names {previous}: searches do not "
                  f"read {', '.join(unread)}",
            f"set PARLEY_EMBEDDING_PREVIOUS__* to the settings of {unread[-1]}; {sweep}",
        )
    return ok(name, f"{what}; searches read both until then")


# --- running ---------------------------------------------------------------------------------


async def _bounded(name: str, check: Awaitable[Check], timeout: float) -> Check:
    try:
        return await asyncio.wait_for(check, timeout)
    except TimeoutError:
        return fail(name, f"no answer within {timeout:.0f} s",
                    "is it reachable from here (network policy, firewall, DNS)?")
    except Exception as exc:  # a check must never crash the doctor
        return fail(name, f"check crashed: {_error(exc)}")


def _import_checked() -> None:
    for module in ("backends.factory", "inference_worker.backend", "maintenance_worker.app",
                   "chat_gateway.search", "parley.vectors.chroma"):
        importlib.import_module(module)


async def _apart(
    check: Callable[[Settings], Coroutine[Any, Any, Check]], settings: Settings
) -> Check:
    """``check`` run to its end on its own event loop in a worker thread."""

    def run() -> Check:
        return asyncio.run(check(settings))

    return await asyncio.to_thread(run)


async def diagnose(settings: Settings, *, timeout: float = TIMEOUT) -> list[Check]:
    """Every check, run concurrently; configuration first, then in a fixed order."""
    from backends.clients import Brokers

    # The checks import what they test (Celery, the gateway's search, Chroma's client) on first
    # use, seconds on a busy machine: done first, off the loop, so that no check's connect
    # timeout runs out while another check imports.
    await asyncio.to_thread(_import_checked)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    brokers = Brokers(settings, redis)
    queues = [settings.queues.ingest, settings.queues.embed, settings.queues.chat]
    named: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
        ("redis", lambda: check_redis(settings)),
        ("chroma", lambda: check_chroma(settings)),
        ("blobs", lambda: check_blobs(settings)),
        *[(f"queue {q.name}", lambda q=q: check_queue(settings, q, brokers))
          for q in queues],
        # These two spend seconds of CPU on the loop's thread (a model loaded, the openai SDK's
        # first request importing its modules): on a loop of their own, in a thread, so the
        # other checks' connect timeouts are not spent waiting for them on a busy machine.
        ("embedder", lambda: _apart(check_embedder, settings)),
        ("chat model", lambda: _apart(check_chat_model, settings)),
        ("maintenance", lambda: check_maintenance(settings)),
        ("model switch", lambda: check_model_switch(settings)),
    ]
    try:
        results = await asyncio.gather(*(_bounded(n, f(), timeout) for n, f in named))
    finally:
        with contextlib.suppress(Exception):
            await brokers.close()
        with contextlib.suppress(Exception):
            await redis.aclose()
    return [*configuration(settings), *results]


def report(checks: list[Check], out: TextIO) -> int:
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"  {check.outcome.value:4}  {check.name:{width}}  {check.detail}", file=out)
        if check.fix and check.outcome is not Outcome.OK:
            print(f"  {'':4}  {'':{width}}  fix: {check.fix}", file=out)
    failed = sum(c.outcome is Outcome.FAIL for c in checks)
    warned = sum(c.outcome is Outcome.WARN for c in checks)
    verdict = "all good" if not failed else f"{failed} problem{'s' * (failed > 1)}"
    print(f"\n{verdict}" + (f", {warned} warning{'s' * (warned > 1)}" if warned else ""),
          file=out)
    return 1 if failed else 0


async def command(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    checks = await diagnose(settings, timeout=args.timeout)
    if args.json:
        print(json.dumps([c.__dict__ | {"outcome": c.outcome.value} for c in checks], indent=2),
              file=out)
        return 1 if any(c.outcome is Outcome.FAIL for c in checks) else 0
    return report(checks, out)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    doctor = sub.add_parser("doctor", help="check the configuration and every dependency")
    doctor.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per check")
    doctor.add_argument("--json", action="store_true")


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _redact(url: str) -> str:
    """A URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
