"""The ``parley`` command's conventions, run as ``main([...])``: ``--version``, distinct exit codes
(usage error 2, unreachable service 3), ``feedback export`` as an evaluation set, and a doctor
that knows the local stack runs no Celery beat."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chat_gateway.feedback import FeedbackStore, Record
from parley.keys import Keys
from parley.settings import Settings
from parley_cli import doctor
from parley_cli.main import EXIT_UNREACHABLE, EXIT_USAGE, main


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("parley ") and out.split()[1][0].isdigit()


def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["ask"])  # the question is missing
    assert done.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as done:
        main(["nonsense"])
    assert done.value.code == EXIT_USAGE
    monkeypatch.setenv("PARLEY_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    assert main(["ingest", str(tmp_path / "missing.pdf")]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["ingest", str(tmp_path / "empty"), "--json"]) == EXIT_USAGE


def test_an_unreachable_service_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .parley/stack.env here
    monkeypatch.setenv("PARLEY_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    assert main(["status", "--json"]) == EXIT_UNREACHABLE
    assert "cannot reach" in capsys.readouterr().err
    assert main(["feedback", "export", "--json"]) == EXIT_UNREACHABLE
    monkeypatch.setenv("PARLEY_GATEWAY_PORT", str(closed_port()))
    assert main(["ask", "anything?", "--json"]) == EXIT_UNREACHABLE


def test_feedback_export_writes_an_evaluation_set(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"fb{uuid.uuid4().hex[:8]}"
    sources = ({"n": 1, "document": "plant.pdf", "document_id": "d1", "page": 2,
                "text": "The boiler runs at 84 bar.", "score": 0.9, "snippet": "The boiler"},)

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        feedback = FeedbackStore(client, keys=Keys(prefix))
        for i, (tenant, rating) in enumerate([("t1", "down"), ("t2", "up"), ("t1", "up")]):
            await feedback.save(Record(
                turn_id=f"{i:032x}", tenant=tenant, subject="local:" + tenant,
                rating=rating,  # type: ignore[arg-type]
                comment="wrong unit" if rating == "down" else None,
                question=f"question {i}", answer=f"answer {i} [1]", sources=sources,
                model="smollm2", conversation_id=None, face="websocket", created=1000.0 + i))
        await client.aclose()

    asyncio.run(store())
    monkeypatch.setenv("PARLEY_REDIS_URL", redis_url)
    monkeypatch.setenv("PARLEY_REDIS_PREFIX", prefix)
    assert main(["feedback", "export", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["question"] for line in lines] == ["question 0", "question 1", "question 2"]
    first = lines[0]
    assert {k: first[k] for k in ("answer", "reference", "rating", "comment", "model")} == {
        "answer": "answer 0 [1]", "reference": None, "rating": "down", "comment": "wrong unit",
        "model": "smollm2"}
    assert first["sources"] == [{"n": 1, "document": "plant.pdf", "document_id": "d1",
                                 "page": 2, "text": "The boiler runs at 84 bar."}]
    assert main(["feedback", "export", "--json", "--tenant", "t1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["feedback", "export"]) == 0
    table = capsys.readouterr().out
    assert "3 ratings: 2 up, 1 down" in table and "wrong unit" in table


async def test_doctor_knows_the_local_stack_runs_no_beat(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(redis_url=redis_url, redis_prefix=f"dr{uuid.uuid4().hex[:8]}")
    assert (await doctor.check_maintenance(settings)).outcome is doctor.Outcome.WARN
    (tmp_path / ".parley").mkdir()
    env = tmp_path / ".parley" / "stack.env"
    env.write_text(f"PARLEY_BLOB_DIR=/x\nPARLEY_REDIS_URL={redis_url}\n")
    local = await doctor.check_maintenance(settings)
    assert local.outcome is doctor.Outcome.OK and "local stack" in local.detail
    # `parley up` under PARLEY_REDIS_URL writes no Redis URL: the environment's is the stack's.
    env.write_text("PARLEY_BLOB_DIR=/x\n")
    assert (await doctor.check_maintenance(settings)).outcome is doctor.Outcome.OK
    # A stack file naming another Redis: these settings are not the local stack's.
    env.write_text("PARLEY_REDIS_URL=redis://elsewhere:6379/0\n")
    assert (await doctor.check_maintenance(settings)).outcome is doctor.Outcome.WARN
