"""Extraction and chunking speed, side by side in one run. Run::

    python -m bench.extraction [--repeat 3]

1. PDF text extraction over ../shared/corpus/pdf and ../shared/eval/sec10q-dev/docs: Parley's path
   (``ingest_worker.extract.dispatch.extract``: pypdfium2, page classification, cleaning)
   against pypdf alone (``PdfReader`` + ``page.extract_text()`` on every page, the library the
   customer named).
   Per file: best-of-``repeat`` seconds, the pypdf/Parley time ratio, and visible characters each
   extracted; then the median per-file ratio, the summed ratio, and the characters summed over the
   files both read (is any text lost?).
2. Chunking time with the real MiniLM tokenizer (254-token chunks, 32 overlap) on the largest
   documents.
3. Per-document cost of the child-process isolation: warm pool vs in process, and a cold start.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.table import render
from ingest_worker.chunking import chunk
from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.isolation import ExtractorPool
from ingest_worker.extract.types import Extraction, ExtractionFailed, count_visible
from parley.embedder.local import MiniLMTokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FOLDERS = [SHARED / "corpus" / "pdf", SHARED / "eval" / "sec10q-dev" / "docs"]
MAX_PAGES = 5000
MAX_BYTES = 500 * 1024 * 1024


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            result = run()
        except Exception as error:  # the outcome is part of the row
            result = error
        best = min(best, time.perf_counter() - start)
    return best, result


def parley(data: bytes, name: str) -> Extraction:
    return extract(data, name, max_pages=MAX_PAGES, max_bytes=MAX_BYTES)


def pypdf_alone(data: bytes) -> int:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return sum(count_visible(page.extract_text() or "") for page in reader.pages)


def outcome(result: object) -> tuple[str, int | None]:
    if isinstance(result, Extraction):
        return "text", result.chars
    if isinstance(result, ExtractionFailed):
        return result.reason, None
    if isinstance(result, int):
        return "text", result
    return type(result).__name__, None


def extraction_table(repeat: int) -> str:
    rows: list[list[object]] = []
    ratios: list[float] = []
    sums = {"parley_s": 0.0, "pypdf_s": 0.0, "parley_chars": 0, "pypdf_chars": 0}
    files = [p for folder in FOLDERS if folder.exists() for p in sorted(folder.glob("*.pdf"))]
    for path in files:
        data = path.read_bytes()
        ours_s, ours = best_of(repeat, functools.partial(parley, data, path.name))
        theirs_s, theirs = best_of(repeat, functools.partial(pypdf_alone, data))
        ours_kind, ours_chars = outcome(ours)
        theirs_kind, theirs_chars = outcome(theirs)
        ratio = theirs_s / ours_s if ours_s > 0 else float("nan")
        ratios.append(ratio)
        sums["parley_s"] += ours_s
        sums["pypdf_s"] += theirs_s
        if ours_chars is not None and theirs_chars is not None:
            sums["parley_chars"] += ours_chars
            sums["pypdf_chars"] += theirs_chars
        rows.append(
            [
                path.name[:34],
                ours_s * 1000,
                theirs_s * 1000,
                ratio,
                ours_chars if ours_chars is not None else ours_kind,
                theirs_chars if theirs_chars is not None else theirs_kind,
            ]
        )
    rows.append(
        [
            f"TOTAL ({len(files)} files)",
            sums["parley_s"] * 1000,
            sums["pypdf_s"] * 1000,
            sums["pypdf_s"] / sums["parley_s"],
            sums["parley_chars"],
            sums["pypdf_chars"],
        ]
    )
    table = render(
        f"PDF extraction, best of {repeat}: Parley (pypdfium2 path) vs pypdf alone",
        ["file", "parley ms", "pypdf ms", "x faster", "parley chars", "pypdf chars"],
        rows,
    )
    both = sums["parley_chars"] / max(sums["pypdf_chars"], 1)
    return table + (
        f"median per-file ratio {statistics.median(ratios):.1f}x; summed ratio "
        f"{sums['pypdf_s'] / sums['parley_s']:.1f}x; chars on files both read as text: Parley "
        f"{sums['parley_chars']:,} vs pypdf {sums['pypdf_chars']:,} ({both:.3f})\n"
    )


def chunking_table(tokenizer: MiniLMTokenizer) -> str:
    names = [
        SHARED / "corpus" / "pdf" / "GeoTopo-komprimiert.pdf",
        SHARED / "corpus" / "pdf" / "i1040nr.pdf",
        SHARED / "eval" / "sec10q-dev" / "docs" / "2023 Q1 AAPL.pdf",
        SHARED / "corpus" / "docx" / "libreoffice_conversion.docx",
    ]
    rows: list[list[object]] = []
    for path in names:
        if not path.exists():
            continue
        extraction = parley(path.read_bytes(), path.name)
        chars = sum(len(b.text) for b in extraction.blocks)
        start, cpu = time.perf_counter(), time.process_time()
        chunks = chunk(extraction.blocks, tokenizer=tokenizer, max_tokens=254, overlap_tokens=32)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append(
            [
                path.name[:34],
                extraction.pages or "-",
                chars,
                len(chunks),
                statistics.mean(c.tokens for c in chunks),
                max(c.tokens for c in chunks),
                elapsed * 1000,
                cpu * 1000,
            ]
        )
    return render(
        "Chunking with the MiniLM tokenizer (max 254 tokens, overlap 32)",
        ["document", "pages", "chars", "chunks", "mean tok", "max tok", "wall ms", "cpu ms"],
        rows,
    )


async def isolation_table(runs: int) -> str:
    small = [
        ("minimal-document.pdf", SHARED / "corpus" / "pdf" / "minimal-document.pdf"),
        ("f1040nr.pdf (5 pages)", SHARED / "corpus" / "pdf" / "f1040nr.pdf"),
        ("test.docx", SHARED / "corpus" / "docx" / "test.docx"),
    ]
    pool = ExtractorPool(max_idle=1)
    rows: list[list[object]] = []
    try:
        start = time.perf_counter()
        first = small[0][1].read_bytes()
        await pool.extract(first, "cold.pdf", timeout=120, max_pages=MAX_PAGES, max_bytes=MAX_BYTES)
        cold = time.perf_counter() - start
        for label, path in small:
            if not path.exists():
                continue
            data = path.read_bytes()
            inproc, isolated = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                parley(data, path.name)
                inproc.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await pool.extract(
                    data, path.name, timeout=120, max_pages=MAX_PAGES, max_bytes=MAX_BYTES
                )
                isolated.append(time.perf_counter() - t0)
            a, b = statistics.median(inproc), statistics.median(isolated)
            rows.append([label, a * 1000, b * 1000, (b - a) * 1000])
    finally:
        await pool.close()
    return (
        render(
            f"Isolation: median of {runs} per document (warm child)",
            ["document", "in-process ms", "child ms", "overhead ms"],
            rows,
        )
        + f"cold start of a child (spawn + imports + first document): {cold * 1000:.0f} ms\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20, help="isolation samples per document")
    args = parser.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"{SHARED} is absent: this benchmark reads the shared corpus")
    logging.disable(logging.WARNING)  # pypdf warns on every odd file; the table is the output
    print(extraction_table(args.repeat))
    print(chunking_table(MiniLMTokenizer()))
    print(asyncio.run(isolation_table(args.runs)))


if __name__ == "__main__":
    main()
