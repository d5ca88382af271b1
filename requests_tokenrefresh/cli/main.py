"""The ``requests-tokenrefresh`` command (also ``python -m requests_tokenrefresh``).

``demo`` shows the adapter against a strict loopback OAuth server (``--hosts N``: in N processes
that share only Redis); ``login`` gets the first token (browser or device flow) and ``logout``
revokes and deletes it; ``status``, ``import``, ``refresh`` and ``clear`` look after the token a
:class:`KeyringStorage` keeps in the OS keyring (``--service``/``--username``), a
:class:`RedisStorage` keeps in Redis (``--redis URL --key KEY``) or a :class:`FileStorage` keeps
in a file (``--file PATH``), encrypted with ``--encrypted`` (:class:`EncryptedStorage`, keys from
``REQUESTS_TOKENREFRESH_KEYS``); ``rekey`` encrypts it again with the newest key. The commands
live in ``login``, ``records``, ``refresh`` and ``rekey`` of this package; the store options in
``store`` and ``encryption``.
No command prints a token, a refresh token or a client secret unless given ``--show-secrets``
(``refresh`` writes a token it could not store in the keyring to a file only the user can read);
errors are one line on stderr and exit status 1 (usage errors: 2).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..adapters import DEFAULT_LEEWAY, DEFAULT_REFRESH_TIMEOUT
from ..exceptions import TokenRefreshError
from .format import CLIENT_SECRET_ENV as _CLIENT_SECRET_ENV
from .format import PROG, _CommandError, _file_error, _seconds, add_client_cert_options
from .login import LOGIN_EPILOG, add_login_arguments, add_logout_arguments
from .records import _clear, _import, _status, describe
from .refresh import _refresh
from .rekey import REKEY_EPILOG, _rekey
from .store import FORCE_HELP, add_store_options
from .store import REDIS_URL_ENV as _REDIS_URL_ENV

__all__ = ["CLIENT_SECRET_ENV", "DEMO_SERVICE", "DEMO_USERNAME", "REDIS_URL_ENV", "build_parser", "describe", "main"]


#: Environment variable read for ``--client-secret`` (a secret in argv is visible to other users).
CLIENT_SECRET_ENV = _CLIENT_SECRET_ENV
#: Environment variable read when ``--key`` comes without ``--redis`` (a password in argv is visible to other users).
REDIS_URL_ENV = _REDIS_URL_ENV
#: Client threads of the demo in one process, and of each host with ``demo --hosts``.
DEMO_THREADS = 32
DEMO_HOST_THREADS = 8
#: The keyring entry the demo stores its token in.
DEMO_SERVICE = "requests-tokenrefresh-demo"
DEMO_USERNAME = "demo"

STATUS_EPILOG = """\
exit status: 0 if a usable token is stored: its expiry is unknown or in the future, or it has
expired but has a refresh token to renew it; 1 if the stored token has expired and has no refresh
token, if nothing is stored, or on any error."""

REFRESH_EPILOG = """\
If the keyring (or Redis) cannot store the new token, it is written to a new file only you can read (see
--unsaved-token-file) and the command fails: store it later with `import FILE`."""


def _demo(args: argparse.Namespace) -> int:
    if args.hosts is not None:
        from .._demo import run_hosts_demo

        return run_hosts_demo(
            hosts=args.hosts,
            threads=args.threads or DEMO_HOST_THREADS,
            duration=args.duration,
            ttl=args.ttl,
            leeway=args.leeway,
            redis_url=args.redis,
            keep=args.keep,
            out=sys.stdout,
            err=sys.stderr,
        )
    from .._demo import run_demo  # defines a keyring backend class: load it only for the demo

    return run_demo(
        threads=args.threads or DEMO_THREADS,
        duration=args.duration,
        ttl=args.ttl,
        leeway=args.leeway,
        service=args.service or DEMO_SERVICE,
        username=args.username or DEMO_USERNAME,
        keep=args.keep,
        timeline=args.timeline,
        out=sys.stdout,
        err=sys.stderr,
    )


def _demo_problem(args: argparse.Namespace) -> str | None:
    """Why the demo's options do not fit together, or None."""
    if args.hosts is None:
        return "--redis needs --hosts N: the demo without --hosts runs in one process" if args.redis else None
    single = [name for name in ("service", "username", "timeline") if getattr(args, name)]
    if single:
        options = " and ".join(f"--{name}" for name in single)
        return f"{options} {'is' if len(single) == 1 else 'are'} for the demo in one process, not with --hosts"
    return None


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"not a whole number from 1 to 1024: {text!r}")
    return int(text)


def _hosts(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"not a whole number of host processes from 1 to 64: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``requests-tokenrefresh`` command."""
    # Long by nature (about 100 lines): one declarative block per command, in the order --help
    # shows them; split up, the command line's whole surface would no longer read in one place.
    parser = argparse.ArgumentParser(prog=PROG, description="Keep OAuth 2.0 / JWT access tokens fresh for requests.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:  # noqa: A002 - argparse's name
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        sub.set_defaults(parser=sub)  # for a usage error found after parsing
        return sub

    entry = add_store_options

    demo = command("demo", "run many threads through several token expiries against a strict loopback OAuth server")
    demo.add_argument(
        "--threads",
        type=_count,
        help=f"client threads (default: {DEMO_THREADS}; with --hosts, {DEMO_HOST_THREADS} per host)",
    )
    demo.add_argument("--duration", type=_seconds, default=10.0, help="seconds of requests (default: 10)")
    demo.add_argument("--ttl", type=_seconds, default=3.0, help="access token lifetime in seconds (default: 3)")
    demo.add_argument(
        "--leeway",
        type=lambda text: _seconds(text, allow_zero=True),
        default=DEFAULT_LEEWAY,
        help="refresh this many seconds before expiry, at most half the lifetime (default: 60)",
    )
    demo.add_argument("--service", help=f"keyring service name (default: {DEMO_SERVICE})")
    demo.add_argument("--username", help=f"keyring user name (default: {DEMO_USERNAME})")
    demo.add_argument(
        "--keep", action="store_true", help="keep the demo's token (keyring entry or Redis key) at the end"
    )
    demo.add_argument(
        "--timeline",
        metavar="FILE",
        help="also write every request and token endpoint call to FILE as JSON (input of docs/timeline.py)",
    )
    demo.add_argument(
        "--hosts",
        type=_hosts,
        metavar="N",
        help="run the clients in N processes that share only Redis, with a RedisStorage each",
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        help="with --hosts: the Redis to use (default: a redis-server the demo starts on 127.0.0.1)",
    )
    demo.set_defaults(func=_demo, check=_demo_problem)

    login = command("login", "log in (browser or device flow) and store the token", epilog=LOGIN_EPILOG)
    entry(login)
    add_login_arguments(login)

    status = command("status", "show the stored token: type, scope, expiry, fingerprints", epilog=STATUS_EPILOG)
    entry(status)
    status.add_argument("--json", action="store_true", help="print a JSON object, for scripts")
    status.add_argument("--show-secrets", action="store_true", help="also print the access and refresh tokens")
    status.set_defaults(func=_status)

    imp = command("import", "store a token response (JSON from the app's login, a file or - for stdin)")
    entry(imp)
    imp.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="the token response (default: stdin)")
    imp.add_argument("--force", action="store_true", help=FORCE_HELP)
    imp.set_defaults(func=_import)

    refresh = command(
        "refresh", "refresh the stored token now, to test a token endpoint configuration", epilog=REFRESH_EPILOG
    )
    entry(refresh)
    refresh.add_argument("--token-url", required=True, help="the OAuth 2.0 token endpoint")
    refresh.add_argument("--client-id", help="client id, if the token endpoint needs one")
    refresh.add_argument(
        "--client-secret", help=f"client secret (better: set {CLIENT_SECRET_ENV}; argv is visible to other users)"
    )
    refresh.add_argument(
        "--client-auth", choices=("basic", "post"), help="how to send the client secret (default: basic)"
    )
    add_client_cert_options(refresh)
    refresh.add_argument("--scope", help="scope to ask for (default: keep the granted scope)")
    refresh.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_REFRESH_TIMEOUT, help="seconds for the refresh, retries included"
    )
    refresh.add_argument(
        "--allow-insecure-http", action="store_true", help="allow plain http to a token endpoint on another host"
    )
    refresh.add_argument(
        "--delete-on-invalid-grant",
        action="store_true",
        help="delete the stored token if the server rejects its refresh token (default: keep it)",
    )
    refresh.add_argument(
        "--unsaved-token-file",
        metavar="FILE",
        help="where to write the new token if the keyring (or Redis) cannot store it (default: a new file in the user "
        "data directory, such as ~/.local/share/requests-tokenrefresh)",
    )
    refresh.set_defaults(func=_refresh)

    rekey = command(
        "rekey", "encrypt the stored token again with the newest key, after a rotation", epilog=REKEY_EPILOG
    )
    entry(rekey, encrypted=True)
    rekey.set_defaults(func=_rekey)

    clear = command("clear", "delete the stored token")
    entry(clear)
    clear.set_defaults(func=_clear)

    logout = command("logout", "revoke the stored token at the server, if it can, and delete it")
    entry(logout)
    add_logout_arguments(logout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # a stored value the encoding lacks must not end the command
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    problem = args.check(args)
    if problem is not None:  # a usage error, exit status 2, with the command's usage line
        args.parser.error(problem)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader has gone; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush stays quiet
        return 1
    except (_CommandError, TokenRefreshError, ValueError, OSError, RecursionError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            message = _file_error("use", os.fsdecode(exc.filename), exc)
        elif isinstance(exc, RecursionError):
            message = "the input is nested too deeply"
        else:
            message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
