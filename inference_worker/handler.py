"""The chat-turn handler: one queued :class:`~parley.contracts.ChatTurn` -> the model's tokens in
the turn's Redis stream -> exactly one terminal event (``final``, ``error`` or ``cancelled``).

Per delivery, in order:

1. a body that is not a ``parley.chat.v1`` turn is rejected (dead letter with the reason; the
   ``on_rejected`` hook writes an ``error`` event ``bad_turn`` when the turn's stream exists, so
   no client waits for it);
2. the stream's last event decides what a redelivery does: a terminal event -> ack, nothing
   written (the earlier attempt finished); a ``token`` event -> the earlier attempt died
   mid-answer: ``error`` ``worker_lost`` (tokens are never written twice; see
   docs/chat-protocol.md); otherwise the turn starts from the beginning;
3. a turn cancelled before it started -> ``cancelled``; past its deadline -> ``error``
   (on a first delivery, a served model's request is sent before the read of step 2, so its
   round trip is off the time to first token; when step 2 or 3 ends the turn, that request is
   dropped unheard, as a refused check's is: the upstream saw the prompt, the client sees the
   same events);
4. tokens go to the worker's :class:`~inference_worker.outbox.Outbox`, which writes the tokens
   of every running turn together: a turn's first token at once, later ones within
   ``flush_interval``. The outbox reads all running turns' cancel flags every ``cancel_poll``
   seconds; once a turn's flag is set, its generation task is cancelled (the backend closes the
   model's stream and frees the slot) and ``cancelled`` is written. A turn whose gateway hold
   lapsed for ``orphan_after`` seconds (the gateway died) ends the same way, reason
   ``orphaned``;
5. ``final`` carries the checked text (:mod:`inference_worker.grounding`: unknown ``[n]``
   removed; in a generated answer, uncited sentences attributed to the source that holds
   them), the citations that text uses, ``unsupported_numbers`` (figures in none of the cited
   sources), ``removed_citations``, ``answer_mode``, ``found`` (whether the sources hold an
   answer), usage (the backend's figures, else counted here) and timings.

How the answer is made (the turn's ``answer_mode``): ``extractive`` quotes the passages of the
sources that answer (:mod:`inference_worker.extractive`; no model); ``generative`` streams the
model, except when the extractive answerer finds no passage covering the question: then the
answer says it is not in the documents and names the closest sources, rather than let the model
guess. That check is CPU work on the loop (milliseconds on real-sized sources), so a generative
turn on a served model sends the model request first and runs the check while the model works
on its first token; the model's pieces (and its errors) are used only once the check has
passed. When it refuses, the model's stream is closed before anything of it is forwarded (the
HTTP request is dropped, which stops the generation; the upstream saw the prompt) and the
client sees exactly what it would have seen had the model never been asked. The in-process
local model is asked after the check (see ``_stream``). Either way the pieces go through the
same outbox, so cancel, resume and the terminal event behave the same.

Failures: a rate limit (429) or an unreachable model before any token is retried through the
queue (``Retry`` with the service's delay) while attempts and the turn's deadline allow; then
``error`` with ``rate_limited`` (with ``retry_after``) or ``model_unavailable``. Once tokens
are out, a failure is final: ``error``. If the handler is cancelled (the worker stops and its
drain time is over), it writes ``error`` ``worker_lost`` before giving the message back. When
the runtime gives up on a turn (``on_retry_exhausted``: its answering killed the worker again and
again, or the turn's stream could not be read), the turn ends with ``error`` (``worker_lost``,
``internal``) unless it has ended already.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import ValidationError

from inference_worker import extractive, grounding
from inference_worker.chatmodel import ChatModel, Usage
from inference_worker.citations import citations
from inference_worker.outbox import Outbox, TurnOutput
from parley import metrics, tracing
from parley.broker import Message
from parley.contracts import ChatTurn, loads, problems
from parley.errors import ParleyError, Reject, Retry, Unsettled
from parley.keys import Keys
from parley.runtime.consumer import backoff
from parley.runtime.service import Service
from parley.turnstream import TERMINAL, WORKER_LOST, TurnWriter, owner_key, turn_key

SCHEMA = "parley.chat.v1"
EXTRACTIVE_MODEL = "extractive"  # the ``model`` of an answer quoted from the sources
# Where the gateway's prompt puts the question, after the sources (chat_gateway.prompt).
QUESTION_MARK = "Question:"
ENQUEUED_HEADER = "parley-enqueued-at"

log = structlog.get_logger(__name__)


def estimate_tokens(text: str) -> int:
    """About four characters a token (English, BPE tokenisers): used only when neither the
    backend nor a tokenizer counts the prompt."""
    return max(1, round(len(text) / 4)) if text else 0


@dataclass(frozen=True)
class HandlerOptions:
    prefix: str = "parley"
    stream_ttl: int = 3600
    max_attempts: int = 5  # the chat queue's: past it the runtime dead-letters, so give up first
    flush_interval: float = 0.02
    cancel_poll: float = 0.25
    # A turn no gateway has relayed for this long is cancelled (its gateway died): longer than
    # the gateway's resume grace (10 s) plus the expiry of its hold (3 s). See outbox.py.
    orphan_after: float = 15.0
    # This process's id, written to ``<turn>:worker`` when it takes a turn; its heartbeat (its
    # broker's, parley.broker.redis) is ``turnstream.alive_key``: a gateway whose turn goes
    # silent and whose worker's heartbeat lapsed ends the turn with ``worker_lost`` within
    # seconds.
    worker_id: str | None = None
    # Generative turns: answer "not in the documents" instead of the model (its request is
    # dropped) when the extractive answerer finds no passage covering the question (see the
    # module's docstring).
    not_found_guard: bool = True


@dataclass
class _Progress:
    received: float  # monotonic
    received_at: float  # unix time
    pieces: list[str] = field(default_factory=list)
    first_token: float | None = None
    cancelled: bool = False
    mode: str = "generative"  # how the answer was made: generative, extractive, not_found
    found: bool = True  # the sources hold an answer (the extractive answerer found a passage)
    stream: object = None  # the model's iterator: may carry the backend's usage


class TurnHandler(Service[ChatTurn]):
    """The chat queue's :class:`~parley.runtime.service.Service`: one turn a message. One
    instance serves every turn of the worker (concurrently); the model is shared."""

    def __init__(
        self,
        model: ChatModel,
        redis: aioredis.Redis,
        options: HandlerOptions | None = None,
        *,
        count_tokens: Callable[[str], int] = estimate_tokens,
        meaning: extractive.Closeness | None = None,
    ) -> None:
        self.model = model
        # The extractive answerer's second reading of a question (a sentence embedder,
        # inference_worker.meaning), blocking: the answerer then runs on a thread.
        self.meaning = meaning
        self._redis = redis
        self.options = options or HandlerOptions()
        self._count = count_tokens
        self.outbox = Outbox(
            redis, prefix=self.options.prefix, ttl=self.options.stream_ttl,
            flush_interval=self.options.flush_interval, cancel_poll=self.options.cancel_poll,
            orphan_after=self.options.orphan_after,
        )

    async def close(self) -> None:
        """Wait until the events of finished turns are written. Running turns are the consumer
        runtime's to drain or cancel first."""
        await self.outbox.close()

    async def handle(self, turn: ChatTurn, message: Message) -> None:
        received, received_at = time.monotonic(), time.time()
        late = turn.deadline is not None and received_at > turn.deadline
        with (
            structlog.contextvars.bound_contextvars(turn_id=turn.turn_id),
            self.outbox.open(turn.turn_id) as writer,
        ):
            # A first delivery's model request goes out before the turn's state is read, so
            # that round trip is off the time to first token; nothing of the model is used
            # unless the state lets the turn start (else the request is dropped, as a refused
            # check's is). A redelivery, most likely of a finished or half-written turn, reads
            # the state first and asks the model only then.
            early = self._prefetch(turn) if message.attempt == 1 and not late else None
            try:
                last, cancelled = await self._state(turn.turn_id)
                if last in TERMINAL:
                    log.info("turn_already_finished", last_event=last, attempt=message.attempt)
                    return
                if last == "token":
                    log.warning("turn_lost_mid_answer", attempt=message.attempt)
                    await writer.emit("error", WORKER_LOST)
                    return
                if cancelled:
                    await writer.emit("cancelled", {"completion_tokens": 0,
                                                    "reason": "cancelled"})
                    return
                if late:
                    await writer.emit("error", {
                        "code": "model_unavailable",
                        "message": "no model worker took the question in time; ask again",
                    })
                    return
                await self._answer(message, turn, writer,
                                   _Progress(received=received, received_at=received_at), early)
            finally:
                if early is not None:  # closed already once the answer has read it
                    await early.aclose()

    # parsing and the runtime's hooks ----------------------------------------------------------
    def parse(self, delivery: Message) -> Sequence[ChatTurn]:
        try:
            raw = loads(delivery.body)
        except ValueError as exc:
            raise Reject(f"chat turn is not JSON: {exc}", reason="bad_turn") from exc
        schema = raw.get("schema") if isinstance(raw, dict) else None
        if schema is not None and schema != SCHEMA:
            raise Reject(f"unknown schema {schema!r}: this worker reads {SCHEMA}",
                         reason="bad_turn")
        try:
            return (ChatTurn.model_validate(raw),)
        except ValidationError as exc:
            raise Reject(f"malformed chat turn: {problems(exc)}", reason="bad_turn") from exc

    async def on_rejected(self, delivery: Message, item: ChatTurn | None, error: Reject) -> None:
        """Best effort: end the stream of a turn whose client is waiting (the gateway wrote its
        ``sources``), so a bad message never leaves a client hanging."""
        turn_id = item.turn_id if item is not None else _turn_id(delivery)
        if turn_id is None:
            return
        with contextlib.suppress(Exception):
            if await self._redis.exists(turn_key(self.options.prefix, turn_id)):
                writer = TurnWriter(self._redis, turn_id, prefix=self.options.prefix,
                                    ttl=self.options.stream_ttl)
                await writer.emit("error", {"code": "bad_turn", "message": error.message})

    async def on_retry_exhausted(
        self, delivery: Message, item: ChatTurn | None, error: Exception
    ) -> None:
        """The runtime gives up on a turn (never settled: answering it killed or hung the
        worker again and again; or failed every attempt): its client gets a terminal ``error``
        at once instead of waiting for the gateway's timeout. Best effort, like
        :meth:`on_rejected`; nothing is written after a terminal event."""
        turn_id = item.turn_id if item is not None else _turn_id(delivery)
        if turn_id is None:
            return
        if isinstance(error, Unsettled):
            data = {"code": "worker_lost",
                    "message": "the model worker stopped every time it took this question "
                    "(out of memory?); it was not tried again"}
        else:
            data = {"code": "internal",
                    "message": f"the model worker failed {delivery.attempt} times on this "
                    "question; it was not tried again"}
        with contextlib.suppress(Exception):
            last, _ = await self._state(turn_id)
            if last is None or last in TERMINAL:
                return  # no client waits on a stream without events; a finished one is done
            writer = TurnWriter(self._redis, turn_id, prefix=self.options.prefix,
                                ttl=self.options.stream_ttl)
            await writer.emit("error", data)

    async def _state(self, turn_id: str) -> tuple[str | None, bool]:
        """The kind of the stream's last event (None: no event yet) and the cancel flag, in one
        round trip that also names this worker as the turn's (when it has an id)."""
        key = turn_key(self.options.prefix, turn_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(key, count=1)
            pipe.exists(Keys(self.options.prefix).turn_cancel(turn_id))
            if self.options.worker_id is not None:
                pipe.set(owner_key(self.options.prefix, turn_id), self.options.worker_id,
                         ex=self.options.stream_ttl)
            entries, cancelled, *_ = await pipe.execute()
        if not entries:
            return None, bool(cancelled)
        kind = entries[0][1].get(b"k", entries[0][1].get("k"))
        return (kind.decode() if isinstance(kind, bytes) else kind), bool(cancelled)

    # answering --------------------------------------------------------------------------------
    async def _answer(
        self, message: Message, turn: ChatTurn, writer: TurnOutput, progress: _Progress,
        early: Prefetched | None = None,
    ) -> None:
        # Generation runs in its own task so that the outbox can stop it when the turn's cancel
        # flag is seen, even while the model is silent, without cancelling this handler.
        generating = asyncio.create_task(self._generate(turn, writer, progress, early))
        writer.on_cancel = generating.cancel
        try:
            await generating
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not writer.cancelled or (current is not None and current.cancelling()):
                # The worker is stopping and its drain time is over: end the stream now rather
                # than leave the client waiting for the lease to expire (the redelivery then
                # just acks).
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wait_for(writer.emit("error", WORKER_LOST), 2.0))
                raise
            progress.cancelled = True
        except ParleyError as exc:
            await self._failed(message, turn, writer, progress, exc)
            return
        except Exception as exc:
            log.exception("turn_failed")
            await writer.emit("error", {
                "code": "internal", "message": f"the model worker failed: {type(exc).__name__}"
            })
            return
        if progress.cancelled:
            reason = writer.cancel_reason or "cancelled"
            await writer.emit(
                "cancelled", {"completion_tokens": len(progress.pieces), "reason": reason}
            )
            log.info("turn_cancelled", completion_tokens=len(progress.pieces), reason=reason)
            return
        await writer.emit("final", self._final(message, turn, progress))

    async def _generate(
        self, turn: ChatTurn, writer: TurnOutput, progress: _Progress, early: Prefetched | None
    ) -> None:
        """Pull the model's pieces into the outbox until the end, a cancel flag seen on a write
        (returns) or a cancel of this task (raises); the model's stream is closed either way."""
        name = EXTRACTIVE_MODEL if turn.answer_mode == "extractive" else self.model.name
        with tracing.span("chat model", model=name, max_tokens=turn.max_tokens) as span:
            stream = await self._stream(turn, progress, early)
            try:
                async for piece in stream:
                    progress.pieces.append(piece)
                    if progress.first_token is None:
                        progress.first_token = time.monotonic()
                    if not writer.token(piece):
                        progress.cancelled = True
                        return
            finally:
                span.set_attribute("completion_tokens", len(progress.pieces))
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()

    async def _stream(
        self, turn: ChatTurn, progress: _Progress, early: Prefetched | None = None
    ) -> AsyncIterator[str]:
        """The answer's pieces. Extractive: the quoted passages, without the model. Generative:
        the model's stream, unless the sources plainly do not hold the answer (the extractive
        answerer finds no passage that covers the question), in which case it says so and
        names the closest sources rather than let the model guess.

        A served model's request goes out first and the check (CPU, on this loop) runs while
        the model works on its first token, so the check is off the time to first token.
        Nothing of the model is used before the check is done: when it refuses, the model's
        stream is closed (the upstream stops generating; a piece or an error it sent meanwhile
        is dropped) and the answer is the same "not in the documents" as if the model had never
        been asked. A model that computes on this machine (``in_process``: the local model)
        is asked after the check, as before: it would spend these cores on a prompt the check
        may refuse, and stops only between prefill chunks (a refused turn would wait for one),
        to gain the check's milliseconds on a first token that takes seconds. ``early``: the
        served model's request already sent (:meth:`handle`, a first delivery)."""
        question = turn.question or _last_user(turn)
        generative = turn.answer_mode == "generative"
        if early is None:
            early = self._prefetch(turn)
        try:
            if early is not None:
                await early.sent()
            sources = extractive.numbered(turn.sources)
            if self.meaning is None or generative:
                # The check beside the model reads words alone: it holds the first token back,
                # and embedding passages (~150 ms of CPU) on every generative turn would cost
                # more than a served model, which reads the meaning itself, needs.
                found = extractive.answer(question, sources)
            else:
                found = await asyncio.to_thread(
                    extractive.answer, question, sources, closeness=self.meaning)
        except BaseException:
            if early is not None:
                await early.aclose()
            raise
        progress.found = found.found
        if not generative or (self.options.not_found_guard and not found.found):
            if early is not None:
                await early.aclose()
            progress.mode = "not_found" if generative else "extractive"
            return _pieces(found.text)
        progress.mode = "generative"
        if early is None:  # in process: asked only now that the check has passed
            model = self._model_stream(turn)
            progress.stream = model
            return model
        progress.stream = early.model  # its usage and finish reason, once it ends
        return early

    def _prefetch(self, turn: ChatTurn) -> Prefetched | None:
        """A generative turn's request to a served model, sent now; None for an extractive
        turn or an in-process model (asked only after the check: :meth:`_stream`)."""
        if turn.answer_mode != "generative" or getattr(self.model, "in_process", False):
            return None
        try:
            model = self._model_stream(turn)
        except Exception as exc:  # raised when the stream is read, so the check still decides
            model = _failing(exc)
        return Prefetched(model)

    def _model_stream(self, turn: ChatTurn) -> AsyncIterator[str]:
        return self.model.stream(
            turn.messages, max_tokens=turn.max_tokens, temperature=turn.temperature
        )

    async def _failed(
        self,
        message: Message,
        turn: ChatTurn,
        writer: TurnOutput,
        progress: _Progress,
        exc: ParleyError,
    ) -> None:
        transient = isinstance(exc, Retry) or exc.reason == "model_unavailable"
        delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
        wait = delay if delay is not None else backoff(message.attempt)
        if transient and not progress.pieces and self._may_retry(message, turn, wait):
            log.warning("model_transient_failure", reason=exc.reason, retry_in=round(wait, 2))
            raise Retry(exc.message, reason=exc.reason, hint=exc.hint, delay=wait) from exc
        data: dict[str, Any] = {"code": exc.reason, "message": exc.message}
        if exc.hint:
            data["hint"] = exc.hint
        if exc.reason == "rate_limited":
            data["retry_after"] = round(wait, 3)
        if progress.pieces:
            data["completion_tokens"] = len(progress.pieces)
        log.error("turn_failed", reason=exc.reason, error=str(exc), attempt=message.attempt)
        await writer.emit("error", data)

    def _may_retry(self, message: Message, turn: ChatTurn, wait: float) -> bool:
        if message.attempt >= self.options.max_attempts:
            return False
        return turn.deadline is None or time.time() + wait < turn.deadline

    def _final(self, message: Message, turn: ChatTurn, progress: _Progress) -> dict[str, Any]:
        text = "".join(progress.pieces)
        now = time.monotonic()
        _observe(progress, now)
        stream = progress.stream
        reported = getattr(stream, "usage", None)
        finish = getattr(stream, "finish_reason", None)
        if isinstance(reported, Usage):
            usage = {"prompt_tokens": reported.prompt_tokens,
                     "completion_tokens": reported.completion_tokens, "source": "backend"}
        else:
            prompt = sum(self._count(m.content) for m in turn.messages)
            usage = {"prompt_tokens": prompt, "completion_tokens": len(progress.pieces),
                     "source": "worker"}
        if not isinstance(finish, str):
            finish = "length" if len(progress.pieces) >= turn.max_tokens else "stop"
        checked = grounding.check(
            text, turn.sources, question=turn.question or _last_user(turn),
            attribute_uncited=progress.mode == "generative",
        )
        if checked.unsupported_numbers or checked.removed_citations:
            log.info("answer_checked", unsupported_numbers=list(checked.unsupported_numbers),
                     removed_citations=list(checked.removed_citations))
        return {
            "text": checked.text,
            "citations": citations(checked.text, turn.sources),
            "unsupported_numbers": list(checked.unsupported_numbers),
            "removed_citations": list(checked.removed_citations),
            "answer_mode": turn.answer_mode,
            "found": progress.found,
            "finish_reason": finish,
            "model": self.model.name if progress.mode == "generative" else EXTRACTIVE_MODEL,
            "usage": usage,
            "timings": {
                "queue_ms": _queue_ms(turn, message.headers, progress.received_at),
                "ttft_ms": _ms(progress.first_token - progress.received)
                if progress.first_token is not None else None,
                "total_ms": _ms(now - progress.received),
            },
        }


class Prefetched:
    """A model's stream whose first piece is asked for at once (in a task of its own, so the
    request is on the wire while the caller does other work); iterating it returns that piece,
    then the rest. ``aclose`` cancels the request wherever it is and closes the stream; an
    error the first piece met is raised by the first ``__anext__``, never if the stream is
    closed first."""

    # Loop turns to give the request before the caller takes the loop: measured with
    # OpenAIChatModel.compatible (aiohttp), a request on a pooled connection is written on
    # the 2nd turn; a new connection waits for its connect, and the request then goes out once
    # the caller yields (as if it had not been started early).
    SEND_TURNS = 3

    def __init__(self, stream: AsyncIterator[str]) -> None:
        self.model = stream  # the model's own iterator (its usage, once it ends)
        self._first: asyncio.Task[str | None] | None = asyncio.ensure_future(self._pull())
        # Its error is raised by __anext__; one nobody reads (the request was refused or the
        # turn cancelled) is dropped without asyncio's "never retrieved" report.
        self._first.add_done_callback(_drop_error)

    async def _pull(self) -> str | None:
        try:
            return await anext(self.model)
        except StopAsyncIteration:
            return None

    async def sent(self) -> None:
        """Return once the request has had its loop turns to go out (or has been answered)."""
        for _ in range(self.SEND_TURNS):
            if self._first is None or self._first.done():
                return
            await asyncio.sleep(0)

    def __aiter__(self) -> Prefetched:
        return self

    async def __anext__(self) -> str:
        first, self._first = self._first, None
        if first is None:
            return await anext(self.model)
        piece = await first  # a cancel of the caller cancels the task too (and closes it)
        if piece is None:
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        first, self._first = self._first, None
        try:
            if first is not None:
                first.cancel()  # the stream closes itself when its __anext__ is cancelled
                await asyncio.wait({first})
        finally:
            aclose = getattr(self.model, "aclose", None)
            if aclose is not None:
                await aclose()


def _drop_error(task: asyncio.Task[str | None]) -> None:
    if not task.cancelled():
        task.exception()


def _turn_id(delivery: Message) -> str | None:
    """The turn id a body names, read without the contract (a malformed turn's client waits
    all the same), when it is a plausible one."""
    try:
        raw = loads(delivery.body)
    except ValueError:
        return None
    turn_id = raw.get("turn_id") if isinstance(raw, dict) else None
    if not isinstance(turn_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", turn_id):
        return None
    return turn_id


def _last_user(turn: ChatTurn) -> str:
    """The question of a turn that does not carry it: its last user message, after the
    prompt's sources when the gateway's prompt put them there."""
    for message in reversed(turn.messages):
        if message.role == "user":
            return message.content.rsplit(QUESTION_MARK, 1)[-1].strip()
    return ""


async def _failing(error: Exception) -> AsyncIterator[str]:
    """A stream that fails with ``error`` when it is first read."""
    raise error
    yield ""  # pragma: no cover - makes this an async generator


async def _pieces(text: str) -> AsyncIterator[str]:
    """An extractive answer as a stream of word pieces, through the same outbox as a model's
    tokens (one write per flush interval, cancel flags honoured)."""
    for piece in re.findall(r"\s*\S+", text):
        yield piece
        await asyncio.sleep(0)


def _observe(progress: _Progress, now: float) -> None:
    """Metrics of one finished answer: time to first token and the decode rate after it."""
    metrics.CHAT_TOKENS.inc(len(progress.pieces))
    if progress.first_token is None:
        return
    metrics.CHAT_TTFT.observe(progress.first_token - progress.received)
    decoding = now - progress.first_token
    if len(progress.pieces) > 1 and decoding > 0:
        metrics.CHAT_TOKENS_PER_SECOND.observe((len(progress.pieces) - 1) / decoding)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _queue_ms(turn: ChatTurn, headers: Mapping[str, str], received_at: float) -> float | None:
    enqueued = turn.enqueued_at
    if enqueued is None:
        try:
            enqueued = float(headers[ENQUEUED_HEADER])
        except (KeyError, ValueError):
            return None
    return _ms(max(0.0, received_at - enqueued))
