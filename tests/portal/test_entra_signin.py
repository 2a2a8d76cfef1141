"""The portal signs in with Entra ID in the browser, end to end, in headless Chromium: the gateway
is configured for Entra ID, the page offers "Sign in with Microsoft", MSAL.js (the vendored file)
goes to the tenant's authorize endpoint with an authorization code request and a PKCE challenge,
comes back with a code, redeems it with the verifier, and the portal connects with the access
token, which the gateway checks (signature, issuer, audience, expiry) and maps to the tenant.

login.microsoftonline.com is played by the test through Playwright's request routing (nothing
leaves the machine; tests/portal/entra.py): the test checks what a real authorization server
checks (client id, redirect URI, scope, S256 of the verifier equals the challenge); it issues
tokens signed by a key whose JWKS the gateway fetches from a local server. Token renewal:
test_token_renewal.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.portal.entra import CLIENT_ID, TENANT_ID, WAIT, FakeEntra, b64url, entra_gateway

pytestmark = pytest.mark.slow


@pytest.fixture
async def entra(redis_url: str, chroma_url: str) -> AsyncIterator[FakeEntra]:
    async with entra_gateway(redis_url, chroma_url) as fake:
        yield fake


async def test_portal_signs_in_with_entra_id(chromium: Any, entra: FakeEntra) -> None:
    context = await chromium.new_context()
    errors: list[str] = []
    try:
        await context.route("https://login.microsoftonline.com/**", entra.handle)
        page = await context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(entra.origin + "/")
        button = page.locator("#signin-microsoft")
        await button.wait_for(state="visible", timeout=WAIT)
        assert await page.locator("#signin-form").is_hidden()
        await button.click()
        await page.locator("#view-chat").wait_for(state="visible", timeout=WAIT)
        await page.wait_for_function(
            "document.querySelector('#conn').dataset.state === 'online'", timeout=WAIT
        )
        who = await page.locator("#who").text_content()
        assert who == f"ada@contoso.test (tenant {TENANT_ID})"
    finally:
        await context.close()
    # The authorization request: a code, for the gateway's scope, with a PKCE S256 challenge.
    asked = entra.authorize
    assert asked["response_type"] == "code" and asked["client_id"] == CLIENT_ID
    assert asked["redirect_uri"] == entra.origin + "/"
    assert f"api://{CLIENT_ID}/access_as_user" in asked["scope"].split()
    assert asked["code_challenge_method"] == "S256"
    # The redemption: the same code, and the verifier whose S256 is the challenge.
    redeemed = entra.redeemed
    assert redeemed["grant_type"] == "authorization_code" and redeemed["code"] == entra.code
    challenge = b64url(hashlib.sha256(redeemed["code_verifier"].encode()).digest())
    assert challenge == asked["code_challenge"]
    assert errors == []


# Clicks "Sign in with Microsoft" the moment it can be clicked: when it shows and, if it is
# disabled then, when it is enabled. A person can click that early on a slow machine.
EAGER_CLICK = """
new MutationObserver(() => {
  const button = document.querySelector('#signin-microsoft');
  if (!button || button.closest('[hidden]') || window.__clicked) return;
  if (!button.disabled) { window.__clicked = true; button.click(); }
}).observe(document, {subtree: true, attributes: true, childList: true});
"""


async def test_a_click_as_soon_as_the_button_shows_signs_in(
    chromium: Any, entra: FakeEntra
) -> None:
    # MSAL refuses a sign-in before it has initialised ("uninitialized_public_client_application"):
    # the button stays disabled until then, instead of failing the first click.
    context = await chromium.new_context()
    try:
        await context.route("https://login.microsoftonline.com/**", entra.handle)
        await context.add_init_script(EAGER_CLICK)
        page = await context.new_page()
        await page.goto(entra.origin + "/")
        await page.wait_for_function(
            "document.querySelector('#conn').dataset.state === 'online'"
            " || document.querySelector('#signin-entra-error').textContent !== ''",
            timeout=WAIT,
        )
        assert await page.locator("#signin-entra-error").text_content() == ""
        assert await page.locator("#conn").get_attribute("data-state") == "online"
    finally:
        await context.close()
