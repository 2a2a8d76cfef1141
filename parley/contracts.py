"""Versioned JSON messages on Parley's queues, validated with pydantic at the edge.

Anyone may post to the ingest queue: an Event Grid ``BlobCreated``/``BlobDeleted`` event (parsed
by the ingest worker) or a plain :class:`IngestRequest`. The embed and chat queues carry Parley's
own messages. Every message has ``schema``: a name and a major version; a consumer rejects a
major version it does not know (dead letter with the reason) instead of guessing.
JSON Schemas of these models are exported to ``docs/contracts/`` (``parley schemas``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley.filetypes import FileKind
from parley.ids import TENANT_PATTERN, ChunkId, ConversationId, DocumentId, TenantId, TurnId

# Message headers every adapter carries through (Redis stream fields / Service Bus properties).
TRACE_HEADER = "traceparent"
DOCUMENT_HEADER = "parley-document-id"
TURN_HEADER = "parley-turn-id"
# Unix times on chunk batches, for the stage latencies the embed worker reports (metrics only).
INGEST_STARTED_HEADER = "parley-ingest-started"
CHUNKED_AT_HEADER = "parley-chunked-at"


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class IngestRequest(Wire):
    """Ask Parley to (re)index or remove one blob. Posted by ``parley ingest``, the gateway's
    upload route, the blob watcher, the reconciliation sweep or any other system."""

    schema_: Literal["parley.ingest.v1"] = Field(default="parley.ingest.v1", alias="schema")
    action: Literal["upsert", "delete"] = "upsert"
    container: str | None = None
    path: str = Field(min_length=1, max_length=1024, description="blob path inside the container")
    tenant: TenantId | None = Field(
        default=None,
        pattern=TENANT_PATTERN.pattern,
        description="the first path segment (or the default tenant for a one-segment path); "
        "a request naming another tenant is rejected",
    )
    etag: str | None = None
    sequencer: str | None = Field(
        default=None, description="Event Grid sequencer: orders events of one blob"
    )
    filename: str | None = Field(default=None, description="display name; defaults to the path")
    content_type: str | None = None

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Chunk(Wire):
    chunk_id: ChunkId
    ordinal: int = Field(ge=0)
    text: str
    page: int | None = Field(
        default=None, ge=1, description="1-based page of a PDF or slide of a PPTX; else null"
    )
    heading: str | None = Field(
        default=None, description="the section: nearest heading, slide title or sheet name"
    )
    tokens: int = Field(ge=0)
    ocr: bool = Field(default=False, description="the text was read by OCR from pixels")
    unit: str | None = Field(default=None, max_length=200, description="the caption declaring "
                             "the unit of the table the chunk continues, not in its text")


class DocumentContext(Wire):
    """What a document says about itself, read at ingest from its content (a filing's cover
    page, a report's title page, a DOCX's core properties and first heading; the file name
    last): kept in every chunk's metadata and in the text that is embedded and indexed.
    ``period`` is a label as the document writes it ("Q3 2023", "FY 2022"); ``period_end`` an
    ISO date (YYYY-MM-DD). Any field is None when the document does not say."""

    title: str | None = Field(default=None, max_length=200)
    entity: str | None = Field(default=None, max_length=200)
    period: str | None = Field(default=None, max_length=40)
    period_end: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class ChunkBatch(Wire):
    """One batch of a document version's chunks, ingest -> embed.

    ``version`` is the content hash; ``batch_count`` lets the embed worker tell when the last
    batch of that version has landed (the document then turns ``ready``). ``context`` is the
    document's (absent from batches of older ingest workers)."""

    schema_: Literal["parley.chunks.v1"] = Field(default="parley.chunks.v1", alias="schema")
    tenant: TenantId = Field(pattern=TENANT_PATTERN.pattern)
    document_id: DocumentId
    version: str
    filename: str
    path: str
    batch_index: int = Field(ge=0)
    batch_count: int = Field(ge=1)
    chunks: list[Chunk]
    context: DocumentContext | None = None
    kind: FileKind | None = Field(
        default=None, description="what the document is, by its bytes: says what a page is"
    )

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ChatMessage(Wire):
    role: Literal["system", "user", "assistant"]
    content: str


class Source(Wire):
    """A retrieved chunk as shown to the user and numbered in the prompt."""

    n: int = Field(ge=1)
    chunk_id: ChunkId
    document_id: DocumentId
    document: str
    page: int | None = None
    heading: str | None = None
    #: Where in the document, for people: "page 3", "slide 2 · Roadmap", "sheet Stock".
    location: str | None = None
    ocr: bool = False
    unit: str | None = None  # Chunk.unit: "(in thousands)" of the table the text continues
    snippet: str
    text: str
    score: float
    context: str = Field(
        default="",
        description="what the source's document says about itself (organisation, period, "
        "title, section), from the chunk's metadata; '' when unknown",
    )


AnswerMode = Literal["extractive", "generative"]


class ChatTurn(Wire):
    """A user's turn, gateway -> inference worker. The prompt is assembled by the gateway, so the
    worker needs no access to Chroma; tokens go to the Redis stream named by ``turn_id``."""

    schema_: Literal["parley.chat.v1"] = Field(default="parley.chat.v1", alias="schema")
    turn_id: TurnId
    tenant: TenantId = Field(pattern=TENANT_PATTERN.pattern)
    conversation_id: ConversationId
    messages: list[ChatMessage]
    max_tokens: int = Field(default=512, ge=1, le=32768)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    deadline: float | None = Field(default=None, description="unix time after which to give up")
    sources: list[Source] = Field(
        default_factory=list, description="the prompt's numbered sources: resolves [n] citations"
    )
    enqueued_at: float | None = Field(
        default=None, description="unix time the turn was queued: the worker reports queue wait"
    )
    question: str | None = Field(
        default=None,
        description="the question as retrieval read it (a follow-up completed from the "
        "conversation): what an extractive answer answers, and a figure it names counts as "
        "supported; None: the last user message",
    )
    answer_mode: AnswerMode = Field(
        default="generative",
        description="extractive: quote the sources' passages that answer (no model); "
        "generative: the chat model writes the answer",
    )

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def loads(raw: str | bytes | bytearray) -> Any:
    """``json.loads`` for untrusted input: JSON nested deeper than the interpreter's recursion
    limit (``[[[[...``) is a :class:`ValueError` like any other malformed JSON. ``json`` raises
    RecursionError for it, which every ``except ValueError`` misses."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dump(message: BaseModel) -> bytes:
    """Serialise a wire message with its ``schema`` field under its wire name."""
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()


def problems(exc: ValidationError, *, limit: int = 5) -> str:
    """Where and what a message got wrong (``loc: msg; ...``, at most ``limit`` errors), never
    the offending input: an error's ``input`` may be a whole document batch, and this text goes
    to the dead letters and the logs."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in exc.errors()[:limit]
    )
