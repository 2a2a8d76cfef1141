"""A signed-in portal outlives its tokens, end to end, in headless Chromium.

The gateway ends a websocket session when its token expires (error ``token_expired``, close
4401; ``exp`` plus the verifier's leeway) and says in ``ready`` how long the session has
(``expires_in``). With Entra ID the portal renews: before the session ends it asks MSAL for a
token (MSAL redeems its refresh token at FakeEntra, tests/portal/entra.py) and sends it on the
same connection, and the gateway moves the session's end. A pasted token cannot be renewed:
when it expires the portal says so and how to sign in again, instead of reconnecting with it.
Entra ID out of reach (its token endpoint aborted as a network outage) signs nobody out: the
portal tries again with the reconnect backoff; a refused refresh token (``invalid_grant``) signs
out saying the sign-in expired.

The tokens live seconds (the leeway is one second), so the tests wait for real time to pass the
first token's end; what they check is what the browser's websockets carried (Playwright's frame
events) and what the page shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.portal.entra import AUDIENCE, WAIT, FakeEntra, claims_of, entra_gateway

pytestmark = pytest.mark.slow

# Seconds an Entra ID access token lives here (an hour or so on Azure): each test waits about
# this long for real time to pass a token's end. The portal renews at half the time left, so 8 s
# leaves MSAL 4 s (plus the leeway) to redeem a refresh token; 15 s took 7 s more a test.
LIFETIME = 8
LEEWAY = 1.0  # seconds the gateway takes a token past its exp


@dataclass
class Sockets:
    """What the page's websockets carried, as the browser saw it."""

    opened: list[Any] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def tokens(self) -> list[str]:
        """The tokens of the ``auth`` messages sent, in order."""
        return [m["token"] for m in self.sent if m.get("type") == "auth"]

    def readies(self, *, renewed: bool) -> list[dict[str, Any]]:
        return [m for m in self.received
                if m.get("type") == "ready" and bool(m.get("reauthenticated")) == renewed]


def watch(page: Any) -> Sockets:
    seen = Sockets()

    def frames(into: list[dict[str, Any]]) -> Callable[[str | bytes], None]:
        return lambda payload: into.append(json.loads(payload))

    def opened(socket: Any) -> None:
        seen.opened.append(socket)
        socket.on("framesent", frames(seen.sent))
        socket.on("framereceived", frames(seen.received))

    page.on("websocket", opened)
    return seen


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def online(page: Any) -> None:
    await page.wait_for_function(
        "document.querySelector('#conn').dataset.state === 'online'", timeout=WAIT
    )


@contextlib.asynccontextmanager
async def signed_in(
    chromium: Any, redis_url: str, chroma_url: str, errors: list[str] | None = None
) -> AsyncIterator[tuple[FakeEntra, Any, Sockets]]:
    """A page signed in with Entra ID and online (access tokens of ``LIFETIME`` s, the gateway's
    ``LEEWAY``): the Entra ID that issued them, the page, and what its websockets carry. The
    page's console errors go to ``errors``."""
    async with entra_gateway(redis_url, chroma_url, lifetime=LIFETIME, leeway=LEEWAY) as entra:
        context = await chromium.new_context()
        try:
            await context.route("https://login.microsoftonline.com/**", entra.handle)
            page = await context.new_page()
            if errors is not None:
                page.on("console",
                        lambda m: errors.append(m.text) if m.type == "error" else None)
            sockets = watch(page)
            await page.goto(entra.origin + "/")
            await page.locator("#signin-microsoft").click(timeout=WAIT)
            await online(page)
            yield entra, page, sockets
        finally:
            await context.close()


async def test_an_entra_session_outlives_its_first_token(
    chromium: Any, redis_url: str, chroma_url: str
) -> None:
    errors: list[str] = []
    async with signed_in(chromium, redis_url, chroma_url, errors) as (entra, page, sockets):
        first = claims_of(sockets.tokens()[0])
        ends = first["exp"] + LEEWAY  # when the session ends unless it is renewed
        (ready,) = sockets.readies(renewed=False)
        assert 0 < ready["expires_in"] <= LIFETIME + LEEWAY
        # Before then: a token MSAL renewed, sent on the same connection and taken.
        await until(lambda: bool(sockets.readies(renewed=True)), "renewal")
        assert claims_of(sockets.tokens()[1])["exp"] > first["exp"]
        assert entra.refreshes >= 1
        assert 0 < sockets.readies(renewed=True)[0]["expires_in"] <= LIFETIME + LEEWAY
        await until(lambda: time.time() > ends + 1, "end of the first token",
                    timeout=LIFETIME + 10)
        # The same connection, still signed in: a question is answered (there are no
        # documents to answer from), and the documents are listed.
        await page.locator("#question").fill("What did the second quarter bring?")
        await page.locator("#question").press("Enter")
        note = page.locator(".turn[data-state=error] .note.bad")
        await note.wait_for(timeout=WAIT)
        assert "no documents" in (await note.text_content() or "")
        await page.evaluate("window.parley.docs.refresh()")
        assert await page.locator("#view-chat").is_visible()
        assert await page.locator("#conn").get_attribute("data-state") == "online"
        assert len(sockets.opened) == 1 and not sockets.opened[0].is_closed()
        assert not [m for m in sockets.received if m.get("code") == "token_expired"]
    assert errors == []


async def test_a_session_not_renewed_in_time_reconnects_with_a_fresh_token(
    chromium: Any, redis_url: str, chroma_url: str
) -> None:
    async with signed_in(chromium, redis_url, chroma_url) as (entra, page, sockets):
        # Entra ID cannot be reached until the session has ended: no renewal gets through.
        entra.offline = True
        sockets.opened[0].on("close", lambda *_: setattr(entra, "offline", False))
        await until(lambda: len(sockets.readies(renewed=False)) == 2, "reconnection")
        assert entra.refused >= 1
        assert [m["code"] for m in sockets.received if m["type"] == "error"] == \
            ["token_expired"]
        tokens = sockets.tokens()
        assert claims_of(tokens[-1])["exp"] > claims_of(tokens[0])["exp"]
        # Still signed in, on the new connection.
        await online(page)
        assert await page.locator("#view-chat").is_visible()
        await page.locator("#question").fill("What did the second quarter bring?")
        await page.locator("#question").press("Enter")
        note = page.locator(".turn[data-state=error] .note.bad")
        await note.wait_for(timeout=WAIT)
        assert "no documents" in (await note.text_content() or "")
        assert len(sockets.opened) == 2 and not sockets.opened[1].is_closed()


async def test_a_pasted_token_that_expires_asks_to_sign_in_again(
    chromium: Any, redis_url: str, chroma_url: str
) -> None:
    # A gateway that checks Entra ID tokens but has no client id for the portal: the portal
    # asks for a token, and someone pastes an access token they got elsewhere.
    async with entra_gateway(redis_url, chroma_url, leeway=LEEWAY, portal_sign_in=False) as entra:
        context = await chromium.new_context()
        try:
            page = await context.new_page()
            sockets = watch(page)
            await page.goto(entra.origin + "/")
            short = entra.access_token(lifetime=8, audience=AUDIENCE)
            await page.locator("#token").fill(short, timeout=WAIT)
            await page.locator("#token").press("Enter")
            await online(page)
            (ready,) = sockets.readies(renewed=False)
            assert 0 < ready["expires_in"] <= 8 + LEEWAY
            # The same token cannot be renewed: none is sent before the session ends.
            await page.locator("#view-signin").wait_for(timeout=WAIT)
            error = await page.locator("#signin-error").text_content()
            assert error == "Your sign-in expired: sign in again with a fresh token."
            assert sockets.tokens() == [short]
            assert len(sockets.opened) == 1  # no reconnecting with the expired token
            assert await page.evaluate("localStorage.getItem('parley.token')") is None
            # A fresh token signs in again.
            await page.locator("#token").fill(entra.access_token(lifetime=600, audience=AUDIENCE))
            await page.locator("#token").press("Enter")
            await online(page)
            assert await page.locator("#signin-error").text_content() == ""
        finally:
            await context.close()


async def test_entra_out_of_reach_at_the_reconnect_is_tried_again(
    chromium: Any, redis_url: str, chroma_url: str
) -> None:
    async with signed_in(chromium, redis_url, chroma_url) as (entra, page, sockets):
        # Entra ID cannot be reached across the end of the session: neither the renewals
        # nor the reconnect's token requests get through (a network failure, not a refusal).
        entra.offline = True
        await until(lambda: sockets.opened[0].is_closed(), "end of the first session",
                    timeout=LIFETIME + 10)
        refused = entra.refused
        await until(lambda: entra.refused >= refused + 2, "token requests at the reconnect")
        # Still signed in, counting down to the next try; no socket without a token.
        await page.wait_for_function(
            "(c => c.dataset.state === 'reconnecting'"
            " && /^Reconnecting in \\d+ s…$/.test(c.textContent))"
            "(document.querySelector('#conn'))"
            " || document.querySelector('#signin-entra-error').textContent !== ''",
            timeout=WAIT,
        )
        assert await page.locator("#signin-entra-error").text_content() == ""
        assert await page.locator("#view-signin").is_hidden()
        assert len(sockets.opened) == 1
        entra.offline = False
        await until(lambda: len(sockets.readies(renewed=False)) == 2, "reconnection",
                    timeout=20)
        await online(page)
        tokens = sockets.tokens()
        assert claims_of(tokens[-1])["exp"] > claims_of(tokens[0])["exp"]
        assert await page.locator("#view-chat").is_visible()
        assert await page.locator("#signin-entra-error").text_content() == ""
        assert len(sockets.opened) == 2 and not sockets.opened[1].is_closed()


async def test_a_refused_refresh_token_signs_out_saying_so(
    chromium: Any, redis_url: str, chroma_url: str
) -> None:
    async with signed_in(chromium, redis_url, chroma_url) as (entra, page, sockets):
        authorized = entra.authorize
        # The user's sign-in ends at Entra ID (revoked, or the refresh token expired): MSAL
        # gets invalid_grant for the refresh token, then login_required without a prompt.
        entra.revoke()
        await page.wait_for_function(
            "document.querySelector('#signin-entra-error').textContent !== ''",
            timeout=(LIFETIME + 20) * 1000,
        )
        error = await page.locator("#signin-entra-error").text_content()
        assert error == "Your sign-in expired: sign in again."
        assert await page.locator("#signin-entra").is_visible()
        assert await page.locator("#view-chat").is_hidden()
        assert sockets.readies(renewed=True) == []
        assert entra.authorize is authorized  # no interactive trip to Entra ID's page
        assert len(sockets.opened) == 1
