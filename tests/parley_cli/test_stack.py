"""``parley up`` as a user runs it: a real process starting real servers and workers, in a fresh
folder. The chat backend points at an address where nothing listens, so the inference worker
starts at once without loading the local model (its own tests cover that)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley_cli.localstack import free_port
from parley_cli.stack import consumer_name, port_problem, restart_delay


def env_for(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update({
        "PARLEY_GATEWAY_PORT": str(port),
        "PARLEY_CHAT_BACKEND": "openai-compatible",
        "PARLEY_CHAT_BASE_URL": "http://127.0.0.1:9/v1",
        "PARLEY_DRAIN_SECONDS": "3",
    })
    return env


class Up:
    """``parley up`` in ``folder``; its output lines are collected as they come."""

    def __init__(self, folder: Path, port: int, *options: str) -> None:
        self.folder = folder
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "parley_cli.main", "up", "--state", str(folder / "state"),
             *options],
            cwd=folder, env=env_for(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Stop it (a test failed midway): Ctrl-C first, so that it stops its servers and
        workers too; SIGKILL only if that does not end it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (our own folder's servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and ") Z " not in stat:  # zombies are gone already
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return ") Z " not in stat


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_port_problem_names_a_taken_port_and_a_free_one(listening: int) -> None:
    problem = port_problem("127.0.0.1", listening)
    assert problem is not None
    assert f"port {listening} on 127.0.0.1 is already in use (by another program)" in problem
    suggested = int(re.findall(r"PARLEY_GATEWAY_PORT=(\d+)", problem)[0])
    assert suggested != listening and port_problem("127.0.0.1", suggested) is None
    assert port_problem("127.0.0.1", free_port()) is None


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path, listening: int) -> None:
    up = Up(tmp_path, listening)
    try:
        code = up.finish(60)
    finally:
        up.kill()
    assert code == 1
    assert f"parley up: port {listening} on 127.0.0.1 is already in use" in up.output
    assert "starting redis" not in up.output
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_up_waits_for_the_gateway_then_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    up = Up(tmp_path, port)
    try:
        up.wait_for(r"^Parley is up", 180)
        # Only once the gateway answers: the portal and readiness are there already.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200 and b"Sign in to Parley" in response.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert response.status == 200
        assert up.wait_for(r"^Sign in with the token: ", 1).startswith(
            "Sign in with the token: dev-token")
        pids = [int(p) for p in re.findall(r"\(pid (\d+),", up.output)]
        assert len(pids) == 4
        # The state folder is not ./.parley: a command in another terminal, in another folder,
        # finds the stack through PARLEY_STATE, as the stack says.
        state = tmp_path / "state"
        assert up.wait_for(r"^Ingest from another terminal", 1) == (
            f"Ingest from another terminal with PARLEY_STATE={state}: "
            "parley ingest FILE... --wait")
        stack_env = dict(line.split("=", 1) for line in
                         (state / "stack.env").read_text().splitlines())
        found = subprocess.run(
            [sys.executable, "-c", "from parley.settings import Settings; "
             "s = Settings(); print(s.redis_url, s.chroma_url, s.gateway_port)"],
            cwd="/", env={**env_for(port), "PARLEY_STATE": str(state)}, capture_output=True,
            text=True, check=True, timeout=60,
        )
        assert found.stdout.split() == [stack_env["PARLEY_REDIS_URL"],
                                        stack_env["PARLEY_CHROMA_URL"], str(port)]
        servers = processes_mentioning(str(tmp_path / "state"))
        assert len(servers) >= 2  # redis (or valkey) and chroma
        up.process.send_signal(signal.SIGINT)
        assert up.finish(60) == 0
    finally:
        up.kill()
    assert up.lines[-1] == "stopped."
    assert [p for p in pids if pid_alive(p)] == []
    assert processes_mentioning(str(tmp_path / "state")) == []
    assert not (tmp_path / "state" / "stack.env").exists()


@pytest.mark.slow
def test_ctrl_c_while_starting_leaves_nothing_running(tmp_path: Path) -> None:
    up = Up(tmp_path, free_port())
    try:
        up.wait_for(r"^starting chroma", 60)
        time.sleep(0.5)  # chroma is starting (it takes seconds)
        up.process.send_signal(signal.SIGINT)
        assert up.finish(60) == 0
    finally:
        up.kill()
    assert up.lines[-1] == "stopped."
    assert "Parley is up" not in up.output
    assert processes_mentioning(str(tmp_path / "state")) == []


def test_restart_at_once_then_backoff_doubles_and_five_exits_in_a_minute_are_a_crash_loop(
) -> None:
    assert restart_delay([100.0], 100.0) == 0.0
    assert restart_delay([100.0, 101.0], 101.0) == 0.5
    assert restart_delay([100.0, 101.0, 103.0, 107.0], 107.0) == 2.0
    assert restart_delay([100.0, 101.0, 103.0, 107.0, 115.0], 115.0) is None
    # Exits older than the window are forgiven: a child that ran for a while starts afresh.
    assert restart_delay([10.0, 20.0, 30.0, 40.0, 200.0], 200.0) == 0.0


def test_each_worker_slot_keeps_one_consumer_name_of_its_own(tmp_path: Path) -> None:
    name = consumer_name(tmp_path / "state", "embed_worker")
    assert consumer_name(tmp_path / "state", "embed_worker") == name  # every restart
    assert consumer_name(tmp_path / "state", "ingest_worker") != name
    assert consumer_name(tmp_path / "other", "embed_worker") != name
