"""Entra ID for the portal's browser tests, played on this machine: :class:`FakeEntra` is
login.microsoftonline.com as the browser sees it (through Playwright's request routing: nothing
leaves the machine), and :func:`entra_gateway` serves a gateway that checks its tokens against a
local JWKS with the gateway's own rules (issuers, audiences, tenant claim).

FakeEntra checks what a real authorization server checks on the authorization code flow (the
test asserts the PKCE pair) and redeems the refresh tokens it issued, as MSAL asks for them to
renew an access token silently; ``lifetime`` sets how long its access tokens live (``exp`` and
``expires_in``), short for the renewal tests, ``offline`` fails its token endpoint as a
network outage would, and :meth:`FakeEntra.revoke` ends the user's sign-in (refresh tokens
refused with ``invalid_grant``, a silent ``prompt=none`` request answered ``login_required``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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

TENANT_ID = "7d3e6a1c-0b5f-4a8e-9c2d-1f0e5b6a7c8d"
CLIENT_ID = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
USER_OID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
AUDIENCE = f"api://{CLIENT_ID}"
WAIT = 60_000  # ms


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unchecked (what the test sees pass by)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@dataclass
class FakeEntra:
    """The tenant's authorization server, as the browser sees it."""

    key: RSAPrivateKey
    origin: str
    jwks_url: str = ""
    lifetime: int = 3600  # seconds an access token lives
    authorize: dict[str, str] = field(default_factory=dict)
    redeemed: dict[str, str] = field(default_factory=dict)  # the authorization code's request
    refreshes: int = 0  # refresh tokens redeemed
    offline: bool = False  # token requests fail as on a network outage, and are counted:
    refused: int = 0
    signed_in: bool = True  # the user's session at Entra ID: prompt=none gets a code
    code: str = field(default_factory=lambda: uuid.uuid4().hex)
    _refresh_tokens: set[str] = field(default_factory=set)

    def revoke(self) -> None:
        """End the user's sign-in: the refresh tokens issued so far are refused, and a silent
        request (``prompt=none``) is answered ``login_required``, until they sign in again."""
        self._refresh_tokens.clear()
        self.signed_in = False

    @property
    def issuer(self) -> str:
        return entra_issuers(TENANT_ID)[0]

    def _jwt(self, lifetime: int = 3600, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "nbf": now, "exp": now + lifetime,
                "tid": TENANT_ID, "oid": USER_OID, "sub": "subject-1", **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})

    def access_token(self, lifetime: int | None = None, audience: str = CLIENT_ID) -> str:
        """An access token for the gateway: v2 (``aud`` the client id) by default."""
        return self._jwt(self.lifetime if lifetime is None else lifetime, aud=audience,
                         scp="access_as_user", ver="2.0" if audience == CLIENT_ID else "1.0")

    def client_info(self) -> str:
        return b64url(json.dumps({"uid": USER_OID, "utid": TENANT_ID}).encode())

    def _tokens(self) -> dict[str, Any]:
        refresh = "refresh-" + uuid.uuid4().hex
        self._refresh_tokens.add(refresh)
        return {
            "token_type": "Bearer",
            "scope": f"{AUDIENCE}/access_as_user",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": self.access_token(),
            "refresh_token": refresh,
            "id_token": self._jwt(
                aud=CLIENT_ID, nonce=self.authorize.get("nonce"), ver="2.0",
                name="Ada Lovelace", preferred_username="ada@contoso.test",
            ),
            "client_info": self.client_info(),
        }

    async def handle(self, route: Any) -> None:
        request = route.request
        url = urlsplit(request.url)
        cors = {"access-control-allow-origin": "*", "access-control-allow-headers": "*",
                "access-control-allow-methods": "GET, POST, OPTIONS"}
        if request.method == "OPTIONS":
            await route.fulfill(status=204, headers=cors)
            return
        if url.path.endswith("/oauth2/v2.0/authorize"):
            asked = {k: v[0] for k, v in parse_qs(url.query).items()}
            if asked.get("prompt") == "none" and not self.signed_in:
                location = (f"{asked['redirect_uri']}#error=login_required"
                            f"&error_description=AADSTS50058&state={asked['state']}")
                await route.fulfill(status=302, headers={"location": location})
                return
            self.authorize = asked
            self.signed_in = True
            location = (f"{self.authorize['redirect_uri']}#code={self.code}"
                        f"&state={self.authorize['state']}&client_info={self.client_info()}")
            await route.fulfill(status=302, headers={"location": location})
            return
        if url.path.endswith("/oauth2/v2.0/token"):
            if self.offline:
                self.refused += 1
                await route.abort("internetdisconnected")
                return
            form = {k: v[0] for k, v in parse_qs(request.post_data or "").items()}
            if form.get("grant_type") == "refresh_token":
                if form.get("refresh_token") not in self._refresh_tokens:
                    await route.fulfill(
                        status=400, headers=cors, content_type="application/json",
                        body=json.dumps({"error": "invalid_grant",
                                         "error_description": "unknown refresh token"}),
                    )
                    return
                self.refreshes += 1
            else:
                self.redeemed = form
            await route.fulfill(status=200, headers=cors, content_type="application/json",
                                body=json.dumps(self._tokens()))
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


@contextlib.asynccontextmanager
async def entra_gateway(
    redis_url: str, chroma_url: str, *, lifetime: int = 3600, leeway: float = 30.0,
    portal_sign_in: bool = True,
) -> AsyncIterator[FakeEntra]:
    """A gateway that checks Entra ID tokens (``leeway`` past their ``exp``), and the Entra ID
    that issues them (access tokens of ``lifetime`` seconds). Without ``portal_sign_in`` the
    gateway has no client id: the portal asks for a token instead of offering Microsoft's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Bound now and served on below: a port only probed here could be taken (by any outgoing
    # connection's ephemeral port) before uvicorn binds it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, redis_prefix=f"entra{uuid.uuid4().hex[:8]}",
        local_tokens="", entra_tenant_id=TENANT_ID, entra_audience=AUDIENCE,
        entra_client_id=CLIENT_ID if portal_sign_in else "", gateway_host="127.0.0.1",
        gateway_port=port, _env_file=None,
    )
    with sock, jwks_server(key) as jwks_url:
        services = await open_services(settings)
        # The gateway's own rules (issuers, audiences, tenant claim), with the keys served here
        # instead of login.microsoftonline.com's.
        services.auth = Authenticator(LocalTokens(""), EntraVerifier(
            jwks_url=jwks_url, issuer=entra_issuers(TENANT_ID), audience=entra_audiences(settings),
            leeway=leeway,
        ))
        gateway = Gateway(settings, services=services)
        server = uvicorn.Server(server_config(gateway, host="127.0.0.1", port=port))
        server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            yield FakeEntra(key, f"http://127.0.0.1:{port}", jwks_url, lifetime=lifetime)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await services.close()
