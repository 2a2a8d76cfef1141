"""Time to first token added by Parley's queue + inference worker (+ gateway) over calling the
same upstream model directly, at 1 and 200 concurrent streams.

    python -m bench.ttft [--concurrency 1,200] [--rate 10] [--spare 0.25] [--workers 1] [--quick]

The upstream is ``tests.peers.openai_chat`` in its own process: an OpenAI-compatible endpoint
that answers every request after a fixed delay and then streams at a fixed rate, so the model's
own speed is out of the measure. Each client runs turns back to back (closed loop), reads every
answer to its end, and records the time from starting a turn to receiving its first token. With
200 clients, 200 streams are open at any time (answers of 30 tokens at ``--rate`` tokens/s,
default 10: ~2,000 tokens/s in flight), so each first token is measured while 199 other answers
stream. One client gets short answers (8 tokens at 200/s) so that enough turns fit in the run.
``worker CPU us/token`` is the worker processes' CPU time per token streamed (including each
turn's fixed cost): one worker process saturates at about 1e6 / that many tokens/s, and past
that point the queue, not the plumbing, sets the latency (``--workers`` adds processes).
``gateway CPU us/token``: the same for the gateway process of a ``gateway + worker`` path (its
ask path, relay and websocket frames).

* ``direct``: the official ``openai`` client streaming from the upstream;
* ``worker``: what the gateway does after retrieval - write the ``sources`` event, publish the
  ChatTurn on the chat queue (Redis Streams) - then tail the turn's stream (XREAD) for the first
  ``token``; ``python -m inference_worker`` (openai-compatible backend) calls the upstream and
  writes the tokens. Its slots (``PARLEY_QUEUES__CHAT__CONCURRENCY``) are the client count plus
  ``--spare`` (25 %), as a deployment is sized;
* ``worker, no spare slot`` (several clients only): the same with exactly one slot per client,
  so every new turn waits for the slot of the client's previous turn (its ack): what a fleet
  running at its limit adds;
* ``gateway + worker``: the whole path as a portal or SDK client sees it: ``ask`` over a kept
  websocket to a real gateway process (``bench/gateway_server.py``: auth, session, retrieval
  whose embedder and store are stand-ins returning three fixed chunks, the served-map read,
  prompt, metadata + ``sources`` write, publish, relay), in front of the spare-slot fleet.

A second table splits each worker path's time to first token (from the final event's timings):
publish + queue wait, the worker until the model's first token (the upstream's delay is in it),
and the rest (the ``sources`` write, the outbox flush, the client's read). A third table splits
each gateway path's first token stage by stage, from the client's ask to its read of the first
token frame (:data:`FIRST_TOKEN_STAGES`; ``bench/probe.py`` times the stages inside the gateway
and worker processes of either tree; ``--no-split`` runs them without it). ``machine CPU %`` is
the whole machine's busy share while the path ran (100 = both cores saturated).

``added`` = the path's percentile minus direct's at the same concurrency. Goal (issue 3): added
<= 5 ms p50 and <= 20 ms p99. Every process (upstream, Redis, worker, clients) shares this
machine's cores, so at 200 streams the figures include queueing for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from websockets.asyncio.client import ClientConnection, connect

from bench.table import render
from parley.broker.redis import RedisBroker
from parley.contracts import TURN_HEADER, ChatMessage, ChatTurn, dump
from parley.ids import ConversationId, TenantId, new_turn_id
from parley.turnstream import TurnWriter
from parley_cli import localstack
from tests.fixtures.turns import tail

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "before"  # the fleet (and gateway path) of --before's tree
GATEWAY_TOKEN = "bench-token"  # bench/gateway_server.py's
QUEUE = "parley-chat"
MESSAGES = [ChatMessage(role="system", content="Answer from the sources; cite them as [n]."),
            ChatMessage(role="user", content="How did revenue change in the third quarter?")]
PARAMS: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": MESSAGES[0].content},
    {"role": "user", "content": MESSAGES[1].content},
]


@dataclass(frozen=True)
class Case:
    clients: int
    tokens: int  # per answer
    rate: float  # tokens/s of each answer
    seconds: float  # per path and round (two rounds, the paths interleaved)


def case_for(clients: int, quick: bool, rate: float) -> Case:
    if clients == 1:
        return Case(1, tokens=8, rate=200.0, seconds=4 if quick else 15)
    # Long enough for the ramp (one answer) to be a small part of the run.
    seconds = max(8.0 if quick else 20.0, 3 * (0.05 + 30 / rate))
    return Case(clients, tokens=30, rate=rate, seconds=seconds)


@dataclass(frozen=True)
class Upstream:
    process: subprocess.Popen[str]
    base_url: str

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_upstream(first_token_ms: float, case: Case) -> Upstream:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.openai_chat", "--port", "0",
         "--tokens", str(case.tokens), "--tokens-per-second", str(case.rate),
         "--first-token-delay", str(first_token_ms / 1000)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    return Upstream(process, process.stdout.readline().strip())


def start_worker(redis_url: str, prefix: str, upstream: str, concurrency: int,
                 log: Path, *, wrap: tuple[str, ...] = (),
                 env_extra: dict[str, str] | None = None,
                 root: Path = ROOT) -> subprocess.Popen[bytes]:
    """``python -m inference_worker`` of the tree ``root``, run under ``wrap`` (e.g.
    ``bench/profiled.py FILE``)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_REDIS_PREFIX": prefix,
        "PARLEY_CHAT_BACKEND": "openai-compatible",
        "PARLEY_CHAT_BASE_URL": upstream,
        "PARLEY_CHAT_MODEL": "peer-model",
        "PARLEY_QUEUES__CHAT__CONCURRENCY": str(concurrency),
        # Every answer streams from the upstream: no extractive answer, no "not in the
        # documents" answer made without the model (the bench's sources hold no answer).
        "PARLEY_ANSWER_NOT_FOUND_GUARD": "false",
        "PARLEY_LOG_LEVEL": "WARNING",
        **(env_extra or {}),
    }
    return subprocess.Popen([sys.executable, *wrap, "-m", "inference_worker"], cwd=root, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


# one turn per path: returns seconds to the first token ---------------------------------------
TurnFn = Callable[[], Coroutine[Any, Any, float]]


def direct(client: AsyncOpenAI) -> TurnFn:
    async def turn() -> float:
        started = time.perf_counter()
        first = None
        stream = await client.chat.completions.create(
            model="peer-model", messages=PARAMS,
            max_tokens=64, temperature=0.2, stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        assert first is not None
        return first

    return turn


@dataclass
class Breakdown:
    """Where a worker-path turn's first token spent its time (ms, one entry per turn): before
    the worker received it (publish, queue), in the worker until the model's first token
    (includes the upstream's own delay), and the rest (the ``sources`` write before publishing,
    the outbox flush, the client's XREAD wake-up). ``turns``: a gateway path's turns as the
    client saw them (turn id, unix time of the ask sent and of the first token received), joined
    with the probes' stages (``bench/probe.py``)."""

    queue: list[float]
    worker: list[float]
    delivery: list[float]
    turns: list[tuple[str, float, float]] = field(default_factory=list)


def through_worker(
    redis: aioredis.Redis, broker: RedisBroker, prefix: str, breakdown: Breakdown | None = None
) -> TurnFn:
    async def turn() -> float:
        started = time.perf_counter()
        turn_id = new_turn_id()
        writer = TurnWriter(redis, turn_id, prefix=prefix, ttl=600)
        await writer.emit("sources", {"sources": []})
        chat = ChatTurn(turn_id=turn_id, tenant=TenantId("bench"),
                        conversation_id=ConversationId("bench"), messages=MESSAGES,
                        max_tokens=64, enqueued_at=time.time(), deadline=time.time() + 120,
                        answer_mode="generative")
        await broker.publish(QUEUE, dump(chat), {TURN_HEADER: turn_id})
        first = None
        async for event in tail(redis, turn_id, prefix=prefix, block=1.0):
            if first is None and event.kind == "token":
                first = time.perf_counter() - started
            if event.kind in {"error", "cancelled"}:
                raise RuntimeError(f"turn ended with {event.kind}: {dict(event.data)}")
            if event.kind == "final" and breakdown is not None and first is not None:
                timings = event.data["timings"]
                queue = float(timings["queue_ms"] or 0.0)
                breakdown.queue.append(queue)
                breakdown.worker.append(float(timings["ttft_ms"]))
                breakdown.delivery.append(first * 1000 - queue - float(timings["ttft_ms"]))
        assert first is not None
        return first

    return turn


def through_gateway(url: str, breakdown: Breakdown | None = None) -> TurnFn:
    """A turn as a portal or SDK client sees it: ``ask`` over a websocket to a real gateway
    process (its retrieval returns fixed chunks), first ``token`` frame, then to ``final``.
    Connections are kept open and reused across turns (one per client in flight)."""
    idle: list[ClientConnection] = []

    async def turn() -> float:
        if idle:
            ws = idle.pop()
        else:
            ws = await connect(url, compression=None, max_size=2**22)
            while json.loads(await ws.recv())["type"] != "ready":
                pass
        started, asked = time.perf_counter(), time.time()
        await ws.send('{"type":"ask","question":"How did revenue change in the third quarter?"}')
        first = None
        turn_id = ""
        while True:
            frame = json.loads(await ws.recv())
            kind = frame["type"]
            if kind == "token" and first is None:
                first = time.perf_counter() - started
                if breakdown is not None:
                    breakdown.turns.append((turn_id, asked, time.time()))
            elif kind == "turn":
                turn_id = frame["turn_id"]
            elif kind in {"error", "cancelled"}:
                raise RuntimeError(f"turn ended with {kind}: {frame}")
            elif kind == "final":
                if breakdown is not None and first is not None:
                    timings = frame["timings"]
                    queue = float(timings["queue_ms"] or 0.0)
                    breakdown.queue.append(queue)
                    breakdown.worker.append(float(timings["ttft_ms"]))
                    breakdown.delivery.append(first * 1000 - queue - float(timings["ttft_ms"]))
                break
        idle.append(ws)
        assert first is not None
        return first

    async def close() -> None:
        for ws in idle:
            await ws.close()

    turn.close = close  # type: ignore[attr-defined]
    return turn


PROBE = ROOT / "bench" / "probe.py"
# The first token's way through the gateway path, stage by stage: (from, to, what), between the
# client's times (``asked``, ``first``) and the probes' (bench/probe.py).
FIRST_TOKEN_STAGES = (
    ("asked", "ask", "client -> gateway: the ask read (frame, parse, task)"),
    ("ask", "retrieved", "gateway: retrieval (inert embedder and store; the served map)"),
    ("retrieved", "publish", "gateway: prompt, turn, until its pipeline is sent"),
    ("publish", "received", "pipeline -> Redis -> the worker's receive returns the turn"),
    ("received", "handling", "worker: the handler starts on it"),
    ("handling", "request", "worker: until its upstream request starts (before: the state read)"),
    ("request", "token", "upstream: request to first token in the outbox (its delay included)"),
    ("token", "flush", "worker: the outbox's flush starts"),
    ("flush", "read", "flush -> Redis -> the gateway's tailer hands it out"),
    ("read", "woke", "gateway: the relay wakes, builds the frame"),
    ("woke", "sent", "gateway: the frame written"),
    ("sent", "first", "gateway -> client: the frame read"),
    ("asked", "first", "total: time to first token"),
    ("publish", "queued", "(beside the way) the ask's pipeline answered"),
    ("handling", "state", "(beside the way, before: on it) the turn's state read"),
    ("flush", "flushed", "(beside the way) the flush answered by Redis"),
)


def first_token_split(
    breakdown: Breakdown, probes: list[Path], windows: list[tuple[float, float]]
) -> dict[str, list[float]]:
    """Per stage of :data:`FIRST_TOKEN_STAGES`, the ms each recorded turn of a gateway path
    (asked within one of ``windows``) spent in it; a stage is missing for a turn whose probe
    lines (``probes``: JSON lines of bench/probe.py) lack either end."""
    stages: dict[str, dict[str, float]] = {}
    for path in probes:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                stages.setdefault(record.pop("turn"), {}).update(record)
    split: dict[str, list[float]] = {what: [] for _a, _b, what in FIRST_TOKEN_STAGES}
    for turn_id, asked, first in breakdown.turns:
        if not any(lo <= asked < hi for lo, hi in windows):
            continue
        times = {**stages.get(turn_id, {}), "asked": asked, "first": first}
        for a, b, what in FIRST_TOKEN_STAGES:
            if a in times and b in times:
                split[what].append((times[b] - times[a]) * 1000)
    return split


def start_gateway(redis_url: str, prefix: str, *, wrap: tuple[str, ...] = (),
                  extra: tuple[str, ...] = ("--documents", "3"),
                  root: Path = ROOT) -> tuple[subprocess.Popen[str], str]:
    """bench/gateway_server.py of the tree ``root`` on a free port, retrieval returning the
    fixed chunks ``extra`` asks for (default three one-line ones), run under ``wrap``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, *wrap, str(root / "bench" / "gateway_server.py"),
         "--redis-url", redis_url, "--prefix", prefix, "--port", str(port), *extra],
        cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "READY":
        raise RuntimeError("the gateway did not start")
    return process, f"ws://127.0.0.1:{port}/ws?token={GATEWAY_TOKEN}"


async def closed_loop(
    turn: TurnFn, clients: int, seconds: float, spread: float,
    steady_from: list[float] | None = None,
) -> tuple[list[float], int]:
    """``clients`` concurrent loops of turns for ``seconds``. Client ``i`` starts ``i / clients``
    of ``spread`` (one answer's duration) late, so turns start evenly over time instead of in
    synchronised bursts; only turns started after that ramp, when all ``clients`` streams are
    in flight, are recorded. A short warm-up (connections) is not recorded either. Returns the
    recorded samples and the number of turns run; appends the unix time the recorded turns
    start from to ``steady_from``."""
    samples: list[float] = []
    ran = 0
    await asyncio.gather(*(turn() for _ in range(min(clients, 20))))
    start = time.perf_counter()
    steady, end = start + spread, start + seconds
    if steady_from is not None:
        steady_from.append(time.time() + spread)

    async def client(i: int) -> None:
        nonlocal ran
        await asyncio.sleep(spread * i / clients)
        while (now := time.perf_counter()) < end:
            took = await turn()
            ran += 1
            if now >= steady:
                samples.append(took)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return samples, ran + min(clients, 20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a child process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat, in clock ticks."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_busy(since: tuple[int, int]) -> float:
    """Percent of all cores busy since ``since`` (100 = every core saturated)."""
    busy, total = machine_jiffies()
    return 100.0 * (busy - since[0]) / max(1, total - since[1])


def pct_ms(values: list[float], q: float, digits: int = 1) -> str:
    """A percentile of values already in ms, rounded for a table cell."""
    return f"{pct(values, q) / 1000:.{digits}f}" if values else "-"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="ttft-"))
    server = localstack.start_redis(workdir)
    rows: list[list[object]] = []
    split: list[list[object]] = []
    stage_rows: dict[str, list[object]] = {}
    stage_heads: dict[str, None] = {}
    try:
        # Every client tails its turn with a blocking XREAD: one connection each.
        redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            server.url, max_connections=max(args.concurrency) * 2 + 16))
        for clients in args.concurrency:
            case = case_for(clients, args.quick, args.rate)
            upstream = start_upstream(args.first_token_ms, case)
            spread = args.first_token_ms / 1000 + case.tokens / case.rate
            # Worker fleets, each on its own queue prefix: slots (turns the fleet takes at once)
            # with some to spare, as a deployment is sized; and, with several clients, exactly
            # as many slots as streams, where a new turn waits for the previous one's slot.
            fleets = {"worker": math.ceil(clients * (1 + args.spare))}
            if clients > 1 and not args.gateway_only:
                fleets["worker, no spare slot"] = clients
            trees = {"worker": ROOT}
            if args.before is not None:
                fleets[BEFORE] = fleets["worker"]
                trees[BEFORE] = args.before
            started: dict[str, tuple[str, list[subprocess.Popen[bytes]]]] = {}
            for name, slots in fleets.items():
                prefix = f"ttft{uuid.uuid4().hex[:6]}"
                started[name] = (prefix, [
                    start_worker(server.url, prefix, upstream.base_url,
                                 -(-slots // args.workers),
                                 workdir / f"worker-{clients}-{prefix}-{i}.log",
                                 root=trees.get(name, ROOT),
                                 wrap=() if args.no_split else (
                                     str(PROBE), str(workdir / f"probe-{prefix}-{i}.jsonl"),
                                     "worker"))
                    for i in range(args.workers)
                ])
            openai = AsyncOpenAI(base_url=upstream.base_url, api_key="unused", max_retries=0)
            paths: dict[str, TurnFn] = {"direct": direct(openai)}
            parts: dict[str, Breakdown] = {}
            for name, (prefix, _) in started.items():
                if args.gateway_only or name == BEFORE:
                    continue
                parts[name] = Breakdown([], [], [])
                paths[name] = through_worker(redis, RedisBroker(redis, prefix=prefix), prefix,
                                             parts[name])
            # The whole path: a gateway process in front of the spare-slot fleet (and, with
            # --before, the same from the other tree, its gateway as that tree ships it).
            gateways: list[tuple[subprocess.Popen[str], str]] = []
            probes: dict[str, list[Path]] = {}
            gateway_of: dict[str, subprocess.Popen[str]] = {}
            sources = (("--documents", "3") if not args.source_words else
                       ("--documents", "8", "--words", str(args.source_words)))
            for name, fleet_name, root, extra in (
                ("gateway + worker", "worker", ROOT, sources),
                (f"gateway + worker, {BEFORE}", BEFORE, args.before, sources),
            ):
                if root is None:
                    continue
                probe = workdir / f"probe-{clients}-{len(gateways)}.jsonl"
                gateway, gateway_url = start_gateway(
                    server.url, started[fleet_name][0], root=root, extra=extra,
                    wrap=() if args.no_split else (str(PROBE), str(probe), "gateway"))
                probes[name] = [probe, *(workdir / f"probe-{started[fleet_name][0]}-{i}.jsonl"
                                         for i in range(args.workers))]
                gateways.append((gateway, name))
                gateway_of[name] = gateway
                parts[name] = Breakdown([], [], [])
                paths[name] = through_gateway(gateway_url, parts[name])
                fleets[name] = fleets["worker"]
                started[name] = started[fleet_name]
            results: dict[str, list[float]] = {}
            busy: dict[str, list[float]] = {}
            cpu_used: dict[str, float] = {}
            gateway_cpu: dict[str, float] = {}
            turns_run: dict[str, int] = {}
            windows: dict[str, list[tuple[float, float]]] = {}
            try:
                # Interleave the paths so drift on a shared machine hits all alike.
                for _ in range(2):
                    for name, fn in paths.items():
                        fleet = started[name][1] if name in started else []
                        cpu = sum(cpu_seconds(w.pid) for w in fleet)
                        gw = gateway_of.get(name)
                        gw_cpu = cpu_seconds(gw.pid) if gw is not None else 0.0
                        machine = machine_jiffies()
                        steady: list[float] = []
                        samples, ran = await closed_loop(fn, clients, case.seconds, spread,
                                                         steady)
                        windows.setdefault(name, []).append((steady[0], time.time()))
                        busy.setdefault(name, []).append(machine_busy(machine))
                        results.setdefault(name, []).extend(samples)
                        cpu_used[name] = cpu_used.get(name, 0.0) + sum(
                            cpu_seconds(w.pid) for w in fleet) - cpu
                        if gw is not None:
                            gateway_cpu[name] = gateway_cpu.get(name, 0.0) + cpu_seconds(
                                gw.pid) - gw_cpu
                        turns_run[name] = turns_run.get(name, 0) + ran
            finally:
                await openai.close()
                for gateway, name in gateways:
                    await paths[name].close()  # type: ignore[attr-defined]
                    gateway.terminate()
                    gateway.wait(30)
                for fleet in {id(f): f for _p, f in started.values()}.values():
                    for w in fleet:
                        w.terminate()
                    for w in fleet:
                        w.wait(30)
                upstream.stop()
            base = results["direct"]
            for name, samples in results.items():
                p50, p99 = pct(samples, 0.50), pct(samples, 0.99)
                added50 = p50 - pct(base, 0.50)
                added99 = p99 - pct(base, 0.99)
                worker = name != "direct"
                rows.append([
                    clients, f"{case.tokens}@{case.rate:.0f}/s", name,
                    fleets.get(name, "-"), len(samples),
                    round(statistics.fmean(samples) * 1000, 2),
                    round(p50, 2), round(p99, 2),
                    round(added50, 2) if worker else "-",
                    round(added99, 2) if worker else "-",
                    ("yes" if added50 <= 5 and added99 <= 20 else "no") if worker else "-",
                    round(cpu_used[name] * 1e6 / (turns_run[name] * case.tokens), 1)
                    if worker else "-",
                    round(gateway_cpu[name] * 1e6 / (turns_run[name] * case.tokens), 1)
                    if name in gateway_cpu else "-",
                    round(statistics.fmean(busy[name])),
                ])
            for name in probes:
                for what, values in first_token_split(parts[name], probes[name],
                                                      windows[name]).items():
                    row = stage_rows.setdefault(f"{clients} {what}", [clients, what])
                    row.append(f"{pct_ms(values, 0.5, 2)} / {pct_ms(values, 0.99, 2)}")
                    stage_heads.setdefault(name, None)
            if probes and not args.no_split:
                direct_samples = results["direct"]
                cell = f"{pct(direct_samples, 0.5):.2f} / {pct(direct_samples, 0.99):.2f}"
                stage_rows[f"direct {clients}"] = [
                    clients, "(direct: the client calls the upstream itself)",
                    *(cell for _ in probes)]
            for name, breakdown in parts.items():
                split.append([
                    clients, f"{case.tokens}@{case.rate:.0f}/s", name,
                    *(f"{pct_ms(values, 0.5)} / {pct_ms(values, 0.99)}"
                      for values in (breakdown.queue, breakdown.worker, breakdown.delivery)),
                ])
        await redis.aclose()
    finally:
        server.stop()
    print(render(
        f"Time to first token (upstream: first token after {args.first_token_ms:.0f} ms; "
        f"{args.workers} worker process{'es' if args.workers > 1 else ''} per fleet)",
        ["streams", "answers", "path", "slots", "turns", "mean ms", "p50 ms", "p99 ms",
         "added p50", "added p99", "goal (<=5/<=20)", "worker CPU us/token",
         "gateway CPU us/token", "machine CPU %"],
        rows,
    ))
    print(render(
        "Worker paths, where the time to first token goes (ms, p50 / p99 over all their turns)",
        ["streams", "answers", "path", "publish + queue", "worker to model's first token",
         "the rest (sources, publish, flush, relay, client read)"],
        split,
    ))
    if stage_rows and not args.no_split:
        print(render(
            "Gateway paths, the first token stage by stage (ms, p50 / p99 over the recorded "
            "turns; bench/probe.py; the stages' p50s do not add up to the total's)",
            ["streams", "stage", *stage_heads],
            list(stage_rows.values()),
        ))
    print(f"load average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores: other work on the machine inflates every column")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,200",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--quick", action="store_true", help="fewer turns (a smoke run)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="tokens/s of each answer when several clients run")
    parser.add_argument("--spare", type=float, default=0.25,
                        help="worker slots to spare, as a fraction of the streams (0.25: 250 "
                             "slots for 200 streams)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. a worktree of main): its worker and gateway "
                             "run as the path 'gateway + worker, before', side by side")
    parser.add_argument("--gateway-only", action="store_true",
                        help="only direct and the gateway paths (lighter on a shared machine)")
    parser.add_argument("--source-words", type=int, default=0,
                        help="the gateway paths' retrieval returns 8 chunks of this many words "
                             "of filing-like text (the worker's not-found check reads them "
                             "while the model starts) instead of 3 one-line chunks; the "
                             "--before tree needs this tree's bench/gateway_server.py")
    parser.add_argument("--no-split", action="store_true",
                        help="no probes in the gateway and worker processes (bench/probe.py): "
                             "no table of the first token's stages")
    parser.add_argument("--workers", type=int, default=1,
                        help="inference worker processes (concurrency split between them)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
