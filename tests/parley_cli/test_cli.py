"""The ``parley`` command as a user runs it (a subprocess with PARLEY_* in its environment)
against a running pipeline: ingest --wait, status --json, search --json, token, schemas."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.errors import ParleyError
from parley.settings import Settings
from parley_cli.main import _files
from tests.fixtures import documents
from tests.fixtures import documents as fx
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def pipeline(redis_url: str, chroma_url: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    async with running_pipeline(settings) as running:
        yield running


def env_of(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PARLEY_REDIS_URL": settings.redis_url,
        "PARLEY_CHROMA_URL": settings.chroma_url,
        "PARLEY_BLOB_DIR": str(settings.blob_dir),
        "PARLEY_REDIS_PREFIX": settings.redis_prefix,
        "PARLEY_CHUNK_TOKENS": str(settings.chunk_tokens),
        "PARLEY_CHUNK_OVERLAP_TOKENS": str(settings.chunk_overlap_tokens),
    }


async def parley(settings: Settings, *args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_cli.main",
        *args,
        cwd=cwd,
        env=env_of(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_ingest_wait_status_and_search(pipeline: Pipeline, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "plant.pdf").write_bytes(
        documents.text_pdf(["Intro page. " + documents.lorem(50), "The boiler runs at 84 bar."])
    )
    (folder / "sub" / "scan.pdf").write_bytes(documents.scanned_pdf())
    (folder / "ignored.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not a document
    tenant = pipeline.tenant

    code, out, err = await parley(
        pipeline.settings, "ingest", str(folder), "--tenant", tenant, "--wait"
    )
    assert code == 1, (out, err)  # one document failed: the exit code says so
    assert "ready" in out and "no readable text" in out.lower()  # OCR read the scan: nothing

    code, out, _ = await parley(pipeline.settings, "status", "--json", "--tenant", tenant)
    rows = {r["filename"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"plant.pdf", "scan.pdf"}
    assert rows["plant.pdf"]["stage"] == "ready" and rows["plant.pdf"]["pages_total"] == 2
    assert rows["scan.pdf"]["stage"] == "failed"
    assert rows["scan.pdf"]["reason"] == "no_text_layer"
    assert rows["scan.pdf"]["path"] == f"{tenant}/sub/scan.pdf"

    code, out, err = await parley(
        pipeline.settings, "search", "boiler pressure", "-k", "2", "--tenant", tenant, "--json"
    )
    hits = json.loads(out)
    assert code == 0 and 1 <= len(hits) <= 2
    assert err == ""  # no library's debug lines ("bm25s Building index from tokens")
    assert {"document", "page", "text", "score", "chunk_id"} <= set(hits[0])
    assert hits[0]["document"] == "plant.pdf" and hits[0]["page"] == 2
    assert hits[0]["location"] == "page 2"
    assert "84 bar" in hits[0]["text"]

    code, out, _ = await parley(pipeline.settings, "status", "--tenant", tenant)
    assert "plant.pdf" in out and "ready" in out

    # --json: the status records instead of progress bars; queued at once, or settled (--wait).
    (tmp_path / "valve.pdf").write_bytes(documents.text_pdf(["The valve opens at 12 bar."]))
    code, out, err = await parley(pipeline.settings, "ingest", str(tmp_path / "valve.pdf"),
                                  "--tenant", tenant, "--json", "--wait")
    [row] = json.loads(out)
    assert code == 0, err
    assert row["filename"] == "valve.pdf" and row["stage"] == "ready" and row["chunks"] >= 1
    code, out, err = await parley(pipeline.settings, "ingest", str(folder / "sub"),
                                  "--tenant", tenant, "--json", "--wait")
    assert code == 1 and json.loads(out)[0]["reason"] == "no_text_layer", (out, err)


async def test_search_of_an_empty_tenant_says_so(pipeline: Pipeline) -> None:
    code, out, _ = await parley(pipeline.settings, "search", "anything", "--tenant", "nobody")
    assert code == 0 and "no matches" in out


async def test_unreachable_redis_gives_an_actionable_error(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", blob_dir=tmp_path)
    code, _, err = await parley(settings, "status", cwd=tmp_path)
    assert code == 3  # a service cannot be reached (not a usage error: 2)
    assert "parley up" in err


async def test_token_and_schemas(tmp_path: Path) -> None:
    settings = Settings()
    code, out, _ = await parley(settings, "token", cwd=tmp_path)
    assert code == 0 and out.strip() == "dev-token"
    code, _, err = await parley(settings, "token", "--tenant", "nope", cwd=tmp_path)
    assert code == 1 and "PARLEY_LOCAL_TOKENS" in err
    code, out, _ = await parley(settings, "schemas", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert code == 0 and (tmp_path / "s" / "parley.ingest.v1.schema.json").exists()


def test_files_finds_documents_in_folders_by_their_bytes_and_rejects_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".git").mkdir()
    (tmp_path / "a" / "x.PDF").write_bytes(b"%PDF-1.7")
    (tmp_path / "a" / "b" / "y.docx").write_bytes(fx.docx(["Hello"]))
    (tmp_path / "a" / "z.txt").write_text("notes, plain text")
    (tmp_path / "a" / "scan").write_bytes(b"%PDF-1.4 no extension")  # the bytes decide
    (tmp_path / "a" / "photo.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not one
    (tmp_path / "a" / ".git" / "config").write_text("[core]")  # hidden: never uploaded
    found = _files([str(tmp_path / "a")])
    assert [(p.name, folder) for p, folder in found] == [
        ("y.docx", "b"),
        ("scan", ""),
        ("x.PDF", ""),
        ("z.txt", ""),
    ]
    assert _files([str(tmp_path / "a" / "photo.pdf")])  # named: uploaded, the worker decides
    with pytest.raises(ParleyError):
        _files([str(tmp_path / "missing.pdf")])


def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``parley schemas | head -0``: the reader is gone before the first write."""
    import subprocess

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "parley_cli.main", "schemas"], cwd=tmp_path,
            env=env_of(Settings()), stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141  # as a shell reports a command ended by SIGPIPE
