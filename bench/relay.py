"""Tokens relayed per second by one gateway process (Redis turn stream -> websocket client).

    python bench/relay.py [--tokens 200000]

A gateway process (bench/gateway_server.py, the shipped configuration) and a private Redis are
started. Turn streams are written straight to Redis with parley.turnstream.TurnWriter, with the
turn metadata a gateway needs; clients (websockets, in this process) ``resume`` every turn from
offset 0 and read until ``final``. Nothing else runs through the gateway, so this measures the
relay path: XREAD -> JSON frame -> websocket write.

The gateway parses Redis replies with hiredis when it is installed (a runtime dependency);
each case runs against two gateway processes: ``hiredis`` and ``python`` (redis-py's own
parser), side by side.

Rows: ``backlog`` streams are written before the clients connect (the gateway reads up to 512
entries per XREAD); ``live`` streams are written while the clients read (the worker's own
batching: one entry per 20 ms flush, so entries carry several tokens when the model is fast).
``tok/entry`` 1 is the worst case: one websocket frame per token. ``gw CPU`` is the gateway
process's CPU seconds during the run, so ``tok per gw CPU s`` holds even on a loaded machine.
Goal (issue 3): >= 50,000 tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bench.gateway_server import TENANT, TOKEN, raise_fd_limit
from parley.turnstream import TurnWriter, turn_key
from parley_cli import localstack

PREFIX = "relaybench"


@dataclass(frozen=True)
class Case:
    mode: str  # backlog | live
    streams: int
    tokens_per_entry: int  # backlog only; live uses the writer's time-based flush


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def write_meta(redis: aioredis.Redis, turn_id: str) -> None:
    meta = {"tenant": TENANT, "conversation_id": "bench", "persist": False}
    await redis.set(f"{turn_key(PREFIX, turn_id)}:meta", json.dumps(meta), ex=3600)


async def write_backlog(redis: aioredis.Redis, turn_id: str, tokens: int, per_entry: int) -> None:
    writer = TurnWriter(redis, turn_id, prefix=PREFIX, flush_interval=3600,
                        max_pending=per_entry)
    for _ in range(tokens):
        await writer.token(" tok")
    await writer.emit("final", {"text": "", "citations": []})


async def write_live(redis: aioredis.Redis, turn_id: str, tokens: int) -> None:
    writer = TurnWriter(redis, turn_id, prefix=PREFIX)  # the worker's defaults (20 ms flush)
    for i in range(tokens):
        await writer.token(" tok")
        if i % 64 == 0:
            await asyncio.sleep(0)  # let the other writers and readers run
    await writer.emit("final", {"text": "", "citations": []})


async def read_turn(url: str, turn_id: str) -> tuple[int, int]:
    """(frames, tokens) received for the turn, until final."""
    frames = tokens = 0
    async with connect(url, compression=None, max_size=2**22, proxy=None) as ws:
        await ws.recv()  # ready
        await ws.send(json.dumps({"type": "resume", "turn_id": turn_id, "offset": "0-0"}))
        async for raw in ws:
            frames += 1
            event = json.loads(raw)
            tokens += int(event.get("n", 0)) if event["type"] == "token" else 0
            if event["type"] == "final":
                return frames, tokens
    raise RuntimeError(f"turn {turn_id}: connection ended before final")


async def run_case(case: Case, total: int, redis: aioredis.Redis, url: str, pid: int
                   ) -> dict[str, float | int | str]:
    per_stream = total // case.streams
    turns = [uuid.uuid4().hex for _ in range(case.streams)]
    for turn_id in turns:
        await write_meta(redis, turn_id)
    if case.mode == "backlog":
        await asyncio.gather(*(write_backlog(redis, t, per_stream, case.tokens_per_entry)
                               for t in turns))
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    readers = [asyncio.create_task(read_turn(url, t)) for t in turns]
    if case.mode == "live":
        await asyncio.gather(*(write_live(redis, t, per_stream) for t in turns))
    counts = await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    frames = sum(f for f, _ in counts)
    tokens = sum(t for _, t in counts)
    if tokens != per_stream * case.streams:
        raise RuntimeError(f"{case}: relayed {tokens} of {per_stream * case.streams} tokens")
    return {
        "mode": case.mode, "streams": case.streams,
        "tok/entry": str(case.tokens_per_entry) if case.mode == "backlog" else "20ms",
        "tokens": tokens, "frames": frames, "seconds": elapsed,
        "tok/s": tokens / elapsed, "frames/s": frames / elapsed, "gw_cpu": cpu,
        "tok/cpu_s": tokens / cpu if cpu > 0 else float("nan"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200_000, help="tokens per row")
    args = parser.parse_args()
    raise_fd_limit()
    # Backlog streams stay under the turn stream's cap (MAX_EVENTS entries).
    cases = [
        Case("backlog", 10, 1), Case("backlog", 100, 1), Case("backlog", 100, 8),
        Case("live", 1, 0), Case("live", 100, 0),
    ]
    rows: list[dict[str, float | int | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server_redis = localstack.start_redis(Path(tmp))
        redis = aioredis.Redis.from_url(server_redis.url)
        try:
            for parser_name in ("hiredis", "python"):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                gateway = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("gateway_server.py")),
                     "--redis-url", server_redis.url, "--prefix", PREFIX, "--port", str(port),
                     "--parser", "auto" if parser_name == "hiredis" else "python"],
                    stdout=subprocess.PIPE, text=True,
                )
                try:
                    assert gateway.stdout is not None
                    if gateway.stdout.readline().strip() != "READY":
                        raise RuntimeError("gateway did not start")
                    url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
                    await run_case(Case("backlog", 4, 4), 4000, redis, url, gateway.pid)
                    for case in cases:
                        row = await run_case(case, args.tokens, redis, url, gateway.pid)
                        rows.append({**row, "parser": parser_name})
                finally:
                    gateway.terminate()
                    gateway.wait(10)
        finally:
            await redis.aclose()
            server_redis.stop()
    load = os.getloadavg()[0]
    print(f"\nTokens relayed by one gateway process ({os.cpu_count()} cores, load average "
          f"{load:.1f}; goal >= 50,000 tokens/s)\n")
    header = (f"{'parser':<8} {'mode':<8} {'streams':>7} {'tok/entry':>9} {'tokens':>8} "
              f"{'frames':>8} {'seconds':>8} {'tokens/s':>10} {'frames/s':>9} {'gw CPU s':>9} "
              f"{'tok per gw CPU s':>17} {'x goal':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['parser']:<8} {r['mode']:<8} {r['streams']:>7} {r['tok/entry']:>9} "
              f"{r['tokens']:>8} {r['frames']:>8} {r['seconds']:>8.2f} {r['tok/s']:>10,.0f} "
              f"{r['frames/s']:>9,.0f} {r['gw_cpu']:>9.2f} {r['tok/cpu_s']:>17,.0f} "
              f"{float(r['tok/s']) / 50_000:>7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
