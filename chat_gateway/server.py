"""Running the gateway under uvicorn with the ``websockets`` library (its Sans-I/O protocol,
uvicorn's ``websockets-sansio``, made leaner per idle connection by
:class:`chat_gateway.websocket.WebSocketProtocol`) as the websocket implementation,
permessage-deflate off unless ``PARLEY_WS_COMPRESSION`` turns it on.

``python -m chat_gateway`` serves on ``settings.gateway_host:gateway_port``; tests and benches use
:func:`running` on a socket bound to a free port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from chat_gateway.app import Gateway
from chat_gateway.websocket import WebSocketProtocol

# uvicorn's "websockets" is the library's legacy protocol (deprecated in both projects);
# "websockets-sansio" drives websockets.server.ServerProtocol, the library's current core, and
# WebSocketProtocol is that one keeping less per idle connection.
WS_IMPLEMENTATION: type[asyncio.Protocol] = WebSocketProtocol


def config(gateway: Gateway, **overrides: Any) -> uvicorn.Config:
    settings = gateway.settings
    options: dict[str, Any] = {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "ws": WS_IMPLEMENTATION,
        # Measured (docs/chat-protocol.md): deflate triples memory per idle connection.
        "ws_per_message_deflate": settings.ws_compression,
        "ws_max_size": gateway.options.ws_max_size,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": settings.drain_seconds,
        "backlog": 4096,
    }
    options.update(overrides)
    return uvicorn.Config(gateway, **options)


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's drain first on shutdown: listening stops, websocket
    sessions are told ``going_away`` and closed with 1001, and OpenAI-face answers are ended
    before the graceful-shutdown time (the drain time) is over; then uvicorn's own shutdown,
    which then finds nothing to cancel."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connection while draining (clients go to other replicas)
        await self.gateway.drain(float(self.config.timeout_graceful_shutdown or 0))
        await super().shutdown(sockets)


def serve(gateway: Gateway, **overrides: Any) -> None:
    """Serve until SIGINT/SIGTERM, then drain (see :class:`GatewayServer`). Stopped by SIGTERM,
    the process exits 0 once drained, as the workers do."""
    # uvicorn raises a caught signal again after its graceful shutdown, under the handler it
    # found when it started: with the default one, SIGTERM would end a process that drained
    # cleanly as killed by SIGTERM (status 143). The drain was the answer to the signal.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    GatewayServer(config(gateway, **overrides), gateway).run()


@contextlib.asynccontextmanager
async def running(gateway: Gateway, host: str = "127.0.0.1", **overrides: Any
                  ) -> AsyncIterator[str]:
    """Serve ``gateway`` in this event loop on a free port; yields ``http://host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = GatewayServer(config(gateway, host=host, port=port, **overrides), gateway)
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway exited while starting")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
