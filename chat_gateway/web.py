"""The gateway's HTTP on Starlette: routes, the portal's static files (``StaticFiles``: read in a
thread, ETag/Last-Modified, never blocking the event loop), one JSON shape for 404/405, a request
whose body streams in under a size limit, and JSON/SSE responses.

Handlers write their response (``await json_response(request, ...)``) instead of returning one:
the OpenAI face's streamed answer races the client's disconnect on the same ``receive`` channel,
which a returned ``StreamingResponse`` would hide. Each route module builds its own routes
(:func:`route`); :func:`http_app` puts them together."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import starlette.requests
from starlette.applications import Starlette
from starlette.datastructures import Headers as RequestHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Receive as _Receive
from starlette.types import Scope as _Scope
from starlette.types import Send as _Send

from parley.contracts import loads

__all__ = [
    "BodyTooLarge", "ClientGone", "EventStream", "Handler", "Receive", "Request", "Scope", "Send",
    "http_app", "json_response", "respond", "route", "static_routes",
]


# The gateway's own ASGI aliases (the websocket session and the lifespan use plain dicts).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = _Send


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Request(starlette.requests.Request):
    """Starlette's request with what the handlers write through (``send``) and a body read
    under a limit."""

    @property
    def send(self) -> _Send:
        return self._send

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def query(self) -> dict[str, str]:
        return dict(self.query_params)

    async def body(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`BodyTooLarge` past ``limit`` bytes, :class:`ClientGone`
        when the client disconnects first. Holds it all: for large bodies use :meth:`stream`.
        Without ``limit``, Starlette's unlimited read."""
        if limit is None:
            return await super().body()
        return b"".join([chunk async for chunk in self.stream(limit)])

    async def stream(self, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """The body piece by piece as it arrives; :class:`BodyTooLarge` as soon as it passes
        ``limit`` bytes (at once when its Content-Length says so), :class:`ClientGone` when the
        client disconnects first. Without ``limit``, Starlette's own stream."""
        if limit is None:
            async for chunk in super().stream():
                yield chunk
            return
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        size = 0
        try:
            async for chunk in super().stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body larger than {limit} bytes")
                if chunk:
                    yield chunk
        except ClientDisconnect:
            raise ClientGone() from None

    async def json(self, limit: int | None = None) -> Any:
        """The body as JSON; ValueError for malformed JSON (too deeply nested included)."""
        return loads(await self.body(limit))


Handler = Callable[[Request], Awaitable[None]]
Headers = Iterable[tuple[str, str]]


class _Endpoint:
    """Handlers by method as one ASGI app (Starlette routes a non-function endpoint as one);
    HEAD is answered by the GET handler (the server drops the body)."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        await self._handlers[method](Request(scope, receive, send))


def route(path: str, **handlers: Handler) -> Route:
    """One path (Starlette's syntax, e.g. ``/api/documents/{rest:path}``) with a handler per
    method: ``route("/api/documents", GET=list_them, POST=upload)``. Another method gets 405
    with ``Allow`` naming these."""
    return Route(path, _Endpoint(handlers), methods=list(handlers))


async def respond(
    request: Request, status: int, body: bytes, content_type: str, headers: Headers = ()
) -> None:
    response = Response(body, status, headers=dict(headers), media_type=content_type)
    await response(request.scope, request.receive, request.send)


async def json_response(
    request: Request, status: int, data: Any, headers: Headers = ()
) -> None:
    """``data`` as compact JSON (UTF-8, not ASCII-escaped)."""
    response = JSONResponse(data, status, headers=dict(headers))
    await response(request.scope, request.receive, request.send)


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


class _Asset(FileResponse):
    """A portal file, sent without watching ``receive`` for a disconnect (as FileResponse does
    under ASGI 2.4): the assets are small, and a server drops what is sent to a gone client."""

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        asgi = {**scope.get("asgi", {}), "spec_version": "2.4"}
        await super().__call__({**scope, "asgi": asgi}, receive, send)


class _PortalFiles(StaticFiles):
    """The portal's assets: revalidated on every load (``no-cache``: a new release shows at
    once, an unchanged file costs a 304), text and scripts marked UTF-8, ``{"error": "not
    found"}`` for anything else."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: _Scope,
        status_code: int = 200,
    ) -> Response:
        content_type = mimetypes.guess_type(str(full_path))[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        response = _Asset(full_path, status_code, headers={"cache-control": "no-cache"},
                          media_type=content_type, stat_result=stat_result)
        if self.is_not_modified(response.headers, RequestHeaders(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response

    async def get_response(self, path: str, scope: _Scope) -> Response:
        if path == ".":  # the folder itself: its index page
            path = "index.html"
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return JSONResponse({"error": "not found"}, 404)


def static_routes(root: Path) -> list[BaseRoute]:
    """The portal: ``/`` is ``root/index.html``, ``/static/...`` any file under ``root`` (no
    listings; paths cannot escape ``root``)."""
    files = _PortalFiles(directory=root)
    return [Route("/", files, methods=["GET"]), Mount("/static", files)]


async def _http_error(request: starlette.requests.Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.scope['path']}", 405: "method not allowed"}.get(
        exc.status_code, exc.detail)
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": "not_found"}},
        exc.status_code, headers=exc.headers,
    )


def http_app(routes: Sequence[BaseRoute]) -> Starlette:
    """The routes as one Starlette app: an unknown path 404, a known path with another method
    405 (both ``{"error": {"message", "type", "code"}}``); ``/x/`` is not ``/x``."""
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.router.redirect_slashes = False
    return app
