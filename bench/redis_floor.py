"""The floor under ``bench.ttft``: what one Redis hop between two processes costs on this machine
at its load, with nothing of Parley's in the way.

    python -m bench.redis_floor [--streams 200] [--rate 10] [--seconds 20]

One process writes ``--streams`` streams at ``--rate`` entries/s each, in one pipeline every
20 ms (as an inference worker's outbox flushes), each entry carrying the time it was made;
another reads them all with one blocking raw ``XREAD`` (as the gateway's relay does) and records
receipt minus that time; meanwhile it measures a bare ``PING`` round trip every 5 ms. The first
token of a ``gateway + worker`` turn crosses at least four hops of this kind more than a direct
call to the model, so 4 x the hop's p50 is about the least that path can add here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from backends.rawredis import OwnConnection
from bench.table import render
from parley_cli import localstack

ROOT = Path(__file__).resolve().parent.parent


def keys(streams: int) -> list[str]:
    return [f"floor:{i}" for i in range(streams)]


async def write(url: str, streams: int, rate: float, seconds: float) -> None:
    """The writer process: every 20 ms, one pipeline with the entries due."""
    client = aioredis.Redis.from_url(url)
    own = OwnConnection(client)
    names = keys(streams)
    start = time.time()
    due = {k: start + (i / streams) / rate for i, k in enumerate(names)}
    while time.time() < start + seconds:
        now = time.time()
        ready = [k for k in names if due[k] <= now]
        if ready:
            await own.run([("XADD", k, "MAXLEN", "~", 100, "*", "t", repr(time.time()))
                           for k in ready])
            for k in ready:
                due[k] += 1 / rate
        await asyncio.sleep(0.02)
    await own.close()
    await client.aclose()


async def read(url: str, streams: int, seconds: float) -> tuple[list[float], int]:
    client = aioredis.Redis.from_url(url)
    own = OwnConnection(client)
    names = keys(streams)
    last = dict.fromkeys(names, "$")
    latencies: list[float] = []
    reads = 0
    end = time.time() + seconds
    while time.time() < end:
        [reply] = await own.run([("XREAD", "COUNT", 128, "BLOCK", 1000, "STREAMS", *names,
                                  *last.values())])
        now = time.time()
        reads += 1
        items: Any = reply.items() if isinstance(reply, dict) else reply or ()
        for raw_key, entries in items:
            for entry_id, flat in entries:
                last[raw_key.decode()] = entry_id.decode()
                latencies.append(now - float(flat[1]))
    await own.close()
    await client.aclose()
    return latencies, reads


async def ping(url: str, seconds: float) -> list[float]:
    client = aioredis.Redis.from_url(url)
    own = OwnConnection(client)
    latencies: list[float] = []
    end = time.time() + seconds
    while time.time() < end:
        started = time.perf_counter()
        await own.run([("PING",)])
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    await own.close()
    await client.aclose()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    server = localstack.start_redis(Path(tempfile.mkdtemp(prefix="floor-")))
    try:
        writer = subprocess.Popen(
            [sys.executable, __file__, "--write", server.url, "--streams", str(args.streams),
             "--rate", str(args.rate), "--seconds", str(args.seconds + 2)],
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        await asyncio.sleep(1.0)
        (hops, reads), pings = await asyncio.gather(
            read(server.url, args.streams, args.seconds), ping(server.url, args.seconds))
        writer.wait(30)
    finally:
        server.stop()
    print(render(
        f"Redis alone, between two processes ({args.streams} streams x {args.rate:.0f} "
        f"entries/s written in 20 ms pipelines, one raw XREAD of every key)",
        ["what", "samples", "p50 ms", "p99 ms", "entries per read"],
        [["XADD -> XREAD, one hop", len(hops), round(pct(hops, 0.5), 2),
          round(pct(hops, 0.99), 2), round(len(hops) / max(1, reads), 1)],
         ["PING round trip", len(pings), round(pct(pings, 0.5), 2), round(pct(pings, 0.99), 2),
          "-"]],
    ))
    print(f"load average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--write", default=None, help=argparse.SUPPRESS)  # the writer process
    args = parser.parse_args()
    if args.write:
        asyncio.run(write(args.write, args.streams, args.rate, args.seconds))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
