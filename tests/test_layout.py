"""The layout's size bar: the core holds seams, contracts and what every process shares, so it
stays small; what one service or the tooling uses belongs to that service or to the CLI. The import
direction and the absence of cycles are import-linter's contracts (pyproject.toml), run by
``./dev test`` before pytest."""

from __future__ import annotations

from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "parley"
# Issue 10's bar. The core grew past it with shared features (file types, the MiniLM graph, the
# lexical generations, periods, the heartbeat); it came back under when the Azure adapters, the
# factories that pick an adapter from Settings and the clients a process opens moved to
# backends/, which the core never imports.
CORE_MAX_LINES = 5_500


def test_the_core_stays_small() -> None:
    lines = {p: len(p.read_text().splitlines()) for p in CORE.rglob("*.py")}
    total = sum(lines.values())
    biggest = sorted(lines, key=lines.__getitem__, reverse=True)[:5]
    assert total <= CORE_MAX_LINES, (
        f"parley/ holds {total} lines (limit {CORE_MAX_LINES}): move what only one service or the "
        f"CLI uses out of the core. Biggest: "
        + ", ".join(f"{p.relative_to(CORE.parent)} ({lines[p]})" for p in biggest)
    )
