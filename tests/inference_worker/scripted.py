"""A ChatModel that plays a script: fixed pieces at a fixed pace, optionally failing. For the
handler's control paths (cancel while silent, failures before/after the first token) where the
exact timing matters; the real backends have their own tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inference_worker.chatmodel import Usage
from parley.contracts import ChatMessage


@dataclass
class ScriptedStream:
    pieces: Sequence[str]
    interval: float
    first_delay: float
    fail: Exception | None
    fail_after: int
    report: Usage | None
    delays: Sequence[float] | None = None  # before each piece; overrides first_delay/interval
    closed: bool = False
    yielded: int = 0
    started_at: float = 0.0  # monotonic, at the first __anext__
    ended_at: float = 0.0  # when exhausted, failed or closed
    usage: Usage | None = None
    finish_reason: str | None = None

    def __aiter__(self) -> ScriptedStream:
        return self

    async def __anext__(self) -> str:
        if self.closed:
            raise StopAsyncIteration
        if not self.yielded:
            self.started_at = time.monotonic()
        try:
            if self.fail is not None and self.yielded >= self.fail_after:
                raise self.fail
            if self.yielded >= len(self.pieces):
                self.usage = self.report
                self.finish_reason = "stop" if self.report is not None else None
                self._end()
                raise StopAsyncIteration
            if self.delays is not None:
                await asyncio.sleep(self.delays[self.yielded])
            else:
                await asyncio.sleep(self.first_delay if self.yielded == 0 else self.interval)
        except BaseException:
            self._end()
            raise
        self.yielded += 1
        return self.pieces[self.yielded - 1]

    async def aclose(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self.closed:
            self.closed, self.ended_at = True, time.monotonic()


@dataclass
class ScriptedModel:
    pieces: Sequence[str] = ("Hello", " world", ".")
    interval: float = 0.0
    first_delay: float = 0.0
    fail: Exception | None = None
    fail_after: int = 0
    report: Usage | None = None
    delays: Sequence[float] | None = None
    name: str = "scripted"
    in_process: bool = False  # as the local model: asked only after the not-found check
    streams: list[ScriptedStream] = field(default_factory=list)
    calls: list[tuple[list[ChatMessage], int, float]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> ScriptedStream:
        self.calls.append((list(messages), max_tokens, temperature))
        stream = ScriptedStream(
            self.pieces[:max_tokens], self.interval, self.first_delay, self.fail,
            self.fail_after, self.report, self.delays,
        )
        self.streams.append(stream)
        self.called.set()
        return stream

    async def close(self) -> None:
        pass
