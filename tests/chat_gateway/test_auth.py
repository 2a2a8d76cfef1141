"""Local tokens and Entra-style JWTs: an RSA key generated here, its JWKS served by a local HTTP
server, tokens signed with PyJWT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from websockets.asyncio.client import connect

from chat_gateway.app import Gateway
from chat_gateway.auth import (
    Authenticator,
    AuthError,
    EntraVerifier,
    LocalTokens,
    bearer,
    entra_issuers,
    parse_pairs,
    portal_config,
    problems,
)
from parley.errors import ConfigError
from parley.settings import Settings
from tests.chat_gateway.conftest import ALPHA, World, ws_url

ISSUER = "https://login.example.test/tid-1/v2.0"
AUDIENCE = "api://parley"


def new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Jwks:
    def __init__(self, keys: dict[str, RSAPrivateKey]) -> None:
        self.keys = keys
        self.fetches = 0
        self.url = ""

    def document(self) -> bytes:
        self.fetches += 1
        jwks = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwks.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": jwks}).encode()


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    state = Jwks({"k1": new_key()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.document()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/keys"
    yield state
    server.shutdown()


def token(key: RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now, "sub": "user-1",
            "oid": "object-1", "tid": "contoso", **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def verifier(jwks: Jwks, **kwargs: Any) -> EntraVerifier:
    return EntraVerifier(jwks_url=jwks.url, issuer=ISSUER, audience=AUDIENCE, **kwargs)


def test_local_tokens_and_pairs() -> None:
    local = LocalTokens("dev-token:default, t2:beta")
    principal = local.verify("t2")
    assert principal is not None and principal.tenant == "beta" and principal.method == "local"
    assert local.verify("t3") is None
    assert local.token_for("default") == "dev-token"
    assert parse_pairs("group:with:colons:tenant") == {"group:with:colons": "tenant"}
    with pytest.raises(Exception, match="bad entry"):
        parse_pairs("no-colon")


def test_bearer_prefers_header_then_query() -> None:
    assert bearer({"authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert bearer({"authorization": "Basic abc"}, {"token": "q"}) == "q"
    assert bearer({}, {}) is None


async def test_valid_jwt_maps_tid_to_tenant(jwks: Jwks) -> None:
    principal = await verifier(jwks).verify(token(jwks.keys["k1"]))
    assert (principal.tenant, principal.subject, principal.method) == \
        ("contoso", "object-1", "entra")


async def test_an_entra_principal_lasts_as_long_as_the_gateway_takes_its_token(
    jwks: Jwks,
) -> None:
    exp = int(time.time()) - 10  # past, within the leeway: still taken
    principal = await verifier(jwks, leeway=30).verify(token(jwks.keys["k1"], exp=exp))
    # Until exp + leeway: a session ended at exp would let the same token in again (within the
    # leeway) and end at once, over and over.
    assert principal.expires_at == exp + 30
    local = LocalTokens("t:beta").verify("t")
    assert local is not None and local.expires_at is None


async def test_groups_claim_through_a_map(jwks: Jwks) -> None:
    check = verifier(jwks, tenant_claim="groups", tenant_map={"g-finance": "finance"})
    principal = await check.verify(token(jwks.keys["k1"], groups=["g-other", "g-finance"]))
    assert principal.tenant == "finance"
    with pytest.raises(AuthError, match="maps to no Parley tenant"):
        await check.verify(token(jwks.keys["k1"], groups=["g-other"]))


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iss": "https://evil.test/v2.0"}, "(?i)issuer"),
        ({"aud": "api://other"}, "(?i)audience"),
        ({"exp": int(time.time()) - 3600}, "(?i)expired"),
        ({"exp": None}, "exp"),
        ({"tid": "../../x"}, "not a valid tenant"),
    ],
)
async def test_bad_claims_are_rejected(jwks: Jwks, claims: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        await verifier(jwks).verify(token(jwks.keys["k1"], **claims))


async def test_foreign_signature_is_rejected_and_rotation_refetches(jwks: Jwks) -> None:
    check = verifier(jwks, refetch_cooldown=0.0)
    stranger = new_key()
    with pytest.raises(AuthError):
        await check.verify(token(stranger, kid="k1"))  # right kid, wrong key
    with pytest.raises(AuthError):
        await check.verify(token(stranger, kid="k9"))  # unknown kid
    jwks.keys["k2"] = stranger  # the provider rotates in a new key
    before = jwks.fetches
    principal = await check.verify(token(stranger, kid="k2"))
    assert principal.tenant == "contoso" and jwks.fetches > before


async def test_authenticator_tries_local_then_entra(jwks: Jwks) -> None:
    auth = Authenticator(LocalTokens("dev:default"), verifier(jwks))
    assert (await auth.authenticate("dev")).tenant == "default"
    assert (await auth.authenticate(token(jwks.keys["k1"]))).tenant == "contoso"
    with pytest.raises(AuthError, match="unknown token"):
        await auth.authenticate("not-a-jwt")
    with pytest.raises(AuthError, match="no token"):
        await auth.authenticate(None)


async def test_jwt_over_the_websocket(world: World, jwks: Jwks) -> None:
    auth = Authenticator(LocalTokens("tok-alpha:" + ALPHA), verifier(jwks))
    async with world.make_gateway(auth=auth) as base:
        async with connect(ws_url(base)) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token(jwks.keys["k1"])}))
            ready = json.loads(await ws.recv())
            # 600 s to exp, and the leeway (30 s): how long the session has, unless renewed.
            assert ready == {"type": "ready", "tenant": "contoso",
                             "expires_in": ready["expires_in"]}
            assert 620 <= ready["expires_in"] <= 630
        expired = token(jwks.keys["k1"], exp=int(time.time()) - 3600)
        async with connect(ws_url(base)) as ws:
            await ws.send(json.dumps({"type": "auth", "token": expired}))
            event = json.loads(await ws.recv())
            assert event["code"] == "unauthenticated" and "expired" in event["message"]


# --- startup rules and the portal's sign-in -----------------------------------------------------
TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "99999999-8888-7777-6666-555555555555"


def settings(**values: Any) -> Settings:
    return Settings(**values)


async def test_half_the_entra_settings_stop_the_gateway() -> None:
    for half in ({"entra_tenant_id": TENANT_ID}, {"entra_audience": f"api://{CLIENT_ID}"}):
        half_set = settings(local_tokens="mine:alpha", **half)
        with pytest.raises(ConfigError, match="half configured"):
            Authenticator.from_settings(half_set)
        # The gateway's startup refuses before it connects to anything (no Redis here).
        unreachable = half_set.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
        with pytest.raises(ConfigError, match="half configured"):
            await Gateway(unreachable).startup()


async def test_builtin_dev_token_only_on_loopback_or_with_the_flag() -> None:
    spec = "dev-token:default,mine:alpha"
    public = Authenticator.from_settings(settings(gateway_host="0.0.0.0", local_tokens=spec))
    with pytest.raises(AuthError, match="unknown token"):
        await public.authenticate("dev-token")
    assert (await public.authenticate("mine")).tenant == "alpha"
    for allowed in (
        settings(gateway_host="127.0.0.1", local_tokens=spec),
        settings(gateway_host="::1", local_tokens=spec),
        settings(gateway_host="0.0.0.0", local_tokens=spec, allow_dev_token=True),
    ):
        auth = Authenticator.from_settings(allowed)
        assert (await auth.authenticate("dev-token")).tenant == "default"
    # The default settings on a public bind leave nobody able to sign in: refuse to start.
    with pytest.raises(ConfigError, match="nobody can sign in"):
        Authenticator.from_settings(settings(gateway_host="0.0.0.0"))


def test_problems_name_each_rule() -> None:
    assert problems(settings()) == []  # loopback, the built-in token: the local default
    [dev] = problems(settings(gateway_host="0.0.0.0", local_tokens="dev-token:default,x:y"))
    assert dev.severity == "error" and not dev.stops and "PARLEY_ALLOW_DEV_TOKEN" in dev.fix
    entra = settings(gateway_host="0.0.0.0", local_tokens="", entra_tenant_id=TENANT_ID,
                     entra_audience=f"api://{CLIENT_ID}")
    [portal] = problems(entra)
    assert portal.severity == "warning" and "PARLEY_ENTRA_CLIENT_ID" in portal.fix
    assert problems(entra.model_copy(update={"entra_client_id": CLIENT_ID})) == []


async def test_v1_and_v2_tokens_of_the_tenant_are_accepted(jwks: Jwks) -> None:
    v2, v1 = entra_issuers(TENANT_ID)
    assert (v2, v1) == (
        f"https://login.microsoftonline.com/{TENANT_ID}/v2.0",
        f"https://sts.windows.net/{TENANT_ID}/",
    )
    built = EntraVerifier.for_entra_tenant(TENANT_ID, [f"api://{CLIENT_ID}", CLIENT_ID])
    assert built.issuers == [v2, v1]
    check = EntraVerifier(jwks_url=jwks.url, issuer=built.issuers, audience=built.audiences)
    key = jwks.keys["k1"]
    # v2: the client id as audience; v1: the application ID URI.
    assert (await check.verify(token(key, iss=v2, aud=CLIENT_ID))).tenant == "contoso"
    assert (await check.verify(token(key, iss=v1, aud=f"api://{CLIENT_ID}"))).tenant == "contoso"
    with pytest.raises(AuthError, match=r"(?i)issuer"):
        await check.verify(token(key, iss="https://sts.windows.net/other/", aud=CLIENT_ID))
    with pytest.raises(AuthError, match=r"(?i)audience"):
        await check.verify(token(key, iss=v2, aud="api://someone-else"))


def test_the_authenticator_accepts_both_audiences() -> None:
    auth = Authenticator.from_settings(settings(
        local_tokens="", entra_tenant_id=TENANT_ID, entra_audience=f"api://{CLIENT_ID}",
        entra_client_id=CLIENT_ID,
    ))
    assert auth.entra is not None
    assert auth.entra.audiences == [f"api://{CLIENT_ID}", CLIENT_ID]
    assert auth.entra.issuers == list(entra_issuers(TENANT_ID))


async def _get(app: Gateway, path: str) -> tuple[int, bytes, dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], body, headers


async def test_the_portal_learns_how_to_sign_in() -> None:
    entra = settings(local_tokens="", entra_tenant_id=TENANT_ID,
                     entra_audience=f"api://{CLIENT_ID}", entra_client_id=CLIENT_ID)
    status, body, _ = await _get(Gateway(entra), "/api/auth/config")
    assert status == 200
    assert json.loads(body) == {"entra": {
        "clientId": CLIENT_ID,
        "authority": f"https://login.microsoftonline.com/{TENANT_ID}",
        "scopes": [f"api://{CLIENT_ID}/access_as_user"],
    }}
    assert portal_config(settings()) == {"entra": None}
    status, body, _ = await _get(Gateway(settings()), "/api/auth/config")
    assert (status, json.loads(body)) == (200, {"entra": None})


async def test_msal_is_served_as_a_static_file_with_its_licence() -> None:
    app = Gateway(settings())
    status, body, headers = await _get(app, "/static/vendor/msal-browser.min.js")
    assert status == 200 and "javascript" in headers["content-type"]
    assert body.startswith(b"/*! @azure/msal-browser v") and b"PublicClientApplication" in body
    status, licence, _ = await _get(app, "/static/vendor/msal-browser.LICENSE.txt")
    assert status == 200 and b"MIT License" in licence
    # The portal loads it only when the gateway says Entra ID is configured.
    _, signin, _ = await _get(app, "/static/js/signin.js")
    assert b'"/static/vendor/msal-browser.min.js"' in signin and b"loginRedirect" in signin
    _, index, _ = await _get(app, "/")
    assert b'id="signin-microsoft"' in index
