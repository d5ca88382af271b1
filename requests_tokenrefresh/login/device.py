"""The device login (RFC 8628), for machines with no browser, and when to use it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TextIO

import requests

from .._client_auth import ClientAuth, ClientCert
from .._discovery import DEFAULT_TIMEOUT
from .._dpop import DPoPKey
from .._endpoints import EndpointClient
from .._settings import scope_string
from ..exceptions import (
    LoginError,
)
from ..storage import TokenStorage
from ..tokens import Token
from .common import (
    _CONTAINER_MARKERS,
    _DEVICE_EXPIRY,
    _DEVICE_PARAMS,
    _POLL_FAILURES,
    DEFAULT_DEVICE_INTERVAL,
    DEVICE_CODE_GRANT,
    _extra,
    _save,
    _say,
    _seconds,
)

__all__ = ["login_device", "should_use_device_flow"]

log: logging.Logger = logging.getLogger(__name__)


def login_device(
    *,
    client_id: str,
    issuer: str | None = None,
    device_authorization_url: str | None = None,
    token_url: str | None = None,
    client_secret: str | None = None,
    client_auth: ClientAuth | None = None,
    scope: str | Sequence[str] | AbstractSet[str] | None = None,
    storage: TokenStorage | None = None,
    timeout: float | None = None,
    stream: TextIO | None = None,
    extra_params: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
    dpop: bool | DPoPKey = False,
    allow_dpop_downgrade: bool = False,
    client_cert: ClientCert | None = None,
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
        client_auth: how the client authenticates: ``"basic"`` (HTTP Basic), ``"post"`` (form body), a
            :class:`~requests_tokenrefresh.PrivateKeyJWT` or a :class:`~requests_tokenrefresh.ClientAssertion`
            (on every request to the server; see :doc:`/client-auth`). None: chosen from the
            issuer's metadata (``token_endpoint_auth_methods_supported``), else ``"basic"``.
        scope: the scope to ask for: a string, or strings (a list or tuple, sent in its order, or a set,
            sent sorted) joined with spaces.
        storage: where to save the token; nothing is saved if the login fails.
        timeout: seconds to wait at most; the device code's ``expires_in`` by default.
        stream: where the instructions go; standard error by default.
        extra_params: more device authorization request parameters (``audience`` ...); not
            ``client_id``, ``client_secret`` nor ``scope``.
        session: the session for the requests; a private one by default.
        request_timeout: seconds for each HTTP request.
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
    scope = scope_string(scope)
    extra = _extra(extra_params, _DEVICE_PARAMS)
    out = sys.stderr if stream is None else stream
    client = EndpointClient(
        client_id, client_secret, client_auth, session, request_timeout, allow_insecure_http, client_cert
    )
    client.use_dpop(dpop, allow_dpop_downgrade)
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
    client: EndpointClient,
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
            status, body, sent_at = client.post(token_url, data, "token endpoint", proof=True)
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
