"""Idle websocket sessions one gateway process holds, and its memory per session.

    python bench/sessions.py [--sessions 10000] [--variants sansio,legacy,raw,sansio-deflate]

For each variant a fresh gateway process (bench/gateway_server.py) is started on a private Redis;
this process opens ``--sessions`` authenticated connections (``?token=``, each gets its ``ready``
event, so each is a full gateway session subscribed to its tenant's document events), waits for
the server to settle, and reads the server's resident memory (VmRSS) before and after.
Goal (issue 3): >= 10k sessions at <= 25 KiB each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import ClientConnection, connect

from bench.gateway_server import TOKEN, raise_fd_limit
from parley_cli import localstack

VARIANTS: dict[str, list[str]] = {
    "sansio": ["--ws", "websockets-sansio"],
    "legacy": ["--ws", "websockets"],
    "raw": ["--ws", "raw"],
    "sansio-deflate": ["--ws", "websockets-sansio", "--deflate"],
    "sansio-uvloop": ["--ws", "websockets-sansio", "--loop", "uvloop"],
}
DESCRIPTION = {
    "sansio": "gateway, uvicorn ws=websockets-sansio (shipped)",
    "legacy": "gateway, uvicorn ws=websockets (legacy API)",
    "raw": "websockets.serve, trivial handler (floor)",
    "sansio-deflate": "gateway, sansio + permessage-deflate",
    "sansio-uvloop": "gateway, sansio on uvloop",
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def open_many(url: str, count: int, deflate: bool) -> list[ClientConnection]:
    connections: list[ClientConnection] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            ws = await connect(url, compression="deflate" if deflate else None,
                               open_timeout=120, ping_interval=None, proxy=None)
            await ws.recv()  # ready: the session is authenticated and subscribed
            connections.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    return connections


async def measure(name: str, redis_url: str, sessions: int) -> dict[str, Any]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("gateway_server.py")),
            "--redis-url", redis_url, "--prefix", f"bench{port}", "--port", str(port),
            *VARIANTS[name]]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{name}: server did not start")
        url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
        # Warm up code paths and allocator arenas with a few sessions, then measure from there.
        warm = await open_many(url, 50, "deflate" in name)
        await asyncio.sleep(1.0)
        before = rss_kib(server.pid)
        started = time.perf_counter()
        connections = await open_many(url, sessions, "deflate" in name)
        opened = time.perf_counter() - started
        await asyncio.sleep(3.0)
        after = rss_kib(server.pid)
        alive = server.poll() is None
        # Every session still answers (no silent drops).
        sample = connections[:: max(1, sessions // 50)]
        for ws in sample:
            await ws.send('{"type":"ping"}')
        answered = 0
        for ws in sample:
            try:
                await asyncio.wait_for(ws.recv(), 10)
                answered += 1
            except Exception:
                pass
        await asyncio.gather(*(ws.close() for ws in connections + warm),
                             return_exceptions=True)
        return {
            "variant": name, "sessions": len(connections), "open_s": opened,
            "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_session": (after - before) / len(connections),
            "alive": alive, "sample_ok": f"{answered}/{len(sample)}",
        }
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--variants", default="sansio,legacy,raw,sansio-deflate")
    args = parser.parse_args()
    hard = raise_fd_limit()
    if hard < args.sessions + 200:
        sys.exit(f"the fd hard limit ({hard}) is below {args.sessions + 200}")
    with tempfile.TemporaryDirectory() as tmp:
        redis = localstack.start_redis(Path(tmp))
        try:
            rows = []
            for name in args.variants.split(","):
                rows.append(await measure(name, redis.url, args.sessions))
                gc.collect()
        finally:
            redis.stop()
    floor = next((r["kib_per_session"] for r in rows if r["variant"] == "raw"), None)
    print(f"\nIdle sessions held by one gateway process ({os.cpu_count()} cores; "
          f"goal >= 10,000 at <= 25 KiB each)\n")
    header = (f"{'variant':<16} {'what':<44} {'sessions':>8} {'open s':>7} {'RSS MiB':>15} "
              f"{'KiB/sess':>9} {'x raw':>6} {'alive':>6} {'pings':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['kib_per_session'] / floor:.2f}" if floor else "-"
        print(f"{r['variant']:<16} {DESCRIPTION[r['variant']]:<44} {r['sessions']:>8} "
              f"{r['open_s']:>7.1f} {r['rss_before_mib']:>6.0f} -> {r['rss_after_mib']:>5.0f} "
              f"{r['kib_per_session']:>9.1f} {ratio:>6} {r['alive']!s:>6} {r['sample_ok']:>7}")


if __name__ == "__main__":
    asyncio.run(main())
