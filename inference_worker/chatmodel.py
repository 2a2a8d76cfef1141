"""The chat model seam: messages in, text pieces out, as they are generated."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from parley.contracts import ChatMessage


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class ChatModel(Protocol):
    """A model may also have ``in_process = True`` (it computes on the worker's own cores):
    the worker then asks it only after the not-found check, not while the check runs
    (:mod:`inference_worker.handler`)."""

    name: str

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield text pieces as generated. Closing the iterator (or cancelling the task that
        iterates it) stops generation promptly and frees the backend's slot. Raises
        :class:`parley.errors.Retry` (rate limited, with delay) or
        :class:`parley.errors.ParleyError` with reason ``model_unavailable``.

        The returned iterator may carry ``usage: Usage | None`` and ``finish_reason: str |
        None`` (``stop``, ``length``, ``content_filter``), set by the time iteration ends: the
        backend's own figures. Callers count tokens themselves when they are absent."""
        ...

    async def close(self) -> None: ...
