"""The testing kit's client authentication: how an AuthServer tells its registered client.

:class:`~requests_tokenrefresh.testing.AuthServer` owns the registration (``client_id``,
``client_secret``, ``client_public_key``, ``client_cert_auth``), the replay cache of assertions
and the logs (``assertion_log``, ``assertion_rejections``); this module owns the rules, the same
at the token, device authorization and revocation endpoints. A server without ``client_id``
accepts any request. Otherwise the first method that applies decides, and nothing else is tried:

1. ``tls_client_auth`` (RFC 8705 §2.1), for a client registered with neither secret nor key
   under mutual TLS: a certificate of the kit's CA (the TLS layer checked it) whose subject is
   ``CN=<client_id>`` (the client is registered with that ``tls_client_auth_subject_dn``, §2.1.2),
   no ``Authorization`` header, and the ``client_id`` in the form.
2. ``private_key_jwt`` (RFC 7523), for a client registered with a public key, or any request
   that carries ``client_assertion``: the assertion checked against the registered key, its
   ``jti`` never seen before, and no ``Authorization`` header.
3. ``client_secret_basic``: a ``Basic`` header (a malformed one is a failed authentication).
4. ``client_secret_post``: ``client_id`` and ``client_secret`` in the form.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from ._tls import common_name

if TYPE_CHECKING:
    from .authserver import AuthServer

__all__ = ["ASSERTION_TYPE", "client_ok", "public_key"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_ok(
    server: AuthServer, form: dict[str, str], authorization: str | None, endpoint: str, cert: bytes | None = None
) -> bool:
    """Whether a request to ``endpoint`` (a path) authenticates ``server``'s client."""
    if server.client_id is None:
        return True
    if server.client_cert_auth and server.client_secret is None and server.client_public_key is None:
        # tls_client_auth (RFC 8705 §2.1): the certificate (checked by the TLS layer against
        # the kit's CA) authenticates the client, which names itself in the form, if its subject
        # is the one registered (§2.1.2): here CN=<client_id>.
        return (
            cert is not None
            and not authorization
            and form.get("client_id") == server.client_id
            and common_name(cert) == server.client_id
        )
    if server.client_public_key is not None or "client_assertion" in form:
        return not authorization and _assertion_ok(server, form, endpoint)
    if authorization and authorization.startswith("Basic "):
        try:
            pair = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False  # a malformed header is a client that failed to authenticate
        cid, _, secret = pair.partition(":")
        return (unquote_plus(cid), unquote_plus(secret)) == (server.client_id, server.client_secret)
    return (form.get("client_id"), form.get("client_secret")) == (server.client_id, server.client_secret)


def _assertion_ok(server: AuthServer, form: dict[str, str], endpoint: str) -> bool:
    """Verify a private_key_jwt assertion (RFC 7523 §3) against the registered public key."""
    problem = _assertion_problem(server, form)
    with server.lock:
        if problem is None:
            claims = _unverified_claims(form["client_assertion"])
            now = time.time()
            server._jtis = {k: exp for k, exp in server._jtis.items() if exp > now}  # an expired one is dead anyway
            if claims["jti"] in server._jtis:
                problem = "replayed jti"
            else:
                server._jtis[claims["jti"]] = claims["exp"]
                server.assertion_log.append({**claims, "endpoint": endpoint})
        if problem is not None:
            server.assertion_rejections.append(problem)
    return problem is None


def _assertion_problem(server: AuthServer, form: dict[str, str]) -> str | None:
    """Why the client assertion in ``form`` is refused (its ``jti`` aside), or None."""
    import jwt  # here: only a server that checks assertions needs PyJWT

    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        return "no client assertion"
    if server.client_public_key is None:
        return "no public key registered for client assertions"
    if "client_secret" in form:
        return "a client_secret beside the assertion"
    try:
        claims = jwt.decode(
            form["client_assertion"],
            server.client_public_key,
            algorithms=_algorithms(server.client_public_key),
            audience=server.token_url,
            issuer=server.client_id,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as exc:
        return f"{type(exc).__name__}: {exc}"
    if claims["sub"] != server.client_id or form.get("client_id", server.client_id) != server.client_id:
        return "sub or client_id is not the client"
    if not isinstance(claims["exp"], (int, float)) or claims["exp"] > time.time() + server.max_assertion_lifetime:
        return "exp too far in the future"
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        return "no jti"
    return None


def public_key(key: Any) -> Any:
    """The registered public key as a ``cryptography`` key: loaded from a PEM if given one."""
    if isinstance(key, (str, bytes)):
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        return load_pem_public_key(key.encode() if isinstance(key, str) else key)
    return key


def _algorithms(key: Any) -> list[str]:
    """The JWS algorithms a client assertion may use with ``key``: never ``none`` nor HMAC."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ["ES256"] if isinstance(key, ec.EllipticCurvePublicKey) else ["RS256", "PS256"]


def _unverified_claims(assertion: str) -> dict[str, Any]:
    payload = assertion.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims
