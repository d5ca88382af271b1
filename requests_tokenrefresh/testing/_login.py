"""The testing kit's login endpoints: metadata, the authorization code and device flows, revocation.

:class:`~requests_tokenrefresh.testing.AuthServer` owns their settings and logs (``metadata_*``,
``issuer_override``, ``authorize_mode``, ``device_*``, ``revocation_mode``, ``codes``,
``devices``, ``login_log``, ``revocation_log``) and its token table; this module answers:

* ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``: the
  metadata (OpenID Connect and RFC 8414), as ``metadata_format`` says;
* ``/authorize``: a login form (authorization code + PKCE S256, loopback redirect URIs only);
  :func:`code_grant` redeems its codes at the token endpoint;
* ``/device_authorization`` and the ``/device`` approval page (RFC 8628); :func:`device_grant`
  answers the polls;
* ``/revoke`` (RFC 7009): a refresh token revokes its family, an access token itself.

Each has the modes of a pitfall a client must survive (the server's ``*_mode`` attributes).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from . import _tokens
from ._client_auth import client_ok
from ._dpop import ALGORITHMS as DPOP_ALGORITHMS
from ._http import json_answer

if TYPE_CHECKING:
    from .authserver import AuthServer

__all__ = ["DEVICE_GRANT", "code_grant", "device_grant", "endpoint", "metadata"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def endpoint(
    server: AuthServer, method: str, path: str, query: str, body: bytes, authorization: str | None
) -> tuple[int, bytes, dict[str, str]] | None:
    """Answer a request for one of the login endpoints, or None if it is for another path."""
    cert = server._current_request(method, path).cert
    params = {k: v[0] for k, v in parse_qs(query).items()}
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    if path.startswith("/.well-known/"):
        served = {
            "oidc": ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"),
            "rfc8414": ("/.well-known/oauth-authorization-server",),
        }.get(server.metadata_format, ())
        if path in served and method == "GET":
            return json_answer(200, server.metadata())
        return json_answer(404, {"error": "not_found"})
    if path == "/authorize" and method in ("GET", "POST"):
        return _authorize(server, method, params if method == "GET" else form)
    if path == "/device" and method in ("GET", "POST"):
        return _device_page(server, method, params if method == "GET" else form)
    if path == "/device_authorization" and method == "POST":
        return json_answer(*_device_authorization(server, form, authorization, cert))
    if path == "/revoke" and method == "POST":
        return json_answer(*_revoke(server, form, authorization, cert))
    return None


def metadata(server: AuthServer) -> dict[str, Any]:
    """The metadata document, as modified by the ``metadata_*`` and ``issuer_override`` attributes."""
    document: dict[str, Any] = {
        "issuer": server.issuer_override or server.issuer,
        "authorization_endpoint": server.url + "/authorize",
        "token_endpoint": server.token_url,
        "device_authorization_endpoint": server.url + "/device_authorization",
        "revocation_endpoint": server.url + "/revoke",
        "code_challenge_methods_supported": ["S256"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
        "scopes_supported": ["openid", "api"],
    }
    if server.dpop:
        document["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
    if server.client_cert_auth:
        document["tls_client_certificate_bound_access_tokens"] = True
        methods = ["tls_client_auth", "client_secret_basic", "client_secret_post", "private_key_jwt"]
        document["token_endpoint_auth_methods_supported"] = methods
        if server.mtls_aliases:
            document["mtls_endpoint_aliases"] = {"token_endpoint": server.url + "/mtls/token"}
    for name in server.metadata_omit:
        document.pop(name, None)
    document.update(server.metadata_extra)
    return document


def _authorization_problem(server: AuthServer, params: dict[str, str]) -> str | None:
    """Why an authorization request cannot be redirected back (RFC 6749 §4.1.2.1), or None."""
    if server.client_id is not None and params.get("client_id") != server.client_id:
        return "unknown client_id"
    redirect = urlsplit(params.get("redirect_uri", ""))
    if redirect.scheme != "http" or redirect.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "the redirect_uri must be a loopback http URI (RFC 8252)"
    if params.get("response_type") != "code":
        return "response_type must be code"
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        return "PKCE with S256 is required"
    return None


def _authorize(server: AuthServer, method: str, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    problem = _authorization_problem(server, params)
    if problem is not None:
        return _page(400, "Bad authorization request", problem)
    if method == "GET":
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        script = "<script>document.forms[0].submit()</script>" if server.authorize_mode == "auto-approve" else ""
        return _page(
            200,
            "Log in",
            f'<form method="post" action="/authorize">{hidden}'
            '<label>User <input name="username" value="alice"></label> '
            '<button type="submit" name="approve" value="1">Allow</button> '
            '<button type="submit" name="deny" value="1">Deny</button></form>' + script,
            raw=True,
        )
    answer: dict[str, str] = {"state": params.get("state", ""), "iss": server.issuer}
    if "deny" in params or server.authorize_mode == "deny":
        answer.update(error="access_denied", error_description="The user denied the request")
    elif server.authorize_mode == "no-code":
        pass
    else:
        code = "code-" + secrets.token_urlsafe(24)
        with server.lock:
            server.codes[code] = {**params, "expires_at": time.time() + 60}
        answer["code"] = code
        if server.authorize_mode == "wrong-state":
            answer["state"] = answer["state"][::-1] + "x"
    if not answer["state"]:
        del answer["state"]
    target = params["redirect_uri"]
    location = target + ("&" if "?" in target else "?") + urlencode(answer)
    return 302, b"", {"Location": location, "Cache-Control": "no-store"}


def code_grant(server: AuthServer, form: dict[str, str], cnf: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The ``authorization_code`` grant (PKCE S256): tokens for a code issued by ``/authorize``, once."""
    with server.lock:
        request = server.codes.pop(form.get("code", ""), None)  # a code is good once
    if request is None or request["expires_at"] < time.time():
        return 400, {"error": "invalid_grant", "error_description": "Invalid or expired authorization code"}
    if form.get("redirect_uri") != request["redirect_uri"]:
        return 400, {"error": "invalid_grant", "error_description": "redirect_uri does not match"}
    if form.get("client_id", request.get("client_id")) != request.get("client_id"):
        return 400, {"error": "invalid_grant", "error_description": "The code was issued to another client"}
    verifier = form.get("code_verifier", "")
    if _b64(hashlib.sha256(verifier.encode()).digest()) != request["code_challenge"]:
        return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
    if "dpop_jkt" in request and request["dpop_jkt"] != cnf.get("jkt"):  # RFC 9449 §10
        return 400, {"error": "invalid_grant", "error_description": "The code is bound to another DPoP key"}
    body = server.issue(cnf=cnf)
    scope = request.get("scope")
    if scope:
        body["scope"] = scope
    if scope and "openid" in scope.split():
        claims = {"iss": server.issuer, "aud": request.get("client_id"), "sub": "alice"}
        claims["exp"] = int(time.time()) + 300
        if "nonce" in request:
            claims["nonce"] = request["nonce"]
        body["id_token"] = ".".join(_b64(json.dumps(p).encode()) for p in ({"alg": "none"}, claims)) + "."
    with server.lock:
        server.login_log.append({"grant": "authorization_code", "code": form.get("code"), "verifier": verifier})
    return 200, body


def _device_authorization(
    server: AuthServer, form: dict[str, str], authorization: str | None, cert: bytes | None
) -> tuple[int, dict[str, Any]]:
    if not client_ok(server, form, authorization, "/device_authorization", cert) or (
        server.client_id is None and not form.get("client_id")
    ):
        return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
    device_code = "dc-" + secrets.token_urlsafe(24)
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    user_code = "".join(secrets.choice(letters) for _ in range(8))
    user_code = user_code[:4] + "-" + user_code[4:]
    with server.lock:
        server.devices[device_code] = {
            "user_code": user_code,
            "approved": None,
            "polls": 0,
            "issued": False,
            "expires_at": time.time() + server.device_expires_in,
        }
    body: dict[str, Any] = {
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": server.url + "/device",
        "expires_in": server.device_expires_in,
    }
    if server.device_complete:
        body["verification_uri_complete"] = server.url + "/device?" + urlencode({"user_code": user_code})
    if server.device_interval is not None:
        body["interval"] = server.device_interval
    return 200, body


def device_grant(server: AuthServer, form: dict[str, str], cnf: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The device code grant (RFC 8628 §3.4): tokens once the user approved on ``/device``, else why not."""
    with server.lock:
        device = server.devices.get(form.get("device_code", ""))
        if device is None or device["issued"]:
            return 400, {"error": "invalid_grant", "error_description": "Unknown device code"}
        device["polls"] += 1
        if server.device_mode == "access_denied" or device["approved"] is False:
            return 400, {"error": "access_denied", "error_description": "The user denied the request"}
        if server.device_mode == "expired_token" or device["expires_at"] < time.time():
            return 400, {"error": "expired_token", "error_description": "The device code expired"}
        if server.device_mode == "slow_down" and device["polls"] == 1:
            return 400, {"error": "slow_down"}
        if not device["approved"]:
            return 400, {"error": "authorization_pending"}
        device["issued"] = True
        server.login_log.append({"grant": "device_code", "device_code": form.get("device_code")})
    return 200, server.issue(cnf=cnf)


def _device_page(server: AuthServer, method: str, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    code = params.get("user_code", "")
    if method == "POST":
        if server.approve_device(code, approve="deny" not in params):
            return _page(200, "Device login", "Done: return to your device.")
        return _page(400, "Device login", "Unknown code.")
    return _page(
        200,
        "Device login",
        f'<form method="post" action="/device"><input name="user_code" value="{html.escape(code)}"> '
        '<button type="submit" name="approve" value="1">Allow</button> '
        '<button type="submit" name="deny" value="1">Deny</button></form>',
        raw=True,
    )


def _revoke(
    server: AuthServer, form: dict[str, str], authorization: str | None, cert: bytes | None
) -> tuple[int, dict[str, Any]]:
    with server.lock:
        server.revocation_log.append({"token": form.get("token"), "hint": form.get("token_type_hint")})
    if server.revocation_mode == "fail":
        return 503, {"error": "temporarily_unavailable", "error_description": "Revocation is down"}
    if not client_ok(server, form, authorization, "/revoke", cert):
        return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
    _tokens.revoke(server, form.get("token", ""))
    return 200, {}  # RFC 7009 §2.2: 200 for an unknown token too


def _page(status: int, title: str, content: str, raw: bool = False) -> tuple[int, bytes, dict[str, str]]:
    """A small HTML page; ``content`` is escaped unless ``raw``."""
    text = content if raw else f"<p>{html.escape(content)}</p>"
    page = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
    page += f"<body><h1>{title}</h1>{text}</body></html>"
    return status, page.encode(), {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
