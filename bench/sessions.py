"""Idle websocket sessions one gateway process holds, and its memory per session.

    python bench/sessions.py [--sessions 20000] [--variants parley,sansio,raw] [--trace]

For each variant a fresh gateway process (bench/gateway_server.py) is started on a private Redis;
this process opens ``--sessions`` authenticated connections (``?token=``, each gets its ``ready``
event, so each is a full gateway session subscribed to its tenant's document events), waits for
the server to settle, and reads the server's resident memory (VmRSS) before and after.
Variants: ``parley`` (what the gateway ships, chat_gateway/websocket.py), ``sansio`` (uvicorn's
own websockets-sansio protocol it derives from), ``legacy`` (uvicorn's legacy websockets
protocol), ``raw`` (a bare ``websockets.serve`` handler: the floor), ``parley-deflate``
(``PARLEY_WS_COMPRESSION`` on), ``parley-asyncio`` (asyncio's own event loop; the others run
on uvloop, as uvicorn does when it is installed, and the gateway depends on it).

Open files: each process raises its soft RLIMIT_NOFILE to the hard limit, and the hard limit
where it may (root); the table says what the hard limit was. ``--trace`` runs the gateway
variants under tracemalloc (RSS then includes tracemalloc's own overhead) and prints, per
session, the lines that allocated what an idle session keeps.
Goal (issue 15): >= 20,000 sessions at <= 20 KiB each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import ClientConnection, connect

from bench.gateway_server import TOKEN, raise_fd_limit
from parley_cli import localstack

VARIANTS: dict[str, list[str]] = {
    "parley": ["--ws", "parley"],
    "sansio": ["--ws", "websockets-sansio"],
    "legacy": ["--ws", "websockets"],
    "raw": ["--ws", "raw"],
    "parley-deflate": ["--ws", "parley", "--deflate"],
    "parley-asyncio": ["--ws", "parley", "--loop", "asyncio"],
}
DESCRIPTION = {
    "parley": "gateway, chat_gateway.websocket (shipped)",
    "sansio": "gateway, uvicorn ws=websockets-sansio",
    "legacy": "gateway, uvicorn ws=websockets (legacy API)",
    "raw": "websockets.serve, trivial handler (floor)",
    "parley-deflate": "gateway, shipped + permessage-deflate",
    "parley-asyncio": "gateway, shipped on asyncio's loop",
}
TRACE_LINES = 12
WARM = 50  # sessions opened before measuring (code paths, allocator arenas)
FDS_BESIDE = WARM + 50  # open files a process needs beside the measured sessions


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


async def snapshot(server: subprocess.Popen[str], folder: Path, taken: int
                   ) -> tracemalloc.Snapshot:
    """The server's allocations now (bench/gateway_server.py --snapshots), its ``taken``-th."""
    marker = folder / "taken"
    marker.unlink(missing_ok=True)
    server.send_signal(signal.SIGUSR1)
    while not marker.exists():
        await asyncio.sleep(0.1)
    return tracemalloc.Snapshot.load(str(folder / f"{taken}.snap"))


def trace_table(name: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
                sessions: int) -> list[str]:
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    lines = [f"{name}: {total / sessions / 1024:.2f} KiB/session traced; top lines:"]
    for stat in stats[:TRACE_LINES]:
        frame = stat.traceback[0]
        where = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", frame.filename)
        lines.append(f"  {stat.size_diff / sessions:7.0f} B {stat.count_diff / sessions:5.2f} obj"
                     f"  {where}:{frame.lineno}")
    return lines


async def measure(name: str, redis_url: str, sessions: int, trace: Path | None
                  ) -> dict[str, Any]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("gateway_server.py")),
            "--redis-url", redis_url, "--prefix", f"bench{port}", "--port", str(port),
            "--fds", str(sessions + FDS_BESIDE), *VARIANTS[name]]
    traced = trace is not None and name != "raw"
    if traced:
        assert trace is not None
        folder = trace / name
        folder.mkdir()
        argv += ["--snapshots", str(folder)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{name}: server did not start")
        url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
        # Warm up code paths and allocator arenas with a few sessions, then measure from there.
        warm = await open_many(url, WARM, "deflate" in name)
        await asyncio.sleep(1.0)
        first = await snapshot(server, folder, 0) if traced else None
        before = rss_kib(server.pid)
        started = time.perf_counter()
        connections = await open_many(url, sessions, "deflate" in name)
        opened = time.perf_counter() - started
        await asyncio.sleep(3.0)
        after = rss_kib(server.pid)
        trace_lines: list[str] = []
        if first is not None:
            trace_lines = trace_table(name, first, await snapshot(server, folder, 1), sessions)
        alive = server.poll() is None
        # Every session still answers (no silent drops).
        sample = connections[:: max(1, sessions // 50)]
        for ws in sample:
            await ws.send('{"type":"ping"}')

        async def answers(ws: ClientConnection) -> bool:
            try:
                await asyncio.wait_for(ws.recv(), 10)
                return True
            except Exception:  # the raw floor's handler does not answer
                return False

        answered = sum(await asyncio.gather(*(answers(ws) for ws in sample)))
        await asyncio.gather(*(ws.close() for ws in connections + warm),
                             return_exceptions=True)
        return {
            "variant": name, "sessions": len(connections), "open_s": opened,
            "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_session": (after - before) / len(connections),
            "alive": alive, "sample_ok": f"{answered}/{len(sample)}", "trace": trace_lines,
        }
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--variants", default="parley,sansio,raw")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc in the gateway: where an idle session's memory goes")
    args = parser.parse_args()
    hard_before = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = raise_fd_limit(args.sessions + FDS_BESIDE)
    asked = args.sessions
    # Each process (this one, the server) holds every session's socket: at most the limit.
    args.sessions = min(args.sessions, hard - FDS_BESIDE)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        redis = localstack.start_redis(Path(tmp))
        try:
            rows = []
            for name in args.variants.split(","):
                rows.append(await measure(name, redis.url, args.sessions,
                                          Path(tmp) if args.trace else None))
                gc.collect()
        finally:
            redis.stop()
    load_after = os.getloadavg()
    floor = next((r["kib_per_session"] for r in rows if r["variant"] == "raw"), None)
    print(f"\nIdle sessions held by one gateway process ({os.cpu_count()} cores; "
          f"goal >= 20,000 at <= 20 KiB each)")
    capped = (f"; {asked:,} asked, {args.sessions:,} is what the limit allows"
              if args.sessions < asked else "")
    print(f"open-file hard limit here {hard_before} (in effect {hard}){capped}; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          + ("; RSS under tracemalloc" if args.trace else "") + "\n")
    header = (f"{'variant':<16} {'what':<44} {'sessions':>8} {'open s':>7} {'RSS MiB':>15} "
              f"{'KiB/sess':>9} {'x raw':>6} {'alive':>6} {'pings':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['kib_per_session'] / floor:.2f}" if floor else "-"
        print(f"{r['variant']:<16} {DESCRIPTION[r['variant']]:<44} {r['sessions']:>8} "
              f"{r['open_s']:>7.1f} {r['rss_before_mib']:>6.0f} -> {r['rss_after_mib']:>5.0f} "
              f"{r['kib_per_session']:>9.1f} {ratio:>6} {r['alive']!s:>6} {r['sample_ok']:>7}")
    for r in rows:
        if r["trace"]:
            print()
            print("\n".join(r["trace"]))


if __name__ == "__main__":
    asyncio.run(main())
