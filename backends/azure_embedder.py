"""Azure OpenAI embeddings (``text-embedding-3-small`` and others) via ``openai.AsyncAzureOpenAI``.

Authentication: the API key when ``PARLEY_AZURE_OPENAI_API_KEY`` is set, else Entra ID through
``DefaultAzureCredential`` (workload identity on AKS) with the Cognitive Services scope.

Retry policy (ours, not the client's: the client is built with ``max_retries=0``):

- 429: wait what the service asks (``retry-after-ms``, else ``retry-after`` in seconds or as an
  HTTP date, else exponential backoff) and try again inside the call, at most ``max_attempts``
  requests in all; a wait longer than ``max_inline_delay`` or the last 429 raises
  :class:`~parley.errors.Retry` with the service's delay, so the queue redelivers later and
  nothing is lost.
- 5xx, 408, timeouts, connection errors: the same, with exponential backoff.
- 400: :class:`~parley.errors.Reject` with the service's message (an input too long for the model
  is truncated before sending, so a 400 means something retrying cannot fix).
- 401/403/404: :class:`~parley.errors.ConfigError` (not a Retry nor a Reject: the message is
  retried by the queue's normal policy while someone fixes the key, role or deployment name).

Token counts: ``tiktoken`` is not a dependency, and its ``cl100k_base`` file is downloaded at first
use, which these machines cannot do. :class:`ApproxCl100kTokenizer` estimates cl100k counts from
the same pre-tokenizer split; measured against the real cl100k encoding on 300 chunks of the shared
corpus plus German, Japanese, Russian, Arabic, digits and code: estimate / real is 0.89 at worst
(Latin lorem ipsum), 0.99 at the 5th percentile, 1.22 median, 2.6 at most (Cyrillic). Limits are
therefore applied with a safety factor of 0.85.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any

import openai
from azure.core.exceptions import ClientAuthenticationError

from backends.throttling import retry_after
from parley import metrics
from parley.embedder import Tokenizer
from parley.errors import ConfigError, Reject, Retry
from parley.settings import Settings

SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_INPUT_TOKENS = 8191  # text-embedding-3-*, text-embedding-ada-002
SAFETY = 0.85  # see the module docstring: the token estimate can be ~11% low
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}

# cl100k's pre-tokenizer, with Python's ``re`` classes for \p{L} ([^\W\d_]) and \p{N} (\d).
_PIECE = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)|[^\r\n\w]?[^\W\d_]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    re.IGNORECASE,
)


# --- pure logic --------------------------------------------------------------------------------


def _piece_tokens(piece: str) -> int:
    if piece.isascii():
        # Common English words (with their leading space) are one token; rarer long ones split.
        return 1 if len(piece) <= 6 else math.ceil(len(piece) / 4)
    return math.ceil(len(piece.encode("utf-8")) / 2.2)


class ApproxCl100kTokenizer:
    """An estimate of the ``cl100k_base`` token count (see the module docstring for its error)."""

    def count(self, text: str) -> int:
        return sum(_piece_tokens(m.group()) for m in _PIECE.finditer(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut at a piece boundary so that its estimate is at most ``max_tokens``."""
        total = 0
        for match in _PIECE.finditer(text):
            total += _piece_tokens(match.group())
            if total > max_tokens:
                return text[: match.start()]
        return text


def plan_requests(counts: Sequence[int], max_inputs: int, max_tokens: int) -> list[range]:
    """Consecutive slices of the inputs, each at most ``max_inputs`` inputs and ``max_tokens``
    tokens (an input alone over ``max_tokens`` gets a request of its own)."""
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError("limits must be positive")
    slices: list[range] = []
    start, tokens = 0, 0
    for i, count in enumerate(counts):
        if i > start and (i - start >= max_inputs or tokens + count > max_tokens):
            slices.append(range(start, i))
            start, tokens = i, 0
        tokens += count
    if start < len(counts):
        slices.append(range(start, len(counts)))
    return slices


def backoff(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Backoff for the ``attempt``-th failure (1-based) when the service names no delay."""
    return float(min(cap, base * 2 ** (attempt - 1)))


# --- the embedder --------------------------------------------------------------------------------


class AzureOpenAIEmbedder:
    """Embeddings from an Azure OpenAI deployment. Inputs are truncated to the model's 8,191 tokens
    (estimated), split into requests within the deployment's limits and sent one request after
    another; the vectors come back in input order.

    On :class:`Retry` nothing of the call is kept: the whole batch is embedded again when the queue
    redelivers it. Cancelling :meth:`embed` cancels the request in flight. :meth:`close` closes
    the HTTP client and the Entra ID credential.
    """

    max_tokens: int = MAX_INPUT_TOKENS

    def __init__(
        self,
        *,
        endpoint: str,
        deployment: str,
        api_version: str,
        api_key: str | None = None,
        dimensions: int | None = None,
        max_inputs: int = 2048,
        max_request_tokens: int = 300_000,
        max_attempts: int = 4,
        max_inline_delay: float = 20.0,
        timeout: float = 30.0,
    ) -> None:
        known = next((v for k, v in KNOWN_DIMENSIONS.items() if k in deployment.lower()), None)
        if dimensions is None and known is None:
            raise ConfigError(
                f"cannot tell the vector size of Azure OpenAI deployment {deployment!r}",
                hint="set PARLEY_AZURE_OPENAI_EMBEDDING_DIMENSIONS",
            )
        self.deployment = deployment
        self.dimensions = dimensions if dimensions is not None else int(known or 0)
        self._send_dimensions = dimensions  # ada-002 rejects the parameter: send it only if asked
        self.model_id = f"azure-openai/{deployment}/{self.dimensions}"
        self._tokenizer = ApproxCl100kTokenizer()
        self.tokenizer: Tokenizer = self._tokenizer
        self.max_inputs = max_inputs
        self.max_request_tokens = max_request_tokens
        self.max_attempts = max(1, max_attempts)
        self.max_inline_delay = max_inline_delay
        self._credential: Any = None
        if api_key:
            self._client = openai.AsyncAzureOpenAI(
                azure_endpoint=endpoint,
                api_version=api_version,
                api_key=api_key,
                max_retries=0,
                timeout=timeout,
            )
        else:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            self._credential = DefaultAzureCredential()
            self._client = openai.AsyncAzureOpenAI(
                azure_endpoint=endpoint,
                api_version=api_version,
                azure_ad_token_provider=get_bearer_token_provider(self._credential, SCOPE),
                max_retries=0,
                timeout=timeout,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureOpenAIEmbedder:
        if not settings.azure_openai_endpoint:
            raise ConfigError(
                "the Azure OpenAI embedder needs an endpoint",
                hint="set PARLEY_AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com",
            )
        key = settings.azure_openai_api_key
        return cls(
            endpoint=settings.azure_openai_endpoint,
            deployment=settings.azure_openai_embedding_deployment,
            api_version=settings.azure_openai_api_version,
            api_key=key.get_secret_value() if key else None,
            dimensions=settings.azure_openai_embedding_dimensions,
            max_inputs=settings.azure_openai_embedding_max_inputs,
            max_request_tokens=settings.azure_openai_embedding_max_tokens,
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; ``[]`` for no texts. Raises :class:`Retry` when the
        service stays throttled or unavailable, :class:`Reject` when it refuses the input."""
        if not texts:
            return []
        limit = int(MAX_INPUT_TOKENS * SAFETY)
        inputs = [self._tokenizer.truncate(text, limit) for text in texts]
        counts = [self.tokenizer.count(text) for text in inputs]
        budget = max(1, int(self.max_request_tokens * SAFETY))
        vectors: list[list[float]] = []
        for part in plan_requests(counts, self.max_inputs, budget):
            vectors.extend(await self._request([inputs[i] for i in part]))
        return vectors

    async def _request(self, inputs: list[str]) -> list[list[float]]:
        extra: dict[str, Any] = {}
        if self._send_dimensions is not None:
            extra["dimensions"] = self._send_dimensions
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.embeddings.create(
                    input=inputs, model=self.deployment, **extra
                )
            except openai.RateLimitError as error:
                metrics.EMBEDDER_THROTTLED.inc()
                asked = retry_after(error.response.headers)
                delay = asked if asked is not None else backoff(attempt)
                reason, text = "embedder_throttled", "Azure OpenAI is throttling (429)"
            except openai.APIStatusError as error:
                status = error.status_code
                if status == 400:
                    too_long = "context length" in error.message.lower()
                    raise Reject(
                        f"Azure OpenAI refused the embedding request: {error.message}",
                        reason="embedding_input_too_long" if too_long else "embedding_rejected",
                        hint="lower PARLEY_CHUNK_TOKENS" if too_long else None,
                    ) from error
                if status in (401, 403, 404):
                    raise ConfigError(
                        f"Azure OpenAI answered {status} for deployment {self.deployment!r}",
                        hint="check the endpoint, the deployment name and the key or the "
                        "identity's 'Cognitive Services OpenAI User' role",
                    ) from error
                if status < 500 and status != 408:
                    raise Reject(
                        f"Azure OpenAI answered {status}: {error.message}",
                        reason="embedding_rejected",
                    ) from error
                asked = retry_after(error.response.headers)
                delay = asked if asked is not None else backoff(attempt)
                reason, text = "embedder_unavailable", f"Azure OpenAI answered {status}"
            except ClientAuthenticationError as error:
                raise ConfigError(
                    f"no Entra ID token for Azure OpenAI: {error.message}",
                    hint="give the pod a workload identity (or set PARLEY_AZURE_OPENAI_API_KEY)",
                ) from error
            except openai.APIConnectionError as error:  # includes APITimeoutError
                delay = backoff(attempt)
                reason, text = "embedder_unreachable", f"Azure OpenAI unreachable: {error}"
            else:
                return self._vectors(response, len(inputs))
            if attempt >= self.max_attempts or delay > self.max_inline_delay:
                raise Retry(f"{text} after {attempt} attempt(s)", reason=reason, delay=delay)
            await asyncio.sleep(delay)

    def _vectors(self, response: Any, expected: int) -> list[list[float]]:
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != expected:
            raise Retry(f"Azure OpenAI returned {len(data)} vectors for {expected} inputs")
        vectors = [list(item.embedding) for item in data]
        if any(len(v) != self.dimensions for v in vectors):
            raise ConfigError(
                f"deployment {self.deployment!r} returns {len(vectors[0])}-dim vectors, "
                f"not {self.dimensions}",
                hint="set PARLEY_AZURE_OPENAI_EMBEDDING_DIMENSIONS to the deployment's size",
            )
        return vectors

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()
