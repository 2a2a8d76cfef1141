"""Where the CPU of a streamed answer goes, per stage, in the inference worker and the gateway.

    python -m bench.stages [--streams 50] [--rate 10] [--seconds 15] [--before CHECKOUT]

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
    ROOT,
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


async def measure(args: argparse.Namespace, root: Path, gateway_args: tuple[str, ...],
                  server_url: str, upstream_url: str, workdir: Path,
                  tokens_per_answer: int, spread: float) -> dict[str, dict[str, float]]:
    """CPU us/token per stage of the worker and gateway of the tree ``root``."""
    prefix = f"st{uuid.uuid4().hex[:6]}"
    worker_prof, gateway_prof = workdir / f"{prefix}-worker.prof", workdir / f"{prefix}-gw.prof"
    worker = start_worker(server_url, prefix, upstream_url, args.streams + 8,
                          workdir / f"{prefix}-worker.log", wrap=(PROFILED, str(worker_prof)),
                          root=root)
    gateway, url = start_gateway(server_url, prefix, wrap=(PROFILED, str(gateway_prof)),
                                 extra=("--documents", "3", *gateway_args), root=root)
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
        failed = 0

        async def tolerant() -> float:
            # Under the profiler on a loaded machine a worker's heartbeat can lapse (its loop
            # stalled > 2 s) and the gateway ends that turn worker_lost: counted, not fatal.
            nonlocal failed
            try:
                return await turn()
            except RuntimeError:
                failed += 1
                return 0.0

        _samples, ran = await closed_loop(tolerant, args.streams, args.seconds, spread)
        turns = ran - failed
        if failed:
            print(f"{root}: {failed} of {ran} turns failed (not counted)", file=sys.stderr)
    finally:
        await turn.close()  # type: ignore[attr-defined]
        # SIGINT: uvicorn re-raises the signal it caught after its shutdown, and the profiler
        # writes its file on the KeyboardInterrupt (a SIGTERM would kill it first).
        gateway.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGINT)
        gateway.wait(60)
        worker.wait(60)
    tokens = turns * tokens_per_answer
    out: dict[str, dict[str, float]] = {}
    for process, profile, stages in (("worker", worker_prof, WORKER_STAGES),
                                     ("gateway", gateway_prof, GATEWAY_STAGES)):
        seconds = split(profile, stages)
        out[process] = {stage: spent * 1e6 / tokens for stage, spent in seconds.items()}
        out[process]["total (under cProfile, CPU time)"] = sum(seconds.values()) * 1e6 / tokens
    return out


async def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="stages-"))
    server = localstack.start_redis(workdir)
    case = case_for(args.streams, quick=True, rate=args.rate)
    upstream = start_upstream(50.0, case)
    spread = 0.05 + case.tokens / case.rate
    trees: list[tuple[str, Path, tuple[str, ...]]] = [("this tree", ROOT, ())]
    if args.before is not None:  # its gateway as that tree ships it (uvloop since 2026-12)
        trees.insert(0, ("before", args.before, ()))
    figures: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for name, root, gateway_args in trees:
            figures[name] = await measure(args, root, gateway_args, server.url,
                                          upstream.base_url, workdir, case.tokens, spread)
    finally:
        upstream.stop()
        server.stop()
    rows: list[list[object]] = []
    for process, stages in (("worker", WORKER_STAGES), ("gateway", GATEWAY_STAGES)):
        for stage in [s for s, _ in stages] + [LOOP[0], "other",
                                               "total (under cProfile, CPU time)"]:
            cells = [round(figures[name][process].get(stage, 0.0), 1) for name, _r, _g in trees]
            ratio = ([f"{cells[1] / cells[0]:.2f}" if cells[0] else "-"]
                     if len(cells) == 2 else [])
            rows.append([process, stage, *cells, *ratio])
    print(render(
        f"CPU per streamed token by stage, us ({args.streams} streams x {case.tokens} tokens at "
        f"{args.rate:.0f}/s through a gateway and one worker, both under cProfile counting CPU "
        f"time)",
        ["process", "stage", *(name for name, _r, _g in trees),
         *(["after / before"] if len(trees) == 2 else [])], rows,
    ))
    print(f"load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. a worktree of main), measured first, "
                             "side by side")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
