"""Scrape each component's metrics endpoint during a small run and check the numbers move as
they should: queue depth rises and falls, counters match the documents processed; the gateway's
``/metrics`` is tested in tests/chat_gateway/test_metrics.py.

Metrics live in the process-wide registry, so every assertion is on a difference between two
scrapes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.clients import open_clients
from parley import metrics
from parley.ids import TenantId, document_id
from parley.runtime import health
from parley.status import Stage
from parley.uploads import upload
from tests.fixtures import documents
from tests.pipeline import pipeline_settings, running_pipeline

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Queue gauges asked of the broker on every scrape (no caching), for this test."""
    monkeypatch.setattr(metrics.PROBE, "ttl", 0.0)
    yield


async def test_worker_metrics_follow_a_small_run(
    redis_url: str, chroma_url: str, tmp_path: Path, fresh_probes: None
) -> None:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    ingest = settings.queues.ingest.name
    embed = settings.queues.embed.name
    tenant = TenantId("metricsco")
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=True)
        server = await health.serve_health(stack, 0, [object()])
        port = server.sockets[0].getsockname()[1]
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
        )

        async def scrape() -> Samples:
            response = await http.get("/metrics")
            assert response.status_code == 200
            return parse(response.text)

        ingest_broker = clients.brokers.for_queue(settings.queues.ingest)
        metrics.track_queue(ingest_broker, ingest)  # as a producer would
        before = await scrape()
        assert value(before, "parley_queue_depth", queue=ingest) == 0
        names = [f"m{i}.pdf" for i in range(3)]
        for i, name in enumerate(names):
            data = documents.text_pdf([f"Page one of {i}. " + documents.lorem(60, seed=i),
                                       f"Page two of {i}. " + documents.lorem(60, seed=i + 9)])
            await upload(settings, blobs=clients.blobs, broker=ingest_broker, tenant=tenant,
                         filename=name, data=data, status=clients.status)
        queued = await scrape()
        assert value(queued, "parley_queue_depth", queue=ingest) == 3  # rises
        assert value(queued, "parley_queue_oldest_message_age_seconds", queue=ingest) > 0

        async with running_pipeline(settings):
            ids = [document_id(tenant, f"{tenant}/{n}") for n in names]
            for _ in range(600):
                states = [await clients.status.get(tenant, d) for d in ids]
                if all(s is not None and s.stage is Stage.READY for s in states):
                    break
                await asyncio.sleep(0.1)
            for _ in range(100):  # the last acks follow the status by a moment
                during = await scrape()
                if value(during, "parley_queue_depth", queue=ingest) == 0 and value(
                    during, "parley_queue_depth", queue=embed
                ) == 0:
                    break
                await asyncio.sleep(0.05)
            assert ("parley_queue_depth", (("queue", embed),)) in during  # reported, and 0
        # The pipeline has stopped: every handler finished (a status reads ready a moment
        # before its handler counts it).
        after = await scrape()
        metrics.untrack_queue(ingest)

    done = [s for s in states if s is not None]
    assert len(done) == 3
    batches = sum(s.batches_total for s in done)
    chunks = sum(s.chunks for s in done)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(during, "parley_queue_depth", queue=ingest) == 0  # and falls
    assert value(during, "parley_queue_depth", queue=embed) == 0
    assert delta("parley_messages_handled_total", queue=ingest) == 3
    assert delta("parley_messages_handled_total", queue=embed) == batches
    assert delta("parley_messages_failed_total", queue=ingest) == 0
    assert delta("parley_messages_dead_lettered_total", queue=ingest) == 0
    assert delta("parley_message_handle_seconds_count", queue=ingest) == 3
    assert delta("parley_documents_total", outcome="ready") == 3
    assert delta("parley_pages_extracted_total") == 6
    assert delta("parley_chunks_created_total") == chunks
    assert delta("parley_chunks_embedded_total") == chunks
    assert delta("parley_embed_batch_seconds_count") == batches
    for stage in ("extracting", "chunking", "embedding", "total"):
        assert delta("parley_document_stage_seconds_count", stage=stage) == 3, stage


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    dashboard = json.loads((ROOT / "dashboards" / "parley.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bparley_[a-z_]+", e)}
    exposed = {
        sample.name for family in REGISTRY.collect() if family.name.startswith("parley_")
        for sample in family.samples
    } | {
        f"{family.name}{suffix}" for family in REGISTRY.collect()
        if family.name.startswith("parley_") for suffix in ("", "_bucket", "_total")
    }
    assert used, "no queries found"
    assert used <= exposed, used - exposed
    # Every metric family of parley.metrics is on the dashboard.
    families = {name.removesuffix("_total") for name in (
        v._name for v in vars(metrics).values() if hasattr(v, "_name")
    )}
    shown = {re.sub(r"_(bucket|total)$", "", m) for m in used}
    assert families <= shown, families - shown
