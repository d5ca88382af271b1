"""The words of the command's output: durations, dates, safe text, URLs, and errors as sentences.

Also :class:`_CommandError`, a problem with what the user asked for (one line, exit status 1), and
the argument type for seconds.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import math
import socket
import ssl
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import requests

__all__ = ["CLIENT_SECRET_ENV", "PROG"]

PROG = "requests-tokenrefresh"
#: Environment variable read for ``--client-secret`` (a secret in argv is visible to other users).
CLIENT_SECRET_ENV = "REQUESTS_TOKENREFRESH_CLIENT_SECRET"
# 9999-12-31 23:59:59 UTC: epoch seconds beyond this are not a date (milliseconds, usually).
_LATEST_EPOCH = 253402300799.0


class _CommandError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 1."""


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 59.5:  # shown rounded: 59.5 would read "60 s"
        return f"{seconds:.{0 if seconds >= 10 else 1}f} s"
    if seconds >= 100 * 365.25 * 86400:
        return "more than 100 years"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    first = next(i for i, (n, _) in enumerate(units) if n)  # 60 s or more: one is not 0
    # The largest unit and the one below it if not 0: "1 d 2 h", "1 d" (never "1 d 5 s").
    return " ".join(f"{n} {unit}" for n, unit in units[first : first + 2] if n)


def _when(epoch: float) -> str:
    """The local date and time of ``epoch``; never fails, whatever a stored record says."""
    if epoch > _LATEST_EPOCH:
        return f"{epoch:.0f} epoch seconds, after the year 9999: milliseconds?"
    try:
        return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except (OverflowError, OSError, ValueError):  # before year 1, or before 1970 on Windows
        return f"{epoch:.0f} epoch seconds, a date this system cannot show"


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a stored record must not drive the terminal."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in text)


def _file_error(action: str, path: str, exc: OSError) -> str:
    """A sentence for an OSError about ``path``: no ``[Errno 2]``."""
    reasons = {
        errno.ENOENT: "it (or its directory) does not exist",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a directory",
        errno.ENOTDIR: "a part of the path is not a directory",
        errno.EEXIST: "it already exists",
        errno.ENOSPC: "the disk is full",
    }
    reason = reasons.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    return f"cannot {action} {path}: {reason}"


def _shown_url(url: str) -> str:
    """``url`` for a message: scheme, host, port and path; no user info or query."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the --token-url"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _network_reason(exc: BaseException) -> str:
    """Why a connection to the token endpoint failed, in words, from the chained errors."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError):
            return "the connection was refused (nothing listens on that port?)"
        if isinstance(error, socket.gaierror) or type(error).__name__ == "NameResolutionError":
            return "its host name does not resolve"
        if isinstance(error, (ssl.SSLError, requests.exceptions.SSLError)):
            return "the TLS handshake failed (certificate not trusted, or not a TLS server?)"
        if isinstance(error, (TimeoutError, requests.Timeout)) or type(error).__name__.endswith("TimeoutError"):
            return "it did not answer in time"
        if isinstance(error, ConnectionResetError):
            return "the server closed the connection"
        todo += [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
    return "the connection failed"


def add_client_cert_options(group: Any) -> None:
    """``--client-cert`` and ``--client-key``: mutual TLS (RFC 8705) on every request to the server."""
    group.add_argument(
        "--client-cert",
        metavar="PATH",
        help="a client certificate (PEM) for mutual TLS (RFC 8705); its key in the same file, or --client-key",
    )
    group.add_argument("--client-key", metavar="PATH", help="the client certificate's private key (PEM)")


def client_cert(args: Any) -> str | tuple[str, str] | None:
    """requests' ``cert`` from ``--client-cert`` and ``--client-key``.

    Raises:
        _CommandError: a key without a certificate.
    """
    if args.client_key and not args.client_cert:
        raise _CommandError("--client-key needs --client-cert")
    if not args.client_cert:
        return None
    return (args.client_cert, args.client_key) if args.client_key else args.client_cert


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
