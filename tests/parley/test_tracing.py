"""Trace context in message headers: a document's spans, from the upload through the ingest and
embed workers, share one trace id (in-memory exporter); without a provider the incoming context
is passed on unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from parley import tracing
from parley.contracts import TRACE_HEADER
from parley.settings import Settings
from tests.fixtures import documents
from tests.pipeline import pipeline_settings, running_pipeline


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_documents_spans_share_one_trace_across_workers(
    redis_url: str, chroma_url: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs", embed_batch_size=4)
    pages = [f"Page {i} about omicron. " + documents.lorem(120, seed=i) for i in range(4)]
    async with running_pipeline(settings) as pipeline:
        with tracing.span("upload request") as root:
            doc = await pipeline.upload("traced.pdf", documents.text_pdf(pages))
        done = await pipeline.wait([doc])
    status = done[doc]
    assert status.batches_total >= 2

    spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    [ingest] = named(spans, f"{settings.queues.ingest.name} process")
    embeds = named(spans, f"{settings.queues.embed.name} process")
    assert len(embeds) == status.batches_total  # one delivery span per batch
    work = named(spans, "extract") + named(spans, "embed")
    assert {s.context.trace_id for s in [ingest, *embeds, *work]} == {trace_id}
    # Parentage: upload -> ingest delivery -> each embed delivery.
    assert ingest.parent is not None and ingest.parent.span_id == root.get_span_context().span_id
    assert all(e.parent is not None and e.parent.span_id == ingest.context.span_id
               for e in embeds)
    assert all(s.attributes is not None and s.attributes["messaging.destination.name"]
               == settings.queues.embed.name for s in embeds)


def test_without_a_provider_the_incoming_context_passes_through() -> None:
    incoming = {TRACE_HEADER: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with tracing.consuming("q", "m1", incoming):
        assert tracing.trace_id() == "0af7651916cd43dd8448eb211c80319c"
        assert tracing.inject({}) == incoming
    assert tracing.inject({}) == {}  # outside any span nothing is written
    assert tracing.configure(Settings(), "test") is None  # off unless an endpoint is set


def test_an_otlp_endpoint_installs_an_exporting_provider() -> None:
    provider = tracing.configure(Settings(otlp_endpoint="http://127.0.0.1:4317"), "test")
    try:
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "parley-test"
        # Recording now (not ended, so nothing is sent to the absent collector on shutdown).
        assert tracing.tracer().start_span("probe").is_recording()
    finally:
        tracing.use_provider(None)
        if isinstance(provider, TracerProvider):
            provider.shutdown()
