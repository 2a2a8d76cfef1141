"""The layout's size bar: the core holds seams, contracts and what every process shares, so it
stays small; what one service or the tooling uses belongs to that service or to the CLI. The import
direction and the absence of cycles are import-linter's contracts (pyproject.toml), run by
``./dev test`` before pytest."""

from __future__ import annotations

from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "parley"
# Issue 10 set 5,500; the re-layout left 5,003. Shared features then grew the core to ~6,280:
# parley/filetypes.py (one rule for a file's kind: gateway upload check, `parley ingest`, ingest
# worker), parley/embedder/minilm_graph.py (every process that embeds runs it), the lexical
# index's generations and the period vocabulary (embed/ingest writers and the gateway), tenant
# checks and streamed blob downloads, the heartbeat. Services cannot import one another, so these
# can only live here. The way back under 5,500 is moving the Azure adapters (Service Bus, Blob,
# OpenAI: ~1,130 lines) into their own package with the factories: not done yet. Every consumer's
# liveness (the Redis broker's heartbeat and its taking of a dead consumer's messages) then grew it
# by ~100 lines, 58 of them paid for by the inference worker's own heartbeat it replaced.
CORE_MAX_LINES = 6_350


def test_the_core_stays_small() -> None:
    lines = {p: len(p.read_text().splitlines()) for p in CORE.rglob("*.py")}
    total = sum(lines.values())
    biggest = sorted(lines, key=lines.__getitem__, reverse=True)[:5]
    assert total <= CORE_MAX_LINES, (
        f"parley/ holds {total} lines (limit {CORE_MAX_LINES}): move what only one service or the "
        f"CLI uses out of the core. Biggest: "
        + ", ".join(f"{p.relative_to(CORE.parent)} ({lines[p]})" for p in biggest)
    )
