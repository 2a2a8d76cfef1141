"""A stand-in for an OpenAI-compatible chat-completions endpoint that streams at a fixed rate,
driven by the real ``openai`` SDK over HTTP (uvicorn, a plain ASGI app).

What it is for:

* the rate-limit and failure paths of the inference worker's OpenAI adapter, which a real local
  server (``llama_cpp.server``) cannot be made to produce: a scripted 429 with ``Retry-After`` /
  ``retry-after-ms``, a 5xx, a stream cut mid-answer;
* an upstream whose speed is fixed (``first_token_delay``, ``tokens_per_second``), so that the
  time-to-first-token benchmark (``bench/ttft.py``) and the worker-crash test measure Parley's
  plumbing and not a model;
* observing the connection: ``disconnects`` counts streams the client closed before the end (the
  adapter must close the HTTP response when generation is cancelled).

What it does not prove: anything about a real model's tokenisation, prompt handling, sampling or
usage accounting; the OpenAI adapter's normal path is tested against ``llama_cpp.server``.

Wire shape (as of the chat-completions API): ``data: {chunk}`` SSE lines, the first chunk with
``delta.role``, then one chunk per token with ``delta.content``, a chunk with ``finish_reason``,
with ``stream_options.include_usage`` a last chunk with empty ``choices`` and ``usage``, then
``data: [DONE]``. Prompt tokens are counted as whitespace-separated words of the messages.

Runs in a daemon thread (``OpenAIChatPeer.start()``) or as a process:
``python -m tests.peers.openai_chat --port 8081 --tokens-per-second 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Failure:
    """A scripted answer instead of a completion: an HTTP status with headers and an error body,
    or (``cut_after`` set) a stream that is dropped after that many tokens."""

    status: int = 429
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Rate limit reached; retry later"
    cut_after: int | None = None


@dataclass(frozen=True)
class Seen:
    """One request as received: where it went and with which headers (names lower-case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    client_port: int  # the client's end of the TCP connection: equal ports = a reused connection


@dataclass
class OpenAIChatPeer:
    """The endpoint's behaviour (mutable between requests) and what it has seen."""

    reply: list[str] = field(default_factory=lambda: [f" tok{i}" for i in range(16)])
    first_token_delay: float = 0.0
    tokens_per_second: float = 1000.0
    model: str = "peer-model"
    failures: deque[Failure] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)  # JSON bodies
    seen: list[Seen] = field(default_factory=list)
    open_streams: int = 0
    completed: int = 0
    disconnects: int = 0
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, failure: Failure, times: int = 1) -> None:
        self.failures.extend([failure] * times)

    # lifecycle ------------------------------------------------------------------------------
    def start(self, port: int = 0) -> OpenAIChatPeer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, backlog=2048,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="openai-peer"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("openai peer did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def wait_for(self, predicate: Callable[[OpenAIChatPeer], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every stream start/end)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ASGI ------------------------------------------------------------------------------------
    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        self.seen.append(Seen(
            method, path, scope.get("query_string", b"").decode(),
            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            int((scope.get("client") or ("", 0))[1]),
        ))
        if method == "GET" and path.endswith("/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": self.model,
                                                                 "object": "model"}]})
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = json.loads(body)
        self.requests.append(request)
        failure = self.failures.popleft() if self.failures else None
        if failure is not None and failure.cut_after is None:
            error = {"message": failure.message, "type": "error", "code": str(failure.status)}
            await _json(send, failure.status, {"error": error}, failure.headers)
            return
        cut = failure.cut_after if failure is not None else None
        if request.get("stream"):
            await self._stream(request, receive, send, cut)
        else:
            await self._whole(request, send)

    def _plan(self, request: dict[str, Any]) -> tuple[list[str], str]:
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        pieces = list(self.reply)
        if limit is not None and len(pieces) > int(limit):
            return pieces[: int(limit)], "length"
        return pieces, "stop"

    def _usage(self, request: dict[str, Any], completion: int) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    async def _whole(self, request: dict[str, Any], send: Send) -> None:
        pieces, finish = self._plan(request)
        await asyncio.sleep(self.first_token_delay + len(pieces) / self.tokens_per_second)
        await _json(send, 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": "".join(pieces)}}],
            "usage": self._usage(request, len(pieces)),
        })

    async def _stream(
        self, request: dict[str, Any], receive: Receive, send: Send, cut: int | None
    ) -> None:
        pieces, finish = self._plan(request)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        self.open_streams += 1
        self._notify()
        finished = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body", "body": chunk({"role": "assistant",
                                                                     "content": ""}),
                        "more_body": True})
            start = time.monotonic() + self.first_token_delay
            for i, piece in enumerate(pieces):
                if cut is not None and i >= cut:
                    return  # uvicorn closes the connection mid-body: a cut stream
                due = start + i / self.tokens_per_second
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), max(0.0, due - time.monotonic()))
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk({"content": piece}),
                            "more_body": True})
            tail = chunk({}, finish)
            if (request.get("stream_options") or {}).get("include_usage"):
                usage = {"id": ident, "object": "chat.completion.chunk", "created": created,
                         "model": self.model, "choices": [],
                         "usage": self._usage(request, len(pieces))}
                tail += b"data: " + json.dumps(usage).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n",
                        "more_body": False})
            finished = True
        finally:
            watcher.cancel()
            self.open_streams -= 1
            if finished:
                self.completed += 1
            elif gone.is_set():
                self.disconnects += 1
            self._notify()


async def _json(
    send: Send, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--tokens-per-second", type=float, default=50.0)
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    args = parser.parse_args()
    peer = OpenAIChatPeer(
        reply=[f" tok{i}" for i in range(args.tokens)],
        tokens_per_second=args.tokens_per_second,
        first_token_delay=args.first_token_delay,
    ).start(args.port)
    print(peer.base_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
