"""Bare embedding throughput of the local CPU embedder (all-MiniLM-L6-v2 int8, onnxruntime):
chunks/s for ~200-word chunks at a few onnxruntime thread counts and mini-batch sizes, side by
side, with the ratio to the default configuration. Run::

    python -m bench.embedding [--chunks 96] [--repeat 2]

Chunks come from the filings in ../shared/eval/sec10q-dev/docs when present, else from generated
text. Other benchmarks reuse :func:`bare_throughput` (or :func:`measure` inside an event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parley.embedder import Embedder
from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

ROOT = Path(__file__).resolve().parent.parent
EVAL_DOCS = ROOT.parent / "shared" / "eval" / "sec10q-dev" / "docs"
REFERENCE = ROOT / "tests" / "parley" / "embedder" / "reference_vectors.json"
WORDS_PER_CHUNK = 200


async def measure(embedder: Embedder, texts: Sequence[str], repeat: int = 1) -> float:
    """Chunks per second for ``embedder.embed(texts)`` in one call, best of ``repeat`` runs,
    after one small warm-up call."""
    await embedder.embed(list(texts[:2]))
    best = 0.0
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        await embedder.embed(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def bare_throughput(embedder: Embedder, texts: Sequence[str]) -> float:
    """Chunks per second of ``embedder`` on ``texts`` (one call; not from a running event loop:
    there, await :func:`measure`)."""
    return asyncio.run(measure(embedder, texts))


def chunks(count: int, words: int = WORDS_PER_CHUNK) -> tuple[list[str], str]:
    """``count`` chunks of ``words`` words, and where they came from."""
    text = _eval_text()
    source = f"{EVAL_DOCS.relative_to(ROOT.parent)}"
    if not text:
        text, source = _generated_text(count * words), "generated text"
    tokens = text.split()
    out = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words + 1, words)]
    while len(out) < count:
        out += out
    return out[:count], source


def _eval_text() -> str:
    if not EVAL_DOCS.is_dir():
        return ""
    import pypdfium2 as pdfium

    parts = []
    for path in sorted(EVAL_DOCS.glob("*.pdf")):
        document = pdfium.PdfDocument(str(path))
        try:
            for index in range(min(len(document), 20)):
                parts.append(document[index].get_textpage().get_text_range())
        finally:
            document.close()
    return "\n".join(parts)


def _generated_text(words: int) -> str:
    phrase = (
        "the company revenue quarter fiscal net income operating expenses increased decreased "
        "compared prior year period due primarily to higher lower sales services products "
        "market risk interest rate foreign currency exchange liquidity capital resources cash "
        "flows investing financing activities share repurchase dividend tax provision "
        "segment americas europe china japan rest of asia pacific gross margin percentage"
    )
    vocabulary = phrase.split()
    rng = random.Random(7)
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def reference_cosine(embedder: LocalEmbedder) -> float:
    """The lowest cosine between this embedder and the fp32 reference vectors."""
    items = json.loads(REFERENCE.read_text(encoding="utf-8"))["items"]
    got = embedder.embed_sync([item["text"] for item in items])
    want = np.asarray([item["vector"] for item in items])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    return float((got * want).sum(axis=1).min())


async def run(count: int, repeat: int) -> None:
    texts, source = chunks(count)
    configs = [(0, 16)] + [(t, b) for t in (1, 2) for b in (1, 8, 16, 32)]
    print(f"{len(texts)} chunks of {WORDS_PER_CHUNK} words from {source}; best of {repeat}")
    rows = []
    for threads, batch in configs:
        embedder = LocalEmbedder(LocalEmbedderConfig(threads=threads, batch_size=batch))
        try:
            rate = await measure(embedder, texts, repeat)
            cosine = reference_cosine(embedder)
        finally:
            await embedder.close()
        rows.append((threads, batch, rate, cosine))
    base = rows[0][2]
    print(f"{'threads':>8} {'batch':>6} {'chunks/s':>9} {'vs default':>10} {'min cos fp32':>13}")
    for threads, batch, rate, cosine in rows:
        label = "default" if threads == 0 else str(threads)
        print(f"{label:>8} {batch:>6} {rate:>9.1f} {rate / base:>9.2f}x {cosine:>13.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.chunks, args.repeat))


if __name__ == "__main__":
    main()
