"""The gateway's shutdown (SIGTERM): answers in flight end with a typed event within the drain
time, on both faces, instead of a bare connection error when the server gives up waiting.

- Websocket sessions are told at once: a session streaming a turn gets an ``error`` event
  ``going_away`` with the turn id and a hint to resume, then close code 1001 (going away). The
  turn keeps generating: the client reconnects (to another replica) and ``resume``s from the last
  offset it saw; a turn nobody resumes is cancelled by its worker as ``orphaned``.
- OpenAI-compatible answers (no resume on that face) keep streaming until the drain deadline,
  a little before ``PARLEY_DRAIN_SECONDS``; one still running then ends with an error chunk
  ``going_away`` and ``[DONE]`` (a non-streaming one with HTTP 503), and its turn is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

GoingAway = Callable[[], Awaitable[None]]
MARGIN = 0.2  # of the drain time, kept for the server to flush and close what ended


class Drain:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self._deadline = asyncio.Event()
        self._sessions: set[GoingAway] = set()

    @property
    def draining(self) -> bool:
        return self.started.is_set()

    def register(self, going_away: GoingAway) -> None:
        """Call ``going_away()`` when the drain starts (unless unregistered before)."""
        self._sessions.add(going_away)

    def unregister(self, going_away: GoingAway) -> None:
        """Forget ``going_away`` (a bound method equal to the one registered will do)."""
        self._sessions.discard(going_away)

    async def begin(self, seconds: float) -> None:
        """Start draining: tell every registered session, and end OpenAI-face answers at
        ``seconds * (1 - MARGIN)`` from now. Returns once the sessions were told."""
        if self.started.is_set():
            return
        self.started.set()
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, seconds * (1 - MARGIN)), self._deadline.set)
        sessions = list(self._sessions)
        log.info("draining", sessions=len(sessions), seconds=seconds)
        results = await asyncio.gather(*(s() for s in sessions), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("going_away_failed", error=f"{type(result).__name__}: {result}")

    async def deadline(self) -> None:
        """Returns when answers still streaming must end."""
        await self._deadline.wait()
