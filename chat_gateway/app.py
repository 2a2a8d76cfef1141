"""The gateway as one ASGI application: the websocket chat endpoint (``/ws``), health and
readiness, the OpenAI-compatible face and the portal's static files. Served by uvicorn with the
``websockets`` library as its websocket implementation (see docs/chat-protocol.md, Architecture).

Adding an HTTP route: ``gateway.router.add("POST", "/api/documents", handler)`` where the
handler takes a :class:`chat_gateway.web.Request` (``request.services`` via ``gateway``)."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from chat_gateway import auth, documents, openai_face
from chat_gateway.services import GatewayOptions, Services, open_services
from chat_gateway.session import Session
from chat_gateway.web import (
    Receive,
    Request,
    Router,
    Scope,
    Send,
    json_response,
    respond,
    static_handler,
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
        self.router = Router()
        self.router.add("GET", "/healthz", self._healthz)
        self.router.add("GET", "/readyz", self._readyz)
        self.router.add("GET", "/metrics", self._metrics)
        # Public (the portal reads it before anyone signs in): how to sign in with Entra ID.
        self.router.add("GET", "/api/auth/config", self._auth_config)
        openai_face.install(self)
        self.documents = documents.install(self)
        if static_dir is not None and static_dir.is_dir():
            serve = static_handler(static_dir)
            self.router.add("GET", "/", serve)
            self.router.add("GET", "/static/", serve)

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

    async def shutdown(self) -> None:
        await self.documents.close()
        metrics.untrack_queue(self.settings.queues.chat.name)
        if self._services is not None:
            await self._services.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(Request(scope, receive, send))
        elif kind == "websocket":
            if scope["path"] not in WS_PATHS:
                await send({"type": "websocket.close", "code": 4404})
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

    async def _http(self, request: Request) -> None:
        handler, params, known = self.router.match(request.method, request.path)
        if handler is None:
            status = 405 if known else 404
            await json_response(request, status, {"error": {
                "message": "method not allowed" if known else f"no route {request.path}",
                "type": "invalid_request_error", "code": "not_found"}})
            return
        request.params = params
        await handler(request)

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
