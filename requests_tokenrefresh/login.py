"""Getting the first token, and giving it back: browser and device logins, revocation, logout.

:func:`login_browser` runs the authorization code grant with PKCE (RFC 7636) and a loopback
redirect (RFC 8252); :func:`login_device` the device authorization grant (RFC 8628), for
machines with no browser (:func:`should_use_device_flow`). Both return a :class:`~.Token` and,
given a ``storage``, save it where the adapter reads it. :func:`logout` revokes the stored tokens
(RFC 7009) and deletes the record. Endpoints come from the arguments or from the ``issuer``'s
metadata (:func:`discover`).

Nothing is stored when a login fails. No code, verifier, device code, token or client secret
appears in a message, a log record or a repr.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlencode

import requests

from ._discovery import DEFAULT_TIMEOUT, ProviderMetadata, check_endpoint, discover
from ._grant import CLIENT_AUTH_METHODS, CONNECT_TIMEOUT, _clean, _no_auth, _read_before
from ._redact import fingerprint, without_request
from ._urls import is_secure, origin
from .exceptions import (
    InsecureTransportError,
    LoginError,
    RevocationError,
    TokenRefreshError,
    TokenStorageError,
)
from .storage import TokenStorage
from .tokens import Token, _number

if TYPE_CHECKING:
    from ._loopback import Callback

__all__ = [
    "DEFAULT_DEVICE_INTERVAL",
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DEVICE_CODE_GRANT",
    "ProviderMetadata",
    "discover",
    "login_browser",
    "login_device",
    "logout",
    "refresh_token_expires_at",
    "revoke_token",
    "should_use_device_flow",
]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds a login waits for the user (the browser's redirect, or the device's approval).
DEFAULT_LOGIN_TIMEOUT = 300.0
#: Seconds between two device-flow polls when the server names no ``interval`` (RFC 8628 §3.2).
DEFAULT_DEVICE_INTERVAL = 5.0
#: The ``grant_type`` of a device-flow token request (RFC 8628 §3.4).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# A device code that names no lifetime is given this one.
_DEVICE_EXPIRY = 900.0
# Consecutive failed polls (network, 5xx) a device login rides out before it gives up.
_POLL_FAILURES = 3
# Files that only exist inside a container (Docker, Podman).
_CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
# Seconds the login gives the browser launcher, most of which return at once, to say that no
# browser opened before it says it waits; the timeout runs meanwhile.
_LAUNCH_GRACE = 1.0
_NO_BROWSER = "(No browser could be opened: copy the address into one.)"
# Parameters each flow sets itself: extra_params must not replace them. scope has its own argument.
_BROWSER_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "scope",
)
_DEVICE_PARAMS = ("client_id", "client_secret", "scope")


# -- helpers shared by the flows ----------------------------------------------------------------


class _Client:
    """The client's identity and how it authenticates; posts forms to the server's endpoints."""

    def __init__(
        self,
        client_id: str | None,
        client_secret: str | None,
        client_auth: str,
        session: requests.Session | None,
        timeout: float,
        allow_insecure_http: bool,
    ) -> None:
        if client_auth not in CLIENT_AUTH_METHODS:
            raise ValueError(f"client_auth must be one of {CLIENT_AUTH_METHODS}")
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise ValueError("client_id must be a non-empty string")
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth
        self.own_session = session is None
        self.session = requests.Session() if session is None else session
        self.timeout = timeout
        self.allow_insecure_http = allow_insecure_http
        self.secrets: list[str | None] = [client_secret]  # scrubbed from any server text we show
        self.issuer: str | None = None  # the issuer whose metadata gave the endpoints, if any
        self.iss_required = False  # its metadata promises iss in every authorization response (RFC 9207)

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
                found[name] = metadata.endpoint(name, allow_insecure_http=self.allow_insecure_http)
            else:
                found[name] = check_endpoint(name, url, self.allow_insecure_http)
        if metadata is not None and "authorization_endpoint" in given:
            metadata.check_pkce()
            self.iss_required = metadata.document.get("authorization_response_iss_parameter_supported") is True
        return found

    def post(self, url: str, data: dict[str, str], what: str) -> tuple[int, Any, float]:
        """POST ``data`` (and the client's credentials) to ``url``; return status, JSON body, send time."""
        auth: Any = _no_auth  # never ~/.netrc credentials
        if self.client_id is not None:
            if self.client_secret is not None and self.client_auth == "basic":
                # RFC 6749 §2.3.1: form-encode id and secret before Basic encoding.
                auth = requests.auth.HTTPBasicAuth(quote(self.client_id, safe=""), quote(self.client_secret, safe=""))
            else:
                data["client_id"] = self.client_id
                if self.client_secret is not None:
                    data["client_secret"] = self.client_secret
        if not self.allow_insecure_http and not is_secure(url, self.session.proxies, self.session.trust_env):
            raise InsecureTransportError(
                f"refusing to send credentials over plain http to the {what} at {origin(url)} "
                "(through a proxy that is not this machine?); use https or pass allow_insecure_http=True"
            )
        sent_at = time.time()
        deadline = time.monotonic() + self.timeout
        try:
            response = self.session.post(
                url,
                data=data,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout),
                allow_redirects=False,
                stream=True,
            )
            with response:
                _read_before(response, deadline)
        except requests.RequestException as exc:
            raise LoginError(
                f"network_error: could not reach the {what} at {origin(url)} ({type(exc).__name__})",
                error="network_error",
                retryable=True,
            ) from without_request(exc)
        try:
            body: Any = response.json()
        except (ValueError, RecursionError):
            body = None
        return response.status_code, body, sent_at

    def error(self, status: int, body: Any, what: str) -> LoginError:
        """The LoginError for an error answer of the server (RFC 6749 §5.2), scrubbed of secrets."""
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        scrub = tuple(self.secrets)
        error = _clean(error, scrub)[:100] if isinstance(error, str) and error else f"http_{status}"
        description = _clean(description, scrub) if isinstance(description, str) else None
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
            return Token.from_response(body, now=sent_at)
        except ValueError as exc:
            raise LoginError(f"invalid_token_response: {exc}", error="invalid_token_response") from None


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _seconds(value: Any) -> float | None:
    """A duration the server sent (``interval``, ``expires_in`` ...): a positive finite number, or None."""
    number = _number(value)
    return number if number is not None and number > 0 else None


def _extra(extra_params: Mapping[str, str] | None, reserved: tuple[str, ...]) -> dict[str, str]:
    """``extra_params`` as a dict, refusing any parameter the flow sets itself."""
    extra = dict(extra_params or {})
    for name in reserved:
        if name in extra:
            hint = "; pass scope= instead" if name == "scope" else ", which the login sets itself"
            raise ValueError(f"extra_params must not set {name}{hint}")
    return extra


def _save(storage: TokenStorage | None, token: Token) -> None:
    if storage is not None:
        storage.save(token)
        log.info("stored the new token %s", fingerprint(token.access_token))


# -- browser login ---------------------------------------------------------------------------------


def login_browser(
    *,
    client_id: str,
    issuer: str | None = None,
    authorization_url: str | None = None,
    token_url: str | None = None,
    client_secret: str | None = None,
    client_auth: str = "basic",
    scope: str | None = None,
    storage: TokenStorage | None = None,
    port: int = 0,
    redirect_path: str = "/callback",
    redirect_host: str = "127.0.0.1",
    open_browser: bool = True,
    timeout: float = DEFAULT_LOGIN_TIMEOUT,
    stream: TextIO | None = None,
    extra_params: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
) -> Token:
    """Log in with the user's browser: authorization code grant, PKCE S256, loopback redirect.

    A listener on loopback (127.0.0.1, and ::1 where available) waits for the redirect at
    ``http://127.0.0.1:PORT/callback``; the authorization URL is always printed to ``stream`` and,
    with ``open_browser``, opened with :func:`webbrowser.open` in a thread of its own: a launcher
    that waits until its browser exits (console browsers, a ``BROWSER`` command without ``&``)
    holds neither the login nor its ``timeout``, which runs from the moment the URL is shown. A
    browser that fails to open is not an error: the user can copy the URL. Requests for other
    paths or with another ``state`` are answered and ignored. A redirect with the right ``state``
    ends the wait: with a code, the code is exchanged for a token; with an ``error``, or with
    neither (a broken server), the login fails at once. The browser's page then says whether the
    login worked. A redirect whose ``iss`` names another issuer is refused, and so is one without
    ``iss`` when the issuer's metadata says ``authorization_response_iss_parameter_supported``
    (RFC 9207).

    Args:
        client_id: the client identifier registered at the server.
        issuer: the authorization server, whose metadata supplies the endpoints not given.
        authorization_url: the authorization endpoint.
        token_url: the token endpoint.
        client_secret: the client secret of a confidential client; most CLI clients have none.
        client_auth: how the secret is sent: ``"basic"`` (HTTP Basic) or ``"post"`` (form body).
        scope: the scope to ask for; with ``openid`` in it, a ``nonce`` is sent and checked.
        storage: where to save the token; nothing is saved if the login fails.
        port: the loopback port, or 0 for one the OS picks. Some servers want the registered
            redirect URI's port; a busy port fails at once.
        redirect_path: the path of the redirect URI.
        redirect_host: ``"127.0.0.1"`` (RFC 8252's advice), ``"localhost"`` or ``"::1"``, for
            servers that accept only the redirect URI registered with that host.
        open_browser: try to open the URL in a browser.
        timeout: seconds to wait for the user.
        stream: where the URL and messages go; standard error by default.
        extra_params: more authorization request parameters (``prompt``, ``access_type``, ``audience`` ...);
            not one the login sets itself (``state``, ``redirect_uri``, ``code_challenge`` ...) nor ``scope``.
        session: the session for the code exchange and discovery; a private one by default.
        request_timeout: seconds for each HTTP request to the server.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).

    Returns:
        The new token.

    Raises:
        LoginError: the login failed; ``error`` says how: ``port_in_use``, ``timeout``,
            ``access_denied`` (or another error of the redirect), ``invalid_callback``,
            ``invalid_grant`` (the code was refused), ``network_error``, or a discovery error.
        InsecureTransportError: an endpoint is plain http to a host that is not loopback.
        TokenStorageError: the token could not be stored.
        ValueError: a bad argument, such as ``extra_params`` naming a parameter the login sets itself.
        KeyboardInterrupt: the user pressed Ctrl-C; the port is released all the same.

    .. versionadded:: 0.2
    """
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    import webbrowser  # here: it and the loopback listener (http.server) are heavy to import

    from ._loopback import LoopbackListener

    extra = _extra(extra_params, _BROWSER_PARAMS)
    out = sys.stderr if stream is None else stream
    client = _Client(client_id, client_secret, client_auth, session, request_timeout, allow_insecure_http)
    try:
        urls = client.endpoints(issuer, {"authorization_endpoint": authorization_url, "token_endpoint": token_url})
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters of RFC 7636's unreserved set
        nonce = secrets.token_urlsafe(32) if scope and "openid" in scope.split() else None
        client.secrets.append(verifier)
        try:
            listener = LoopbackListener(state=state, port=port, path=redirect_path, redirect_host=redirect_host)
        except OSError as exc:
            where = f"port {port}" if port else "a free port"
            raise LoginError(
                f"port_in_use: could not listen on {redirect_host} {where} for the login's redirect "
                f"({exc.strerror or exc}); choose another port, or 0 for any",
                error="port_in_use",
            ) from None
        with listener:
            params = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": listener.redirect_uri,
                "state": state,
                "code_challenge": _b64(hashlib.sha256(verifier.encode("ascii")).digest()),
                "code_challenge_method": "S256",
                **({"scope": scope} if scope else {}),
                **({"nonce": nonce} if nonce else {}),
                **extra,
            }
            endpoint = urls["authorization_endpoint"]
            url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
            minutes = f"{timeout / 60:g} minutes" if timeout >= 120 else f"{timeout:g} seconds"
            _say(out, f"Log in with your browser at this address:\n\n    {url}\n")
            log.debug("browser login: waiting on %s", listener.redirect_uri)
            deadline = time.monotonic() + timeout  # from now on, whatever the browser launcher does
            launcher = _Launcher(webbrowser.open, url) if open_browser else None
            if launcher is not None:
                launcher.finished.wait(min(_LAUNCH_GRACE, timeout))
                if launcher.failed():
                    _say(out, _NO_BROWSER)
            _say(out, f"Waiting up to {minutes} for the login; press Ctrl-C to cancel.")
            callback = None
            while callback is None and (left := deadline - time.monotonic()) > 0:
                callback = listener.wait(min(left, 1.0))
                if callback is None and launcher is not None and launcher.failed():
                    _say(out, _NO_BROWSER)  # a launcher that waited for its browser, which then failed
            if callback is None:
                count = len(listener.ignored)
                ignored = ""
                if count:
                    ignored = f" ({count} stray request{'s' * (count > 1)} ignored, the last {listener.ignored[-1]})"
                raise LoginError(
                    f"timeout: no login arrived within {timeout:g} seconds{ignored}",
                    error="timeout",
                )
            try:
                token = _finish(client, callback, urls["token_endpoint"], listener.redirect_uri, verifier, nonce)
                _save(storage, token)
            except BaseException as exc:
                if isinstance(exc, LoginError):
                    reason = f"The login failed ({exc.error})."
                elif isinstance(exc, TokenStorageError):
                    reason = "The login worked, but the token could not be stored."
                else:
                    reason = "The login was interrupted."
                callback.answer(False, reason + " Go back to the program for details.")
                raise
            callback.answer(True, "The login worked; the program has its token.")
            _say(out, "Logged in.")
            return token
    finally:
        client.close()


class _Launcher:
    """Opens the login's URL in a browser, from a daemon thread the login never waits for.

    :func:`webbrowser.open` returns only when the browser exits for a ``BROWSER`` command line
    with ``%s`` and no trailing ``&``, for an unknown wrapper (a Windows browser under WSL) and for
    the console browsers Python picks without a display (``www-browser``, ``lynx``, ``w3m``); and
    the loopback listener answers that browser's redirect only once the login is done. Called in
    the login's thread, it would hold the login until the browser gave up. The thread is never
    joined: a browser may outlive the login, and the program.
    """

    def __init__(self, open_url: Callable[[str], bool], url: str) -> None:
        self.finished = threading.Event()
        self.opened = False
        self._reported = False
        threading.Thread(target=self._open, args=(open_url, url), name="login-browser", daemon=True).start()

    def _open(self, open_url: Callable[[str], bool], url: str) -> None:
        try:
            self.opened = bool(open_url(url))
        except Exception as exc:  # any browser trouble is the user's copy-and-paste cue
            log.debug("could not open a browser: %s", type(exc).__name__)
        finally:
            self.finished.set()

    def failed(self) -> bool:
        """True the first time it is asked once the launcher has said that no browser opened."""
        if self._reported or self.opened or not self.finished.is_set():
            return False
        self._reported = True
        return True


def _finish(
    client: _Client, callback: Callback, token_url: str, redirect_uri: str, verifier: str, nonce: str | None
) -> Token:
    """Check the redirect's answer, exchange its code, check the nonce; return the token."""
    params = callback.params
    issuer = client.issuer
    # RFC 9207: an answer from another server (a mix-up attack) must never get the verifier.
    if issuer is not None and "iss" in params and params["iss"].rstrip("/") != issuer.rstrip("/"):
        raise LoginError("invalid_callback: the redirect came from another issuer", error="invalid_callback")
    if client.iss_required and "iss" not in params:
        raise LoginError(
            f"invalid_callback: the redirect carried no iss, which the authorization server {issuer} sends in "
            "every answer (authorization_response_iss_parameter_supported, RFC 9207); it may come from another server",
            error="invalid_callback",
        )
    if "error" in params:
        error = _clean(params["error"], ())[:100] or "login_failed"
        description = _clean(params["error_description"], ()) if params.get("error_description") else None
        raise LoginError(
            f"{error}: {description or 'the authorization server refused the login'}",
            error=error,
            error_description=description,
        )
    code = params.get("code")
    if not code:
        raise LoginError("invalid_callback: the redirect carried neither a code nor an error", error="invalid_callback")
    client.secrets.append(code)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    log.debug("exchanging the authorization code at %s", origin(token_url))
    status, body, sent_at = client.post(token_url, data, "token endpoint")
    if status != 200:
        raise client.error(status, body, "token endpoint")
    token = client.token(status, body, sent_at)
    if nonce is not None and "id_token" in body and _id_token_nonce(body["id_token"]) != nonce:
        raise LoginError("invalid_id_token: the id_token's nonce is not this login's", error="invalid_id_token")
    return token


def _id_token_nonce(id_token: Any) -> Any:
    """The ``nonce`` claim of an ID token, unverified (the token came straight from the token endpoint)."""
    try:
        payload = id_token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("nonce")
    except (AttributeError, IndexError, ValueError, TypeError):
        return None


# -- device login ----------------------------------------------------------------------------------


def login_device(
    *,
    client_id: str,
    issuer: str | None = None,
    device_authorization_url: str | None = None,
    token_url: str | None = None,
    client_secret: str | None = None,
    client_auth: str = "basic",
    scope: str | None = None,
    storage: TokenStorage | None = None,
    timeout: float | None = None,
    stream: TextIO | None = None,
    extra_params: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Token:
    """Log in on another device: the device authorization grant (RFC 8628).

    Shows ``verification_uri_complete`` (or ``verification_uri`` and the ``user_code``) on
    ``stream``, then polls the token endpoint every ``interval`` seconds (5 when the server names
    none; 5 more after each ``slow_down``) until the user approves, refuses (``access_denied``),
    the code expires (``expired_token``, or ``expires_in`` passes), or ``timeout`` passes. On a
    terminal a progress line counts down.

    Args:
        client_id: the client identifier registered at the server.
        issuer: the authorization server, whose metadata supplies the endpoints not given.
        device_authorization_url: the device authorization endpoint.
        token_url: the token endpoint.
        client_secret: the client secret of a confidential client, if any.
        client_auth: ``"basic"`` or ``"post"``.
        scope: the scope to ask for.
        storage: where to save the token; nothing is saved if the login fails.
        timeout: seconds to wait at most; the device code's ``expires_in`` by default.
        stream: where the instructions go; standard error by default.
        extra_params: more device authorization request parameters (``audience`` ...); not
            ``client_id``, ``client_secret`` nor ``scope``.
        session: the session for the requests; a private one by default.
        request_timeout: seconds for each HTTP request.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).
        sleep: waits between polls (tests pass a fake).
        clock: a monotonic clock in seconds, read with ``sleep``.

    Returns:
        The new token.

    Raises:
        LoginError: ``access_denied``, ``expired_token`` (also when the deadline passes), an
            error of the device authorization endpoint, ``network_error`` after repeated failures,
            or a discovery error.
        InsecureTransportError: an endpoint is plain http to a host that is not loopback.
        TokenStorageError: the token could not be stored.
        ValueError: a bad argument, such as ``extra_params`` naming ``scope``.

    .. versionadded:: 0.2
    """
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    extra = _extra(extra_params, _DEVICE_PARAMS)
    out = sys.stderr if stream is None else stream
    client = _Client(client_id, client_secret, client_auth, session, request_timeout, allow_insecure_http)
    try:
        urls = client.endpoints(
            issuer, {"device_authorization_endpoint": device_authorization_url, "token_endpoint": token_url}
        )
        data = {**({"scope": scope} if scope else {}), **extra}
        status, body, _ = client.post(urls["device_authorization_endpoint"], data, "device authorization endpoint")
        if status != 200:
            raise client.error(status, body, "device authorization endpoint")
        device_code = body.get("device_code") if isinstance(body, dict) else None
        user_code = body.get("user_code") if isinstance(body, dict) else None
        # "verification_url": Google's spelling of an older draft.
        uri = body.get("verification_uri") or body.get("verification_url") if isinstance(body, dict) else None
        if not all(isinstance(v, str) and v for v in (device_code, user_code, uri)):
            raise LoginError(
                "invalid_device_response: the device authorization endpoint did not answer with "
                "device_code, user_code and verification_uri",
                error="invalid_device_response",
            )
        assert isinstance(body, dict)
        assert isinstance(device_code, str)
        client.secrets.append(device_code)
        complete = body.get("verification_uri_complete")
        if isinstance(complete, str) and complete:
            _say(out, f"To log in, open this address on any device and confirm the code {user_code}:")
            _say(out, f"\n    {complete}\n")
        else:
            _say(out, f"To log in, open this address on any device:\n\n    {uri}\n\nand enter the code: {user_code}\n")
        interval = _seconds(body.get("interval")) or DEFAULT_DEVICE_INTERVAL
        lifetime = _seconds(body.get("expires_in")) or _DEVICE_EXPIRY
        if timeout is not None:
            lifetime = min(lifetime, timeout)
        token = _poll(client, urls["token_endpoint"], device_code, interval, lifetime, out, sleep, clock)
        _save(storage, token)
        _say(out, "Logged in.")
        return token
    finally:
        client.close()


def _poll(
    client: _Client,
    token_url: str,
    device_code: str,
    interval: float,
    lifetime: float,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Token:
    deadline = clock() + lifetime
    tty = out.isatty()
    failures = 0
    # Bounded by the deadline; the count bounds a clock that does not move.
    for _ in range(int(lifetime / DEFAULT_DEVICE_INTERVAL) + 100):
        left = deadline - clock()
        if left <= interval:
            break
        if tty:
            out.write(f"\r  Waiting for the approval ({int(left)} s left) ")
            out.flush()
        sleep(interval)
        data = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
        failure: LoginError | None = None
        try:
            status, body, sent_at = client.post(token_url, data, "token endpoint")
        except LoginError as exc:
            status, body, sent_at, failure = 0, None, 0.0, exc
        if status != 200 and failure is None:
            failure = client.error(status, body, "token endpoint")
        if failure is None:
            if tty:
                out.write("\n")
            return client.token(status, body, sent_at)
        if failure.error == "authorization_pending":
            failures = 0
            continue
        if failure.error == "slow_down":
            interval += 5.0  # RFC 8628 §3.5, for this and every later poll
            continue
        if failure.retryable and failures < _POLL_FAILURES:
            failures += 1
            interval *= 2  # RFC 8628 §3.5: back off on connection trouble
            log.info("device login: poll failed (%s); trying again in %g s", failure.error, interval)
            continue
        if tty:
            out.write("\n")
        if failure.error == "access_denied":
            raise LoginError("access_denied: the login was refused on the other device", error="access_denied")
        if failure.error == "expired_token":
            raise LoginError("expired_token: the code expired before the login was approved", error="expired_token")
        raise failure
    if tty:
        out.write("\n")
    raise LoginError(f"expired_token: the login was not approved within {lifetime:g} seconds", error="expired_token")


def should_use_device_flow(environ: Mapping[str, str] | None = None, *, platform: str | None = None) -> bool:
    """Whether a browser login is unlikely to work here, so the device login should be used.

    True in an SSH session (``SSH_CONNECTION``, ``SSH_TTY``), in a container (``/.dockerenv``,
    ``/run/.containerenv``), and on Linux without a display (no ``DISPLAY`` nor ``WAYLAND_DISPLAY``).

    Args:
        environ: the environment to look at; ``os.environ`` by default.
        platform: ``sys.platform`` by default.

    .. versionadded:: 0.2
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return True
    if any(os.path.exists(marker) for marker in _CONTAINER_MARKERS):
        return True
    return platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


# -- revocation and logout -------------------------------------------------------------------------


def revoke_token(
    token: Token,
    *,
    revocation_url: str | None = None,
    issuer: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_auth: str = "basic",
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
) -> None:
    """Revoke ``token``'s refresh token, then its access token, at the revocation endpoint (RFC 7009).

    Both are tried even if the first fails. A server that cannot revoke access tokens
    (``unsupported_token_type``) is not an error: the access token runs out by itself.

    Args:
        token: the token to revoke.
        revocation_url: the revocation endpoint; from the ``issuer``'s metadata if not given.
        issuer: the authorization server.
        client_id: the client identifier (public clients send it in the body).
        client_secret: the client secret of a confidential client.
        client_auth: ``"basic"`` or ``"post"``.
        session: the session to send with; a private one by default.
        timeout: seconds for each HTTP request.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).

    Raises:
        RevocationError: a token was not revoked (the message says which and why).
        LoginError: discovery failed, or the server publishes no revocation endpoint.
        InsecureTransportError: the endpoint is plain http to a host that is not loopback.

    .. versionadded:: 0.2
    """
    client = _Client(client_id, client_secret, client_auth, session, timeout, allow_insecure_http)
    try:
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


def logout(
    storage: TokenStorage,
    *,
    revocation_url: str | None = None,
    issuer: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_auth: str = "basic",
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
) -> bool:
    """Revoke the stored token where the server allows it, then delete the record, whatever happened.

    With neither ``revocation_url`` nor an ``issuer`` whose metadata has a revocation endpoint,
    nothing is revoked: the tokens stay valid at the server until they expire.

    Args:
        storage: the record to log out of.
        revocation_url: the revocation endpoint; from the ``issuer``'s metadata if not given.
        issuer: the authorization server.
        client_id: the client identifier.
        client_secret: the client secret of a confidential client.
        client_auth: ``"basic"`` or ``"post"``.
        session: the session to send with; a private one by default.
        timeout: seconds for each HTTP request.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).

    Returns:
        True if the tokens were revoked at the server; False if there was nothing stored or no
        revocation endpoint.

    Raises:
        RevocationError: the revocation failed (or the record could not be read to revoke it);
            the local record was deleted all the same (``deleted`` is True).
        TokenStorageError: the record could not be deleted.

    .. versionadded:: 0.2
    """
    failure: TokenRefreshError | None = None
    revoked = False
    try:
        token = storage.load()
    except TokenStorageError as exc:
        token, failure = None, RevocationError(f"the stored token could not be read to revoke it: {exc}")
    if token is not None:
        try:
            if revocation_url is not None or issuer is not None:
                revoke_token(
                    token,
                    revocation_url=revocation_url,
                    issuer=issuer,
                    client_id=client_id,
                    client_secret=client_secret,
                    client_auth=client_auth,
                    session=session,
                    timeout=timeout,
                    allow_insecure_http=allow_insecure_http,
                )
                revoked = True
            else:
                log.info("logout: no revocation endpoint given; the token stays valid until it expires")
        except (LoginError, RevocationError) as exc:
            if exc.error != "missing_endpoint":
                failure = exc
            else:
                log.info("logout: %s; the token stays valid until it expires", exc)
        except InsecureTransportError as exc:
            failure = exc  # reported below, after the delete
    storage.delete()
    log.info("logout: deleted the stored token")
    if failure is not None:
        raise RevocationError(
            f"{failure} (the local record was deleted)",
            error=getattr(failure, "error", "revocation_failed"),
            retryable=getattr(failure, "retryable", False),
            deleted=True,
        ) from failure
    return revoked


def refresh_token_expires_at(token: Token) -> float | None:
    """When ``token``'s refresh token expires, if the server said (epoch seconds), else None.

    The same as :attr:`Token.refresh_token_expires_at
    <requests_tokenrefresh.Token.refresh_token_expires_at>`; for a record stored before that
    existed, it counts ``refresh_token_expires_in`` or ``refresh_expires_in`` in ``extra`` from
    ``obtained_at``.

    .. versionadded:: 0.2
    """
    if token.refresh_token_expires_at is not None:
        return token.refresh_token_expires_at
    if token.obtained_at is None:
        return None
    for name in ("refresh_token_expires_in", "refresh_expires_in"):
        seconds = _seconds(token.extra.get(name))
        if seconds is not None:
            return token.obtained_at + seconds
    return None
