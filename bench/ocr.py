"""OCR speed and accuracy on 2 cores, side by side in one run. Run::

    python -m bench.ocr [--pages 6] [--cores 2]

The process is pinned to ``--cores`` CPUs (the smallest worker node Parley is sized for). Pages
are generated scans (``tests.fixtures.documents.scanned_text_pdf``: letter pages at 150 dpi,
about 30 lines and 1,800 characters each, JPEG) so the words on them are known:

1. the local engine (RapidOCR, PP-OCRv6 small, models from its wheel) with one onnxruntime thread
   and with one thread per core: seconds per page, pages per second, and the share of the page's
   words it read back;
2. the same pages as a text PDF (no OCR): what reading a page costs when it has a text layer, and
   the OCR/text time ratio;
3. when ``../shared/corpus`` is beside the project: real scans (a book page, a two-column
   brochure, a six-page scan) with OCR.

Model loading (once per extraction child) is timed separately and left out of the per-page cost.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.table import render
from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.ocr import LocalOcr, Ocr, Pixels, decode_picture
from tests.fixtures import documents as docs

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "pdf"
MAX_PAGES = 1000
MAX_BYTES = 500 * 1024 * 1024


def recall(truth: str, read: str) -> float:
    """Share of the truth's words (with repeats) found among the words read."""
    want = Counter(truth.split())
    have = Counter(read.split())
    return sum(min(n, have[w]) for w, n in want.items()) / max(sum(want.values()), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[: args.cores])
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    print(f"pinned to {cores} of {len(available)} CPUs; load average {load[0]:.1f} (1 min)")

    pages = [f"Page {n}. " + docs.lorem(280, seed=n) for n in range(1, args.pages + 1)]
    scan = docs.scanned_text_pdf(pages)
    typed = docs.text_pdf(pages)
    truth = " ".join(" ".join(pages).split())

    rows: list[list[object]] = []
    started = time.perf_counter()
    warm = LocalOcr(threads=1)
    warm.read(docs_pixels())
    load_seconds = time.perf_counter() - started

    text_seconds = best_of(
        3, lambda: extract(typed, "typed.pdf", max_pages=MAX_PAGES, max_bytes=MAX_BYTES)
    )
    for threads in (1, cores):
        engine = LocalOcr(threads=threads)
        engine.read(docs_pixels())  # models loaded before timing
        started = time.perf_counter()
        out = extract(
            scan, "scan.pdf", max_pages=MAX_PAGES, max_bytes=MAX_BYTES, ocr=Ocr(engine, budget=1e9)
        )
        seconds = time.perf_counter() - started
        read = " ".join(" ".join(b.text for b in out.blocks).split())
        rows.append(
            [
                f"local OCR, {threads} thread{'s' if threads > 1 else ''}",
                args.pages,
                seconds / args.pages,
                args.pages / seconds,
                f"{recall(truth, read):.1%}",
                seconds / text_seconds,
            ]
        )
    rows.append(
        [
            "text layer (no OCR)",
            args.pages,
            text_seconds / args.pages,
            args.pages / text_seconds,
            "100.0%",
            1.0,
        ]
    )
    print(
        render(
            f"OCR of generated scans on {cores} cores (model load once per child: "
            f"{load_seconds:.1f} s)",
            ["path", "pages", "s/page", "pages/s", "words read", "time vs text"],
            rows,
        )
    )

    if CORPUS.exists():
        engine = LocalOcr(threads=cores)
        corpus_rows: list[list[object]] = []
        for name in ("c02-22.pdf", "linn.pdf", "multipage.pdf"):
            data = (CORPUS / name).read_bytes()
            started = time.perf_counter()
            out = extract(
                data, name, max_pages=MAX_PAGES, max_bytes=MAX_BYTES, ocr=Ocr(engine, budget=1e9)
            )
            seconds = time.perf_counter() - started
            n = out.pages or 1
            corpus_rows.append([name, n, out.chars, seconds / n, n / seconds])
        print(
            render(
                f"OCR of real scans (../shared/corpus) on {cores} cores",
                ["file", "pages", "chars read", "s/page", "pages/s"],
                corpus_rows,
            )
        )


def docs_pixels() -> Pixels:
    pixels = decode_picture(docs.picture_of_text("Warm-up line of text."))
    assert pixels is not None
    return pixels


def best_of(times: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    main()
