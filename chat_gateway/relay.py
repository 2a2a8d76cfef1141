"""Relaying a turn's event stream (Redis Streams, :mod:`parley.turnstream`) to one client, and
the bookkeeping that lets a client leave and come back through any replica.

- Every event goes out as a JSON text frame with ``type``, ``turn_id`` and ``offset``. Token
  events read in one batch are coalesced into one frame (text joined, ``offset`` the last one's),
  since the cost of relaying is per frame, not per token.
- On ``final`` (which carries the worker's ``citations``) the gateway records the answer in the
  conversation (idempotent: replicas relaying the same final record it once).
- Each relay is a ``chat relay`` span (attributes ``turn_id``, ``after`` offset, ``tokens``
  relayed, ``terminal`` kind; :func:`relay_span`, also used by the OpenAI-compatible face), a
  child of the current span. For an ``ask`` that is the gateway's ``chat turn`` span, so the
  answer's way back is in the same trace as the worker that produced it; a ``resume`` runs in
  the turn's stored context (:attr:`TurnMeta.traceparent`), so it lands in the same trace too.
- While a replica relays a turn it holds ``<turn>:attached`` (refreshed every second by one task
  per process). When a client drops without a clean close, :func:`cancel_unless_resumed` waits
  the resume grace and cancels the turn unless some replica holds it again by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from backends.rawredis import OwnConnection
from chat_gateway.conversation import Conversations, pipelined
from chat_gateway.conversation_store import ConversationStore
from chat_gateway.protocol import ErrorCode, encode
from chat_gateway.protocol import error as error_event
from chat_gateway.tailer import TurnTailer
from chat_gateway.turns import TurnMeta
from parley import lua, metrics, tracing, turnstream
from parley.contracts import ChatMessage
from parley.runtime import tasks
from parley.turnevents import (
    ErrorEvent,
    FinalEvent,
    MalformedEvent,
    SourcesEvent,
    TokenEvent,
    TurnEvent,
    parse,
)
from parley.turnstream import TurnWriter, attached_key

log = structlog.get_logger(__name__)
# The string encoder json.dumps(..., ensure_ascii=False) uses (C where available).
_string: Callable[[str], str] = json.encoder.encode_basestring

Send = Callable[[str], Awaitable[None]]
ATTACH_REFRESH = 1.0
ATTACH_TTL_MS = 3000

# KEYS: attached key; ARGV: owner. Deletes the hold only if it is ours.
_RELEASE = lua.script(__package__, "relay_release.lua")


def token_frame(turn_id: str, events: list[TurnEvent]) -> str:
    """One frame for token events read together: their text joined, ``n`` summed, ``offset``
    the last one's (resuming from it continues right after the text received). The same text
    as ``json.dumps`` of ``{"type", "turn_id", "offset", "text", "n"}`` compact with
    ``ensure_ascii=False``, written out here: this runs for every frame of every relayed
    answer, and ``json.dumps`` with options builds an encoder per call."""
    text = "".join(e.event.text for e in events if isinstance(e.event, TokenEvent))
    return (f'{{"type":"token","turn_id":{_string(turn_id)},"offset":{_string(events[-1].offset)},'
            f'"text":{_string(text)},"n":{token_count(events)}}}')


def token_count(events: list[TurnEvent]) -> int:
    """Tokens in token events (a worker's batched append carries ``n``)."""
    return sum(e.event.n for e in events if isinstance(e.event, TokenEvent))


def client_event(turn_id: str, event: TurnEvent) -> dict[str, Any]:
    """The frame of a non-token event: the event as written, with ``type``, ``turn_id`` and
    ``offset`` (an ``error`` always has ``code`` and ``message``: the event's contract)."""
    payload = event.event.data()
    payload.update(type=event.kind, turn_id=turn_id, offset=event.offset)
    return payload


class Attachments:
    """The turns this process is relaying, held in Redis so that other replicas' resume grace
    timers see them. One refresh pipeline a second for all of them, on a connection of its own
    packed by hiredis in C (:mod:`backends.rawredis`): the ``SET`` of 200 relayed turns took
    5.5 ms of CPU through redis-py's pipeline, 1.8 ms raw, every second and in one go (a stall
    of every stream's next frame)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._held: dict[str, str] = {}  # turn id -> owner token
        self._release = client.register_script(_RELEASE)
        self._task: asyncio.Task[None] | None = None
        self._refresher = OwnConnection(client)

    def key(self, turn_id: str) -> str:
        return attached_key(self._prefix, turn_id)

    async def is_held(self, turn_id: str) -> bool:
        return bool(await self._redis.exists(self.key(turn_id)))

    @contextlib.asynccontextmanager
    async def hold(self, turn_id: str) -> AsyncIterator[None]:
        owner = uuid.uuid4().hex
        await self._redis.set(self.key(turn_id), owner, px=ATTACH_TTL_MS)
        self._held[turn_id] = owner
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh(), name="attachments")
        try:
            yield
        finally:
            if self._held.get(turn_id) == owner:
                del self._held[turn_id]
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(keys=[self.key(turn_id)], args=[owner]))

    async def _refresh(self) -> None:
        while self._held:
            await asyncio.sleep(ATTACH_REFRESH)
            held = list(self._held.items())
            if not held:
                continue
            try:
                await self._refresher.run([("SET", self.key(turn_id), owner, "PX", ATTACH_TTL_MS)
                                           for turn_id, owner in held])
            except Exception as exc:  # Redis hiccup: the next round tries again
                log.warning("attach_refresh_failed", error=str(exc))

    async def close(self) -> None:
        await tasks.stop(self._task)
        await self._refresher.close()


async def cancel_unless_resumed(
    client: aioredis.Redis, attachments: Attachments, turn_id: str, *, prefix: str, grace: float
) -> bool:
    """After ``grace`` seconds, cancel the turn unless a replica relays it again. True if
    cancelled. A grace of 0 cancels at once."""
    if grace > 0:
        await asyncio.sleep(grace)
        if await attachments.is_held(turn_id):
            return False
    await turnstream.cancel(client, turn_id, prefix=prefix)
    log.info("turn_cancelled_on_disconnect", turn_id=turn_id, grace=grace)
    return True


@dataclass
class Relayed:
    """What one relay has delivered, for its span."""

    tokens: int = 0  # sent to the client so far
    terminal: str | None = None  # the kind of the terminal event, once sent


@contextlib.contextmanager
def relay_span(turn_id: str, after: str) -> Iterator[Relayed]:
    """The ``chat relay`` span of one relay of a turn's events after offset ``after``, a child of
    the current span, counted in ``parley_chat_streams_active`` while it runs. The caller counts
    into the yielded :class:`Relayed`; its ``tokens`` become an attribute when the span ends
    (also when the relay is cancelled: what was relayed until then), ``terminal`` when it was
    set."""
    with (
        metrics.CHAT_STREAMS.track_inprogress(),  # both faces: websocket and OpenAI-compatible
        tracing.span("chat relay", turn_id=turn_id, after=after) as span,
    ):
        relayed = Relayed()
        try:
            yield relayed
        finally:
            span.set_attribute("tokens", relayed.tokens)
            if relayed.terminal is not None:
                span.set_attribute("terminal", relayed.terminal)


async def first_sources(
    client: aioredis.Redis, prefix: str, turn_id: str
) -> list[dict[str, Any]]:
    """The sources of a turn: its stream's first event (the gateway writes it before queueing
    the turn); [] when the stream is gone."""
    entries = await client.xrange(turnstream.turn_key(prefix, turn_id), "-", "+", count=1)
    for offset, entry in entries or []:
        try:
            event = parse(str(offset), entry or {})
        except MalformedEvent as exc:
            log.warning("turn_sources_unreadable", turn_id=turn_id, error=str(exc))
            return []
        if isinstance(event.event, SourcesEvent):
            return list(event.event.sources)
    return []


class Relay:
    def __init__(
        self,
        client: aioredis.Redis,
        conversations: Conversations,
        attachments: Attachments,
        tailer: TurnTailer,
        *,
        prefix: str,
        stream_ttl: int,
        idle_timeout: float,
        store: ConversationStore | None = None,
    ) -> None:
        self._redis = client
        self._conversations = conversations
        self._store = store
        self.attachments = attachments
        self.tailer = tailer
        self._prefix = prefix
        self._ttl = stream_ttl
        self._idle = idle_timeout

    async def run(
        self,
        turn_id: str,
        meta: TurnMeta,
        send: Send,
        *,
        after: str = "0-0",
    ) -> str:
        """Send the turn's events after ``after`` until its terminal event; returns its kind.

        Cancelling the task stops the relay at once and leaves the turn running (the caller
        decides whether to cancel the turn). A turn silent for ``idle_timeout`` seconds (no
        worker took it) is ended with a ``model_unavailable`` error in its stream, so every
        replica's client sees the same end.

        The terminal event is sent last, after the hold is released, so that once a client has
        it the connection is free for its next question."""
        with relay_span(turn_id, after) as relayed:
            relayed.terminal = await self._relay(turn_id, meta, send, after, relayed)
            return relayed.terminal

    async def _relay(
        self, turn_id: str, meta: TurnMeta, send: Send, after: str, relayed: Relayed
    ) -> str:
        terminal: dict[str, Any] | None = None
        sources: list[dict[str, Any]] | None = None  # the turn's, once relayed (not read again)
        async with self.attachments.hold(turn_id):
            last = after
            try:
                async for batch in self.tailer.batches(
                    turn_id, after=after, idle_timeout=self._idle
                ):
                    last = batch[-1].offset
                    tokens: list[TurnEvent] = []
                    for event in batch:
                        if event.kind == "token":
                            tokens.append(event)
                            continue
                        if tokens:
                            await send(token_frame(turn_id, tokens))
                            relayed.tokens += token_count(tokens)
                            tokens = []
                        payload = client_event(turn_id, event)
                        if isinstance(event.event, SourcesEvent):
                            sources = list(event.event.sources)
                        elif isinstance(event.event, FinalEvent):
                            await self._finish(turn_id, meta, payload, sources)
                        if event.kind in turnstream.TERMINAL:
                            terminal = payload
                            break
                        await send(encode(payload))
                    if tokens:
                        await send(token_frame(turn_id, tokens))
                        relayed.tokens += token_count(tokens)
            except TimeoutError:
                terminal = await self._give_up(turn_id, last)
        assert terminal is not None, "tail only ends on a terminal event"
        await send(encode(terminal))
        return str(terminal["type"])

    async def _finish(
        self,
        turn_id: str,
        meta: TurnMeta,
        payload: dict[str, Any],
        sources: list[dict[str, Any]] | None,
    ) -> None:
        """The answer in the conversation: its prompt history and (with sources and model) its
        kept transcript, in one round trip. ``sources``: the turn's, when this relay sent them
        (else read from the stream's first event)."""
        text = str(payload.get("text", ""))
        payload.setdefault("citations", [])
        if not (meta.persist and text):
            return
        calls = [self._conversations.append_call(
            meta.tenant, meta.conversation_id, turn_id,
            ChatMessage(role="assistant", content=text),
        )]
        if self._store is not None:
            if sources is None:
                sources = await first_sources(self._redis, self._prefix, turn_id)
            kept = await self._store.answer_call(
                meta.tenant, meta.conversation_id, turn_id, text=text, sources=sources,
                citations=payload.get("citations") or [], model=payload.get("model"),
                unsupported=payload.get("unsupported_numbers") or [], owner=meta.subject,
            )
            if kept is not None:
                calls.append(kept)
        await pipelined(self._redis, calls)

    async def _give_up(self, turn_id: str, last: str) -> dict[str, Any]:
        await turnstream.cancel(self._redis, turn_id, prefix=self._prefix)
        event = error_event(
            ErrorCode.MODEL_UNAVAILABLE,
            f"no answer from the model for {self._idle:.0f} s",
            hint="the inference workers may be down or overloaded; try again later",
        )
        writer = TurnWriter(self._redis, turn_id, prefix=self._prefix, ttl=self._ttl)
        offset = await writer.emit(ErrorEvent.model_validate(
            {k: v for k, v in event.items() if k != "type"}))
        log.warning("turn_timed_out", turn_id=turn_id, last_offset=last)
        return {**event, "turn_id": turn_id, "offset": offset}
