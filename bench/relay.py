"""Tokens relayed per second by one gateway process (Redis turn stream -> websocket client).

    python bench/relay.py [--tokens 200000]

A gateway process (bench/gateway_server.py, the shipped configuration) and a private Redis are
started. Turn streams are written straight to Redis with parley.turnstream.TurnWriter, with the
turn metadata a gateway needs; clients (websockets, in this process) ``resume`` every turn from
offset 0 and read until ``final``. Nothing else runs through the gateway, so this measures the
relay path: XREAD -> JSON frame -> websocket write.

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
from parley import localstack
from parley.turnstream import TurnWriter, turn_key

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


async def read_turn(url: str, turn_id: str) -> int:
    """Frames received for the turn (its events after 'turn'), until final."""
    frames = 0
    async with connect(url, compression=None, max_size=2**22, proxy=None) as ws:
        await ws.recv()  # ready
        await ws.send(json.dumps({"type": "resume", "turn_id": turn_id, "offset": "0-0"}))
        async for raw in ws:
            frames += 1
            if '"type":"final"' in str(raw):
                return frames
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
    frames = sum(await asyncio.gather(*readers))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    tokens = per_stream * case.streams
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
    cases = [
        Case("backlog", 1, 1), Case("backlog", 100, 1), Case("backlog", 100, 8),
        Case("live", 1, 0), Case("live", 100, 0),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        server_redis = localstack.start_redis(Path(tmp))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        gateway = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("gateway_server.py")),
             "--redis-url", server_redis.url, "--prefix", PREFIX, "--port", str(port)],
            stdout=subprocess.PIPE, text=True,
        )
        redis = aioredis.Redis.from_url(server_redis.url)
        try:
            assert gateway.stdout is not None
            if gateway.stdout.readline().strip() != "READY":
                raise RuntimeError("gateway did not start")
            url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
            await run_case(Case("backlog", 4, 4), 4000, redis, url, gateway.pid)  # warm-up
            rows = []
            for case in cases:
                rows.append(await run_case(case, args.tokens, redis, url, gateway.pid))
                print(f"done: {case}", file=sys.stderr, flush=True)
        finally:
            await redis.aclose()
            gateway.terminate()
            gateway.wait(10)
            server_redis.stop()
    load = os.getloadavg()[0]
    print(f"\nTokens relayed by one gateway process ({os.cpu_count()} cores, load average "
          f"{load:.1f}; goal >= 50,000 tokens/s)\n")
    header = (f"{'mode':<8} {'streams':>7} {'tok/entry':>9} {'tokens':>8} {'frames':>8} "
              f"{'seconds':>8} {'tokens/s':>10} {'frames/s':>9} {'gw CPU s':>9} "
              f"{'tok per gw CPU s':>17} {'x goal':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<8} {r['streams']:>7} {r['tok/entry']:>9} {r['tokens']:>8} "
              f"{r['frames']:>8} {r['seconds']:>8.2f} {r['tok/s']:>10,.0f} "
              f"{r['frames/s']:>9,.0f} {r['gw_cpu']:>9.2f} {r['tok/cpu_s']:>17,.0f} "
              f"{float(r['tok/s']) / 50_000:>7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
