"""The ``requests-tokenrefresh`` command (also ``python -m requests_tokenrefresh``).

``demo`` shows the adapter against a strict loopback OAuth server; ``status``, ``import``,
``refresh`` and ``clear`` look after the token a :class:`KeyringStorage` keeps in the OS keyring.
No command prints a token, a refresh token or a client secret unless given ``--show-secrets``;
errors are one line on stderr and exit status 1 (usage errors: 2).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._redact import fingerprint
from .adapters import DEFAULT_LEEWAY, DEFAULT_REFRESH_TIMEOUT, TokenRefreshAdapter
from .exceptions import SessionExpiredError, TokenRefreshError, TokenStorageError
from .storage import KeyringStorage
from .tokens import Token, _number

__all__ = ["CLIENT_SECRET_ENV", "DEMO_SERVICE", "DEMO_USERNAME", "build_parser", "describe", "main"]

PROG = "requests-tokenrefresh"
#: Environment variable read for ``refresh --client-secret`` (a secret in argv is visible to other users).
CLIENT_SECRET_ENV = "REQUESTS_TOKENREFRESH_CLIENT_SECRET"
#: The keyring entry the demo stores its token in.
DEMO_SERVICE = "requests-tokenrefresh-demo"
DEMO_USERNAME = "demo"

STATUS_EPILOG = """\
exit status: 0 if a usable token is stored: its expiry is unknown or in the future, or it has
expired but has a refresh token to renew it; 1 if the stored token has expired and has no refresh
token, if nothing is stored, or on any error."""


_EXPIRED = {
    True: "yes (expired; the refresh token can renew it)",
    False: "no (expired and no refresh token: log in again)",
}


class _CommandError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 1."""


def _storage(args: argparse.Namespace) -> KeyringStorage:
    return KeyringStorage(args.service, args.username)


def _load(storage: KeyringStorage) -> Token:
    token = storage.load()
    if token is None:
        raise _CommandError(f"no token is stored in keyring entry {storage.service!r}/{storage.username!r}")
    return token


def describe(token: Token, *, show_secrets: bool = False, now: float | None = None) -> dict[str, Any]:
    """Return what ``status --json`` prints for ``token``: no secret unless ``show_secrets``."""
    now = time.time() if now is None else now
    expires_in = None if token.expires_at is None else round(token.expires_at - now, 1)
    expired = expires_in is not None and expires_in <= 0
    info: dict[str, Any] = {
        "token_type": token.token_type,
        "scope": token.scope,
        "expires_at": token.expires_at,
        "expires_in": expires_in,
        "expired": expired,
        "obtained_at": token.obtained_at,
        "has_refresh_token": token.refresh_token is not None,
        "access_token_fingerprint": fingerprint(token.access_token),
        "refresh_token_fingerprint": fingerprint(token.refresh_token) if token.refresh_token else None,
        "extra_keys": sorted(token.extra),
        "usable": not expired or token.refresh_token is not None,
    }
    if show_secrets:
        info["access_token"] = token.access_token
        info["refresh_token"] = token.refresh_token
    return info


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.{0 if seconds >= 10 else 1}f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return " ".join([f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n][:2])


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _print_status(storage: KeyringStorage, info: dict[str, Any]) -> None:
    if info["expires_at"] is None:
        expires = "unknown (no expires_in and no JWT exp): the adapter relies on 401 responses"
    elif info["expired"]:
        expires = f"expired {_duration(info['expires_in'])} ago ({_when(info['expires_at'])})"
    else:
        expires = f"in {_duration(info['expires_in'])} ({_when(info['expires_at'])})"
    fingerprints = f"access token {info['access_token_fingerprint']}"
    if info["has_refresh_token"]:
        fingerprints += f", refresh token {info['refresh_token_fingerprint']}"
    usable = "yes" if not info["expired"] else _EXPIRED[info["has_refresh_token"]]
    rows = [
        ("keyring entry", f"{storage.service} / {storage.username}"),
        ("token type", info["token_type"]),
        ("scope", info["scope"] if info["scope"] is not None else "-"),
        ("expires", expires),
        ("refresh token", "present" if info["has_refresh_token"] else "none"),
        ("fingerprints", fingerprints),
        ("extra fields", ", ".join(info["extra_keys"]) or "-"),
        ("usable", usable),
    ]
    if "access_token" in info:
        rows += [("access token", info["access_token"]), ("refresh token", info["refresh_token"] or "-")]
    for label, value in rows:
        print(f"{label:<15} {value}")


def _status(args: argparse.Namespace) -> int:
    storage = _storage(args)
    info = describe(_load(storage), show_secrets=args.show_secrets)
    if args.json:
        print(json.dumps({"service": storage.service, "username": storage.username, **info}, indent=2))
    else:
        _print_status(storage, info)
    return 0 if info["usable"] else 1


def _import(args: argparse.Namespace) -> int:
    storage = _storage(args)
    if args.file == "-":
        source = "standard input"
        if sys.stdin.isatty():
            print("paste the token response (JSON), then Ctrl-D", file=sys.stderr)
        text = sys.stdin.read()
    else:
        source = args.file
        try:
            with open(args.file, encoding="utf-8-sig") as f:
                text = f.read()
        except OSError as exc:
            raise _CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    try:
        response = json.loads(text)
    except json.JSONDecodeError as exc:  # its message quotes no input, so no secret
        raise _CommandError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    if isinstance(response, dict):
        # The library ignores a bad expiry field (to keep a rotated refresh token); typed input is
        # better refused.
        for field in ("expires_in", "expires_at"):
            if response.get(field) is not None and _number(response[field]) is None:
                raise _CommandError(f"{source}: {field} is not a number of seconds")
    try:
        token = Token.from_response(response)  # expires_in counts from now; else the JWT exp claim
    except ValueError as exc:
        raise _CommandError(f"{source}: {exc}") from exc
    storage.save(token)
    print(f"stored token {fingerprint(token.access_token)} in keyring entry {storage.service}/{storage.username}")
    _print_status(storage, describe(token))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    storage = _storage(args)
    old = _load(storage)
    if old.refresh_token is None:
        raise _CommandError("the stored token has no refresh token: log in again and import a new token")
    adapter = TokenRefreshAdapter(
        storage,
        token_url=args.token_url,
        client_id=args.client_id,
        client_secret=args.client_secret or os.environ.get(CLIENT_SECRET_ENV) or None,
        client_auth=args.client_auth,
        scope=args.scope,
        refresh_timeout=args.timeout,
        allow_insecure_http=args.allow_insecure_http,
    )
    try:
        new = adapter.refresh()
    except SessionExpiredError as exc:
        raise _CommandError(
            f"{exc} (the token endpoint rejected the refresh token; the stored token was deleted)"
        ) from exc
    finally:
        adapter.close()
    rotated = "rotated" if new.refresh_token != old.refresh_token else "kept"
    print(
        f"refreshed: access token {fingerprint(old.access_token)} -> {fingerprint(new.access_token)}, "
        f"refresh token {rotated} ({fingerprint(old.refresh_token)} -> {fingerprint(new.refresh_token)})"
    )
    _print_status(storage, describe(new))
    return 0


def _clear(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        _load(storage)
    except TokenStorageError as exc:
        if not isinstance(exc.__cause__, ValueError):
            raise  # a broken record is deleted below; a broken keyring is an error
    storage.delete()
    print(f"deleted the token in keyring entry {storage.service}/{storage.username}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # defines a keyring backend class: load it only for the demo

    return run_demo(
        threads=args.threads,
        duration=args.duration,
        ttl=args.ttl,
        leeway=args.leeway,
        service=args.service,
        username=args.username,
        keep=args.keep,
        timeline=args.timeline,
        out=sys.stdout,
        err=sys.stderr,
    )


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"not a whole number from 1 to 1024: {text!r}")
    return int(text)


def _seconds(text: str, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value <= 3600 and (allow_zero or value > 0)):
        raise argparse.ArgumentTypeError(
            f"not a number of seconds {'from' if allow_zero else 'above'} 0 to 3600: {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``requests-tokenrefresh`` command."""
    parser = argparse.ArgumentParser(prog=PROG, description="Keep OAuth 2.0 / JWT access tokens fresh for requests.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:  # noqa: A002 - argparse's name
        return commands.add_parser(name, help=help, description=help, **kwargs)

    def entry(sub: argparse.ArgumentParser, service: str | None = None, username: str | None = None) -> None:
        sub.add_argument("--service", required=service is None, default=service, help="keyring service name")
        sub.add_argument("--username", required=username is None, default=username, help="keyring user name")

    demo = command("demo", "run many threads through several token expiries against a strict loopback OAuth server")
    demo.add_argument("--threads", type=_count, default=32, help="client threads (default: 32)")
    demo.add_argument("--duration", type=_seconds, default=10.0, help="seconds of requests (default: 10)")
    demo.add_argument("--ttl", type=_seconds, default=3.0, help="access token lifetime in seconds (default: 3)")
    demo.add_argument(
        "--leeway",
        type=lambda text: _seconds(text, allow_zero=True),
        default=DEFAULT_LEEWAY,
        help="refresh this many seconds before expiry, at most half the lifetime (default: 60)",
    )
    entry(demo, DEMO_SERVICE, DEMO_USERNAME)
    demo.add_argument("--keep", action="store_true", help="keep the demo's token in the keyring at the end")
    demo.add_argument(
        "--timeline",
        metavar="FILE",
        help="also write every request and token endpoint call to FILE as JSON (input of docs/timeline.py)",
    )
    demo.set_defaults(func=_demo)

    status = command("status", "show the stored token: type, scope, expiry, fingerprints", epilog=STATUS_EPILOG)
    entry(status)
    status.add_argument("--json", action="store_true", help="print a JSON object, for scripts")
    status.add_argument("--show-secrets", action="store_true", help="also print the access and refresh tokens")
    status.set_defaults(func=_status)

    imp = command("import", "store a token response (JSON from the app's login, a file or - for stdin)")
    entry(imp)
    imp.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="the token response (default: stdin)")
    imp.set_defaults(func=_import)

    refresh = command("refresh", "refresh the stored token now, to test a token endpoint configuration")
    entry(refresh)
    refresh.add_argument("--token-url", required=True, help="the OAuth 2.0 token endpoint")
    refresh.add_argument("--client-id", help="client id, if the token endpoint needs one")
    refresh.add_argument(
        "--client-secret", help=f"client secret (better: set {CLIENT_SECRET_ENV}; argv is visible to other users)"
    )
    refresh.add_argument(
        "--client-auth", choices=("basic", "post"), default="basic", help="how to send the client credentials"
    )
    refresh.add_argument("--scope", help="scope to ask for (default: keep the granted scope)")
    refresh.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_REFRESH_TIMEOUT, help="seconds for the refresh, retries included"
    )
    refresh.add_argument("--allow-insecure-http", action="store_true", help="allow plain http to non-loopback hosts")
    refresh.set_defaults(func=_refresh)

    clear = command("clear", "delete the stored token")
    entry(clear)
    clear.set_defaults(func=_clear)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (_CommandError, TokenRefreshError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
