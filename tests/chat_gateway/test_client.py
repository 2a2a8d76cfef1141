"""``chat_gateway.client.ask`` (behind ``parley ask``) against a running gateway."""

from __future__ import annotations

import io

from chat_gateway.client import ask
from tests.chat_gateway.conftest import ALPHA, World, ws_url


async def test_ask_prints_tokens_then_cited_sources(world: World) -> None:
    out = io.StringIO()
    async with world.make_gateway() as base:
        code = await ask(world.settings, "What was Orchard's revenue?", ALPHA, out=out,
                         url=ws_url(base))
    text = out.getvalue()
    assert code == 0
    assert text.startswith(world.worker.answer + "\n")
    assert "Sources:\n  [1] orchard-annual-report.pdf, page 3: Orchard Computers" in text


async def test_ask_reports_errors(world: World) -> None:
    out = io.StringIO()
    async with world.make_gateway() as base:
        assert await ask(world.settings, "q", "nobody", out=out, url=ws_url(base)) == 1
        assert await ask(world.settings, "q", "x", out=out, url=ws_url(base), token="bad") == 1
    assert out.getvalue() == ""


async def test_ask_prints_the_checked_answer_and_warns_of_unsupported_figures(
    world: World,
) -> None:
    world.worker.final_extra = {"text": "Orchard reported revenue of 383 billion dollars [1].",
                                "unsupported_numbers": ["161,000"]}
    out = io.StringIO()
    async with world.make_gateway() as base:
        code = await ask(world.settings, "What was Orchard's revenue?", ALPHA, out=out,
                         url=ws_url(base), answer_mode="generative")
    text = out.getvalue()
    assert code == 0 and text.startswith(world.worker.answer + "\n")
    assert "\nChecked answer:\nOrchard reported revenue of 383 billion dollars [1].\n" in text
    assert "Warning: not found in the cited sources, check these figures: 161,000" in text
    assert world.worker.turns[-1].answer_mode == "generative"
