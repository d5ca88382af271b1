"""The browser login: the authorization code grant with PKCE (RFC 7636) and a loopback redirect (RFC 8252)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlencode

import requests

from .._client_auth import ClientAuth, ClientCert
from .._discovery import DEFAULT_TIMEOUT
from .._dpop import DPoPKey
from .._endpoints import EndpointClient
from .._grant import clean_text
from .._settings import scope_string
from .._urls import origin
from ..exceptions import (
    LoginError,
    TokenStorageError,
)
from ..storage import TokenStorage
from ..tokens import Token
from .common import _BROWSER_PARAMS, _LAUNCH_GRACE, _NO_BROWSER, DEFAULT_LOGIN_TIMEOUT, _b64, _extra, _save, _say

if TYPE_CHECKING:
    from .loopback import Callback, LoopbackListener

__all__ = ["login_browser"]

log: logging.Logger = logging.getLogger(__name__)


def login_browser(
    *,
    client_id: str,
    issuer: str | None = None,
    authorization_url: str | None = None,
    token_url: str | None = None,
    client_secret: str | None = None,
    client_auth: ClientAuth | None = None,
    scope: str | Sequence[str] | AbstractSet[str] | None = None,
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
    dpop: bool | DPoPKey = False,
    allow_dpop_downgrade: bool = False,
    client_cert: ClientCert | None = None,
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
        client_auth: how the client authenticates: ``"basic"`` (HTTP Basic), ``"post"`` (form body), a
            :class:`~requests_tokenrefresh.PrivateKeyJWT` or a :class:`~requests_tokenrefresh.ClientAssertion`
            (on every request to the server; see :doc:`/client-auth`). None: chosen from the
            issuer's metadata (``token_endpoint_auth_methods_supported``), else ``"basic"``.
        scope: the scope to ask for: a string, or strings (a list or tuple, sent in its order, or a set,
            sent sorted) joined with spaces; with ``openid`` in it, a ``nonce`` is sent and checked.
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
        dpop: ``True`` to ask for a DPoP-bound token (RFC 9449) with a new key (ES256), kept in
            the token record; or a :class:`~requests_tokenrefresh.DPoPKey` you hold (not stored).
            Every token request then carries a proof.

            .. versionadded:: 0.2
        allow_dpop_downgrade: with ``dpop``, accept a ``Bearer`` token (refused by default:
            ``dpop_downgrade``).
        client_cert: a client certificate for mutual TLS (RFC 8705), as requests' ``cert``: the
            client authenticates with it (``tls_client_auth``) where it has no secret, and the
            server's ``mtls_endpoint_aliases`` are used.

            .. versionadded:: 0.2

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
    scope = scope_string(scope)
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    import webbrowser  # here: it is heavy to import

    extra = _extra(extra_params, _BROWSER_PARAMS)
    out = sys.stderr if stream is None else stream
    client = EndpointClient(
        client_id, client_secret, client_auth, session, request_timeout, allow_insecure_http, client_cert
    )
    client.use_dpop(dpop, allow_dpop_downgrade)
    try:
        urls = client.endpoints(issuer, {"authorization_endpoint": authorization_url, "token_endpoint": token_url})
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters of RFC 7636's unreserved set
        nonce = secrets.token_urlsafe(32) if scope and "openid" in scope.split() else None
        client.secrets.append(verifier)
        with _listen(state, port, redirect_path, redirect_host) as listener:
            params = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": listener.redirect_uri,
                "state": state,
                "code_challenge": _b64(hashlib.sha256(verifier.encode("ascii")).digest()),
                "code_challenge_method": "S256",
                **({"scope": scope} if scope else {}),
                **({"nonce": nonce} if nonce else {}),
                # RFC 9449 §10: the code is bound to the key, so a stolen one is of no use.
                **({"dpop_jkt": client.dpop_key.thumbprint} if client.dpop_key else {}),
                **extra,
            }
            endpoint = urls["authorization_endpoint"]
            url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
            callback = _wait_for_redirect(listener, url, out, timeout, webbrowser.open if open_browser else None)
            try:
                token = _finish(client, callback, urls["token_endpoint"], listener.redirect_uri, verifier, nonce)
                _save(storage, token)
            except BaseException as exc:
                callback.answer(False, _failure_page(exc) + " Go back to the program for details.")
                raise
            callback.answer(True, "The login worked; the program has its token.")
            _say(out, "Logged in.")
            return token
    finally:
        client.close()


def _listen(state: str, port: int, path: str, host: str) -> LoopbackListener:
    """The loopback listener for the redirect; a port that is taken is a LoginError at once."""
    from .loopback import LoopbackListener  # here: the listener (http.server) is heavy to import

    try:
        return LoopbackListener(state=state, port=port, path=path, redirect_host=host)
    except OSError as exc:
        where = f"port {port}" if port else "a free port"
        raise LoginError(
            f"port_in_use: could not listen on {host} {where} for the login's redirect "
            f"({exc.strerror or exc}); choose another port, or 0 for any",
            error="port_in_use",
        ) from None


def _wait_for_redirect(
    listener: LoopbackListener, url: str, out: TextIO, timeout: float, open_url: Callable[[str], bool] | None
) -> Callback:
    """Show ``url`` (and open it with ``open_url``), then wait up to ``timeout`` for the redirect.

    The timeout runs from the moment the URL is shown, whatever the browser launcher does.
    """
    minutes = f"{timeout / 60:g} minutes" if timeout >= 120 else f"{timeout:g} seconds"
    _say(out, f"Log in with your browser at this address:\n\n    {url}\n")
    log.debug("browser login: waiting on %s", listener.redirect_uri)
    deadline = time.monotonic() + timeout
    launcher = _Launcher(open_url, url) if open_url is not None else None
    if launcher is not None:
        launcher.finished.wait(min(_LAUNCH_GRACE, timeout))
        if launcher.failed():
            _say(out, _NO_BROWSER)
    _say(out, f"Waiting up to {minutes} for the login; press Ctrl-C to cancel.")
    while (left := deadline - time.monotonic()) > 0:
        callback = listener.wait(min(left, 1.0))
        if callback is not None:
            return callback
        if launcher is not None and launcher.failed():
            _say(out, _NO_BROWSER)  # a launcher that waited for its browser, which then failed
    count = len(listener.ignored)
    ignored = f" ({count} stray request{'s' * (count > 1)} ignored, the last {listener.ignored[-1]})" if count else ""
    raise LoginError(f"timeout: no login arrived within {timeout:g} seconds{ignored}", error="timeout")


def _failure_page(exc: BaseException) -> str:
    """What the browser's page says when the login failed after the redirect arrived."""
    if isinstance(exc, LoginError):
        return f"The login failed ({exc.error})."
    if isinstance(exc, TokenStorageError):
        return "The login worked, but the token could not be stored."
    return "The login was interrupted."


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
    client: EndpointClient, callback: Callback, token_url: str, redirect_uri: str, verifier: str, nonce: str | None
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
        error = clean_text(params["error"], ())[:100] or "login_failed"
        description = clean_text(params["error_description"], ()) if params.get("error_description") else None
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
    status, body, sent_at = client.post(token_url, data, "token endpoint", proof=True)
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
