"""One websocket connection (ASGI ``websocket`` scope, served by uvicorn on the ``websockets``
library): authentication, client messages, at most one streaming turn at a time, document
events of the tenant.

On close: a running turn's relay stops at once. The turn itself is cancelled at once when the
client closed cleanly with code 1000 ("done") or while the server was not told otherwise;
after any other end (1001 going away, e.g. a page reload; 1006 dropped network) it keeps
generating for ``resume_grace`` seconds and is cancelled then unless a client resumed it on
some replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from chat_gateway import feedback, protocol
from chat_gateway.auth import AuthError, Principal, bearer
from chat_gateway.protocol import (
    Ask,
    Auth,
    Cancel,
    ErrorCode,
    Feedback,
    Ping,
    ProtocolError,
    Resume,
)
from chat_gateway.relay import cancel_unless_resumed
from chat_gateway.services import Services
from chat_gateway.turns import TurnMeta
from parley import metrics, tracing, turnstream
from parley.contracts import TRACE_HEADER
from parley.errors import ParleyError, Retry
from parley.runtime import tasks

log = structlog.get_logger(__name__)

Scope = dict[str, Any]
Receive = Any
Send = Any


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def query_of(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def origin_allowed(origin: str, host: str | None, allowed: str) -> bool:
    """Whether a browser page of ``origin`` may open a session: the gateway's own origin (the
    ``Host`` the browser connected to, whatever the scheme: TLS may end at the ingress) or one
    of ``allowed`` (``PARLEY_ALLOWED_ORIGINS``, comma-separated ``scheme://host[:port]``). Pure."""
    parsed = urlsplit(origin.strip().lower())
    if not parsed.scheme or not parsed.netloc:
        return False  # "null" (a sandboxed page, a file://) or garbage
    if host is not None and parsed.netloc == host.strip().lower():
        return True
    listed = {o.strip().lower().rstrip("/") for o in allowed.split(",") if o.strip()}
    return f"{parsed.scheme}://{parsed.netloc}" in listed


class Session:
    # Thousands are idle at once: no per-instance __dict__ (see chat_gateway/websocket.py for
    # the rest of what an idle connection holds).
    __slots__ = (
        "_expiry",
        "_pushes",
        "_receive",
        "_send",
        "_turn_task",
        "closed",
        "principal",
        "s",
        "scope",
        "turn_id",
    )

    def __init__(self, services: Services, scope: Scope, receive: Receive, send: Send) -> None:
        self.s = services
        self.scope = scope
        self._receive = receive
        self._send = send
        self.principal: Principal | None = None
        self.closed = False
        self.turn_id: str | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._pushes: set[asyncio.Task[None]] | None = None  # made at the first push
        # A timer, not a sleeping task: an idle session of an expiring (Entra ID) token would
        # otherwise keep a second task and its frames for its whole life.
        self._expiry: asyncio.TimerHandle | None = None

    # transport ----------------------------------------------------------------------------------
    async def send_text(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception:  # the peer went away mid-send; the receive loop sees the disconnect
            self.closed = True

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.send_text(protocol.encode(event))

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def push(self, event: dict[str, Any]) -> None:
        """Queue an event from another task (document progress) without blocking it."""
        if self.closed:
            return
        self._background(self.send_event(event))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        if self._pushes is None:
            self._pushes = set()
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    # lifecycle ----------------------------------------------------------------------------------
    async def run(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return
        headers = headers_of(self.scope)
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(
            origin, headers.get("host"), self.s.settings.allowed_origins
        ):
            # A browser page of another site (cross-site websocket hijacking): refused before
            # the handshake (HTTP 403). Clients that are not browsers send no Origin.
            log.info("ws_origin_refused", origin=origin[:200])
            await self._send({"type": "websocket.close", "code": 4403})
            return
        # ?token= only here: a browser cannot send a header on a websocket.
        token = bearer(headers, query_of(self.scope))
        # This frame lives as long as the connection: keep no per-connection copies in it
        # (the decoded headers were ~1 KiB of every idle session). The headers are read before
        # the accept: the transport empties them after it (chat_gateway/websocket.py).
        del message, headers, origin
        if token is not None:
            try:
                self.principal = await self.s.auth.authenticate(token)
            except AuthError as exc:
                await self._deny(exc)
                return
        await self._send({"type": "websocket.accept"})
        code = 1006
        subscribed = False
        metrics.WS_SESSIONS.inc()
        self.s.drain.register(self.going_away)
        try:
            if self.s.drain.draining:  # accepted while the drain began: nothing to keep
                await self.close(protocol.CLOSE_GOING_AWAY, "server shutting down")
                return
            if self.principal is None and not await self._first_message_auth():
                return
            assert self.principal is not None
            await self.send_event(self._ready())
            self._watch_expiry()
            self.s.hub.subscribe(self.principal.tenant, self.push)
            subscribed = True
            code = await self._loop()
        finally:
            self.s.drain.unregister(self.going_away)
            if self._expiry is not None:
                self._expiry.cancel()
            metrics.WS_SESSIONS.dec()
            if subscribed:
                assert self.principal is not None
                self.s.hub.unsubscribe(self.principal.tenant, self.push)
            self.closed = True
            await self._detach(code)

    async def going_away(self) -> None:
        """The gateway is shutting down: stop relaying, tell the client to resume the turn it
        was streaming (``error`` ``going_away``), close with 1001. The turn keeps generating
        (see chat_gateway.drain)."""
        task = self._turn_task
        turn_id = self.turn_id
        self._turn_task = None  # _detach must neither wait for it nor cancel the turn
        if task is not None and not task.done():
            await tasks.stop(task)  # cancelled until it ends (redis-py can swallow one cancel)
            if turn_id is not None:
                await self.send_event(protocol.error(
                    ErrorCode.GOING_AWAY, "the server is shutting down",
                    hint="reconnect and resume the turn from the last offset received",
                    turn_id=turn_id,
                ))
        await self.close(protocol.CLOSE_GOING_AWAY, "server shutting down")

    async def _deny(self, exc: AuthError) -> None:
        """Refuse before the handshake: HTTP 401 where the server supports ASGI's denial
        response, else accept and close with 4401 (what a browser can observe either way)."""
        log.info("ws_refused", reason=exc.message)
        if "websocket.http.response" in self.scope.get("extensions", {}):
            body = protocol.encode(protocol.error(ErrorCode.UNAUTHENTICATED, exc.message,
                                                  hint=exc.hint)).encode()
            await self._send({
                "type": "websocket.http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer")],
            })
            await self._send({"type": "websocket.http.response.body", "body": body})
            return
        await self._send({"type": "websocket.accept"})
        await self._refuse(exc)

    async def _refuse(self, exc: AuthError) -> None:
        await self.send_event(protocol.error(ErrorCode.UNAUTHENTICATED, exc.message, hint=exc.hint))
        await self.close(protocol.CLOSE_UNAUTHENTICATED, "unauthenticated")

    async def _first_message_auth(self) -> bool:
        try:
            message = await asyncio.wait_for(self._receive(), self.s.options.auth_timeout)
        except TimeoutError:
            await self._refuse(AuthError("no auth message in time", hint="send {'type':'auth'}"))
            return False
        if message["type"] != "websocket.receive":
            self.closed = True
            return False
        try:
            parsed = protocol.parse(message.get("text") or message.get("bytes") or "")
        except ProtocolError as exc:
            await self._refuse(AuthError(f"first message must be auth: {exc.message}"))
            return False
        if not isinstance(parsed, Auth):
            await self._refuse(AuthError(f"first message must be auth, not {parsed.type}"))
            return False
        try:
            self.principal = await self.s.auth.authenticate(parsed.token)
        except AuthError as exc:
            await self._refuse(exc)
            return False
        return True

    async def _loop(self) -> int:
        """Receive until the peer goes; returns its close code."""
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code", 1006))
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                parsed = protocol.parse(raw)
            except ProtocolError as exc:
                await self.send_event(protocol.error(exc.code, exc.message))
                continue
            await self._dispatch(parsed)

    async def _dispatch(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, Ping):
            await self.send_event({"type": "pong", "time": time.time()})
        elif isinstance(message, Auth):
            await self._reauthenticate(message)
        elif isinstance(message, Cancel):
            await self._cancel(message.turn_id)
        elif isinstance(message, Feedback):
            await self._feedback(message)
        elif self._turn_task is not None and not self._turn_task.done():
            await self.send_event(protocol.error(
                ErrorCode.BUSY, "a turn is already streaming on this connection",
                hint="wait for its final event or send cancel", turn_id=self.turn_id,
            ))
        elif isinstance(message, Ask):
            self._turn_task = asyncio.create_task(self._ask(message), name="ask")
            self._turn_task.add_done_callback(tasks.log_failure)
        elif isinstance(message, Resume):
            self._turn_task = asyncio.create_task(self._resume(message), name="resume")
            self._turn_task.add_done_callback(tasks.log_failure)

    async def _reauthenticate(self, auth: Auth) -> None:
        """A fresh token for this session: of the same tenant, it replaces the current one
        (and its expiry); anything else is an error event and the session carries on as it
        was."""
        assert self.principal is not None
        try:
            principal = await self.s.auth.authenticate(auth.token)
        except AuthError as exc:
            await self.send_event(protocol.error(ErrorCode.UNAUTHENTICATED, exc.message,
                                                 hint=exc.hint))
            return
        if principal.tenant != self.principal.tenant:
            await self.send_event(protocol.error(
                ErrorCode.BAD_REQUEST, "that token is of another tenant than this session's",
                hint="open a new connection to switch tenants",
            ))
            return
        self.principal = principal
        self._watch_expiry()
        await self.send_event({**self._ready(), "reauthenticated": True})

    def _ready(self) -> dict[str, Any]:
        """The ``ready`` event: the tenant and, for a token that expires, ``expires_in``: the
        whole seconds left before the session ends unless it re-authenticates (relative, so a
        client's clock does not matter; the portal renews its token from it)."""
        assert self.principal is not None
        event: dict[str, Any] = {"type": "ready", "tenant": self.principal.tenant}
        if self.principal.expires_at is not None:
            event["expires_in"] = max(0, int(self.principal.expires_at - time.time()))
        return event

    def _watch_expiry(self) -> None:
        """End the session when its token expires (unless re-authenticated before)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires_at = self.principal.expires_at if self.principal is not None else None
        if expires_at is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, expires_at - time.time()), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if not self.closed:
            self._background(self._end_expired())

    async def _end_expired(self) -> None:
        log.info("ws_token_expired")
        await self.send_event(protocol.error(
            ErrorCode.TOKEN_EXPIRED, "the session's token expired",
            hint="sign in again; send an auth message with a fresh token before it expires",
        ))
        await self.close(protocol.CLOSE_UNAUTHENTICATED, "token expired")

    # turns ----------------------------------------------------------------------------------------
    async def _ask(self, ask: Ask) -> None:
        # One trace per turn: this span is the parent of the worker's (the chat message carries
        # its context) and of the relay back to the client ("chat relay", chat_gateway.relay).
        # SERVER: the handling of a client's request, like the OpenAI face's "chat turn".
        with tracing.tracer().start_as_current_span("chat turn", kind=trace.SpanKind.SERVER):
            await self._ask_traced(ask)

    async def _ask_traced(self, ask: Ask) -> None:
        assert self.principal is not None
        try:
            started = await self.s.turns.start(
                self.principal, ask.question, conversation_id=ask.conversation_id,
                max_tokens=ask.max_tokens, answer_mode=ask.answer_mode,
            )
        except Retry as exc:
            await self.send_event(protocol.error(exc.reason, exc.message, hint=exc.hint,
                                                 retry_after=exc.delay))
            return
        except ParleyError as exc:
            await self.send_event(protocol.error(exc.reason, exc.message, hint=exc.hint))
            return
        except Exception as exc:
            log.exception("ask_failed")
            await self.send_event(protocol.error(
                ErrorCode.INTERNAL, f"the gateway failed to start the turn ({type(exc).__name__})",
                hint="try again; if it persists, tell an administrator",
            ))
            return
        self.turn_id = started.turn_id
        trace.get_current_span().set_attribute("turn_id", started.turn_id)  # the "chat turn"
        await self.send_event({"type": "turn", "turn_id": started.turn_id,
                               "conversation_id": started.conversation_id})
        await self._relay(started.turn_id, started.meta, "0-0")

    async def _resume(self, resume: Resume) -> None:
        assert self.principal is not None
        meta = await self.s.turns.meta(resume.turn_id)
        if meta is None or meta.tenant != self.principal.tenant:
            await self.send_event(protocol.error(
                ErrorCode.NOT_FOUND, "no such turn (it may have expired)",
                hint="ask the question again", turn_id=resume.turn_id,
            ))
            return
        self.turn_id = resume.turn_id
        await self.send_event({"type": "turn", "turn_id": resume.turn_id,
                               "conversation_id": meta.conversation_id, "resumed": True})
        # The relay continues the turn's trace (its "chat turn" span maybe on another replica,
        # and ended): a child of the context stored with the turn, not a trace of its own.
        token = otel_context.attach(tracing.extract(
            {TRACE_HEADER: meta.traceparent} if meta.traceparent else {}))
        try:
            await self._relay(resume.turn_id, meta, resume.offset)
        finally:
            otel_context.detach(token)

    async def _relay(self, turn_id: str, meta: TurnMeta, after: str) -> None:
        try:
            await self.s.relay.run(turn_id, meta, self.send_text, after=after)
        except Exception as exc:
            log.exception("relay_failed", turn_id=turn_id)
            await self.send_event(protocol.error(
                ErrorCode.INTERNAL, f"the gateway lost the answer stream ({type(exc).__name__})",
                hint="resume the turn, or ask again", turn_id=turn_id,
            ))

    async def _cancel(self, turn_id: str | None) -> None:
        assert self.principal is not None
        turn_id = turn_id or self.turn_id
        if turn_id is None:
            await self.send_event(protocol.error(ErrorCode.BAD_REQUEST, "no turn to cancel"))
            return
        meta = await self.s.turns.meta(turn_id)
        if meta is None or meta.tenant != self.principal.tenant:
            await self.send_event(protocol.error(ErrorCode.NOT_FOUND, "no such turn",
                                                 turn_id=turn_id))
            return
        # The relay carries on: the worker ends the stream with a ``cancelled`` event.
        await turnstream.cancel(self.s.redis, turn_id, prefix=self.s.settings.redis_prefix)

    async def _feedback(self, message: Feedback) -> None:
        assert self.principal is not None
        try:
            record = await feedback.rate(
                self.s.redis, self.s.settings.keys, self.s.transcripts, self.s.feedback,
                self.principal, turn_id=message.turn_id, rating=message.rating,
                comment=message.comment, conversation_id=message.conversation_id,
                face="websocket",
            )
        except feedback.NotFound as exc:
            await self.send_event(protocol.error(ErrorCode.NOT_FOUND, exc.message, hint=exc.hint,
                                                 turn_id=message.turn_id))
            return
        await self.send_event({"type": "feedback", "turn_id": record.turn_id,
                               "rating": record.rating, "comment": record.comment})

    async def _detach(self, code: int) -> None:
        task = self._turn_task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self.turn_id is None:
            return  # cancelled while retrieving: nothing was queued
        grace = 0.0 if code == protocol.CLOSE_NORMAL else self.s.options.resume_grace
        self.s.spawn(
            cancel_unless_resumed(
                self.s.redis, self.s.attachments, self.turn_id,
                prefix=self.s.settings.redis_prefix, grace=grace,
            ),
            name=f"grace-{self.turn_id}",
        )
