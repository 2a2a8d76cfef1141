"""A real HTTP server that speaks Azure OpenAI's embeddings REST API, for tests.

It listens on 127.0.0.1 on a free port, in a background thread of the test process, so sync and
async tests alike can use it::

    from tests.peers.azure_openai import FakeAzureOpenAI

    with FakeAzureOpenAI(dimensions=64) as fake:  # or FakeAzureOpenAI().start() ... fake.stop()
        fake.rate_limit(3, retry_after=0.05)  # the next 3 requests get 429 + Retry-After
        settings = Settings(embedder="azure-openai", azure_openai_endpoint=fake.url,
                            azure_openai_api_key=SecretStr(fake.api_key),
                            azure_openai_embedding_dimensions=fake.dimensions)
        ...
        fake.requests                        # what it received, in order (RecordedRequest)
        FakeAzureOpenAI.vector("some text", 64)  # the vector it returns for that text

What it does: ``POST /openai/deployments/{deployment}/embeddings?api-version=...`` with an
``api-key`` header (or ``Authorization: Bearer``) and a JSON body ``{"input": str | [str],
"dimensions"?: int, "encoding_format"?: "float" | "base64"}``; answers ``data[].embedding`` with
``index``, ``model`` and ``usage`` like Azure. The vector of a text is deterministic (seeded by its
SHA-256, unit length, of the requested dimension). Answers 401 to a wrong key, 400 to more inputs
than ``max_inputs`` or a text longer than ``max_input_words`` words (Azure's context-length
message), 429 (``retry-after-ms`` and ``retry-after`` headers) while rate-limited, and a given
status while failing. Every request is recorded, including refused ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/embeddings$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received. ``at`` is ``time.monotonic()`` when it arrived."""

    at: float
    deployment: str
    api_version: str | None
    auth: str  # "api-key", "bearer" or "none"
    inputs: tuple[str, ...]
    dimensions: int | None
    status: int


class FakeAzureOpenAI:
    def __init__(
        self,
        *,
        dimensions: int = 64,
        api_key: str = "fake-azure-key",
        max_inputs: int = 2048,
        max_input_words: int | None = None,
        model: str = "text-embedding-3-small",
    ) -> None:
        self.dimensions = dimensions
        self.api_key = api_key
        self.max_inputs = max_inputs
        self.max_input_words = max_input_words
        self.model = model
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._limited = 0
        self._limited_until = 0.0
        self._retry_after = 0.0
        self._failing = 0
        self._fail_status = 500
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAzureOpenAI:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; waits for the serving thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeAzureOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint, as ``PARLEY_AZURE_OPENAI_ENDPOINT`` takes it."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- behaviour ------------------------------------------------------------------------------

    def rate_limit(
        self, count: int = 0, *, seconds: float = 0.0, retry_after: float = 0.05
    ) -> None:
        """Answer 429 to the next ``count`` requests and to every request for ``seconds`` from now,
        asking to retry after ``retry_after`` seconds."""
        with self._lock:
            self._limited = count
            self._limited_until = time.monotonic() + seconds
            self._retry_after = retry_after

    def fail(self, count: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``count`` requests (after any rate limiting)."""
        with self._lock:
            self._failing, self._fail_status = count, status

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def embedded(self) -> list[str]:
        """Every text answered with a vector (200), in order of arrival."""
        return [text for r in self.requests if r.status == 200 for text in r.inputs]

    @staticmethod
    def vector(text: str, dimensions: int) -> list[float]:
        """The unit vector the fake returns for ``text``."""
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        values = np.random.default_rng(seed).standard_normal(dimensions)
        return [float(x) for x in (values / np.linalg.norm(values)).astype(np.float32)]

    # --- one request ------------------------------------------------------------------------------

    def _answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        url = urlsplit(path)
        match = _PATH.match(url.path)
        api_version = parse_qs(url.query).get("api-version", [None])[0]
        if headers.get("api-key"):
            auth = "api-key"
        elif headers.get("authorization", "").lower().startswith("bearer "):
            auth = "bearer"
        else:
            auth = "none"
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        raw = payload.get("input", [])
        inputs = (raw,) if isinstance(raw, str) else tuple(str(x) for x in raw)
        dimensions = payload.get("dimensions")
        status, extra, answer = self._decide(match, api_version, auth, headers, inputs, payload)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    at=time.monotonic(),
                    deployment=match.group("deployment") if match else url.path,
                    api_version=api_version,
                    auth=auth,
                    inputs=inputs,
                    dimensions=dimensions,
                    status=status,
                )
            )
        return status, extra, answer

    def _decide(
        self,
        match: re.Match[str] | None,
        api_version: str | None,
        auth: str,
        headers: dict[str, str],
        inputs: tuple[str, ...],
        payload: dict[str, Any],
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if match is None or api_version is None:
            return 404, {}, _error("404", "Resource not found")
        if auth == "api-key" and headers.get("api-key") != self.api_key:
            return 401, {}, _error("401", "Access denied due to invalid subscription key.")
        if auth == "none":
            return 401, {}, _error("401", "Missing api-key or Authorization header.")
        with self._lock:
            limited = self._limited > 0 or time.monotonic() < self._limited_until
            if limited:
                self._limited = max(0, self._limited - 1)
                delay = self._retry_after
                retry = {
                    "retry-after-ms": str(round(delay * 1000)),
                    "retry-after": str(max(1, math.ceil(delay))),
                }
                message = (
                    "Requests to the Embeddings_Create Operation have exceeded call rate limit. "
                    f"Please retry after {max(1, math.ceil(delay))} second."
                )
                return 429, retry, _error("429", message)
            if self._failing > 0:
                self._failing -= 1
                return self._fail_status, {}, _error(str(self._fail_status), "Server error")
        if not inputs:
            return 400, {}, _error("400", "'$.input' is invalid.")
        if len(inputs) > self.max_inputs:
            return (
                400,
                {},
                _error("400", f"Too many inputs. The max number of inputs is {self.max_inputs}."),
            )
        if self.max_input_words is not None:
            words = max(len(text.split()) for text in inputs)
            if words > self.max_input_words:
                message = (
                    f"This model's maximum context length is {self.max_input_words} tokens, "
                    f"however you requested {words} tokens. Please reduce your prompt."
                )
                return 400, {}, _error("context_length_exceeded", message)
        dimensions = int(payload.get("dimensions") or self.dimensions)
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = self.vector(text, dimensions)
            embedding: Any = (
                base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(text.split()) for text in inputs)
        return (
            200,
            {},
            {
                "object": "list",
                "data": data,
                "model": self.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeAzureOpenAI
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, answer = self.owner._answer(self.path, headers, body)
        raw = json.dumps(answer).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log is self.owner.requests
