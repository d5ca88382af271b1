"""The OAuth 2.0 refresh grant (RFC 6749 §6): one request on a private Session, one answer.

The request never goes through the adapter that asked for it (google-auth's lesson: that way lies
infinite recursion) and never follows a redirect (that would hand the refresh token to another
URL). Errors are mapped to :class:`RefreshError` in the OAuth form, ``invalid_grant: ...``; they
do not carry the token endpoint's response, whose request holds the refresh token and secret.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import requests

from ._client_auth import (
    CLIENT_AUTH_METHODS,
    ClientAssertion,
    ClientAuth,
    ClientCert,
    add_client_auth,
    check_client_auth,
    choose_client_auth,
)
from ._clock import SYSTEM_CLOCK, Clock
from ._dpop import DPoPKey, DPoPPolicy, Nonces
from ._redact import fingerprint, without_request
from ._retry import TRANSIENT_ERRORS
from ._urls import is_secure, origin, proxy_for, without_userinfo
from .exceptions import InsecureTransportError, LoginError, RefreshError, SessionExpiredError
from .tokens import Token

__all__ = [
    "CLIENT_AUTH_METHODS",
    "CallableGrant",
    "asks_nonce",
    "ClientCredentialsGrant",
    "Grant",
    "OAuthRefreshGrant",
    "Refresher",
    "clean_text",
    "no_auth",
    "parse_retry_after",
    "read_before",
    "request_before",
]

#: A custom refresh function; it takes the current token and returns a Token or a token-response mapping.
Refresher = Callable[[Token], "Token | Mapping[str, Any]"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the token endpoint (the read may use all time left).
CONNECT_TIMEOUT = 10.0
# Errors of RFC 6749 §5.2 / §4.1.2.1 that mean "try again later".
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


class Grant(Protocol):
    """What the coordinator calls: one token request, bounded by ``timeout`` seconds."""

    #: Whether it makes a token without a previous one (then an empty store is not a sign-out).
    mints: bool

    def __call__(self, token: Token | None, timeout: float) -> Token: ...

    def close(self) -> None: ...


class OAuthRefreshGrant:
    """Sends ``grant_type=refresh_token`` to ``token_url`` and turns the answer into a Token."""

    def __init__(
        self,
        token_url: str | None,
        *,
        issuer: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_auth: ClientAuth | None = None,
        scope: str | None = None,
        allow_insecure_http: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        dpop: DPoPPolicy | None = None,
        client_cert: ClientCert | None = None,
    ) -> None:
        check_client_auth(client_auth, client_id, client_secret)
        self.token_url = token_url  # None: the issuer's, found by discovery at the first request
        # A private_key_jwt assertion's aud: the token endpoint the metadata names, also where
        # token requests go to its mTLS alias (as revocation and the logins have it).
        self._audience: str | None = None
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth  # None: the server's metadata chooses, else "basic"
        self.client_cert = client_cert  # mTLS (RFC 8705): presented on every token request
        self.scope = scope
        self.allow_insecure_http = allow_insecure_http
        self.clock = clock
        self.dpop = dpop  # None: a proof only for a token bound to a key in its record
        self.nonces = dpop.nonces if dpop is not None else Nonces()
        self._session: requests.Session | None = None
        self._session_pid = 0
        self._session_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """The private session for token requests, made at first use (and anew in a forked child)."""
        with self._session_lock:
            if self._session is None or self._session_pid != os.getpid():
                session = requests.Session()
                # Keep proxy settings from the environment, but never let requests add ~/.netrc
                # credentials to the token request (it does so whenever a request has no auth).
                session.auth = no_auth
                session.cert = self.client_cert
                self._session, self._session_pid = session, os.getpid()
            return self._session

    def _endpoint(self, session: requests.Session, timeout: float) -> str:
        """The token endpoint: ``token_url``, or the issuer's (OpenID Connect / RFC 8414 discovery)."""
        if self.token_url is not None:
            return self.token_url
        from ._discovery import check_endpoint, discover  # only adapters given an issuer need it

        assert self.issuer is not None
        try:
            metadata = discover(
                self.issuer, session=session, timeout=timeout, allow_insecure_http=self.allow_insecure_http
            )
            self.client_auth = choose_client_auth(
                self.client_auth, self.client_secret, self.client_cert, metadata.document
            )
            aliases = metadata.document.get("mtls_endpoint_aliases")
            alias = aliases.get("token_endpoint") if self.client_cert and isinstance(aliases, dict) else None
            if isinstance(alias, str) and alias:
                # RFC 8705 §5: where a client that presents a certificate sends its token requests.
                self.token_url = check_endpoint("token_endpoint", alias, self.allow_insecure_http)
                self._audience = metadata.endpoint("token_endpoint", allow_insecure_http=self.allow_insecure_http)
            else:
                self.token_url = metadata.endpoint("token_endpoint", allow_insecure_http=self.allow_insecure_http)
        except LoginError as exc:
            # The server may be back soon (network, 5xx); a missing or wrong document will not.
            raise RefreshError(
                f"discovery of {origin(self.issuer)} failed: {exc}",
                error=exc.error,
                retryable=exc.retryable or exc.error == "network_error",
            ) from None
        return self.token_url

    @property
    def audience(self) -> str | None:
        """A private_key_jwt assertion's ``aud``: the token endpoint the metadata names (not its
        mTLS alias), once known."""
        return self._audience or self.token_url

    def _check_route(self, session: requests.Session, url: str) -> None:
        """Refuse to send secrets over plain http through a proxy that is not on this machine."""
        if self.allow_insecure_http or url.startswith("https://"):
            return
        if not is_secure(url, session.proxies, session.trust_env):
            proxy = proxy_for(url, session.proxies, session.trust_env) or ""
            raise InsecureTransportError(
                f"refusing to send the refresh token over plain http to {origin(url)} through the "
                f"proxy {origin(proxy) if '://' in proxy else proxy!r}, which is not this machine; use https, "
                "exclude the host with NO_PROXY, or pass allow_insecure_http=True"
            )

    #: Whether the grant makes a token from nothing (client credentials): nothing stored is no sign-out.
    mints = False

    def _form(self, token: Token | None) -> dict[str, str]:
        if token is None or not token.refresh_token:
            raise SessionExpiredError("no refresh token is stored: log in again", error="no_refresh_token")
        return {"grant_type": "refresh_token", "refresh_token": token.refresh_token}

    def __call__(self, token: Token | None, timeout: float) -> Token:
        """Make one token request (with ``token``'s refresh token); see :func:`refresh_with_retries`.

        With DPoP, a ``use_dpop_nonce`` answer (the server wants its nonce in the proof; the
        refresh token is not spent) is answered once more at once, with a new proof and assertion.
        """
        data = self._form(token)
        if self.scope:
            data["scope"] = self.scope
        session = self.session
        deadline = time.monotonic() + timeout  # a socket watchdog's: real time; discovery's too
        url = self._endpoint(session, timeout)
        self._check_route(session, url)
        bound = token.dpop_key if token is not None else None
        # The key a DPoP token's refresh token may be bound to (a public client's is, RFC 9449
        # §5). A downgrade's (a Bearer answer to a proof) is not: the server ignored the proof. A
        # grant that mints a token from nothing presents no refresh token.
        bound_token = token is not None and not self.mints and token.token_type == "DPoP"
        jkt = token.dpop_jkt if bound_token and token is not None else None
        elsewhere = bound_token and bound is None
        key = self.dpop.key_for(bound, elsewhere) if self.dpop is not None else bound
        if (elsewhere and key is None) or (jkt is not None and key is not None and key.thumbprint != jkt):
            # Sent without its key, the refresh token would be refused (invalid_grant) and the
            # record deleted for every process that has the key: refuse here, and keep it.
            raise RefreshError(
                f"dpop_key_missing: the stored token is bound to the DPoP key {jkt or '(not named)'}, and this "
                + ("adapter has no key" if key is None else f"adapter's key is another ({key.thumbprint})")
                + ": pass dpop=<the DPoPKey it was issued to>, or log in again",
                error="dpop_key_missing",
            )
        log.debug(
            "%s grant to %s with refresh token %s",
            data["grant_type"],
            without_userinfo(url),
            fingerprint(token.refresh_token if token else None),
        )
        for attempt in (1, 2):
            auth = self._client_credentials(data, url)  # a new assertion each time: its jti is spent
            headers = {"Accept": "application/json"}
            nonce = self.nonces.get(url)
            if key is not None:
                # Dated by the wall clock, not the injected one: the server checks it against its own.
                headers["DPoP"] = key.proof("POST", url, nonce=nonce)
            sent_at = self.clock.time()
            try:
                response = request_before(session, "POST", url, deadline, data=data, auth=auth, headers=headers)
            except requests.RequestException as exc:
                # requests' error carries the token request (refresh token in the body, client
                # secret in the header): re-raise the same kind of error without it.
                raise without_request(exc) from None
            if key is not None:
                self.nonces.learn(url, response)  # any answer's nonce, the retry's too (RFC 9449 §8.2)
            if key is None or attempt == 2 or not asks_nonce(response, nonce):
                break
            log.debug("the token endpoint asked for a DPoP nonce: sending the request again with it")
        # At most one of the two is set; an assertion echoed in an error is scrubbed as a secret is.
        secret = self.client_secret or data.get("client_assertion")
        new = _parse(response, None if self.mints else token, sent_at, secret)
        return self._bind(new, key)

    def _bind(self, token: Token, key: DPoPKey | None) -> Token:
        """``token`` with the DPoP key it is bound to, or marked as a downgrade.

        A ``Bearer`` answer to a request with a proof is a downgrade. Unless it is allowed, the
        token keeps the key as a mark: it is saved like any other (its refresh token is the only
        valid one now: dropping it would sign the user out), and the adapter refuses to send it
        (``dpop_downgrade``) until the user allows downgrades or logs in again.
        """
        if key is None:
            return token
        if token.token_type != "DPoP":
            if self.dpop is not None and self.dpop.allow_downgrade:
                return dataclasses.replace(token, dpop_key=None)
            log.error(
                "dpop_downgrade: the token endpoint answered a %r token to a request with a DPoP proof; it is kept "
                "(its refresh token is the valid one) but not sent: pass allow_dpop_downgrade=True to send it",
                token.token_type,
            )
        return dataclasses.replace(token, dpop_key=key)

    def _client_credentials(self, data: dict[str, str], url: str) -> requests.auth.HTTPBasicAuth | None:
        """Add the client's credentials (a secret or an assertion for ``url``) to ``data``."""
        try:
            return add_client_auth(
                data,
                client_id=self.client_id,
                client_secret=self.client_secret,
                client_auth=self.client_auth,
                audience=self._audience or url,
                now=time.time(),  # the wall clock's, not the injected one: the server checks it against its own
            )
        except Exception as exc:
            if not isinstance(self.client_auth, ClientAssertion):
                raise
            # The file may be in the middle of being replaced: worth another try within the refresh.
            raise RefreshError(
                f"client_assertion_unavailable: the client assertion could not be read ({type(exc).__name__})",
                error="client_assertion_unavailable",
                retryable=True,
            ) from exc

    def close(self) -> None:
        with self._session_lock:
            if self._session is not None and self._session_pid == os.getpid():
                self._session.close()
            self._session = None


class ClientCredentialsGrant(OAuthRefreshGrant):
    """Sends ``grant_type=client_credentials`` (RFC 6749 §4.4): a new token for the client itself."""

    mints = True

    def _form(self, token: Token | None) -> dict[str, str]:
        return {"grant_type": "client_credentials"}


class CallableGrant:
    """Wraps a user's ``refresher`` callable as a grant: its result becomes a Token."""

    def __init__(self, refresher: Refresher, clock: Clock = SYSTEM_CLOCK) -> None:
        self.refresher = refresher
        self.clock = clock

    mints = False

    def __call__(self, token: Token | None, timeout: float) -> Token:
        if token is None:
            raise SessionExpiredError("no token is stored: log in and save a token first", error="no_token")
        sent_at = self.clock.time()
        try:
            result = self.refresher(token)
        except (RefreshError, *TRANSIENT_ERRORS):
            raise
        except Exception as exc:
            raise RefreshError(
                f"refresher_failed: the refresher raised {type(exc).__name__}", error="refresher_failed"
            ) from exc
        record = result.to_record() if isinstance(result, Token) else result
        try:
            return Token.from_response(record, token, now=sent_at)
        except ValueError as exc:
            raise RefreshError(f"invalid_token_response: {exc}", error="invalid_token_response") from exc

    def close(self) -> None:
        return None


def request_before(
    session: requests.Session, method: str, url: str, deadline: float, **options: Any
) -> requests.Response:
    """One request to the authorization server, answered in full by ``deadline`` (monotonic seconds).

    No redirect is followed (one would carry credentials elsewhere); the connection gets at most
    :data:`CONNECT_TIMEOUT`, the answer what is left (:func:`read_before`). ``options`` go to
    requests (``data``, ``auth``, ``headers``, ``cert``).

    Raises:
        requests.RequestException: as requests does; it carries the request (the caller strips it).
    """
    left = max(0.001, deadline - time.monotonic())
    response = session.request(
        method, url, timeout=(min(CONNECT_TIMEOUT, left), left), allow_redirects=False, stream=True, **options
    )
    with response:
        read_before(response, deadline)
    return response


def read_before(response: requests.Response, deadline: float) -> None:
    """Read the whole body by ``deadline``: a server trickling bytes cannot stretch a refresh.

    requests' read timeout bounds each wait for a byte, not the whole answer; a watchdog shuts
    the socket down at the deadline, which ends the read at once.
    """
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), abort)
    watchdog.daemon = True
    with contextlib.suppress(RuntimeError):
        # Python 3.12 starts no thread while the interpreter exits, when a script's background
        # refresh may still run: then the read is bounded per read only, rather than the answer
        # lost (a rotated refresh token the server has already issued).
        watchdog.start()
    try:
        body = response.content
    except requests.RequestException:
        if expired.is_set():
            raise requests.Timeout("the token endpoint did not answer in full within refresh_timeout") from None
        raise
    finally:
        watchdog.cancel()
    if expired.is_set():
        raise requests.Timeout("the token endpoint did not answer in full within refresh_timeout")
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and response.headers.get("Content-Encoding") is None and int(length) != len(body):
        # urllib3 2 checks this itself; 1.26 hands over a truncated body as if it were whole.
        raise requests.exceptions.ChunkedEncodingError(
            f"the token endpoint's answer was cut short ({len(body)} of {length} bytes)"
        )


def asks_nonce(response: requests.Response, sent: str | None) -> bool:
    """Whether the token endpoint answered ``use_dpop_nonce`` with another nonce than ``sent``."""
    if response.status_code not in (400, 401) or response.headers.get("DPoP-Nonce") in (None, sent):
        return False
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _parse(response: requests.Response, previous: Token | None, sent_at: float, client_secret: str | None) -> Token:
    status = response.status_code
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):  # requests' JSONDecodeError; absurdly nested JSON
        body = None
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    if 200 <= status < 300:
        if not isinstance(body, dict):
            raise RefreshError(
                f"invalid_token_response: the token endpoint answered HTTP {status} with {kind}, not a JSON object",
                error="invalid_token_response",
            )
        try:
            return Token.from_response(body, previous, now=sent_at)
        except ValueError as exc:
            raise RefreshError(f"invalid_token_response: {exc}", error="invalid_token_response") from exc
    if 300 <= status < 400:
        raise RefreshError(
            f"unexpected_redirect: the token endpoint answered HTTP {status}; "
            "set token_url to the URL that issues tokens (redirects are not followed)",
            error="unexpected_redirect",
        )
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    secrets = (previous.refresh_token, previous.access_token, client_secret) if previous else (client_secret,)
    error = clean_text(error, secrets)[:100] if isinstance(error, str) and error else f"http_{status}"
    description = clean_text(description, secrets) if isinstance(description, str) else None
    message = f"{error}: {description}" if description else f"{error} (HTTP {status} from the token endpoint)"
    if error == "invalid_grant":
        raise SessionExpiredError(message, error_description=description)
    retryable = status == 429 or status >= 500 or error in _TRANSIENT_ERRORS
    raise RefreshError(
        message,
        error=error,
        error_description=description,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
    )


def clean_text(description: str, secrets: tuple[str | None, ...]) -> str:
    """Trim a server's error_description, and never let it echo a secret back."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:  # echoed raw or form-encoded
            description = description.replace(form, f"<{fingerprint(secret)}>")
    return description[:300]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
