"""The testing kit's protected API: the resource server's checks of an access token and its answer.

Any path and any method of an :class:`~requests_tokenrefresh.testing.AuthServer` that is not a
token or login endpoint is the protected API. It answers ``200`` and a digest of the request
body when the access token is in the server's table and unexpired, its path is not one of
``denied_paths``, and its holder proves possession where the token is bound (RFC 9449 §7, RFC
8705 §3):

* a token bound to a certificate (``x5t#S256``) only on a TLS connection with that certificate;
* a token bound to a DPoP key (``jkt``) only as ``Authorization: DPoP`` with a proof of that key
  for this request and token (checked by :mod:`._dpop`), never as a bearer token.

Otherwise ``401`` with ``WWW-Authenticate: Bearer`` (or ``DPoP``) and the error:
``invalid_token``, ``invalid_dpop_proof`` or ``use_dpop_nonce``. Every call is counted in
``api_calls`` (and ``api_rejections``) and logged in ``api_log``.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from ._dpop import ProofError
from ._tls import certificate_thumbprint

if TYPE_CHECKING:
    from ._http import Request
    from .authserver import AuthServer

__all__ = ["answer"]


def answer(server: AuthServer, authorization: str | None, body: bytes, path: str) -> tuple[int, dict[str, Any]]:
    """Check one API request's token and answer it (the body of ``AuthServer.api``)."""
    request = server._current_request("GET", path)
    scheme, _, token = (authorization or "").partition(" ")
    scheme = scheme.lower() if scheme.lower() in ("bearer", "dpop") else ""
    token = token if scheme else ""
    error = _possession_error(server, scheme, token, request)
    with server.lock:
        server.api_calls += 1
        expires_at, _ = server._access.get(token, (0.0, 0))
        bound = "jkt" in server._cnf.get(token, {})
        ok = error is None and expires_at > time.time() and path not in server.denied_paths
        if not ok:
            server.api_rejections += 1
        server.api_log.append({"t": time.time(), "token": token, "status": 200 if ok else 401})
    nonce = server._dpop.nonce("api") if server.dpop else None
    if nonce:
        request.headers["DPoP-Nonce"] = nonce
    if not ok:
        error = error or "invalid_token"
        challenge = "DPoP" if scheme == "dpop" or bound else "Bearer"
        request.headers["WWW-Authenticate"] = f'{challenge} error="{error}"'
        return 401, {"error": error}
    return 200, {"ok": True, "length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def _possession_error(server: AuthServer, scheme: str, token: str, request: Request) -> str | None:
    """Why the API refuses ``token`` as ``scheme`` for want of proof of possession (RFC 9449 §7, RFC 8705 §3)."""
    with server.lock:
        cnf = server._cnf.get(token, {})
    if "x5t#S256" in cnf and (request.cert is None or certificate_thumbprint(request.cert) != cnf["x5t#S256"]):
        return "invalid_token"
    if scheme != "dpop":
        return "invalid_token" if "jkt" in cnf else None  # a DPoP-bound token sent as a bearer token
    try:
        jkt = server._dpop.check(
            "api", request.dpop, method=request.method, urls=request.urls, endpoint=request.path, access_token=token
        )
    except ProofError as exc:
        return exc.error
    return None if cnf.get("jkt") == jkt else "invalid_token"
