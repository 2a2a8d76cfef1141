"""OpenTelemetry traces that follow a document and a chat turn across processes.

The context travels in the ``traceparent`` message header (W3C Trace Context), which both broker
adapters carry (Redis stream field / Service Bus application property). The consumer runtime
opens a CONSUMER span per delivery as a child of the message's ``traceparent``; whatever a handler
publishes inside it carries that span's context (:func:`inject`). So one trace runs from the
upload through the ingest queue, every embed batch, to ``ready``; and from the gateway's turn
through the chat queue to the inference worker and back to the relay.

Export: off by default. With ``PARLEY_OTLP_ENDPOINT`` (e.g. ``http://otel-collector:4317``)
:func:`configure` installs an SDK provider exporting by OTLP/gRPC in batches. Without a provider
the spans are non-recording and only pass the incoming context on, so ids still line up in logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from parley.contracts import TRACE_HEADER
from parley.settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: trace.TracerProvider | None = None


def configure(settings: Settings, component: str) -> trace.TracerProvider | None:
    """Install OTLP export when ``settings.otlp_endpoint`` is set; returns the provider (shut it
    down on exit to flush) or None when tracing stays off."""
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"parley-{component}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    use_provider(provider)
    return provider


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Make ``provider`` the one Parley's spans go to (None: back to the global provider).
    Kept here rather than only globally, because OpenTelemetry's global can be set once."""
    global _provider
    _provider = provider


def tracer() -> trace.Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer("parley")


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current span's context into ``headers`` (in place; returned for chaining).
    Outside any span, ``headers`` is left as it is."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" in carrier:
        headers[TRACE_HEADER] = carrier["traceparent"]
    return headers


def extract(headers: Mapping[str, str]) -> Context:
    """The context a message's ``traceparent`` names (an empty context without one)."""
    value = headers.get(TRACE_HEADER)
    return _PROPAGATOR.extract({"traceparent": value} if value else {})


@contextlib.contextmanager
def consuming(queue: str, message_id: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """The span of one delivery, child of the message's ``traceparent``."""
    with tracer().start_as_current_span(
        f"{queue} process",
        context=extract(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.destination.name": queue, "messaging.message.id": message_id},
    ) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span in the current trace (a new trace outside any)."""
    clean = {k: v for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(name, attributes=clean) as current:
        yield current


def trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
