"""The portal signs in with Entra ID in the browser, end to end, in headless Chromium: the gateway
is configured for Entra ID, the page offers "Sign in with Microsoft", MSAL.js (the vendored file)
goes to the tenant's authorize endpoint with an authorization code request and a PKCE challenge,
comes back with a code, redeems it with the verifier, and the portal connects with the access
token, which the gateway checks (signature, issuer, audience, expiry) and maps to the tenant.

login.microsoftonline.com is played by the test through Playwright's request routing (nothing
leaves the machine): it checks what a real authorization server checks (client id, redirect URI,
scope, S256 of the verifier equals the challenge) and issues tokens signed by a key whose JWKS
the gateway fetches from a local server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from chat_gateway.app import Gateway
from chat_gateway.auth import (
    Authenticator,
    EntraVerifier,
    LocalTokens,
    entra_audiences,
    entra_issuers,
)
from chat_gateway.server import config as server_config
from chat_gateway.services import open_services
from parley.settings import Settings

pytestmark = pytest.mark.slow

TENANT_ID = "7d3e6a1c-0b5f-4a8e-9c2d-1f0e5b6a7c8d"
CLIENT_ID = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
USER_OID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
WAIT = 60_000  # ms


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FakeEntra:
    """The tenant's authorization server, as the browser sees it."""

    key: RSAPrivateKey
    origin: str
    jwks_url: str = ""
    authorize: dict[str, str] = field(default_factory=dict)
    redeemed: dict[str, str] = field(default_factory=dict)
    code: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def issuer(self) -> str:
        return entra_issuers(TENANT_ID)[0]

    def _jwt(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "nbf": now, "exp": now + 3600, "tid": TENANT_ID,
                "oid": USER_OID, "sub": "subject-1", **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})

    def client_info(self) -> str:
        return _b64url(json.dumps({"uid": USER_OID, "utid": TENANT_ID}).encode())

    async def handle(self, route: Any) -> None:
        request = route.request
        url = urlsplit(request.url)
        cors = {"access-control-allow-origin": "*", "access-control-allow-headers": "*",
                "access-control-allow-methods": "GET, POST, OPTIONS"}
        if request.method == "OPTIONS":
            await route.fulfill(status=204, headers=cors)
            return
        if url.path.endswith("/oauth2/v2.0/authorize"):
            self.authorize = {k: v[0] for k, v in parse_qs(url.query).items()}
            location = (f"{self.authorize['redirect_uri']}#code={self.code}"
                        f"&state={self.authorize['state']}&client_info={self.client_info()}")
            await route.fulfill(status=302, headers={"location": location})
            return
        if url.path.endswith("/oauth2/v2.0/token"):
            self.redeemed = {k: v[0] for k, v in parse_qs(request.post_data or "").items()}
            body = {
                "token_type": "Bearer",
                "scope": f"api://{CLIENT_ID}/access_as_user",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": self._jwt(aud=CLIENT_ID, scp="access_as_user", ver="2.0"),
                "refresh_token": "refresh-" + uuid.uuid4().hex,
                "id_token": self._jwt(
                    aud=CLIENT_ID, nonce=self.authorize.get("nonce"), ver="2.0",
                    name="Ada Lovelace", preferred_username="ada@contoso.test",
                ),
                "client_info": self.client_info(),
            }
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(body))
            return
        if "discovery/instance" in url.path:
            tenant_url = f"https://login.microsoftonline.com/{TENANT_ID}"
            body = {
                "tenant_discovery_endpoint": f"{tenant_url}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": "login.microsoftonline.com",
                              "preferred_cache": "login.windows.net",
                              "aliases": ["login.microsoftonline.com", "login.windows.net"]}],
            }
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(body))
            return
        if url.path.endswith("/.well-known/openid-configuration"):
            base = f"https://login.microsoftonline.com/{TENANT_ID}"
            body = {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
            }
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(body))
            return
        await route.fulfill(status=404, headers=cors, body="not played by the test")


@contextlib.contextmanager
def jwks_server(key: RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    document = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/keys"
    finally:
        server.shutdown()


@pytest.fixture
async def entra_gateway(redis_url: str, chroma_url: str) -> AsyncIterator[FakeEntra]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, redis_prefix=f"entra{uuid.uuid4().hex[:8]}",
        local_tokens="", entra_tenant_id=TENANT_ID, entra_audience=f"api://{CLIENT_ID}",
        entra_client_id=CLIENT_ID, gateway_host="127.0.0.1", gateway_port=port, _env_file=None,
    )
    with jwks_server(key) as jwks_url:
        services = await open_services(settings)
        # The gateway's own rules (issuers, audiences, tenant claim), with the keys served here
        # instead of login.microsoftonline.com's.
        services.auth = Authenticator(LocalTokens(""), EntraVerifier(
            jwks_url=jwks_url, issuer=entra_issuers(TENANT_ID), audience=entra_audiences(settings),
        ))
        gateway = Gateway(settings, services=services)
        server = uvicorn.Server(server_config(gateway, host="127.0.0.1", port=port))
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            yield FakeEntra(key, f"http://127.0.0.1:{port}", jwks_url)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await services.close()


async def test_portal_signs_in_with_entra_id(chromium: Any, entra_gateway: FakeEntra) -> None:
    entra = entra_gateway
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
    challenge = _b64url(hashlib.sha256(redeemed["code_verifier"].encode()).digest())
    assert challenge == asked["code_challenge"]
    assert errors == []
