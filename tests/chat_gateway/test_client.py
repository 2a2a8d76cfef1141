"""``chat_gateway.client.ask`` (behind ``parley ask``) against a running gateway, and the
``parley ask`` command itself in a subprocess: ``--json``, ``--token``, the exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys

from chat_gateway import client
from chat_gateway.client import ask
from tests.chat_gateway.conftest import ALPHA, World, ws_url
from tests.conftest import ROOT


class Terminal(io.StringIO):
    """What ``ask`` writes when its output is a terminal."""

    def isatty(self) -> bool:
        return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ask_prints_tokens_then_cited_sources(world: World) -> None:
    out = io.StringIO()
    async with world.make_gateway() as base:
        code = await ask(world.settings, "What was Orchard's revenue?", ALPHA, out=out,
                         url=ws_url(base))
    text = out.getvalue()
    assert code == 0
    assert text.startswith(world.worker.answer + "\n")
    assert "Sources:\n  [1] orchard-annual-report.pdf, page 3: Orchard Computers" in text


async def test_ask_reports_errors_with_distinct_exit_codes(world: World) -> None:
    out = io.StringIO()
    async with world.make_gateway() as base:
        # No token for the tenant, or a token the gateway refuses: a usage error.
        assert await ask(world.settings, "q", "nobody", out=out, url=ws_url(base)) == 2
        assert await ask(world.settings, "q", "x", out=out, url=ws_url(base), token="bad") == 2
        # An answer that ends in an error event (no documents in this tenant): failed.
        assert await ask(world.settings, "q", out=out, url=ws_url(base),
                         token="tok-empty") == client.FAILED
    assert out.getvalue() == ""
    # Nothing listening: unreachable.
    assert await ask(world.settings, "q", ALPHA, out=out, retries=0,
                     url=f"ws://127.0.0.1:{closed_port()}/ws") == client.UNREACHABLE


async def test_on_a_terminal_searching_shows_until_the_first_token(world: World) -> None:
    out = Terminal()
    async with world.make_gateway() as base:
        assert await ask(world.settings, "What was Orchard's revenue?", ALPHA, out=out,
                         url=ws_url(base)) == 0
    text = out.getvalue()
    blank = "\r" + " " * len(client.SEARCHING) + "\r"
    assert text.startswith(client.SEARCHING + blank + world.worker.answer), text[:120]
    assert text.count(client.SEARCHING) == 1
    plain = io.StringIO()  # not a terminal: no indicator
    async with world.make_gateway() as base:
        await ask(world.settings, "What was Orchard's revenue?", ALPHA, out=plain,
                  url=ws_url(base))
    assert client.SEARCHING not in plain.getvalue()


async def parley_ask(world: World, base: str, *args: str) -> tuple[int, str, str]:
    host, port = base.removeprefix("http://").split(":")
    env = {**os.environ, "PARLEY_REDIS_URL": world.settings.redis_url,
           "PARLEY_GATEWAY_HOST": host, "PARLEY_GATEWAY_PORT": port,
           "PARLEY_LOCAL_TOKENS": "tok-alpha:" + ALPHA, "PARLEY_DEFAULT_TENANT": ALPHA}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley_cli.main", "ask", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_parley_ask_json_and_token(world: World) -> None:
    async with world.make_gateway() as base:
        code, out, err = await parley_ask(world, base, "What was Orchard's revenue?", "--json")
        assert code == 0, err
        answer = json.loads(out)
        assert answer["answer"] == world.worker.answer
        assert answer["citations"][0]["document"] == "orchard-annual-report.pdf"
        assert answer["sources"] and len(answer["turn_id"]) == 32
        assert answer["conversation_id"]
        # --token: another tenant's token, which PARLEY_LOCAL_TOKENS does not hold.
        code, out, err = await parley_ask(world, base, "Zebra ribbon price?", "--json",
                                          "--token", "tok-beta")
        assert code == 0, err
        assert json.loads(out)["sources"][0]["document"] == "zebra-pricing.pdf"
        code, out, err = await parley_ask(world, base, "q", "--json", "--token", "tok-empty")
        assert code == 1 and json.loads(out)["error"]["code"] == "no_documents"
        code, _, err = await parley_ask(world, base, "q", "--token", "wrong")
        assert code == 2 and "401" in err
        code, _, err = await parley_ask(world, base, "q", "--bogus")
        assert code == 2 and "unrecognized arguments" in err


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
