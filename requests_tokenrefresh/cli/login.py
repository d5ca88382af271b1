"""The ``login`` and ``logout`` commands: the first token into the store, and the last one out of it.

``login`` runs :func:`~requests_tokenrefresh.login.login_browser` or, with ``--device`` or where
a browser is unlikely to work (:func:`~requests_tokenrefresh.login.should_use_device_flow`),
:func:`~requests_tokenrefresh.login.login_device`, and saves the token in the store the options
name; its instructions go to standard error, and one line on standard output says where the
token went and when it expires. ``logout`` revokes the stored tokens where the server allows it
(:func:`~requests_tokenrefresh.login.logout`), then deletes the record, whatever happened.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .._discovery import DEFAULT_TIMEOUT
from .._redact import fingerprint
from ..exceptions import InsecureTransportError, LoginError, RevocationError
from ..login import (
    DEFAULT_LOGIN_TIMEOUT,
    login_browser,
    login_device,
    logout,
    refresh_token_expires_at,
    should_use_device_flow,
)
from ..tokens import Token
from .format import (
    CLIENT_SECRET_ENV,
    _CommandError,
    _duration,
    _seconds,
    _shown_url,
    _when,
    add_client_cert_options,
    client_cert,
)
from .store import _A_TOKEN, FORCE_HELP, _EncryptedRecord, _load, _replacing, _storage, _store_problem, _where

__all__ = ["LOGIN_EPILOG", "add_login_arguments", "add_logout_arguments"]

LOGIN_EPILOG = """\
The flow: --device or --browser; by default the device login where a browser is unlikely to work
(an SSH session, a container, Linux without a display), else the browser login. The browser login
listens on 127.0.0.1 for the redirect and prints the address to open; the device login prints an
address and a code to confirm on any device. Nothing is stored if the login fails."""


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number from 0 to 65535: {text!r}")
    return int(text)


def _client_options(sub: argparse.ArgumentParser, *, required: bool) -> None:
    client = sub.add_argument_group("the client")
    client.add_argument("--client-id", required=required, help="the client id registered at the server")
    client.add_argument(
        "--client-secret",
        help=f"client secret, if any (better: set {CLIENT_SECRET_ENV}; argv is visible to other users)",
    )
    client.add_argument(
        "--client-auth",
        choices=("basic", "post"),
        help="how to send the client secret (default: as the issuer's metadata lists, else basic)",
    )
    add_client_cert_options(client)
    sub.add_argument(
        "--allow-insecure-http", action="store_true", help="allow plain http to a server that is not this machine"
    )


def add_login_arguments(sub: argparse.ArgumentParser) -> None:
    """Add ``login``'s own options (the store options come from ``add_store_options``)."""
    server = sub.add_argument_group("the authorization server: --issuer, or its endpoints")
    server.add_argument("--issuer", metavar="URL", help="the issuer, whose metadata names the endpoints")
    server.add_argument("--authorization-url", metavar="URL", help="the authorization endpoint (browser login)")
    server.add_argument("--token-url", metavar="URL", help="the token endpoint")
    server.add_argument(
        "--device-authorization-url", metavar="URL", help="the device authorization endpoint (device login)"
    )
    _client_options(sub, required=True)
    sub.add_argument("--scope", help="the scope to ask for, space-separated")
    flow = sub.add_mutually_exclusive_group()
    flow.add_argument("--device", action="store_true", help="log in on another device (RFC 8628 device login)")
    flow.add_argument("--browser", action="store_true", help="log in with a browser, even where none is detected")
    sub.add_argument(
        "--port", type=_port, default=0, help="browser login: the loopback port of the redirect (default: any free one)"
    )
    sub.add_argument("--no-browser", action="store_true", help="browser login: print the address, do not open it")
    sub.add_argument(
        "--timeout",
        type=_seconds,
        help=f"seconds to wait for the login (default: {DEFAULT_LOGIN_TIMEOUT:g}; device login: the code's lifetime)",
    )
    sub.add_argument(
        "--dpop",
        action="store_true",
        help="ask for a DPoP-bound token (RFC 9449); its new key is kept with the record (needs cryptography)",
    )
    sub.add_argument("--force", action="store_true", help=FORCE_HELP)
    sub.set_defaults(func=_login, check=_login_problem)


def add_logout_arguments(sub: argparse.ArgumentParser) -> None:
    """Add ``logout``'s own options (the store options come from ``add_store_options``)."""
    server = sub.add_argument_group("the revocation endpoint (without one, nothing is revoked)")
    server.add_argument("--issuer", metavar="URL", help="the issuer, whose metadata names the revocation endpoint")
    server.add_argument("--revocation-url", metavar="URL", help="the revocation endpoint (RFC 7009)")
    _client_options(sub, required=False)
    sub.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="seconds for each request (default: %(default)g)"
    )
    sub.set_defaults(func=_logout)


def _login_problem(args: argparse.Namespace) -> str | None:
    """Why ``login``'s options do not fit together, or None."""
    problem = _store_problem(args)
    if problem is not None or args.issuer:
        return problem
    endpoints = "--issuer URL, or --authorization-url URL and --token-url URL (--device-authorization-url for --device)"
    if not args.token_url or not (args.authorization_url or args.device_authorization_url):
        return f"name the authorization server: {endpoints}"
    if args.device and not args.device_authorization_url:
        return "--device needs --issuer, or --device-authorization-url and --token-url"
    if args.browser and not args.authorization_url:
        return "--browser needs --issuer, or --authorization-url and --token-url"
    return None


def _use_device(args: argparse.Namespace) -> bool:
    """Whether to run the device login: asked for, or no browser here and a device endpoint to use."""
    if args.device or args.browser:
        return bool(args.device)
    if args.issuer is None and not args.authorization_url:
        return True  # only the device endpoint was given
    device_possible = args.issuer is not None or args.device_authorization_url is not None
    return device_possible and should_use_device_flow()


def _expiry(token: Token, now: float) -> str:
    """When the token, and its refresh token, expire, for the line ``login`` ends with."""
    if token.expires_at is None:
        text = "its expiry is unknown (the adapter relies on 401 responses)"
    else:
        text = f"it expires in {_duration(token.expires_at - now)} ({_when(token.expires_at)})"
    refresh_at = refresh_token_expires_at(token)
    if token.refresh_token is None:
        text += "; no refresh token: log in again when it expires"
    elif refresh_at is not None:
        text += f", the refresh token in {_duration(refresh_at - now)} ({_when(refresh_at)})"
    return text


def _insecure(exc: InsecureTransportError) -> _CommandError:
    return _CommandError(str(exc).replace("allow_insecure_http=True", "--allow-insecure-http"))


def _login(args: argparse.Namespace) -> int:
    storage = _storage(args)
    replaced = _replacing(storage, "login", force=args.force)  # before the user logs in for nothing
    common = {
        "client_id": args.client_id,
        "issuer": args.issuer,
        "token_url": args.token_url,
        "client_secret": args.client_secret or os.environ.get(CLIENT_SECRET_ENV) or None,
        "client_auth": args.client_auth,
        "client_cert": client_cert(args),
        "scope": args.scope,
        "storage": storage,
        "stream": sys.stderr,
        "allow_insecure_http": args.allow_insecure_http,
        "dpop": args.dpop,
    }
    device = _use_device(args)
    try:
        if device:
            try:
                token = login_device(
                    device_authorization_url=args.device_authorization_url, timeout=args.timeout, **common
                )
            except LoginError as exc:
                # Chosen for want of a browser, but the server has no device login: the browser
                # login still works where the user can open its address (a forwarded port, say).
                if exc.error != "missing_endpoint" or args.device:
                    raise
                print(f"{exc}; trying the browser login", file=sys.stderr)
                device = False
        if not device:
            token = login_browser(
                authorization_url=args.authorization_url,
                port=args.port,
                open_browser=not args.no_browser,
                timeout=args.timeout or DEFAULT_LOGIN_TIMEOUT,
                **common,
            )
    except InsecureTransportError as exc:
        raise _insecure(exc) from exc
    where = _where(storage)
    if replaced == _A_TOKEN:
        where += " (replacing the token stored there)"
    elif replaced is not None:
        where += " (replacing the value stored there, which was not a token)"
    bound = f", bound to DPoP key {token.dpop_jkt}" if token.dpop_jkt is not None else ""
    print(f"logged in: token {fingerprint(token.access_token)}{bound} stored in {where}; {_expiry(token, time.time())}")
    return 0


def _logout(args: argparse.Namespace) -> int:
    storage = _storage(args)
    revocation = args.issuer is not None or args.revocation_url is not None
    try:
        token = _load(storage)
    except _EncryptedRecord:
        raise  # it needs its keys to be revoked: never deleted unread
    except _CommandError as exc:  # a record that is not a token: nothing to revoke, but it goes all the same
        storage.delete()
        message = f"the {_where(storage)} did not hold a token record, so nothing was revoked; it was deleted"
        if revocation:
            raise _CommandError(message) from exc
        print(message)
        return 0
    if token is None:
        print(f"nothing is stored in {_where(storage)}: nothing to log out of")
        return 0
    try:
        revoked = logout(
            storage,
            revocation_url=args.revocation_url,
            issuer=args.issuer,
            client_id=args.client_id,
            client_secret=args.client_secret or os.environ.get(CLIENT_SECRET_ENV) or None,
            client_auth=args.client_auth,
            client_cert=client_cert(args),
            timeout=args.timeout,
            allow_insecure_http=args.allow_insecure_http,
        )
    except RevocationError as exc:
        if not exc.deleted:
            raise
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        reason = " ".join(str(cause).split()).replace("allow_insecure_http=True", "--allow-insecure-http")
        raise _CommandError(f"{reason}; the token in {_where(storage)} was deleted all the same") from exc
    if revoked:
        what = "the refresh token and the access token" if token.refresh_token else "the access token"
        at = _shown_url(args.revocation_url) if args.revocation_url else f"the revocation endpoint of {args.issuer}"
        print(f"revoked {what} at {at} and deleted the token in {_where(storage)}")
    elif revocation:
        print(
            f"deleted the token in {_where(storage)}; {args.issuer} publishes no revocation endpoint, so the tokens "
            "stay valid at the server until they expire"
        )
    else:
        print(
            f"deleted the token in {_where(storage)}; nothing was revoked (no --issuer or --revocation-url), so the "
            "tokens stay valid at the server until they expire"
        )
    return 0
