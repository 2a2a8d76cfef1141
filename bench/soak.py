"""Soak: ingest documents while a random ingest worker, embed worker or Redis is SIGKILLed every
few seconds, side by side with a clean run of the same documents, and report what was lost,
duplicated or embedded more than once, and the time until every document was ready.

Both runs use the fault suite's stack (tests/faultstack.py): a private Redis with its
append-only file (as ``parley up`` runs it), a fresh Chroma server per run, and the two workers
as child processes; a killed worker is started again at once, as ``parley up`` or Kubernetes
would (their own restart is tested in tests/test_fault_recovery.py), under the same consumer
name (``PARLEY_CONSUMER_NAME`` per slot, as ``parley up`` gives), so it takes the messages its
predecessor held on its first receive (parley.broker.redis); the fused embedding graph is read
from its cache, not rebuilt. A killed Redis comes back on its port after a second, with its
data. Leases are the default (60 s): only a consumer without a heartbeat waits for them.

Run: python -m bench soak [--documents 100] [--every 10] [--seed 1] [--lease 60] [--logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import render  # noqa: E402
from parley.settings import QueueSettings  # noqa: E402
from parley_cli import localstack  # noqa: E402
from tests.faultstack import Outcome, corpus, fault_stack  # noqa: E402

VICTIMS = ("ingest_worker", "embed_worker", "redis")


async def run(files: dict[str, bytes], *, every: float | None, seed: int, timeout: float,
              lease: float, logs: Path | None) -> tuple[Outcome, float, list[str]]:
    """One run: (outcome, seconds from the first upload until all ready, kills made); the
    processes' logs copied to ``logs`` when given."""
    rng = random.Random(seed)
    kills: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak") as tmp:
        state = Path(tmp)
        chroma = localstack.start_chroma(state / "chroma-server")
        try:
            async with fault_stack(state, chroma.url, persist=True, lease=lease) as stack:
                # Start-up (model load) is not counted: both workers answer /readyz first.
                while not all(stack.ready(m) for m in ("ingest_worker", "embed_worker")):
                    await asyncio.sleep(0.2)
                started = time.monotonic()
                await stack.upload(files)
                waiting = asyncio.create_task(stack.wait_ready(timeout))
                while every is not None and not waiting.done():
                    done, _ = await asyncio.wait({waiting}, timeout=every)
                    if done:
                        break
                    victim = rng.choice(VICTIMS)
                    kills.append(victim)
                    if victim == "redis":
                        stack.redis_down(keep_data=True)
                        await asyncio.sleep(1.0)
                        stack.redis_up()
                    else:
                        stack.kill(victim)
                await waiting
                took = time.monotonic() - started
                outcome = await stack.outcome()
        finally:
            chroma.stop()
            if logs is not None:
                shutil.copytree(state / "logs", logs, dirs_exist_ok=True)
    return outcome, took, kills


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease", type=float, default=QueueSettings(name="x").lease_seconds,
                        help="ingest and embed leases, seconds (default: the settings' default)")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here (clean/, soak/)")
    args = parser.parse_args(argv)
    files = corpus(args.documents, seed=args.seed * 1000)
    logs: Path | None = args.logs
    clean, clean_s, _ = asyncio.run(run(files, every=None, seed=args.seed, timeout=1800,
                                        lease=args.lease, logs=logs and logs / "clean"))
    soak, soak_s, kills = asyncio.run(
        run(files, every=args.every, seed=args.seed, timeout=max(600.0, 10 * clean_s),
            lease=args.lease, logs=logs and logs / "soak"))
    killed = ", ".join(f"{v} x{kills.count(v)}" for v in VICTIMS if kills.count(v)) or "none"
    rows = [
        ["documents", clean.documents, soak.documents],
        ["ready", clean.ready, soak.ready],
        ["lost (not ready in the end; goal 0)", clean.lost, soak.lost],
        ["duplicated chunks (goal 0)", clean.duplicated, soak.duplicated],
        ["chunks stored", clean.chunks, soak.chunks],
        ["chunk embeddings computed", clean.embedded, soak.embedded],
        ["chunks embedded more than once", clean.embedded_again, soak.embedded_again],
        ["seconds until all ready", clean_s, soak_s],
        ["soak / clean time (goal <= 1.5)", 1.0, soak_s / clean_s],
    ]
    print(render(
        f"Soak: {args.documents} PDFs, a SIGKILL every {args.every:g} s ({killed}), "
        f"leases {args.lease:g} s",
        ["measure", "clean run", "with kills"], rows,
    ))


if __name__ == "__main__":
    main(sys.argv[1:])
