"""``parley doctor`` against real servers (all good) and against broken settings (each problem
named, with the variable to fix, and a non-zero exit)."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from maintenance_worker import app as maintenance
from parley.broker.redis import RedisBroker
from parley.settings import Settings
from parley_cli import doctor
from parley_cli.main import main
from tests.peers.openai_chat import OpenAIChatPeer
from tests.pipeline import pipeline_settings


@pytest.fixture(scope="module")
def chat_peer() -> Iterator[OpenAIChatPeer]:
    peer = OpenAIChatPeer().start()
    yield peer
    peer.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_all_good_on_a_working_stack(
    redis_url: str, chroma_url: str, tmp_path: Path, chat_peer: OpenAIChatPeer
) -> None:
    (tmp_path / "blobs").mkdir()
    settings = pipeline_settings(
        redis_url, chroma_url, tmp_path / "blobs",
        chat_backend="openai-compatible", chat_base_url=chat_peer.base_url,
        stuck_after_seconds=1800,
    )
    await maintenance.run_sweep("expire", settings)
    checks = await doctor.diagnose(settings)
    out = io.StringIO()
    assert doctor.report(checks, out) == 0, out.getvalue()
    by_name = {c.name: c for c in checks}
    for name in ("redis", "chroma", "blobs", "embedder", "chat model", "maintenance",
                 "queue parley-ingest", "queue parley-embed", "queue parley-chat"):
        assert by_name[name].outcome is doctor.Outcome.OK, by_name[name]
    assert "384 dimensions" in by_name["embedder"].detail
    assert chat_peer.requests  # the endpoint was really asked for a token

    # A dead letter is worth a warning (not a failure), with the command to see it.
    client = aioredis.Redis.from_url(redis_url)
    broker = RedisBroker(client, prefix=settings.redis_prefix)
    await broker.publish(settings.queues.chat.name, b"{}")
    [message] = await broker.receive(settings.queues.chat.name, max_messages=1, wait=1)
    await broker.dead_letter(message, reason="bad_turn: not a turn")
    await broker.close()
    await client.aclose()
    chat = next(c for c in await doctor.diagnose(settings) if c.name == "queue parley-chat")
    assert chat.outcome is doctor.Outcome.WARN
    assert "1 dead letters" in chat.detail and "parley dlq list" in (chat.fix or "")


def test_broken_dependencies_are_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "PARLEY_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
        "PARLEY_CHROMA_URL": f"http://127.0.0.1:{closed_port()}",
        "PARLEY_BLOB_DIR": str(tmp_path / "blobs"),
        "PARLEY_CHAT_BACKEND": "openai-compatible",
        "PARLEY_CHAT_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "PARLEY_QUEUES__EMBED__BACKEND": "servicebus",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor", "--timeout", "8"]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith("FAIL")]
    failed = {line.split()[1] for line in lines}
    assert {"config", "redis", "chroma", "queue", "chat"} <= failed, out
    for variable in ("PARLEY_SERVICEBUS_NAMESPACE", "PARLEY_REDIS_URL", "PARLEY_CHROMA_URL",
                     "PARLEY_CHAT_BASE_URL"):
        assert variable in out, (variable, out)
    assert "problems" in out.splitlines()[-1]


def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARLEY_CHUNK_TOKENS", "lots")
    assert main(["doctor"]) == 2
    assert "PARLEY_CHUNK_TOKENS" in capsys.readouterr().err


def test_configuration_checks_are_pure() -> None:
    good = Settings(stuck_after_seconds=1800)  # loopback bind, the built-in token: fine locally
    assert [c.outcome for c in doctor.configuration(good)] == [doctor.Outcome.OK]
    bad = Settings(chunk_tokens=50, chunk_overlap_tokens=50, embedder="azure-openai",
                   stuck_after_seconds=30)
    problems = doctor.configuration(bad)
    fixes = " ".join(c.fix or "" for c in problems)
    assert "PARLEY_CHUNK_OVERLAP_TOKENS" in fixes and "PARLEY_AZURE_OPENAI_ENDPOINT" in fixes
    assert "PARLEY_STUCK_AFTER_SECONDS" in fixes


def test_sign_in_settings_that_would_leave_the_gateway_open_or_shut_fail() -> None:
    tenant, client = "11111111-2222-3333-4444-555555555555", "99999999-8888-7777-6666-5555"
    cases = {
        # Entra ID half configured (the gateway refuses to start).
        "PARLEY_ENTRA_TENANT_ID and PARLEY_ENTRA_AUDIENCE go together": Settings(
            gateway_host="0.0.0.0", local_tokens="mine:alpha", entra_tenant_id=tenant
        ),
        # The built-in token configured on a public bind (the gateway ignores it).
        "PARLEY_ALLOW_DEV_TOKEN": Settings(
            gateway_host="0.0.0.0", local_tokens="dev-token:default,mine:alpha"
        ),
        # Nothing left to sign in with.
        "nobody can sign in": Settings(gateway_host="0.0.0.0", local_tokens=""),
    }
    for expected, settings in cases.items():
        found = [c for c in doctor.configuration(settings) if c.name == "auth"]
        assert [c.outcome for c in found] == [doctor.Outcome.FAIL], (expected, found)
        assert expected in f"{found[0].detail} {found[0].fix}", found
    entra = Settings(gateway_host="0.0.0.0", local_tokens="", entra_tenant_id=tenant,
                     entra_audience=f"api://{client}", entra_client_id=client)
    assert [c.outcome for c in doctor.configuration(entra)] == [doctor.Outcome.OK]
    flagged = Settings(gateway_host="0.0.0.0", allow_dev_token=True)
    assert [c.outcome for c in doctor.configuration(flagged)] == [doctor.Outcome.OK]
