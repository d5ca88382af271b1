"""Posting forms to the authorization server's endpoints as a client: logins and revocation.

:class:`EndpointClient` holds the client's identity and how it authenticates (a secret, RFC 6749
§2.3, or an assertion: :mod:`._client_auth`), finds endpoints in the arguments or the issuer's
metadata, posts within a deadline, and turns an error answer (RFC 6749 §5.2) into a
:class:`~requests_tokenrefresh.LoginError` scrubbed of secrets. The adapter's refresh has its own
path (:mod:`._grant`), on the hot side of a request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import requests

from ._client_auth import (
    ClientAssertion,
    ClientAuth,
    ClientCert,
    PrivateKeyJWT,
    add_client_auth,
    check_client_auth,
    check_client_cert,
    choose_client_auth,
)
from ._discovery import check_endpoint, discover
from ._dpop import DPoPKey, Nonces, policy
from ._grant import asks_nonce, clean_text, no_auth, request_before
from ._redact import without_request
from ._urls import is_secure, origin
from .exceptions import (
    InsecureTransportError,
    LoginError,
)
from .tokens import Token

__all__ = ["EndpointClient"]

log: logging.Logger = logging.getLogger(__name__)


class EndpointClient:
    """The client's identity and how it authenticates; posts forms to the server's endpoints."""

    def __init__(
        self,
        client_id: str | None,
        client_secret: str | None,
        client_auth: ClientAuth | None,
        session: requests.Session | None,
        timeout: float,
        allow_insecure_http: bool,
        client_cert: ClientCert | None = None,
    ) -> None:
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise ValueError("client_id must be a non-empty string")
        check_client_auth(client_auth, client_id, client_secret)
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth  # None: the server's metadata chooses, else "basic"
        if client_cert is not None:
            check_client_cert(client_cert)
        self.client_cert = client_cert  # mTLS (RFC 8705): presented on every request to the server
        self.own_session = session is None
        self.session = requests.Session() if session is None else session
        self.timeout = timeout
        self.allow_insecure_http = allow_insecure_http
        self.secrets: list[str | None] = [client_secret]  # scrubbed from any server text we show
        self.issuer: str | None = None  # the issuer whose metadata gave the endpoints, if any
        self.iss_required = False  # its metadata promises iss in every authorization response (RFC 9207)
        # The audience of a private_key_jwt assertion, whatever endpoint it goes to (OIDC Core §9).
        self.token_endpoint: str | None = None
        self.assertion: str | None = None  # the one last sent
        self.nonces = Nonces()
        self.dpop_key: DPoPKey | None = None  # with DPoP: the key the token requests prove
        self.allow_dpop_downgrade = False

    def use_dpop(self, dpop: bool | DPoPKey, allow_downgrade: bool) -> None:
        """Prove a key (the given one, or a new one) on every token request: DPoP, RFC 9449.

        Raises:
            ValueError: ``dpop`` is not True, False or a DPoPKey.
        """
        chosen = policy(dpop, allow_downgrade)
        if chosen is not None:
            self.dpop_key = chosen.key_for(None)  # the record keeps it unless it is the user's
            self.nonces = chosen.nonces
            self.allow_dpop_downgrade = allow_downgrade

    def close(self) -> None:
        if self.own_session:
            self.session.close()

    def endpoints(self, issuer: str | None, given: Mapping[str, str | None]) -> dict[str, str]:
        """The URLs of the endpoints named in ``given``: the given ones, else the issuer's."""
        metadata = None
        found: dict[str, str] = {}
        for name, url in given.items():
            if url is None:
                if issuer is None:
                    raise ValueError(f"pass issuer= or the {name.replace('_endpoint', '_url')} argument")
                if metadata is None:
                    self.issuer = issuer
                    metadata = discover(
                        issuer, session=self.session, timeout=self.timeout, allow_insecure_http=self.allow_insecure_http
                    )
                aliases = metadata.document.get("mtls_endpoint_aliases") if self.client_cert else None
                alias = aliases.get(name) if isinstance(aliases, dict) else None
                if isinstance(alias, str) and alias:  # RFC 8705 §5: where a certificate is presented
                    found[name] = check_endpoint(name, alias, self.allow_insecure_http)
                else:
                    found[name] = metadata.endpoint(name, allow_insecure_http=self.allow_insecure_http)
            else:
                found[name] = check_endpoint(name, url, self.allow_insecure_http)
        if metadata is not None:
            self.client_auth = choose_client_auth(
                self.client_auth, self.client_secret, self.client_cert, metadata.document
            )
        if given.get("token_endpoint") is not None:
            self.token_endpoint = found["token_endpoint"]
        elif metadata is not None and ("token_endpoint" in given or self.token_endpoint is None):
            # The metadata's token endpoint, not its mTLS alias (the audience is the same whichever
            # URL the requests go to, and the adapter's refreshes use it too).
            url = metadata.document.get("token_endpoint")
            self.token_endpoint = url if isinstance(url, str) and url else None
        if metadata is not None and "authorization_endpoint" in given:
            metadata.check_pkce()
            self.iss_required = metadata.document.get("authorization_response_iss_parameter_supported") is True
        return found

    def post(self, url: str, data: dict[str, str], what: str, *, proof: bool = False) -> tuple[int, Any, float]:
        """POST ``data`` (and the client's credentials) to ``url``; return status, JSON body, send time.

        With ``proof`` and DPoP on, the request carries a proof; a ``use_dpop_nonce`` answer is
        sent again once, with the nonce, a new proof and a new assertion.
        """
        if not self.allow_insecure_http and not is_secure(url, self.session.proxies, self.session.trust_env):
            raise InsecureTransportError(
                f"refusing to send credentials over plain http to the {what} at {origin(url)} "
                "(through a proxy that is not this machine?); use https or pass allow_insecure_http=True"
            )
        key = self.dpop_key if proof else None
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            auth = self._client_credentials(data, what)
            headers = {"Accept": "application/json"}
            nonce = self.nonces.get(url)
            if key is not None:
                headers["DPoP"] = key.proof("POST", url, nonce=nonce)
            sent_at = time.time()
            try:
                response = request_before(
                    self.session,
                    "POST",
                    url,
                    deadline,
                    data=data,
                    auth=auth or no_auth,  # never ~/.netrc credentials
                    headers=headers,
                    cert=self.client_cert,
                )
            except requests.RequestException as exc:
                raise LoginError(
                    f"network_error: could not reach the {what} at {origin(url)} ({type(exc).__name__})",
                    error="network_error",
                    retryable=True,
                ) from without_request(exc)
            if key is not None:
                self.nonces.learn(url, response)  # any answer's nonce, the retry's too (RFC 9449 §8.2)
            if key is None or attempt == 2 or not asks_nonce(response, nonce):
                break
        try:
            body: Any = response.json()
        except (ValueError, RecursionError):
            body = None
        return response.status_code, body, sent_at

    def _client_credentials(self, data: dict[str, str], what: str) -> requests.auth.HTTPBasicAuth | None:
        """Add the client's credentials (a secret or an assertion) to ``data``; the Basic auth, if any."""
        audience = self.token_endpoint
        if isinstance(self.client_auth, PrivateKeyJWT) and audience is None and self.client_auth.audience is None:
            raise ValueError(
                "private_key_jwt: the assertion's audience is the token endpoint: pass token_url= or issuer=, "
                "or PrivateKeyJWT(audience=...)"
            )
        try:
            auth = add_client_auth(
                data,
                client_id=self.client_id,
                client_secret=self.client_secret,
                client_auth=self.client_auth,
                audience=audience or "",
                now=time.time(),
            )
        except Exception as exc:
            if not isinstance(self.client_auth, ClientAssertion):
                raise
            raise LoginError(
                f"client_assertion_unavailable: the client assertion for the {what} could not be read "
                f"({type(exc).__name__})",
                error="client_assertion_unavailable",
                retryable=True,
            ) from exc
        self.assertion = data.get("client_assertion")  # scrubbed too, should the server echo it
        return auth

    def error(self, status: int, body: Any, what: str) -> LoginError:
        """The LoginError for an error answer of the server (RFC 6749 §5.2), scrubbed of secrets."""
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        scrub = (*self.secrets, self.assertion)
        error = clean_text(error, scrub)[:100] if isinstance(error, str) and error else f"http_{status}"
        description = clean_text(description, scrub) if isinstance(description, str) else None
        if 300 <= status < 400:
            description = f"the {what} answered with a redirect (HTTP {status}); set its URL to the real endpoint"
        message = f"{error}: {description}" if description else f"{error} (HTTP {status} from the {what})"
        return LoginError(
            message,
            error=error,
            error_description=description,
            retryable=status == 429 or status >= 500 or error in ("temporarily_unavailable", "server_error"),
        )

    def token(self, status: int, body: Any, sent_at: float) -> Token:
        """The Token of a successful token response."""
        if not isinstance(body, dict):
            raise LoginError(
                f"invalid_token_response: the token endpoint answered HTTP {status} without a JSON object",
                error="invalid_token_response",
            )
        try:
            token = Token.from_response(body, now=sent_at)
        except ValueError as exc:
            raise LoginError(f"invalid_token_response: {exc}", error="invalid_token_response") from None
        if self.dpop_key is None:
            return token
        if token.token_type != "DPoP":
            if not self.allow_dpop_downgrade:
                raise LoginError(
                    f"dpop_downgrade: the token endpoint answered a {token.token_type!r} token to a request with "
                    "a DPoP proof; pass allow_dpop_downgrade=True to accept it",
                    error="dpop_downgrade",
                )
            return token
        return dataclasses.replace(token, dpop_key=self.dpop_key)
