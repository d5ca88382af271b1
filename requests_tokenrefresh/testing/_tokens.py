"""The testing kit's token table: minting tokens, the refresh and client credentials grants, revocation.

:class:`~requests_tokenrefresh.testing.AuthServer` holds the table, under its ``lock``; this module
owns the rules that change it:

* Every login (``AuthServer.issue``, the code and device grants) starts a token *family*
  (:class:`Family`); every refresh token ever issued stays in ``_refresh`` with its family, so
  that an old one is recognised when it comes back. ``_access`` maps each live access token to
  its expiry and family, ``_cnf`` to what it is bound to.
* :func:`refresh_grant` rotates as ``rotation`` says: "none" answers with the same refresh token,
  "rotate" with a new one and refuses the old ones, "reuse-detection" also revokes the whole
  family when an old one comes back (RFC 9700 §4.14). Within ``reuse_grace`` seconds of a
  rotation the refresh token just replaced still gets the current one, and revokes nothing. A
  family bound to a DPoP key is refreshed only with a proof of that key (a refusal that revokes
  nothing: it is no reuse).
* :func:`binding` says what a token request's tokens are bound to (RFC 7800's ``cnf``): the
  client certificate's thumbprint under mutual TLS, the key of the request's DPoP proof.
* Revoking a family drops its access tokens too (RFC 7009 §2.1).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from ._dpop import ProofError
from ._tls import certificate_thumbprint

if TYPE_CHECKING:
    from ._http import Request
    from .authserver import AuthServer

__all__ = ["Family", "binding", "client_credentials_grant", "new_family", "refresh_grant", "revoke"]


@dataclasses.dataclass
class Family:
    """The refresh tokens of one login: the current one, the one it replaced, and whether all are revoked."""

    current_refresh: str
    revoked: bool = False
    previous_refresh: str | None = None  # the one current_refresh replaced, and when
    rotated_at: float = 0.0
    jkt: str | None = None  # the DPoP key its refresh tokens are bound to


def new_family(server: AuthServer, cnf: dict[str, str]) -> dict[str, Any]:
    """Start a token family (a login) bound to ``cnf``; return its token response. Hold ``server.lock``."""
    family = len(server._families) + 1
    refresh = _new_refresh(server, family)
    server._families[family] = Family(refresh, jkt=cnf.get("jkt"))
    return _response(server, family, refresh, cnf)


def client_credentials_grant(server: AuthServer, cnf: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The ``client_credentials`` grant (RFC 6749 §4.4): an access token of a family of its own, no refresh token."""
    if server.client_id is None:  # RFC 6749 §4.4: for confidential clients only
        return 400, {"error": "unauthorized_client"}
    with server.lock:
        number = len(server._families) + 1
        server._families[number] = Family("")
        return 200, _response(server, number, None, cnf)


def refresh_grant(server: AuthServer, form: dict[str, str], cnf: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The ``refresh_token`` grant, with the server's rotation, reuse detection and grace window."""
    presented = form.get("refresh_token", "")
    with server.lock:
        family_id = server._refresh.get(presented)
        family = server._families.get(family_id) if family_id is not None else None
        if family_id is None or family is None or family.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
        if family.jkt is not None and cnf.get("jkt") != family.jkt:  # not a reuse: nothing is revoked
            return 400, {"error": "invalid_grant", "error_description": "The refresh token is bound to another key"}
        family.jkt = cnf.get("jkt")
        if server.rotation == "none":
            return 200, _response(server, family_id, None, cnf)
        in_grace = time.time() - family.rotated_at <= server.reuse_grace
        if presented == family.previous_refresh and in_grace:
            return 200, _response(server, family_id, family.current_refresh, cnf)
        if presented != family.current_refresh:
            if server.rotation == "reuse-detection":
                _revoke_family(server, family_id)
            return 400, {"error": "invalid_grant", "error_description": "Refresh token was already used"}
        family.previous_refresh, family.rotated_at = presented, time.time()
        family.current_refresh = _new_refresh(server, family_id)
        return 200, _response(server, family_id, family.current_refresh, cnf)


def revoke(server: AuthServer, token: str) -> None:
    """Revoke ``token``: a refresh token's whole family, or one access token (RFC 7009 §2.1)."""
    with server.lock:
        family_id = server._refresh.get(token)
        if family_id is not None and family_id in server._families:
            _revoke_family(server, family_id)
        server._access.pop(token, None)


def binding(server: AuthServer, request: Request) -> tuple[dict[str, str], tuple[int, dict[str, Any]] | None]:
    """What a token request's tokens are bound to (its ``cnf``), or the refusal of its DPoP proof."""
    cnf: dict[str, str] = {}
    if server.client_cert_auth and request.cert is not None:
        cnf["x5t#S256"] = certificate_thumbprint(request.cert)
    refusal = None
    if server.dpop and (request.dpop or server.dpop_required):
        try:
            cnf["jkt"] = server._dpop.check(
                "token", request.dpop, method=request.method, urls=request.urls, endpoint=request.path
            )
        except ProofError as exc:
            refusal = 400, {"error": exc.error, "error_description": exc.description}
    nonce = server._dpop.nonce("token") if server.dpop else None
    if nonce:
        request.headers["DPoP-Nonce"] = nonce
    return cnf, refusal


def _revoke_family(server: AuthServer, family_id: int) -> None:
    """Revoke a family and its access tokens; hold ``server.lock``."""
    server._families[family_id].revoked = True
    server._access = {k: v for k, v in server._access.items() if v[1] != family_id}


def _new_refresh(server: AuthServer, family: int) -> str:
    token = "rt-" + secrets.token_urlsafe(24)
    server._refresh[token] = family
    return token


def _new_access(server: AuthServer, family: int, cnf: dict[str, str]) -> tuple[str, float]:
    now = time.time()
    expires_at = now + server.ttl
    if server.jwt:
        claims: dict[str, Any] = {
            "iat": int(now) if server.ttl >= 1 else now,
            "exp": int(expires_at) if server.ttl >= 1 else expires_at,
            "fam": family,
            "jti": secrets.token_hex(8),
        }
        if cnf:
            claims["cnf"] = cnf
        token = ".".join(_b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, claims))
        token += "." + _b64(hashlib.sha256(token.encode()).digest())
    else:
        token = "at-" + secrets.token_urlsafe(24)
    server._access[token] = (expires_at, family)
    if cnf:
        server._cnf[token] = cnf
    return token, expires_at


def _response(server: AuthServer, family: int, refresh: str | None, cnf: dict[str, str]) -> dict[str, Any]:
    access, _ = _new_access(server, family, cnf)
    kind = "DPoP" if "jkt" in cnf else "Bearer"
    body: dict[str, Any] = {"access_token": access, "token_type": kind, "expires_in": server.ttl, "scope": "api"}
    if refresh is not None:
        body["refresh_token"] = refresh
        if server.refresh_expires_in is not None:
            body["refresh_expires_in"] = server.refresh_expires_in
    return body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
