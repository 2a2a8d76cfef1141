"""Bare embedding throughput of the local CPU embedder (all-MiniLM-L6-v2, onnxruntime) in each of
its graphs (``packaged``: the shipped file as is; ``fp32``: the fused graph; ``int8``: fused with
int8 attention products, the default) at 1 and 2 onnxruntime threads, side by side, with:

- chunks/s for ~200-word chunks (wall time, best of ``--repeat``), and per CPU-second of this
  process (closer to what an idle machine gives when other work shares the cores);
- the ratio to the packaged file at the same thread count;
- the lowest cosine to the fp32 model, on tests/parley/embedder/reference_vectors.json and, when
  the dev filings are present, on their chunks, questions and 1- to 180-word cuts of the chunks
  (batched; and alone: the questions, a third of the cuts, a tenth of the chunks); the fp32
  vectors for those come from the ``fp32`` graph (the packaged weights), so that column
  compares with the packaged file's arithmetic;
- source recall@5 on the dev filings' 39 questions (the share whose top-5 chunks include a chunk
  of every document the question names).

Run::

    python -m bench embedding [--chunks 96] [--repeat 2] [--batch 16]

Chunks come from the filings in ../shared/eval/sec10q-dev/docs when present, else from generated
text. Other benchmarks reuse :func:`bare_throughput` (or :func:`measure` inside an event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import fnmatch
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parley.embedder import Embedder
from parley.embedder.local import Graph, LocalEmbedder, LocalEmbedderConfig

ROOT = Path(__file__).resolve().parent.parent
EVAL_DOCS = ROOT.parent / "shared" / "eval" / "sec10q-dev" / "docs"
QNA = EVAL_DOCS.parent / "qna.csv"
GRAPHS: tuple[Graph, ...] = ("packaged", "fp32", "int8")
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


def dev_set() -> tuple[list[str], list[str], list[dict[str, str]]] | None:
    """The dev filings' chunk texts as the workers embed them, each chunk's file name, and the
    questions; None when ../shared is absent."""
    if not QNA.exists():
        return None
    from bench.pipeline import chunk_texts

    texts: list[str] = []
    names: list[str] = []
    for path in sorted(EVAL_DOCS.glob("*.pdf")):
        part = chunk_texts({path.name: path.read_bytes()})
        texts += part
        names += [path.name] * len(part)
    with QNA.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return texts, names, rows


def recall_at(k: int, chunks: np.ndarray, names: list[str], questions: np.ndarray,
              rows: list[dict[str, str]]) -> float:
    """Share of questions whose top-k chunks include a chunk of every document they name."""
    hits = 0
    for vector, row in zip(questions, rows, strict=True):
        top = np.argsort(-(chunks @ vector))[:k]
        wanted = {n for n in set(names) if fnmatch.fnmatch(n, row["Source Docs"])}
        hits += wanted <= {names[i] for i in top}
    return hits / len(rows)


def cuts(texts: Sequence[str]) -> list[str]:
    """1- to 180-word pieces of ``texts``: short texts are where int8 strays most."""
    words = " ".join(texts[::7]).split()
    out: list[str] = []
    for n in (1, 2, 3, 5, 8, 12, 20, 32, 48, 64, 100, 180):
        out += [" ".join(words[i : i + n]) for i in range(0, len(words) - n, 97)][:30]
    return out


async def run(count: int, repeat: int, batch: int) -> None:
    load_before = os.getloadavg()
    texts, source = chunks(count)
    dev = dev_set()
    print(f"{len(texts)} chunks of {WORDS_PER_CHUNK} words from {source}; best of {repeat}; "
          f"mini-batch {batch}; {os.cpu_count()} cores")
    probe: list[str] = []
    lone: list[str] = []
    reference: np.ndarray | None = None
    if dev is not None:
        probe = dev[0] + [r["Question"] for r in dev[2]] + cuts(dev[0])
        # Alone (a batch of one): the questions, every third cut and every tenth chunk.
        lone = [r["Question"] for r in dev[2]] + cuts(dev[0])[::3] + dev[0][::10]
        fp32 = LocalEmbedder(LocalEmbedderConfig(graph="fp32"))
        reference = fp32.embed_sync(probe)
        alone_reference = np.stack([fp32.embed_sync([t])[0] for t in lone])
        await fp32.close()
    rows: list[tuple[str, int, float, float, float, float, float | str]] = []
    for graph in GRAPHS:
        quality: tuple[float, float, float | str] = (0.0, float("nan"), "-")
        for threads in (1, 2):
            embedder = LocalEmbedder(
                LocalEmbedderConfig(threads=threads, batch_size=batch, graph=graph)
            )
            try:
                rate, cpu_rate = await measure_both(embedder, texts, repeat)
                if threads == 1:
                    quality = (reference_cosine(embedder), float("nan"), "-")
                    if dev is not None and reference is not None:
                        got = embedder.embed_sync(probe)
                        alone = np.stack([embedder.embed_sync([t])[0] for t in lone])
                        low = min(float((got * reference).sum(axis=1).min()),
                                  float((alone * alone_reference).sum(axis=1).min()))
                        n = len(dev[0])
                        recall = recall_at(5, got[:n], dev[1], got[n : n + len(dev[2])], dev[2])
                        quality = (quality[0], low, recall)
            finally:
                await embedder.close()
            rows.append((graph, threads, rate, cpu_rate, *quality))
    base: dict[int, float] = {r[1]: r[2] for r in rows if r[0] == "packaged"}
    base_cpu: dict[int, float] = {r[1]: r[3] for r in rows if r[0] == "packaged"}
    print(f"{'graph':>9} {'threads':>7} {'chunks/s':>9} {'x packaged':>10} {'per CPU-s':>9} "
          f"{'x packaged':>10} {'min cos fp32 (ref)':>18} {'min cos (dev)':>13} {'recall@5':>8}")
    for name, count_, wall, cpu, ref_cos, dev_cos, found in rows:
        dev_text = "-" if dev_cos != dev_cos else f"{dev_cos:.4f}"
        recall_text = found if isinstance(found, str) else f"{found:.3f}"
        print(f"{name:>9} {count_:>7} {wall:>9.1f} {wall / base[count_]:>9.2f}x "
              f"{cpu:>9.1f} {cpu / base_cpu[count_]:>9.2f}x {ref_cos:>18.4f} "
              f"{dev_text:>13} {recall_text:>8}")
    print("(min cos and recall@5 measured once per graph, at 1 thread; the dev cosine is the "
          "lowest of batched and alone)")
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")


async def measure_both(embedder: LocalEmbedder, texts: Sequence[str],
                       repeat: int) -> tuple[float, float]:
    """Chunks per wall second and per CPU-second of this process, best of ``repeat``."""
    await embedder.embed(list(texts[:2]))
    best, best_cpu = 0.0, 0.0
    for _ in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        await embedder.embed(texts)
        best = max(best, len(texts) / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, len(texts) / max(time.process_time() - cpu, 1e-9))
    return best, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.chunks, args.repeat, args.batch))


if __name__ == "__main__":
    main()
