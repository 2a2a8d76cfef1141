"""Who is asking, and which tenant's documents they may retrieve.

Two kinds of bearer token, tried in this order:

- local tokens from ``settings.local_tokens`` (``"token:tenant,..."``), compared in constant time;
- on Azure, Entra ID access tokens (JWT, RS256) validated against the tenant's JWKS with PyJWT:
  signature, issuer, audience and expiry (with a small leeway). A claim (``tid`` by default, or
  ``groups``) is mapped to the Parley tenant: through ``entra_tenant_map`` (``"value:tenant,..."``;
  with a list claim the first mapped value wins) or, without a map, the claim's value itself.

The JWKS is fetched (urllib, in a thread) on first use and cached by ``PyJWKClient``; a token
signed by an unknown key id triggers a refetch (key rotation), at most once per cooldown.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from parley.errors import ParleyError
from parley.ids import TENANT_PATTERN, TenantId
from parley.settings import Settings


class AuthError(ParleyError):
    reason = "unauthenticated"


@dataclass(frozen=True)
class Principal:
    tenant: TenantId
    subject: str
    method: Literal["local", "entra"]
    # Unix time the token stops being valid (a JWT's ``exp``); None for tokens that do not
    # expire (local tokens). A websocket session ends then unless it re-authenticates.
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
    def __init__(self, spec: str) -> None:
        self._tokens = [(t.encode(), _tenant(tenant)) for t, tenant in parse_pairs(spec).items()]

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
        issuer: str,
        audience: str,
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
        self._issuer = issuer
        self._audience = audience
        self._claim = tenant_claim
        self._map = dict(tenant_map or {})
        self._leeway = leeway

    @classmethod
    def for_entra_tenant(
        cls, tenant_id: str, audience: str, **kwargs: Any
    ) -> EntraVerifier:
        base = f"https://login.microsoftonline.com/{tenant_id}"
        return cls(
            jwks_url=f"{base}/discovery/v2.0/keys", issuer=f"{base}/v2.0", audience=audience,
            **kwargs,
        )

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
                         "entra", expires_at=float(claims["exp"]))

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


class Authenticator:
    def __init__(self, local: LocalTokens, entra: EntraVerifier | None = None) -> None:
        self.local = local
        self.entra = entra

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        entra = None
        if settings.entra_tenant_id and settings.entra_audience:
            entra = EntraVerifier.for_entra_tenant(
                settings.entra_tenant_id,
                settings.entra_audience,
                tenant_claim=settings.entra_tenant_claim,
                tenant_map=parse_pairs(settings.entra_tenant_map),
            )
        return cls(LocalTokens(settings.local_tokens.get_secret_value()), entra)

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
