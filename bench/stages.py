"""Where the CPU of a streamed answer goes, per stage, in the inference worker and the gateway.

    python -m bench.stages [--streams 50] [--rate 10] [--seconds 15]

``--streams`` clients ask over websockets through a real gateway process in front of one
inference worker process (the setup of ``python -m bench.ttft``'s ``gateway + worker`` path,
answers of 30 tokens at ``--rate`` tokens/s from ``tests.peers.openai_chat``), both processes
under cProfile. Each process's own CPU time (cProfile's ``tottime``) is grouped by the module a
function lives in into stages, and divided by the tokens streamed: microseconds of CPU per
token. cProfile slows Python function calls (about 2x here), so the absolute figures are
inflated; the shares hold. ``worker CPU us/token`` in ``bench.ttft`` is the unprofiled figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import signal
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.table import render
from bench.ttft import (
    case_for,
    closed_loop,
    start_gateway,
    start_upstream,
    start_worker,
    through_gateway,
)
from parley_cli import localstack

PROFILED = str(Path(__file__).resolve().parent / "profiled.py")
# (stage, substrings of a function's file or name), first match wins.
WORKER_STAGES = [
    ("upstream: HTTP read (aiohttp or httpx/httpcore/h11)",
     ("httpx", "httpcore", "h11", "anyio", "sniffio", "aiohttp", "yarl", "multidict")),
    ("upstream: SSE lines + JSON chunk parse (openai_backend, json, SDK)",
     ("openai_backend", "openai/", "json/", "method 'decode'", "_json.")),
    ("outbox: events + pipeline (outbox, turnevents, pydantic)",
     ("outbox.py", "turnevents", "turnstream", "pydantic")),
    ("Redis client (redis-py, hiredis)", ("redis/", "hiredis")),
    ("handler + consumer + grounding", ("inference_worker/", "parley/runtime", "parley/")),
    ("logs, metrics, traces", ("structlog", "prometheus", "opentelemetry")),
]
GATEWAY_STAGES = [
    ("Redis: XREAD + reply parse (redis-py, hiredis)", ("redis/", "hiredis")),
    ("gateway read: entries -> events (tailer, turnevents, pydantic)",
     ("tailer.py", "turnevents", "turnstream", "pydantic")),
    ("relay: frames (relay, json)", ("relay.py", "json/", "_json.")),
    ("websocket send (websockets, uvicorn)", ("websockets", "uvicorn", "h11", "httptools")),
    ("ask path: auth, search, prompt, publish (chat_gateway, parley)",
     ("chat_gateway/", "parley/", "starlette")),
    ("logs, metrics, traces", ("structlog", "prometheus", "opentelemetry")),
]
LOOP = ("event loop + sockets (asyncio, selectors, uvloop)",
        ("asyncio", "selectors", "uvloop", "socket", "method 'send'", "method 'recv'",
         "method 'poll'", "method 'control'", "ssl"))


def split(profile: Path, stages: list[tuple[str, tuple[str, ...]]]) -> dict[str, float]:
    """CPU seconds per stage from a cProfile file."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]

    def stage_of(func: tuple[str, int, str]) -> str:
        where = f"{func[0]}:{func[2]}"
        return next((s for s, parts in [*stages, LOOP] if any(p in where for p in parts)),
                    "other")

    out: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, callers) in stats.items():
        stage = stage_of(func)
        if stage == "other" and func[0] == "~" and callers:
            # A builtin (isinstance, str.join, ...): its time goes to its callers' stages.
            for caller, edge in callers.items():
                out[stage_of(caller)] = out.get(stage_of(caller), 0.0) + float(edge[2])
            continue
        out[stage] = out.get(stage, 0.0) + float(tottime)
        if stage == "other" and os.environ.get("STAGES_DEBUG") and tottime > 0.02:
            print(f"other: {tottime:.2f}s {func}", file=sys.stderr)
    return out


async def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="stages-"))
    server = localstack.start_redis(workdir)
    case = case_for(args.streams, quick=True, rate=args.rate)
    upstream = start_upstream(50.0, case)
    prefix = f"st{uuid.uuid4().hex[:6]}"
    worker_prof, gateway_prof = workdir / "worker.prof", workdir / "gateway.prof"
    worker = start_worker(server.url, prefix, upstream.base_url, args.streams + 8,
                          workdir / "worker.log", wrap=(PROFILED, str(worker_prof)),
                          env_extra=args.worker_env)
    gateway, url = start_gateway(server.url, prefix,
                                 wrap=(PROFILED, str(gateway_prof)),
                                 extra=tuple(args.gateway_args))
    turn = through_gateway(url)
    try:
        # One turn alone first: the worker's first request imports much of the SDK, which under
        # the profiler can stall its loop (and heartbeat) long enough for a worker_lost.
        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                await turn()
                break
        for child in (gateway, worker):
            child.send_signal(signal.SIGUSR1)  # count from here
        _samples, turns = await closed_loop(turn, args.streams, args.seconds,
                                           0.05 + case.tokens / case.rate)
    finally:
        await turn.close()  # type: ignore[attr-defined]
        # SIGINT: uvicorn re-raises the signal it caught after its shutdown, and cProfile
        # writes its file on the KeyboardInterrupt (a SIGTERM would kill it first).
        gateway.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGINT)
        gateway.wait(60)
        worker.wait(60)
        upstream.stop()
        server.stop()
    tokens = turns * case.tokens
    rows: list[list[object]] = []
    for process, profile, stages in (("worker", worker_prof, WORKER_STAGES),
                                     ("gateway", gateway_prof, GATEWAY_STAGES)):
        seconds = split(profile, stages)
        total = sum(seconds.values())
        for stage, spent in sorted(seconds.items(), key=lambda kv: -kv[1]):
            rows.append([process, stage, round(spent * 1e6 / tokens, 1),
                         f"{100 * spent / total:.0f}%"])
        rows.append([process, "total (under cProfile, CPU time)",
                     round(total * 1e6 / tokens, 1), "100%"])
    print(render(
        f"CPU per streamed token by stage ({args.streams} streams x 30 tokens at "
        f"{args.rate:.0f}/s, {turns} turns, {tokens} tokens; under cProfile, CPU time)",
        ["process", "stage", "CPU us/token", "share"], rows,
    ))
    print(f"load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--gateway-args", nargs="*", default=[],
                        help="extra arguments of bench/gateway_server.py (e.g. --loop uvloop)")
    parser.add_argument("--worker-env", type=lambda s: dict(kv.split("=", 1)
                                                            for kv in s.split(",") if kv),
                        default={}, help="extra environment of the worker: K=V,K=V")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
