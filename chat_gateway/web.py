"""A minimal ASGI HTTP toolkit: a request with a size-limited body, JSON/SSE/file responses and a
method+path router. Enough for health checks, the OpenAI-compatible face, uploads and the
portal's static files without pulling a web framework into the gateway."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from parley.contracts import loads

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


@dataclass
class Request:
    scope: Scope
    receive: Receive
    send: Send
    params: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in self.scope.get("headers", [])}

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))

    async def body(self, limit: int) -> bytes:
        """The whole body; :class:`BodyTooLarge` past ``limit`` bytes, :class:`ClientGone`
        when the client disconnects first. Holds it all: for large bodies use :meth:`stream`."""
        return b"".join([chunk async for chunk in self.stream(limit)])

    async def stream(self, limit: int) -> AsyncIterator[bytes]:
        """The body piece by piece as it arrives; :class:`BodyTooLarge` as soon as it passes
        ``limit`` bytes (at once when its Content-Length says so), :class:`ClientGone` when the
        client disconnects first."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body larger than {limit} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def json(self, limit: int) -> Any:
        """The body as JSON; ValueError for malformed JSON (too deeply nested included)."""
        return loads(await self.body(limit))


Headers = Iterable[tuple[str, str]]


async def respond(
    request: Request, status: int, body: bytes, content_type: str, headers: Headers = ()
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers]
    await request.send({"type": "http.response.start", "status": status, "headers": raw})
    await request.send({"type": "http.response.body", "body": body})


async def json_response(
    request: Request, status: int, data: Any, headers: Headers = ()
) -> None:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    await respond(request, status, body, "application/json", headers)


class EventStream:
    """A ``text/event-stream`` response written piece by piece."""

    def __init__(self, request: Request) -> None:
        self._request = request

    async def start(self, headers: Headers = ()) -> None:
        raw = [(b"content-type", b"text/event-stream; charset=utf-8"),
               (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers]
        await self._request.send({"type": "http.response.start", "status": 200, "headers": raw})

    async def data(self, payload: str) -> None:
        await self._request.send(
            {"type": "http.response.body", "body": f"data: {payload}\n\n".encode(),
             "more_body": True}
        )

    async def end(self) -> None:
        await self._request.send({"type": "http.response.body", "body": b""})


Handler = Callable[[Request], Awaitable[None]]


class Router:
    """Exact paths, plus prefixes ending in ``/`` (the rest of the path in ``params['rest']``)."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], Handler] = {}
        self._prefix: list[tuple[str, str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("/") and path != "/":
            self._prefix.append((method.upper(), path, handler))
        else:
            self._exact[(method.upper(), path)] = handler

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_known); ``path_known`` without handler means 405."""
        method = "GET" if method == "HEAD" else method
        handler = self._exact.get((method, path))
        if handler is not None:
            return handler, {}, True
        known = any(p == path for _m, p in self._exact)
        for m, prefix, h in sorted(self._prefix, key=lambda item: -len(item[1])):
            if path.startswith(prefix):
                if m == method:
                    return h, {"rest": path[len(prefix):]}, True
                known = True
        return None, {}, known


def static_handler(root: Path, index: str = "index.html") -> Handler:
    """Serve files under ``root`` (no directory listing; paths cannot escape ``root``)."""
    base = root.resolve()

    async def handle(request: Request) -> None:
        rest = request.params.get("rest", "") or index
        target = (base / rest).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            await json_response(request, 404, {"error": "not found"})
            return
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        await respond(request, 200, target.read_bytes(), content_type,
                      [("cache-control", "no-cache")])

    return handle
