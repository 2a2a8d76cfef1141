"""Retrieval quality on ../shared/eval/sec10q-dev: source recall@5 and number coverage@5 (see
its README), Parley's extraction + chunking beside the seed's (pypdf +
RecursiveCharacterTextSplitter(1000, 10)), the same embedder (local all-MiniLM-L6-v2 int8) and
exact cosine search over the four filings' chunks in memory.

Parley's side uses the very functions the workers run (extract, chunk, embedding_text); the
search is exact (numpy) for both sides, so only extraction and chunking differ.

Run: python -m bench retrieval
"""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.table import render

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "sec10q-dev"
K = 5
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Passage:
    document: str
    text: str
    embed_text: str


def numbers(text: str) -> set[str]:
    """Numbers of at least two digits, without thousands separators or trailing dots."""
    found = {m.group().replace(",", "").rstrip(".") for m in NUMBER.finditer(text)}
    return {n for n in found if len(n.replace(".", "")) >= 2}


def parley_passages(pdfs: dict[str, bytes]) -> list[Passage]:
    from embed_worker.handler import embedding_text
    from ingest_worker.chunking import chunk
    from ingest_worker.extract.dispatch import extract
    from parley.contracts import ChunkBatch
    from parley.embedder.local import MiniLMTokenizer
    from parley.settings import Settings

    settings = Settings()
    tokenizer = MiniLMTokenizer()
    out = []
    for name, data in pdfs.items():
        extraction = extract(data, name, max_pages=5000, max_bytes=10**9)
        drafts = chunk(
            extraction.blocks,
            tokenizer=tokenizer,
            max_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        batch = ChunkBatch(
            tenant="t",
            document_id="d",
            version="v",
            filename=name,
            path=name,
            batch_index=0,
            batch_count=1,
            chunks=[],
        )
        out += [Passage(name, d.text, embedding_text(batch, d.text, d.heading)) for d in drafts]
    return out


def seed_passages(pdfs: dict[str, bytes]) -> list[Passage]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=10)
    out = []
    for name, data in pdfs.items():
        try:
            text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
        except Exception as exc:  # the seed has no fallback: a file it cannot read is lost
            print(f"seed: pypdf failed on {name}: {type(exc).__name__}", file=sys.stderr)
            continue
        out += [Passage(name, t, t) for t in splitter.split_text(text)]
    return out


async def evaluate(passages: list[Passage], questions: list[dict[str, str]]) -> tuple[float, float]:
    from parley.embedder.local import LocalEmbedder

    embedder = LocalEmbedder()
    try:
        matrix = np.asarray(
            await embedder.embed([p.embed_text for p in passages]), dtype=np.float32
        )
        queries = np.asarray(
            await embedder.embed([q["Question"] for q in questions]), dtype=np.float32
        )
    finally:
        await embedder.close()
    names = sorted({p.document for p in passages} | set(all_documents()))
    recall = coverage = 0.0
    counted = 0
    for question, vector in zip(questions, queries, strict=True):
        top = np.argsort(-(matrix @ vector))[:K]
        hits = [passages[i] for i in top]
        wanted = [n for n in names if fnmatch.fnmatch(n, question["Source Docs"])]
        recall += all(any(h.document == w for h in hits) for w in wanted)
        answer_numbers = numbers(question["Answer"].split("SOURCE(S):")[0])
        answer_numbers -= {"10", "2022", "2023"}  # form names and years say nothing here
        if answer_numbers:
            found = numbers(" ".join(h.text for h in hits))
            coverage += len(answer_numbers & found) / len(answer_numbers)
            counted += 1
    return recall / len(questions), coverage / max(counted, 1)


def all_documents() -> list[str]:
    return sorted(p.name for p in (EVAL / "docs").glob("*.pdf"))


def main() -> str:
    if not EVAL.exists():
        return (
            f"retrieval: skipped: {EVAL} is absent (../shared is beside the project only in CI)\n"
        )
    pdfs = {p.name: p.read_bytes() for p in sorted((EVAL / "docs").glob("*.pdf"))}
    questions = list(csv.DictReader((EVAL / "qna.csv").open(encoding="utf-8")))
    rows = []
    for label, build in (
        ("parley", parley_passages),
        ("seed (pypdf + recursive 1000/10)", seed_passages),
    ):
        passages = build(pdfs)
        recall, coverage = asyncio.run(evaluate(passages, questions))
        rows.append([label, len(passages), f"{recall:.3f}", f"{coverage:.3f}"])
    return render(
        f"Retrieval on sec10q-dev ({len(questions)} questions, k={K}, same embedder)",
        ["chunking", "chunks", "source recall@5", "number coverage@5"],
        rows,
    )


if __name__ == "__main__":
    print(main())
