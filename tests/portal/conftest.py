"""The whole stack for the portal's browser tests, on real parts: Redis and the Chroma server (the
suite's session fixtures), the ingest and embed workers as subprocesses (``python -m ...``, as
``parley up`` runs them), the gateway in this process under uvicorn on a fixed free port (so a
test can stop it and start another one on the same port: a lost connection, then a different
replica), and the real inference worker's handler and consumer runtime in this process with a
scripted ChatModel (tests/inference_worker/scripted.py).

Why a scripted model: the tests check what the portal does with a stream (tokens arriving,
citations [n] opening the cited chunk, stop, resume), which needs an answer that cites and a
pace slow enough to stop and reload mid-answer. The local SmolLM2 is too random for the first
and the tiny random model too fast for the second; their own tests are in tests/inference_worker.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright's Python package, which never
downloads a browser here; the tests skip with the reason when either is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn
from pydantic import SecretStr

from chat_gateway.app import Gateway
from chat_gateway.server import config as server_config
from inference_worker.handler import HandlerOptions, TurnHandler
from parley.broker.redis import RedisBroker
from parley.ids import TenantId
from parley.runtime.consumer import Consumer
from parley.settings import Settings
from parley.status import StatusStore
from tests.conftest import ROOT
from tests.inference_worker.scripted import ScriptedModel

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
RUN = uuid.uuid4().hex[:6]
# Unique per run (Chroma is shared by the suite); a plain name for the saved screenshots.
TENANT = TenantId("acme" if os.environ.get("PARLEY_SCREENSHOTS") else f"portal{RUN}")
TOKEN = "dev-token"
# The scripted answer: cites source 1 and 2, about 100 pieces at PIECE_SECONDS each (~4 s).
ANSWER_WORDS = (
    "According to the first source [1], the document answers the question directly. "
    "The second source [2] adds detail on the same point, and both agree. "
) * 3
PIECES = tuple(w if i == 0 else " " + w for i, w in enumerate(ANSWER_WORDS.split()))
PIECE_SECONDS = 0.04


def _bound_socket(port: int = 0) -> socket.socket:
    """A socket bound to ``port`` on loopback (0: one the system picks), held until served, so
    that no other process can take the port between choosing it and serving on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class Stack:
    settings: Settings
    url: str
    port: int
    redis: aioredis.Redis
    status: StatusStore
    model: ScriptedModel
    workers: list[subprocess.Popen[bytes]]
    logs: Path
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _sock: socket.socket | None = None

    async def start_gateway(self) -> None:
        """Serve a new gateway (its own connections, as another replica) on the same port."""
        gateway = Gateway(self.settings)
        # The first start serves on the socket bound when the port was chosen; a restart binds
        # the same port again (uvicorn closed the socket when it stopped).
        sock = self._sock if self._sock is not None else _bound_socket(self.port)
        server = uvicorn.Server(server_config(gateway, host="127.0.0.1", port=self.port))
        server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        self._sock = sock
        deadline = time.monotonic() + 60
        while not server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the gateway exited while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not start in 60 s")
            await asyncio.sleep(0.02)

    async def stop_gateway(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = None

    def worker_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


def chromium_or_skip() -> str:
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (./dev test does)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest.fixture(scope="module")
async def stack(
    redis_url: str, chroma_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    chromium_or_skip()
    state = tmp_path_factory.mktemp("portal")
    logs = state / "logs"
    logs.mkdir()
    prefix = f"portal{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_CHROMA_URL": chroma_url,
        "PARLEY_REDIS_PREFIX": prefix,
        "PARLEY_BLOB_DIR": str(state / "blobs"),
        "PARLEY_BLOB_WATCH_SECONDS": "1",
        "PARLEY_LOG_JSON": "true",
        "ANONYMIZED_TELEMETRY": "False",
    }
    workers = []
    for module in ("ingest_worker", "embed_worker"):
        log = (logs / f"{module}.log").open("ab")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", module], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))
    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, redis_prefix=prefix,
        blob_dir=state / "blobs", local_tokens=SecretStr(f"{TOKEN}:{TENANT}"),
        # The scripted model's stream is what these tests watch: generative, never guarded.
        answer_mode="generative", _env_file=None,
    )
    client = aioredis.Redis.from_url(redis_url)
    model = ScriptedModel(pieces=PIECES, interval=PIECE_SECONDS)
    queue = settings.queues.chat
    handler = TurnHandler(model, client, HandlerOptions(prefix=prefix, not_found_guard=False))
    consumer = Consumer(RedisBroker(client, prefix=prefix), queue, handler, drain_seconds=2.0,
                        receive_wait=0.2)
    stop = asyncio.Event()
    inference = asyncio.create_task(consumer.run(stop))
    sock = _bound_socket()
    port = int(sock.getsockname()[1])
    result = Stack(settings, f"http://127.0.0.1:{port}", port, client,
                   StatusStore(client, prefix=prefix), model, workers, logs, _sock=sock)
    try:
        await result.start_gateway()
        yield result
    finally:
        await result.stop_gateway()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(inference, 10)
        await handler.close()
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        await client.aclose()


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    executable = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()
