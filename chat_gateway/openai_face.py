"""The OpenAI-compatible face: ``POST /v1/chat/completions`` (SSE stream or one JSON body) and
``GET /v1/models``, on the same retrieval + queue + worker path as the websocket.

The last user message is the question; earlier user/assistant messages are the history (the
caller keeps the conversation; nothing is stored). System messages from the caller are ignored:
Parley's own grounding instructions apply. The API key is a Parley token (``Authorization:
Bearer``). Extension field ``parley`` (top level of the completion, and of the first and last
chunk of a stream): ``turn_id``, ``sources`` (numbered as cited in the text), ``citations``
(the sources the answer used, as in the websocket ``final`` event), ``unsupported_numbers``
(figures of the answer in none of its cited sources) and, in the last chunk of a stream,
``text``: the checked answer (unknown citations removed), which may differ from the streamed
deltas. A request may set ``answer_mode`` (``extractive`` or ``generative``). A client that
disconnects mid-stream cancels the turn. On a gateway shutdown an answer still running at the
drain deadline ends with an error ``going_away`` (a last SSE chunk then ``[DONE]``, or HTTP 503)
and its turn is cancelled (chat_gateway.drain).

Traces, as on the websocket: a ``chat turn`` span (SERVER; ``turn_id``, ``stream``) around
retrieval, publishing and the relay, continuing the caller's ``traceparent`` header when it sends
one; it is the parent of the worker's delivery span (through the chat message) and of the
``chat relay`` span of the answer's way back (``tokens``, ``terminal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import BaseRoute

from chat_gateway.auth import AuthError, Principal, bearer
from chat_gateway.protocol import ErrorCode
from chat_gateway.relay import Relayed, relay_span
from chat_gateway.services import Host
from chat_gateway.turns import Started
from chat_gateway.web import (
    BodyTooLarge,
    ClientGone,
    EventStream,
    Request,
    json_response,
    route,
)
from parley import tracing, turnstream
from parley.contracts import AnswerMode, ChatMessage, Source
from parley.errors import ParleyError, Retry
from parley.turnevents import CancelledEvent, ErrorEvent, FinalEvent, TokenEvent

MAX_BODY = 1024 * 1024
STATUS = {
    ErrorCode.UNAUTHENTICATED: 401, ErrorCode.BAD_REQUEST: 400, ErrorCode.TOO_LARGE: 413,
    ErrorCode.NO_DOCUMENTS: 400, ErrorCode.RATE_LIMITED: 429, ErrorCode.NOT_FOUND: 404,
    ErrorCode.MODEL_UNAVAILABLE: 503, ErrorCode.RETRIEVAL_UNAVAILABLE: 503,
    ErrorCode.GOING_AWAY: 503,
}
GOING_AWAY = "the server is shutting down before the answer ended; ask again"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[_Message] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    n: Literal[1] = 1
    stream_options: dict[str, Any] | None = None
    # Parley's own: how the answer is made (default: the gateway's setting).
    answer_mode: AnswerMode | None = None


class FaceError(Exception):
    def __init__(
        self, code: str, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = f"{message}; {hint}" if hint else message
        self.retry_after = retry_after


def error_body(code: str, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if code in {"bad_request", "too_large", "no_documents"} \
        else "authentication_error" if code == "unauthenticated" else "api_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


async def send_error(request: Request, exc: FaceError) -> None:
    headers = []
    if exc.retry_after is not None:
        headers.append(("retry-after", str(max(1, round(exc.retry_after)))))
    if exc.code == ErrorCode.UNAUTHENTICATED:
        headers.append(("www-authenticate", "Bearer"))
    status = STATUS.get(ErrorCode(exc.code), 500) if exc.code in ErrorCode.__members__.values() \
        else 500
    await json_response(request, status, error_body(exc.code, exc.message), headers)


def split(messages: list[_Message]) -> tuple[str, list[ChatMessage]]:
    """(question, history): the last user message, and the user/assistant turns before it."""
    if messages[-1].role != "user" or not messages[-1].text().strip():
        raise FaceError(ErrorCode.BAD_REQUEST, "the last message must be a non-empty user message")
    history = [ChatMessage(role=m.role, content=m.text())
               for m in messages[:-1] if m.role in ("user", "assistant") and m.text()]
    return messages[-1].text(), history


def sources_json(sources: list[Source]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in sources]


def routes(gateway: Host) -> list[BaseRoute]:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` on ``gateway``."""

    async def models(request: Request) -> None:
        try:
            await _principal(gateway, request)
        except FaceError as exc:
            await send_error(request, exc)
            return
        name = gateway.settings.chat_model
        await json_response(request, 200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "parley"}]})

    async def completions(request: Request) -> None:
        try:
            await _completions(gateway, request)
        except FaceError as exc:
            await send_error(request, exc)
        except ClientGone:
            return

    return [route("/v1/models", GET=models), route("/v1/chat/completions", POST=completions)]


async def _principal(gateway: Host, request: Request) -> Principal:
    try:
        return await gateway.services.auth.authenticate(bearer(request.headers, {}))
    except AuthError as exc:
        raise FaceError(ErrorCode.UNAUTHENTICATED, exc.message, hint=exc.hint) from None


async def _completions(gateway: Host, request: Request) -> None:
    principal = await _principal(gateway, request)
    try:
        body = CompletionRequest.model_validate(await request.json(MAX_BODY))
    except BodyTooLarge as exc:
        raise FaceError(ErrorCode.TOO_LARGE, str(exc)) from None
    except (ValueError, ValidationError) as exc:
        raise FaceError(ErrorCode.BAD_REQUEST, f"bad request body: {exc}") from None
    question, history = split(body.messages)
    # One trace per turn: this span is the parent of the worker's (the chat message carries its
    # context) and of the relay back ("chat relay"). An instrumented caller's trace goes on.
    with tracing.tracer().start_as_current_span(
        "chat turn", context=tracing.extract(request.headers), kind=trace.SpanKind.SERVER,
        attributes={"stream": body.stream},
    ):
        await _answer(gateway, request, principal, body, question, history)


async def _answer(
    gateway: Host, request: Request, principal: Principal, body: CompletionRequest,
    question: str, history: list[ChatMessage],
) -> None:
    services = gateway.services
    try:
        started = await services.turns.start(
            principal, question, history=history,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            temperature=0.2 if body.temperature is None else body.temperature,
            answer_mode=body.answer_mode,
        )
    except Retry as exc:
        raise FaceError(exc.reason, exc.message, hint=exc.hint, retry_after=exc.delay) from None
    except ParleyError as exc:
        raise FaceError(exc.reason, exc.message, hint=exc.hint) from None
    trace.get_current_span().set_attribute("turn_id", started.turn_id)  # the "chat turn"
    model = body.model or gateway.settings.chat_model
    turn = _Turn(gateway, started, model)
    watcher = asyncio.create_task(_disconnected(request))
    draining = asyncio.create_task(services.drain.deadline())
    runner = asyncio.create_task(
        turn.stream(request, bool((body.stream_options or {}).get("include_usage")))
        if body.stream else turn.complete(request)
    )
    try:
        done, _ = await asyncio.wait(
            {watcher, runner, draining}, return_when=asyncio.FIRST_COMPLETED
        )
        if runner not in done:
            # The client went away, or the gateway is shutting down: stop generating now
            # (there is no resume on this face).
            runner.cancel()
            await turnstream.cancel(services.redis, started.turn_id,
                                    prefix=gateway.settings.redis_prefix)
        with contextlib.suppress(asyncio.CancelledError, ClientGone, OSError):
            await runner
        if draining in done and runner.cancelled():
            with contextlib.suppress(ClientGone, OSError):
                await turn.going_away(request)
    finally:
        for task in (watcher, draining):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Turn:
    def __init__(self, gateway: Host, started: Started, model: str) -> None:
        self.g = gateway
        self.started = started
        self.model = model
        self.id = f"chatcmpl-{started.turn_id}"
        self.created = int(time.time())
        self.sources = list(started.sources)
        self.out: EventStream | None = None  # once a stream's response started

    def _events(self) -> Any:
        return self.g.services.tailer.tail(
            self.started.turn_id, after=self.started.offset,
            idle_timeout=self.g.services.options.first_event_timeout,
        )

    def _extension(self, **extra: Any) -> dict[str, Any]:
        return {"turn_id": self.started.turn_id, **extra}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **top: Any) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **top}
        return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)

    def _usage(self, final: dict[str, Any], tokens: int) -> dict[str, int]:
        usage = final.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", tokens))
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    async def _timeout(self) -> None:
        await turnstream.cancel(self.g.services.redis, self.started.turn_id,
                                prefix=self.g.settings.redis_prefix)

    async def stream(self, request: Request, include_usage: bool) -> None:
        with relay_span(self.started.turn_id, self.started.offset) as relayed:
            out = EventStream(request)
            await out.start()
            self.out = out
            ext = self._extension(sources=sources_json(self.sources))
            await out.data(self._chunk({"role": "assistant", "content": ""}, parley=ext))
            try:
                async for read in self._events():
                    event = read.event
                    if isinstance(event, TokenEvent):
                        await out.data(self._chunk({"content": event.text}))
                        relayed.tokens += event.n
                    elif isinstance(event, FinalEvent):
                        finish = event.finish_reason or "stop"
                        ext = self._extension(
                            citations=event.citations,
                            unsupported_numbers=event.unsupported_numbers, text=event.text)
                        await out.data(self._chunk({}, finish, parley=ext))
                        if include_usage:
                            usage = self._usage(event.data(), relayed.tokens)
                            await out.data(json.dumps({
                                "id": self.id, "object": "chat.completion.chunk",
                                "created": self.created, "model": self.model, "choices": [],
                                "usage": usage}))
                        relayed.terminal = event.kind
                    elif isinstance(event, ErrorEvent):
                        await out.data(json.dumps(error_body(event.code, event.message)))
                        relayed.terminal = event.kind
                    elif isinstance(event, CancelledEvent):
                        await out.data(json.dumps(error_body(event.reason,
                                                             "the turn ended: cancelled")))
                        relayed.terminal = event.kind
            except TimeoutError:
                await self._timeout()
                await out.data(json.dumps(error_body(
                    ErrorCode.MODEL_UNAVAILABLE,
                    "no answer from the model in time; try again later")))
                relayed.terminal = "error"
            await out.data("[DONE]")
            await out.end()

    async def going_away(self, request: Request) -> None:
        """End the answer because the gateway is shutting down (its runner was cancelled)."""
        if self.out is None:
            await send_error(request, FaceError(ErrorCode.GOING_AWAY, GOING_AWAY))
            return
        await self.out.data(json.dumps(error_body(ErrorCode.GOING_AWAY, GOING_AWAY)))
        await self.out.data("[DONE]")
        await self.out.end()

    async def complete(self, request: Request) -> None:
        with relay_span(self.started.turn_id, self.started.offset) as relayed:
            await self._complete(request, relayed)

    async def _complete(self, request: Request, relayed: Relayed) -> None:
        parts: list[str] = []
        final: dict[str, Any] | None = None
        try:
            async for read in self._events():
                event = read.event
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                    relayed.tokens += event.n
                elif isinstance(event, FinalEvent):
                    final = event.data()
                elif isinstance(event, ErrorEvent | CancelledEvent):
                    relayed.terminal = event.kind
                    code = event.code if isinstance(event, ErrorEvent) else event.reason
                    message = (event.message if isinstance(event, ErrorEvent)
                               else "the turn ended: cancelled")
                    retry = event.retry_after if isinstance(event, ErrorEvent) else None
                    raise FaceError(
                        code if code in ErrorCode.__members__.values() else "model_unavailable",
                        message, retry_after=retry,
                    )
        except TimeoutError:
            await self._timeout()
            relayed.terminal = "error"
            raise FaceError(ErrorCode.MODEL_UNAVAILABLE,
                            "no answer from the model in time; try again later") from None
        except FaceError as exc:
            await send_error(request, exc)
            return
        assert final is not None
        text = str(final.get("text") or "".join(parts))
        await json_response(request, 200, {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": str(final.get("finish_reason") or "stop")}],
            "usage": self._usage(final, relayed.tokens),
            "parley": self._extension(sources=sources_json(self.sources),
                                      citations=final.get("citations", []),
                                      unsupported_numbers=final.get("unsupported_numbers", [])),
        })
        relayed.terminal = "final"
