"""The local servers ``parley up`` and the test suite start, as real processes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.errors import ParleyError
from parley_cli import localstack


@pytest.fixture
def taken() -> Iterator[int]:
    """A port bound (not listening) by another socket, as an outgoing connection's ephemeral
    port is: nothing answers on it, and a server cannot bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def picks(monkeypatch: pytest.MonkeyPatch, first: int) -> list[int]:
    """Make ``free_port`` answer ``first`` once, then free ports; returns what it answered."""
    answered: list[int] = []
    real = localstack.free_port

    def free_port() -> int:
        answered.append(first if not answered else real())
        return answered[-1]

    monkeypatch.setattr(localstack, "free_port", free_port)
    return answered


def test_a_port_taken_after_it_was_chosen_is_replaced_by_another(
    tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = picks(monkeypatch, taken)
    server = localstack.start_redis(tmp_path)
    try:
        assert answered[0] == taken and len(answered) == 2
        assert server.port == answered[1] != taken
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.process.poll() is None
    finally:
        server.stop()
    assert "in use" in (tmp_path / "redis.log").read_text().lower()


def test_a_port_asked_for_and_taken_fails_saying_so(tmp_path: Path, taken: int) -> None:
    with pytest.raises(ParleyError) as failed:
        localstack.start_redis(tmp_path, port=taken)
    assert failed.value.reason == "server_start_failed"
    assert "redis exited with code" in str(failed.value)
    assert "in use" in str(failed.value).lower()
