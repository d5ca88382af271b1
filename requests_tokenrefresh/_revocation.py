"""Giving tokens back: revocation at the authorization server (RFC 7009).

The core asks for it (:meth:`TokenRefreshAdapter.logout <requests_tokenrefresh.TokenRefreshAdapter.logout>`),
and so does :func:`requests_tokenrefresh.login.logout`.
"""

from __future__ import annotations

import logging

import requests

from ._client_auth import ClientAuth, ClientCert, PrivateKeyJWT
from ._discovery import DEFAULT_TIMEOUT
from ._endpoints import EndpointClient
from ._redact import fingerprint
from ._urls import origin
from .exceptions import (
    LoginError,
    RevocationError,
)
from .tokens import Token

__all__ = ["revoke_token"]

log: logging.Logger = logging.getLogger(__name__)


def revoke_token(
    token: Token,
    *,
    revocation_url: str | None = None,
    issuer: str | None = None,
    token_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_auth: ClientAuth | None = None,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
    client_cert: ClientCert | None = None,
) -> None:
    """Revoke ``token``'s refresh token, then its access token, at the revocation endpoint (RFC 7009).

    Both are tried even if the first fails. A server that cannot revoke access tokens
    (``unsupported_token_type``) is not an error: the access token runs out by itself.

    Args:
        token: the token to revoke.
        revocation_url: the revocation endpoint; from the ``issuer``'s metadata if not given.
        issuer: the authorization server.
        token_url: the token endpoint, the audience of a :class:`~requests_tokenrefresh.PrivateKeyJWT`
            assertion; from the ``issuer``'s metadata if not given.
        client_id: the client identifier (public clients send it in the body).
        client_secret: the client secret of a confidential client.
        client_auth: ``"basic"``, ``"post"``, a :class:`~requests_tokenrefresh.PrivateKeyJWT` or a
            :class:`~requests_tokenrefresh.ClientAssertion` (see :doc:`/client-auth`); None: chosen
            from the issuer's metadata, else ``"basic"``.
        session: the session to send with; a private one by default.
        timeout: seconds for each HTTP request.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).
        client_cert: a client certificate for mutual TLS (RFC 8705), as requests' ``cert``.

            .. versionadded:: 0.2

    Raises:
        RevocationError: a token was not revoked (the message says which and why).
        LoginError: discovery failed, or the server publishes no revocation endpoint.
        InsecureTransportError: the endpoint is plain http to a host that is not loopback.
        ValueError: a :class:`~requests_tokenrefresh.PrivateKeyJWT` without an audience: neither
            ``token_url`` nor ``issuer`` is given.

    .. versionadded:: 0.2
    """
    if isinstance(client_auth, PrivateKeyJWT) and client_auth.audience is None and token_url is None and issuer is None:
        raise ValueError("private_key_jwt: the assertion's audience is the token endpoint: pass token_url= or issuer=")
    client = EndpointClient(client_id, client_secret, client_auth, session, timeout, allow_insecure_http, client_cert)
    try:
        client.token_endpoint = token_url
        url = client.endpoints(issuer, {"revocation_endpoint": revocation_url})["revocation_endpoint"]
        client.secrets += [token.access_token, token.refresh_token]
        failures: list[LoginError] = []
        for value, hint in ((token.refresh_token, "refresh_token"), (token.access_token, "access_token")):
            if not value:
                continue
            log.debug("revoking the %s %s at %s", hint, fingerprint(value), origin(url))
            try:
                status, body, _ = client.post(url, {"token": value, "token_type_hint": hint}, "revocation endpoint")
            except LoginError as exc:
                failures.append(LoginError(f"the {hint} was not revoked: {exc}", error=exc.error, retryable=True))
                continue
            if status == 200:
                continue
            failure = client.error(status, body, "revocation endpoint")
            if hint == "access_token" and failure.error == "unsupported_token_type":
                continue
            failures.append(
                LoginError(f"the {hint} was not revoked: {failure}", error=failure.error, retryable=failure.retryable)
            )
        if failures:
            raise RevocationError(
                "; ".join(str(f) for f in failures),
                error=failures[0].error,
                retryable=any(f.retryable for f in failures),
            )
        log.info("revoked the token %s at %s", fingerprint(token.access_token), origin(url))
    finally:
        client.close()
