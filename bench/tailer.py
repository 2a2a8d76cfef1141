"""The gateway's turn tailer alone: CPU per relayed entry of one read loop for many streams.

    python -m bench.tailer [--streams 200] [--rate 10] [--batch 10] [--seconds 8] [--rounds 2]
        [--before CHECKOUT]

One process writes token entries to ``--streams`` turn streams, each at ``--rate`` entries/s, in
pipelines of ``--batch`` streams (a worker outbox's flush writes several turns at once); another
runs :class:`chat_gateway.tailer.TurnTailer` of a tree (this one, and ``--before``'s) on uvloop
with one subscriber per stream that only counts what it gets. Reported: the reading process's
CPU per entry (the read loop, the entries' parsing, the hand-over to each subscriber; no
websocket), its reads a second, and Redis's CPU. The trees run in turns (``--rounds`` each) on
one Redis, so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRITER = r"""
import sys, time, json, redis
url, prefix, streams, rate, batch, seconds = sys.argv[1:7]
streams, rate, batch, seconds = int(streams), float(rate), int(batch), float(seconds)
r = redis.Redis.from_url(url)
keys = [f"{prefix}:turn:{i:032x}" for i in range(streams)]
data = json.dumps({"text": " word", "n": 1})
every = batch / (streams * rate)
end, i = time.monotonic() + seconds, 0
while time.monotonic() < end:
    started = time.monotonic()
    pipe = r.pipeline(transaction=False)
    for key in keys[i:i + batch]:
        pipe.xadd(key, {"k": "token", "d": data})
    pipe.execute()
    i = (i + batch) % streams
    time.sleep(max(0.0, every - (time.monotonic() - started)))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def child(url: str, streams: int, seconds: float, rate: float, batch: int,
                redis_pid: int) -> dict[str, float]:
    """In the tree on PYTHONPATH: subscribe, start the writer, count for ``seconds``."""
    import redis.asyncio as aioredis

    from chat_gateway.tailer import TurnTailer

    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        url, max_connections=32))
    prefix = f"tb{uuid.uuid4().hex[:6]}"
    tailer = TurnTailer(client, prefix=prefix, watch_every=None)
    got = reads = 0
    step = tailer._step  # counted, not changed

    async def counted() -> None:
        nonlocal reads
        reads += 1
        await step()

    tailer._step = counted  # type: ignore[method-assign]

    async def consume(i: int) -> None:
        nonlocal got
        async for batch_ in tailer.batches(f"{i:032x}", idle_timeout=seconds + 30):
            got += len(batch_)

    readers = [asyncio.create_task(consume(i)) for i in range(streams)]
    await asyncio.sleep(0.5)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, prefix, str(streams),
                               str(rate), str(batch), str(seconds + 1.5)])
    await asyncio.sleep(0.5)  # the first pipelines, the reads up to speed
    got0, reads0, redis0 = got, reads, cpu_seconds(redis_pid)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    got1, reads1, redis1 = got, reads, cpu_seconds(redis_pid)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    writer.wait()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await tailer.close()
    await client.aclose()
    wall, entries = wall1 - wall0, max(1, got1 - got0)
    return {"entries/s": entries / wall, "reads/s": (reads1 - reads0) / wall,
            "CPU us/entry": (cpu1 - cpu0) * 1e6 / entries,
            "Redis CPU %": (redis1 - redis0) * 100 / wall}


def measure(tree: Path, args: argparse.Namespace, url: str, redis_pid: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, "--streams", str(args.streams),
         "--seconds", str(args.seconds), "--rate", str(args.rate), "--batch", str(args.batch),
         "--redis-pid", str(redis_pid)],
        env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True, text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="entries/s of each stream")
    parser.add_argument("--batch", type=int, default=10, help="streams per writer pipeline")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import uvloop

        print(json.dumps(uvloop.run(child(args.child, args.streams, args.seconds, args.rate,
                                          args.batch, args.redis_pid))))
        return
    sys.path.insert(0, str(ROOT))
    from bench.table import render
    from parley_cli import localstack

    load = os.getloadavg()[0]
    server = localstack.start_redis(Path(tempfile.mkdtemp(prefix="tailer-")))
    trees = ([("before", args.before)] if args.before is not None else []) + [("this", ROOT)]
    rows: list[list[object]] = []
    try:
        for round_ in range(1, args.rounds + 1):
            for name, tree in trees:
                figures = measure(tree, args, server.url, server.process.pid)
                rows.append([name, round_, *(round(v, 1) for v in figures.values())])
    finally:
        server.stop()
    print(render(
        f"The turn tailer alone: {args.streams} streams x {args.rate:.0f} entries/s, pipelines "
        f"of {args.batch} streams, {args.seconds:.0f} s a round (uvloop)",
        ["tree", "round", "entries/s", "reads/s", "CPU us/entry", "Redis CPU %"], rows,
    ))
    print(f"load average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
