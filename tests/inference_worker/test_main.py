"""``python -m inference_worker`` as a real process on the suite's Redis: SIGKILL mid-answer and
SIGTERM drain. The upstream is the fixed-rate chat-completions stand-in
(``tests.peers.openai_chat``) through the openai-compatible backend, so an answer lasts long
enough to kill the worker in the middle of it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from parley.broker.redis import RedisBroker
from parley.contracts import TURN_HEADER, dump
from parley.turnstream import TurnEvent, TurnWriter
from tests.conftest import ROOT
from tests.fixtures.turns import tail
from tests.inference_worker.conftest import text_of, turn
from tests.peers.openai_chat import OpenAIChatPeer

LEASE = 1.5


@pytest.fixture
def peer() -> Iterator[OpenAIChatPeer]:
    server = OpenAIChatPeer(reply=[f" w{i}" for i in range(400)], tokens_per_second=40).start()
    yield server
    server.stop()


class Workers:
    """Starts worker processes of one stack (one Redis prefix) and kills leftovers at the end."""

    def __init__(self, redis_url: str, peer: OpenAIChatPeer, logs: Path) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "PARLEY_REDIS_URL": redis_url,
            "PARLEY_REDIS_PREFIX": self.prefix,
            "PARLEY_CHAT_BACKEND": "openai-compatible",
            "PARLEY_CHAT_BASE_URL": peer.base_url,
            "PARLEY_CHAT_MODEL": peer.model,
            "PARLEY_QUEUES__CHAT__LEASE_SECONDS": str(LEASE),
            "PARLEY_LOG_JSON": "false",
        }
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_worker"], cwd=ROOT, env={**self.env, **env},
            stdout=log, stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def log(self, index: int) -> str:
        return (self.logs / f"worker-{index}.log").read_text(errors="replace")

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(redis_url: str, peer: OpenAIChatPeer, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(redis_url, peer, tmp_path)
    yield pool
    pool.cleanup()


async def ask(redis: aioredis.Redis, prefix: str, **overrides: object) -> str:
    chat = turn(**overrides)
    writer = TurnWriter(redis, chat.turn_id, prefix=prefix)
    await writer.emit("sources", {"sources": []})
    broker = RedisBroker(redis, prefix=prefix)
    await broker.publish("parley-chat", dump(chat), {TURN_HEADER: chat.turn_id})
    return chat.turn_id


async def read_until(
    redis: aioredis.Redis, prefix: str, turn_id: str, kinds: set[str], timeout: float
) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    deadline = time.monotonic() + timeout
    async for event in tail(redis, turn_id, prefix=prefix, block=0.2, idle_timeout=timeout):
        events.append(event)
        if event.kind in kinds:
            return events
        assert time.monotonic() < deadline, f"no {kinds} within {timeout} s: {events[-3:]}"
    return events


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


async def test_a_worker_killed_mid_answer_ends_the_turn_with_worker_lost(
    redis: aioredis.Redis, workers: Workers, peer: OpenAIChatPeer
) -> None:
    first = workers.start()
    turn_id = await ask(redis, workers.prefix, max_tokens=400)
    before = await read_until(redis, workers.prefix, turn_id, {"token"}, timeout=30)
    assert before[-1].kind == "token", workers.log(0)
    first.send_signal(signal.SIGKILL)
    await wait_exit(first, 10)
    killed = time.monotonic()
    assert await asyncio.to_thread(peer.wait_for, lambda p: p.disconnects >= 1, 10)

    second = workers.start()
    events = await read_until(redis, workers.prefix, turn_id, {"final", "error", "cancelled"},
                              timeout=30)
    waited = time.monotonic() - killed
    assert events[-1].kind == "error", workers.log(1)
    assert events[-1].data["code"] == "worker_lost"
    # No token was written twice: the tokens in the stream are a prefix of the answer.
    streamed = text_of(events)
    assert "".join(peer.reply).startswith(streamed) and streamed
    assert waited < 30  # never a hang: the lease (1.5 s) ran out and another worker settled it
    assert len(peer.requests) == 1  # the second worker did not ask the model again
    second.send_signal(signal.SIGTERM)
    assert await wait_exit(second, 15) == 0
    broker = RedisBroker(redis, prefix=workers.prefix)
    assert await broker.depth("parley-chat") == 0
    assert "reclaimed" in workers.log(1)


async def test_sigterm_drains_a_running_turn_then_exits_zero(
    redis: aioredis.Redis, workers: Workers, peer: OpenAIChatPeer
) -> None:
    process = workers.start(PARLEY_DRAIN_SECONDS="20")
    turn_id = await ask(redis, workers.prefix, max_tokens=40)  # one second at 40 tokens/s
    await read_until(redis, workers.prefix, turn_id, {"token"}, timeout=30)
    process.send_signal(signal.SIGTERM)
    events = await read_until(redis, workers.prefix, turn_id, {"final", "error", "cancelled"},
                              timeout=30)
    assert await wait_exit(process, 30) == 0
    assert events[-1].kind == "final", workers.log(0)
    assert events[-1].data["text"] == "".join(peer.reply[:40])
    assert await RedisBroker(redis, prefix=workers.prefix).depth("parley-chat") == 0


async def test_sigterm_past_the_drain_time_ends_the_turn_with_worker_lost(
    redis: aioredis.Redis, workers: Workers, peer: OpenAIChatPeer
) -> None:
    process = workers.start(PARLEY_DRAIN_SECONDS="0.3")
    turn_id = await ask(redis, workers.prefix, max_tokens=400)  # ten seconds
    await read_until(redis, workers.prefix, turn_id, {"token"}, timeout=30)
    process.send_signal(signal.SIGTERM)
    events = await read_until(redis, workers.prefix, turn_id, {"final", "error", "cancelled"},
                              timeout=10)
    assert await wait_exit(process, 15) == 0
    assert events[-1].kind == "error" and events[-1].data["code"] == "worker_lost"
    # The model's HTTP stream was closed when the turn was abandoned (not left to run 10 s).
    assert await asyncio.to_thread(peer.wait_for, lambda p: p.disconnects >= 1, 10)
    assert peer.completed == 0
