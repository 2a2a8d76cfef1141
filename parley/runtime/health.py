"""The worker's HTTP port: ``/metrics`` (Prometheus text), ``/healthz`` (the event loop answers)
and ``/readyz`` (every consumer can receive: 503 from a failed receive, e.g. Redis down, until
one succeeds again). A tiny asyncio HTTP/1.0 responder, so a worker needs
no web framework."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST

from parley import metrics


async def serve_health(
    stack: contextlib.AsyncExitStack, port: int, consumers: Sequence[object]
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
            if path.startswith("/metrics"):
                status, body, kind = "200 OK", await metrics.scrape(), CONTENT_TYPE_LATEST
            elif path.startswith("/healthz"):
                status, body, kind = "200 OK", b"ok\n", "text/plain"
            elif path.startswith("/readyz"):
                # Runnables without a ``ready`` flag (the blob watcher) do not decide.
                ready = bool(consumers) and all(getattr(c, "ready", True) for c in consumers)
                status = "200 OK" if ready else "503 Service Unavailable"
                body, kind = (b"ready\n" if ready else b"starting\n"), "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", port)
    stack.push_async_callback(_close, server)
    return server


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
