"""The gateway as one ASGI application: the websocket chat endpoint (``/ws``), health and
readiness, the OpenAI-compatible face and the portal's static files. Served by uvicorn with the
``websockets`` library as its websocket implementation (see docs/chat-protocol.md, Architecture).

HTTP is a Starlette app (:func:`chat_gateway.web.http_app`) built from each route module's routes
(:func:`chat_gateway.web.route`: a handler taking a :class:`chat_gateway.web.Request`); a module
gets the gateway as a :class:`chat_gateway.services.Host`. The websocket and the lifespan stay
here: ``/ws`` goes straight to :class:`~chat_gateway.session.Session` on uvicorn's websocket."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from chat_gateway import auth, conversation_api, documents, openai_face
from chat_gateway.services import GatewayOptions, Services, open_services
from chat_gateway.session import Session
from chat_gateway.web import (
    Receive,
    Request,
    Scope,
    Send,
    http_app,
    json_response,
    respond,
    route,
    static_routes,
)
from parley import metrics, tracing
from parley.settings import Settings

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
WS_PATHS = frozenset({"/ws", "/ws/"})


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        services: Services | None = None,
        options: GatewayOptions | None = None,
        static_dir: Path | None = STATIC_DIR,
    ) -> None:
        self.settings = settings
        self.options = options or (services.options if services else GatewayOptions())
        self._services = services
        self.started_at = time.time()
        self.documents = documents.Documents(self)
        self.http = http_app([
            route("/healthz", GET=self._healthz),
            route("/readyz", GET=self._readyz),
            route("/metrics", GET=self._metrics),
            # Public (the portal reads it before anyone signs in): how to sign in with Entra ID.
            route("/api/auth/config", GET=self._auth_config),
            *openai_face.routes(self),
            *conversation_api.routes(self),
            *self.documents.routes(),
            *(static_routes(static_dir) if static_dir is not None and static_dir.is_dir()
              else []),
        ])

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the gateway has not started (no lifespan startup yet)")
        return self._services

    async def startup(self) -> None:
        tracing.configure(self.settings, "gateway")  # OTLP export when PARLEY_OTLP_ENDPOINT set
        if self._services is None:
            # Before connecting anything: a gateway whose sign-in settings are wrong must not
            # start (chat_gateway.auth.problems).
            auth.require_startable(self.settings)
            self._services = await open_services(self.settings, self.options)
        metrics.track_queue(self._services.broker, self.settings.queues.chat.name)

    async def drain(self, seconds: float) -> None:
        """Start the shutdown's drain (chat_gateway.drain): called by the server when it is
        told to stop, before it waits for connections to end."""
        if self._services is not None:
            await self._services.drain.begin(seconds)

    async def shutdown(self) -> None:
        await self.documents.close()
        metrics.untrack_queue(self.settings.queues.chat.name)
        if self._services is not None:
            await self._services.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            if scope["path"] not in WS_PATHS:
                # Accepted, then closed with the documented code: a close before the accept
                # is answered by the server with a bare HTTP 403, which says nothing.
                if (await receive())["type"] == "websocket.connect":
                    await send({"type": "websocket.accept"})
                    await send({"type": "websocket.close", "code": 4404,
                                "reason": "no websocket here: use /ws"})
                return
            await Session(self.services, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _healthz(self, request: Request) -> None:
        await json_response(request, 200, {"status": "alive",
                                           "uptime": round(time.time() - self.started_at, 1)})

    async def _auth_config(self, request: Request) -> None:
        await json_response(request, 200, auth.portal_config(self.settings))

    async def _metrics(self, request: Request) -> None:
        await respond(request, 200, await metrics.scrape(), CONTENT_TYPE_LATEST)

    async def _readyz(self, request: Request) -> None:
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = bool(await self.services.redis.ping())
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
        checks["chroma"] = await _chroma_ready(self.settings.chroma_url)
        if self._services is not None and self._services.drain.draining:
            checks["draining"] = "shutting down"
        ready = all(v is True for v in checks.values())
        await json_response(request, 200 if ready else 503,
                            {"status": "ready" if ready else "not ready", "checks": checks})


async def _chroma_ready(url: str) -> bool | str:
    heartbeat = urllib.parse.urljoin(url.rstrip("/") + "/", "api/v2/heartbeat")
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(heartbeat)
        return True if response.status_code == 200 else f"status {response.status_code}"
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"


def create_app(settings: Settings | None = None, **kwargs: Any) -> Gateway:
    return Gateway(settings or Settings(), **kwargs)
