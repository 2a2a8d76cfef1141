"""Who is asking, and which tenant's documents they may retrieve.

Two kinds of bearer token, tried in this order:

- local tokens from ``settings.local_tokens`` (``"token:tenant,..."``), compared in constant time.
  The built-in ``dev-token`` is accepted only when the gateway binds a loopback address or
  ``PARLEY_ALLOW_DEV_TOKEN`` is set: a gateway on ``0.0.0.0`` ignores it;
- on Azure, Entra ID access tokens (JWT, RS256) validated against the tenant's JWKS with PyJWT:
  signature, issuer (the tenant's v2 ``login.microsoftonline.com/<tenant>/v2.0`` or v1
  ``sts.windows.net/<tenant>/``), audience (the application ID URI, or the client id that v2
  tokens carry) and expiry (with a small leeway). A claim (``tid`` by default, or ``groups``) is
  mapped to the Parley tenant: through ``entra_tenant_map`` (``"value:tenant,..."``; with a list
  claim the first mapped value wins) or, without a map, the claim's value itself.

:func:`problems` is the startup rule, shared with ``parley doctor``: Entra ID takes both its
tenant and its audience (the gateway refuses to start with one), and some way to sign in must
remain. :func:`portal_config` is what the portal needs to sign in with Entra ID in the browser.

The JWKS is fetched (urllib, in a thread) on first use and cached by ``PyJWKClient``; a token
signed by an unknown key id triggers a refetch (key rotation), at most once per cooldown.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import structlog

from parley.errors import ConfigError, ParleyError
from parley.ids import TENANT_PATTERN, TenantId
from parley.settings import Settings

log = structlog.get_logger(__name__)
DEV_TOKEN = "dev-token"  # the built-in token of the default PARLEY_LOCAL_TOKENS
LOGIN = "https://login.microsoftonline.com"


class AuthError(ParleyError):
    reason = "unauthenticated"


@dataclass(frozen=True)
class Principal:
    tenant: TenantId
    subject: str
    method: Literal["local", "entra"]
    # Unix time this gateway stops accepting the token (a JWT's ``exp`` plus the verifier's
    # leeway); None for tokens that do not expire (local tokens). A websocket session ends then
    # unless it re-authenticates: not at ``exp``, or a client reconnecting with the same token
    # would be let in (within the leeway) and its session ended again at once, over and over.
    expires_at: float | None = None


def parse_pairs(spec: str) -> dict[str, str]:
    """``"a:x, b:y"`` -> ``{"a": "x", "b": "y"}``; the value is after the last colon."""
    pairs: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.rpartition(":")
        if not sep or not key or not value:
            raise ParleyError(
                f"bad entry {item!r}", reason="config",
                hint="use the form 'key:tenant,key2:tenant2'",
            )
        pairs[key.strip()] = value.strip()
    return pairs


def _tenant(value: str) -> TenantId:
    if not TENANT_PATTERN.match(value):
        raise AuthError(f"tenant {value!r} is not a valid tenant name")
    return TenantId(value)


class LocalTokens:
    def __init__(self, spec: str, *, allow_dev_token: bool = True) -> None:
        pairs = parse_pairs(spec)
        if not allow_dev_token:
            pairs.pop(DEV_TOKEN, None)
        self._tokens = [(t.encode(), _tenant(tenant)) for t, tenant in pairs.items()]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def verify(self, token: str) -> Principal | None:
        given = token.encode()
        found: TenantId | None = None
        # Compare against every entry so the time taken does not tell which one matched.
        for known, tenant in self._tokens:
            if hmac.compare_digest(known, given):
                found = tenant
        if found is None:
            return None
        return Principal(found, f"local:{found}", "local")

    def token_for(self, tenant: str) -> str | None:
        for known, owner in self._tokens:
            if owner == tenant:
                return known.decode()
        return None


class EntraVerifier:
    """Validates Entra ID (or any OIDC issuer's) RS256 access tokens against a JWKS URL."""

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        tenant_claim: str = "tid",
        tenant_map: Mapping[str, str] | None = None,
        leeway: float = 30.0,
        refetch_cooldown: float = 30.0,
    ) -> None:
        # An unknown key id refetches the JWKS at most once per cooldown, so forged tokens with
        # made-up kids cannot make us hammer the identity provider.
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=3600, timeout=10,
            cooldown_duration=refetch_cooldown,
        )
        self._issuer = issuer if isinstance(issuer, str) else list(issuer)
        self._audience = audience if isinstance(audience, str) else list(audience)
        self._claim = tenant_claim
        self._map = dict(tenant_map or {})
        self._leeway = leeway

    @classmethod
    def for_entra_tenant(
        cls, tenant_id: str, audience: str | Sequence[str], **kwargs: Any
    ) -> EntraVerifier:
        """A verifier of the tenant's v1 and v2 access tokens (one signing key set)."""
        return cls(
            jwks_url=f"{LOGIN}/{tenant_id}/discovery/v2.0/keys",
            issuer=entra_issuers(tenant_id),
            audience=audience,
            **kwargs,
        )

    @property
    def issuers(self) -> list[str]:
        return [self._issuer] if isinstance(self._issuer, str) else list(self._issuer)

    @property
    def audiences(self) -> list[str]:
        return [self._audience] if isinstance(self._audience, str) else list(self._audience)

    async def verify(self, token: str) -> Principal:
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(
                "cannot fetch the identity provider's signing keys",
                reason="auth_unavailable", hint="try again shortly",
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected: {exc}", hint="sign in again") from None
        return Principal(self._map_tenant(claims), str(claims.get("oid", claims.get("sub", ""))),
                         "entra", expires_at=float(claims["exp"]) + self._leeway)

    def _map_tenant(self, claims: Mapping[str, Any]) -> TenantId:
        value = claims.get(self._claim)
        values = [value] if isinstance(value, str) else list(value or [])
        if self._map:
            for item in values:
                if str(item) in self._map:
                    return _tenant(self._map[str(item)])
            raise AuthError(
                f"your account's {self._claim!r} claim maps to no Parley tenant",
                hint="ask an administrator to add it to PARLEY_ENTRA_TENANT_MAP",
            )
        if len(values) != 1:
            raise AuthError(f"the token has no single {self._claim!r} claim to name a tenant")
        return _tenant(str(values[0]))


def entra_issuers(tenant_id: str) -> tuple[str, str]:
    """The issuers of a tenant's access tokens: v2 (``requested_access_token_version = 2``) and
    v1 (the default of an app registration)."""
    return f"{LOGIN}/{tenant_id}/v2.0", f"https://sts.windows.net/{tenant_id}/"


def entra_audiences(settings: Settings) -> list[str]:
    """What the ``aud`` claim may be: the application ID URI (v1 tokens) and the client id (v2)."""
    found = [a for a in (settings.entra_audience, settings.entra_client_id) if a]
    return list(dict.fromkeys(found))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev_token_allowed(settings: Settings) -> bool:
    """The built-in dev token works only where nobody else can reach the gateway, or when a
    development deployment says so explicitly."""
    return settings.allow_dev_token or is_loopback(settings.gateway_host)


@dataclass(frozen=True)
class Problem:
    """A sign-in setting that is wrong. ``error`` fails ``parley doctor``; ``stops`` also keeps
    the gateway from starting (the others it works around, e.g. by ignoring the dev token)."""

    severity: Literal["error", "warning"]
    message: str
    fix: str
    stops: bool = False


def problems(settings: Settings) -> list[Problem]:
    """What is wrong with the sign-in settings (pure: no network)."""
    found: list[Problem] = []
    tenant, audience = bool(settings.entra_tenant_id), bool(settings.entra_audience)
    if tenant != audience:
        found.append(Problem(
            "error",
            "Entra ID is half configured: PARLEY_ENTRA_TENANT_ID and PARLEY_ENTRA_AUDIENCE go "
            "together (with one, no token would be checked)",
            "set both (Terraform's azure.env does) or neither",
            stops=True,
        ))
    pairs = parse_pairs(settings.local_tokens.get_secret_value())
    if DEV_TOKEN in pairs and not dev_token_allowed(settings):
        found.append(Problem(
            "error",
            f"the built-in '{DEV_TOKEN}' is configured but the gateway binds "
            f"{settings.gateway_host}: it is not accepted there",
            "set PARLEY_LOCAL_TOKENS to your own tokens (or empty with Entra ID); on a private "
            "dev cluster only, PARLEY_ALLOW_DEV_TOKEN=true",
        ))
    usable = [t for t in pairs if t != DEV_TOKEN or dev_token_allowed(settings)]
    if not usable and not (tenant and audience):
        found.append(Problem(
            "error", "nobody can sign in: no local token and no Entra ID",
            "set PARLEY_ENTRA_TENANT_ID and PARLEY_ENTRA_AUDIENCE, or PARLEY_LOCAL_TOKENS",
            stops=True,
        ))
    if tenant and audience and not settings.entra_client_id:
        found.append(Problem(
            "warning",
            "Entra ID checks tokens, but the portal cannot sign in in the browser (no client id)",
            "set PARLEY_ENTRA_CLIENT_ID to the portal's app registration",
        ))
    return found


def require_startable(settings: Settings) -> list[Problem]:
    """:class:`ConfigError` when the sign-in settings must stop the gateway; else the problems
    it works around (to be logged)."""
    found = problems(settings)
    fatal = [p for p in found if p.stops]
    if fatal:
        raise ConfigError(
            "; ".join(p.message for p in fatal), hint="; ".join(p.fix for p in fatal)
        )
    return found


def portal_config(settings: Settings) -> dict[str, Any]:
    """What the portal needs to sign in with Entra ID (authorization code + PKCE, MSAL.js), or
    ``{"entra": None}``: it then asks for a token. Public: nothing in it is a secret."""
    if not (settings.entra_tenant_id and settings.entra_audience and settings.entra_client_id):
        return {"entra": None}
    audience = settings.entra_audience.rstrip("/")
    return {
        "entra": {
            "clientId": settings.entra_client_id,
            "authority": f"{LOGIN}/{settings.entra_tenant_id}",
            "scopes": [f"{audience}/{settings.entra_scope}"],
        }
    }


class Authenticator:
    def __init__(self, local: LocalTokens, entra: EntraVerifier | None = None) -> None:
        self.local = local
        self.entra = entra

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The gateway's authenticator; :class:`ConfigError` on a settings error (see
        :func:`problems`), so that a misconfigured gateway does not start."""
        for problem in require_startable(settings):
            log.warning("auth_settings", problem=problem.message, fix=problem.fix)
        entra = None
        if settings.entra_tenant_id and settings.entra_audience:
            entra = EntraVerifier.for_entra_tenant(
                settings.entra_tenant_id,
                entra_audiences(settings),
                tenant_claim=settings.entra_tenant_claim,
                tenant_map=parse_pairs(settings.entra_tenant_map),
            )
        local = LocalTokens(
            settings.local_tokens.get_secret_value(), allow_dev_token=dev_token_allowed(settings)
        )
        return cls(local, entra)

    async def authenticate(self, token: str | None) -> Principal:
        """The principal behind ``token``, or :class:`AuthError` with what to do about it."""
        if not token:
            raise AuthError(
                "no token", hint="send 'Authorization: Bearer <token>' or an auth message"
            )
        principal = self.local.verify(token)
        if principal is not None:
            return principal
        if self.entra is not None and token.count(".") == 2:
            return await self.entra.verify(token)
        raise AuthError("unknown token", hint="get a token with 'parley token' or sign in again")


def bearer(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token of a request: ``Authorization: Bearer`` header, else ``?token=``."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return query.get("token") or None
