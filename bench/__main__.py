"""``python -m bench [NAME ...]`` (or ``./dev bench``): run benchmarks one after another, each in
its own process (so one's threads and memory do not skew the next), and print their tables.
With no name, runs them all. Options after the names go to each benchmark chosen:
``python -m bench soak --documents 20``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "extraction",
    "ocr",
    "embedding",
    "pipeline",
    "retrieval",
    "ann",
    "rebuild",
    "answers",
    "local_model",
    "ttft",
    "redis_floor",
    "tailer",
    "stages",
    "relay",
    "sessions",
    "soak",
]


def main(argv: list[str]) -> int:
    available = [n for n in ORDER if (HERE / f"{n}.py").exists()]
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    chosen = names or available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    failed = 0
    for name in chosen:
        started = time.monotonic()
        print(f"\n### {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *options],
                               cwd=HERE.parent)
        print(f"({name}: {time.monotonic() - started:.0f} s, exit {code})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
