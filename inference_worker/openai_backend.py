"""ChatModel adapters over the chat-completions API: Azure OpenAI (API key or Entra ID) and any
OpenAI-compatible endpoint (vLLM, a Kaito workspace service ``http://workspace-<name>/v1``, the
llama.cpp server).

Azure OpenAI goes through the official SDK (its auth: API key or Entra ID tokens). An
OpenAI-compatible endpoint is called without it (:class:`CompatibleClient`): the request is one
JSON POST and the SSE stream is read with aiohttp, whose HTTP parser is C (llhttp): measured with
``python -m bench.stages``, the SDK over httpx/h11 spent ~0.5 ms of CPU per token in pure-Python
HTTP parsing and ~8 ms per request building its typed parameters, the biggest share of the
worker's CPU per token.

Streams with ``stream=True`` and, where the server supports it, ``stream_options.include_usage``
(the backend's own token counts). The SDK's retries are off (``max_retries=0``): a 429 becomes
:class:`parley.errors.Retry` with the delay the service asked for (``retry-after-ms`` or
``Retry-After``), so the queue, not a sleeping worker slot, carries the wait. Failures map to
:class:`parley.errors.ParleyError` reasons the chat protocol shows to users:

============================================  =====================
connection refused / reset / timeout, 5xx     ``model_unavailable``
429                                           ``rate_limited`` (a Retry)
400 from Azure's content filter               ``content_filtered``
other 400 (prompt too long, bad parameter)    ``bad_request``
401, 403                                      ``model_unauthorized``
404 (no such model or deployment)             ``model_not_found``
============================================  =====================
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit
from urllib.request import proxy_bypass

import aiohttp
import aiohttp.helpers
import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from backends.throttling import retry_after
from inference_worker.chatmodel import Usage
from parley.contracts import ChatMessage
from parley.errors import ParleyError, Retry

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
# A read that waits this long for the next chunk means the model is stuck: give the slot back.
DEFAULT_TIMEOUT = openai.Timeout(120.0, connect=5.0)


def _transport_errors() -> tuple[type[BaseException], ...]:
    # The SDK's HTTP library raises its own errors when a stream breaks mid-body (openai 1.x uses
    # httpx, later versions httpx2); they are not wrapped in openai.APIError.
    errors: list[type[BaseException]] = [OSError, TimeoutError, aiohttp.ClientError]
    for module in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(__import__(module).TransportError)
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()


def status_error(
    status: int, headers: Mapping[str, str], code: str | None, message: str, *, where: str
) -> ParleyError:
    """The ParleyError of an HTTP error ``status`` from the endpoint ``where`` (the module
    table); ``code`` and ``message`` are the error body's."""
    if status == 429:
        return Retry(
            f"the model at {where} is rate limited", reason="rate_limited",
            hint="wait and ask again", delay=retry_after(headers),
        )
    if status >= 500:
        return ParleyError(
            f"the model at {where} failed (HTTP {status})", reason="model_unavailable",
            hint="try again in a moment",
        )
    if status == 400 and code == "content_filter":
        return ParleyError(
            "the question was blocked by the content filter", reason="content_filtered",
            hint="rephrase the question",
        )
    reason = {400: "bad_request", 401: "model_unauthorized", 403: "model_unauthorized",
              404: "model_not_found"}.get(status, "model_error")
    return ParleyError(f"the model at {where} refused the request (HTTP {status}): "
                       f"{message[:300]}", reason=reason)


def translate(exc: Exception, *, where: str) -> ParleyError:
    """The ParleyError a failed call to the endpoint ``where`` means (see the module table)."""
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc.status_code, exc.response.headers, _code(exc), _message(exc),
                            where=where)
    if isinstance(exc, (openai.APIError, *_TRANSPORT_ERRORS)):
        return ParleyError(
            f"cannot reach the model at {where}: {_cause(exc)}",
            reason="model_unavailable", hint="try again in a moment",
        )
    return ParleyError(f"the model at {where} failed: {exc!r}", reason="model_error")


def _cause(exc: BaseException) -> str:
    """The innermost error's type and text: the SDK's "Connection error." hides whether the
    connection was refused, reset or timed out."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            code = inner.get("code")
            return str(code) if code is not None else None
    return getattr(exc, "code", None)


def _message(exc: openai.APIStatusError) -> str:
    return str(getattr(exc, "message", exc))[:300]


class CompletionStream:
    """One streamed completion: an async iterator of text pieces.

    The SSE lines are parsed here with ``json.loads`` rather than into the SDK's pydantic chunk
    models: measured on 2 cores, the SDK's parsing cost ~0.3 ms a chunk, a third of a core at
    200 streams of 10 tokens/s; the SDK still builds, authenticates and sends the request and
    raises the HTTP errors.

    ``usage`` and ``finish_reason`` are the backend's, once iteration has ended (None when the
    server does not send them). ``aclose()`` closes the HTTP response, which makes vLLM and the
    llama.cpp server abort the generation and free the slot; it is called on exhaustion, on
    error and when the iterating task is cancelled, and is idempotent."""

    def __init__(self, open_response: Callable[[], Awaitable[Any]], where: str) -> None:
        self._open = open_response
        self._where = where
        self._response: Any = None  # the SDK's AsyncAPIResponse
        self._lines: AsyncIterator[str] | None = None
        self._closed = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def __aiter__(self) -> CompletionStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        try:
            if self._lines is None:
                self._response = await self._open()
                self._lines = self._response.iter_lines()
            while True:
                line = await self._lines.__anext__()
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read the body to its end: an HTTP/1.1 connection closed with unread bytes
                    # is dropped, not reused, and every turn would pay a new connection.
                    async for _ in self._lines:
                        pass
                    raise StopAsyncIteration
                text = self._take(json.loads(data))
                if text:
                    return text
        except StopAsyncIteration:
            await self.aclose()
            raise
        except ParleyError:
            await self.aclose()
            raise
        except BaseException as exc:  # cancelled included: free the backend's slot, then re-raise
            await self.aclose()
            if isinstance(exc, Exception):
                raise translate(exc, where=self._where) from exc
            raise

    def _take(self, chunk: Any) -> str:
        """The text of one ``chat.completion.chunk``; records usage and finish reason."""
        if not isinstance(chunk, dict):
            return ""
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ParleyError(f"the model at {self._where} failed mid-answer: {message}",
                              reason="model_error")
        usage = chunk.get("usage")
        if isinstance(usage, dict) and "completion_tokens" in usage:
            self.usage = Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                               completion_tokens=int(usage["completion_tokens"]))
        pieces = []
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
        return "".join(pieces)

    async def aclose(self) -> None:
        self._closed = True
        response, self._response = self._response, None
        if response is not None:
            await response.close()


class _Lines:
    """An aiohttp response as :class:`CompletionStream` reads it: text lines, then ``close``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def iter_lines(self) -> AsyncIterator[str]:
        async for line in self._response.content:
            yield line.decode().rstrip("\r\n")

    async def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to its end: the connection goes back to the pool
        else:
            self._response.close()  # mid-answer: dropping the connection stops the generation


class CompatibleClient:
    """Chat completions from an OpenAI-compatible endpoint without the SDK: one JSON POST per
    answer over a pooled aiohttp session (no limit on connections: one per streaming answer),
    an optional bearer key. HTTP errors map as the module table says."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, connect: float = 5.0,
        read: float = 120.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        self._session: aiohttp.ClientSession | None = None
        self._route = _env_route(self.url, with_auth=not api_key)

    async def open(self, body: Mapping[str, Any], *, where: str) -> _Lines:
        """POST ``body``; the streaming response once its status is 200, else the error."""
        if self._session is None or self._session.closed:
            # Made here, not in __init__: a session belongs to the running event loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=self._timeout)
        response = await self._session.post(self.url, data=json.dumps(body).encode(),
                                            headers=self._headers, **self._route)
        if response.status == 200:
            return _Lines(response)
        try:
            raw = await response.read()
        finally:
            response.release()
        code, message = _error_body(raw)
        raise status_error(response.status, response.headers, code, message, where=where)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _env_route(url: str, *, with_auth: bool) -> dict[str, Any]:
    """What aiohttp's ``trust_env`` would add to a request to ``url``, read once: the proxy of
    ``HTTP_PROXY`` / ``HTTPS_PROXY`` unless ``NO_PROXY`` covers the host (with its ``.netrc``
    credentials) and, ``with_auth``, the host's ``.netrc`` login; the SDK's httpx client honours
    the same. ``trust_env`` itself reads them on a thread of the default executor for every
    request: two thread hops, measured 1.5 ms (idle) between opening a stream and the request's
    first byte, on the path of every first token."""
    route: dict[str, Any] = {}
    parts = urlsplit(url)
    if parts.hostname and not proxy_bypass(parts.hostname):
        proxy = aiohttp.helpers.proxies_from_env().get(parts.scheme)
        if proxy is not None:
            route["proxy"], route["proxy_auth"] = proxy.proxy, proxy.proxy_auth
    if with_auth and parts.hostname:
        with contextlib.suppress(LookupError):
            route["auth"] = aiohttp.helpers.basicauth_from_netrc(
                aiohttp.helpers.netrc_from_env(), parts.hostname)
    return route


def _error_body(raw: bytes) -> tuple[str | None, str]:
    """(code, message) of an OpenAI-style error body ``{"error": {"code", "message"}}``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None, raw.decode(errors="replace")
    inner = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(inner, dict):
        return None, str(inner)
    code = inner.get("code")
    return (str(code) if code is not None else None), str(inner.get("message", inner))


class OpenAIChatModel:
    """A :class:`inference_worker.chatmodel.ChatModel` over one chat-completions endpoint.

    Requests go through the SDK ``client`` (Azure OpenAI) or, when given, the lean
    :class:`CompatibleClient` (any OpenAI-compatible endpoint). ``close()`` closes the clients
    (their connection pools) and then ``on_close`` (an Entra ID credential). Streams still open
    are not closed by it: their owners close them."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        include_usage: bool = True,
        where: str | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        lean: CompatibleClient | None = None,
    ) -> None:
        self.client = client
        self.lean = lean
        self.name = model
        self.include_usage = include_usage
        self.where = where or str(client.base_url)
        self._on_close = on_close

    @classmethod
    def compatible(
        cls,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        include_usage: bool = True,
        timeout: openai.Timeout = DEFAULT_TIMEOUT,
    ) -> OpenAIChatModel:
        """Any OpenAI-compatible server. ``api_key`` may be None: vLLM, Kaito and llama.cpp run
        without one by default (the SDK still needs a non-empty string)."""
        client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", max_retries=0, timeout=timeout
        )
        lean = CompatibleClient(base_url, api_key=api_key, connect=timeout.connect or 5.0,
                                read=timeout.read or 120.0)
        return cls(client, model, include_usage=include_usage, where=base_url, lean=lean)

    @classmethod
    def azure(
        cls,
        endpoint: str,
        deployment: str,
        *,
        api_version: str,
        api_key: str | None = None,
        timeout: openai.Timeout = DEFAULT_TIMEOUT,
    ) -> OpenAIChatModel:
        """Azure OpenAI. Without ``api_key``, Entra ID through ``DefaultAzureCredential``
        (workload identity on AKS; the identity needs "Cognitive Services OpenAI User")."""
        on_close: Callable[[], Awaitable[None]] | None = None
        if api_key:
            client = AsyncAzureOpenAI(
                azure_endpoint=endpoint, api_version=api_version, api_key=api_key,
                max_retries=0, timeout=timeout,
            )
        else:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            credential = DefaultAzureCredential()
            client = AsyncAzureOpenAI(
                azure_endpoint=endpoint, api_version=api_version, max_retries=0, timeout=timeout,
                azure_ad_token_provider=get_bearer_token_provider(credential, AZURE_SCOPE),
            )
            on_close = credential.close
        return cls(client, deployment, where=f"{endpoint} ({deployment})", on_close=on_close)

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> CompletionStream:
        """Nothing is sent until the first ``__anext__``; see :class:`CompletionStream`."""
        params: list[ChatCompletionMessageParam] = [
            {"role": m.role, "content": m.content} for m in messages  # type: ignore[misc]
        ]

        async def open_lean(lean: CompatibleClient) -> Any:
            body: dict[str, Any] = {"model": self.name, "messages": params,
                                    "max_tokens": max_tokens, "temperature": temperature,
                                    "stream": True}
            if self.include_usage:
                try:
                    return await lean.open(
                        {**body, "stream_options": {"include_usage": True}}, where=self.where)
                except ParleyError as exc:
                    if exc.reason != "bad_request" or "stream_options" not in exc.message:
                        raise
                    self.include_usage = False  # as below
            return await lean.open(body, where=self.where)

        async def open_stream() -> Any:
            if self.lean is not None:
                return await open_lean(self.lean)
            create = self.client.chat.completions.with_streaming_response.create
            if self.include_usage:
                try:
                    return await create(
                        model=self.name, messages=params, max_tokens=max_tokens,
                        temperature=temperature, stream=True,
                        stream_options={"include_usage": True},
                    ).__aenter__()
                except openai.BadRequestError as exc:
                    if "stream_options" not in str(exc):
                        raise
                    # An older server that rejects stream_options: no usage from it from now on.
                    self.include_usage = False
            return await create(
                model=self.name, messages=params, max_tokens=max_tokens,
                temperature=temperature, stream=True,
            ).__aenter__()

        return CompletionStream(open_stream, self.where)

    async def close(self) -> None:
        await self.client.close()
        if self.lean is not None:
            await self.lean.close()
        if self._on_close is not None:
            await self._on_close()
