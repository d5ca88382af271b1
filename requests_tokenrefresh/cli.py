"""The ``requests-tokenrefresh`` command (also ``python -m requests_tokenrefresh``).

``demo`` shows the adapter against a strict loopback OAuth server (``--hosts N``: in N processes
that share only Redis); ``status``, ``import``, ``refresh`` and ``clear`` look after the token a
:class:`KeyringStorage` keeps in the OS keyring (``--service``/``--username``) or a
:class:`RedisStorage` keeps in Redis (``--redis URL --key KEY``).
No command prints a token, a refresh token or a client secret unless given ``--show-secrets``
(``refresh`` writes a token it could not store in the keyring to a file only the user can read);
errors are one line on stderr and exit status 1 (usage errors: 2).
"""

from __future__ import annotations

import argparse
import datetime
import errno
import io
import json
import math
import os
import shlex
import socket
import ssl
import sys
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import keyring
import platformdirs
import requests

from . import __version__
from ._redact import fingerprint
from ._redis import RedisStorage
from .adapters import DEFAULT_LEEWAY, DEFAULT_REFRESH_TIMEOUT, TokenRefreshAdapter
from .exceptions import InsecureTransportError, RefreshError, SessionExpiredError, TokenRefreshError, TokenStorageError
from .storage import KeyringStorage, RefreshLease, TokenStorage
from .tokens import RECORD_VERSION, Token, _number

__all__ = ["CLIENT_SECRET_ENV", "DEMO_SERVICE", "DEMO_USERNAME", "REDIS_URL_ENV", "build_parser", "describe", "main"]

PROG = "requests-tokenrefresh"
#: Environment variable read for ``refresh --client-secret`` (a secret in argv is visible to other users).
CLIENT_SECRET_ENV = "REQUESTS_TOKENREFRESH_CLIENT_SECRET"
#: Environment variable read when ``--key`` comes without ``--redis`` (a password in argv is visible to other users).
REDIS_URL_ENV = "REQUESTS_TOKENREFRESH_REDIS_URL"
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

# 9999-12-31 23:59:59 UTC: epoch seconds beyond this are not a date (milliseconds, usually).
_LATEST_EPOCH = 253402300799.0
# A token response nested deeper than this is not one; refusing it early keeps json.dumps in range.
_MAX_DEPTH = 64

_EXPIRED = {
    True: "yes (expired; the refresh token can renew it)",
    False: "no (expired and no refresh token: log in again)",
}


class _CommandError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 1."""


class _Noting:
    """What ``refresh`` notes about its storage: whether the latest save failed, and a delete not done.

    The adapter deletes the stored token when the token endpoint answers ``invalid_grant``;
    ``refresh`` is a test command, where a wrong ``--token-url`` or ``--client-id`` earns that
    answer too, so a delete does nothing unless ``--delete-on-invalid-grant`` asked for it.
    """

    allow_delete = True
    save_error: TokenStorageError | None = None  # of the latest save, if it failed
    kept = False  # a delete was asked for and not done
    url_from_env = False  # Redis only: the URL came from REDIS_URL_ENV, so messages need not repeat it


class _CommandStorage(_Noting, KeyringStorage):
    """The keyring entry as ``refresh`` uses it (see :class:`_Noting`).

    A subclass rather than a wrapper, so the adapter still gets the entry's own inter-process
    refresh lock; the lock's save calls :meth:`save`.
    """

    def __init__(self, service: str, username: str, *, allow_delete: bool) -> None:
        super().__init__(service, username)
        self.allow_delete = allow_delete

    def save(self, token: Token) -> None:
        try:
            super().save(token)
        except TokenStorageError as exc:
            self.save_error = exc
            raise
        self.save_error = None

    def delete(self) -> None:
        if self.allow_delete:
            super().delete()
        else:
            self.kept = True


class _CommandRedisStorage(_Noting, RedisStorage):
    """The Redis key as the commands use it (see :class:`_Noting`).

    A rotated token is stored by the lease's conditional write, not by :meth:`save`, so the
    lease is wrapped to note a failed save; the lease itself (and its fencing) is Redis's own.
    """

    def __init__(self, url: str, key: str, *, allow_delete: bool = True, url_from_env: bool = False) -> None:
        super().__init__(url, key)
        self.allow_delete = allow_delete
        self.url_from_env = url_from_env

    def refresh_lease(self, timeout: float) -> RefreshLease:
        return _NotingLease(super().refresh_lease(timeout), self)

    def delete(self) -> None:
        if self.allow_delete:
            super().delete()
        else:
            self.kept = True


class _NotingLease(RefreshLease):
    """A lease that passes every call to ``lease`` and notes on ``noting`` whether its save failed."""

    def __init__(self, lease: RefreshLease, noting: _Noting) -> None:
        super().__init__(lease.storage)
        self._lease = lease
        self._noting = noting

    def __enter__(self) -> RefreshLease:
        self._lease.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lease.__exit__(*exc_info)

    def load(self) -> Token | None:
        token = self._lease.load()
        self.interrupted = self._lease.interrupted
        return token

    def check(self, seconds: float) -> None:
        self._lease.check(seconds)

    def extend(self, seconds: float) -> None:
        self._lease.extend(seconds)

    def save(self, token: Token) -> None:
        try:
            self._lease.save(token)
        except TokenStorageError as exc:
            self._noting.save_error = exc
            raise
        self._noting.save_error = None


def _redis_storage(args: argparse.Namespace, *, allow_delete: bool = True) -> _CommandRedisStorage:
    url = args.redis if args.redis is not None else os.environ.get(REDIS_URL_ENV, "")
    try:
        return _CommandRedisStorage(url, args.key, allow_delete=allow_delete, url_from_env=args.redis is None)
    except ImportError as exc:  # redis-py is an optional extra: its message names it
        raise _CommandError(str(exc)) from exc


def _storage(args: argparse.Namespace) -> TokenStorage:
    if args.key is not None:
        return _redis_storage(args)
    return KeyringStorage(args.service, args.username)


def _where(storage: TokenStorage, quoted: bool = False) -> str:
    """Where the token lives, for messages; a Redis URL without its password."""
    if isinstance(storage, RedisStorage):
        return (
            f"Redis key {storage.key!r} at {storage.location}"
            if quoted
            else f"Redis key {storage.key} at {storage.location}"
        )
    assert isinstance(storage, KeyringStorage)
    if quoted:
        return f"keyring entry {storage.service!r}/{storage.username!r}"
    return f"keyring entry {storage.service}/{storage.username}"


def _store_name(storage: TokenStorage) -> str:
    return "Redis" if isinstance(storage, RedisStorage) else "the keyring"


def _entry_args(storage: TokenStorage) -> str:
    if isinstance(storage, RedisStorage):
        key = f"--key {shlex.quote(storage.key)}"
        if isinstance(storage, _Noting) and storage.url_from_env:
            return key  # the URL (and its password) stays in the environment variable
        return f"--redis {shlex.quote(storage.location)} {key}"  # a password shows as ***
    assert isinstance(storage, KeyringStorage)
    return f"--service {shlex.quote(storage.service)} --username {shlex.quote(storage.username)}"


def _load(storage: TokenStorage) -> Token | None:
    """The stored token, or None; a record that is not a token is a :class:`_CommandError` that says what to do."""
    try:
        return storage.load()
    except TokenStorageError as exc:
        if isinstance(storage, RedisStorage) and not isinstance(exc.__cause__, (ValueError, RecursionError)):
            raise  # Redis itself failed (unreachable, refused): asking again would only wait again
        problem = _record_problem(storage)
        if problem is None:
            raise  # the keyring itself failed
        raise _CommandError(problem) from exc


def _load_token(storage: TokenStorage) -> Token:
    token = _load(storage)
    if token is None:
        raise _CommandError(f"no token is stored in {_where(storage, quoted=True)}")
    return token


def _read_raw(storage: TokenStorage) -> Any:
    """The stored value as it is, without parsing it."""
    if isinstance(storage, RedisStorage):
        raw = storage._client.get(storage.key)  # the record's own key: RedisStorage keeps the client
        return raw.decode("utf-8") if isinstance(raw, bytes) else raw
    assert isinstance(storage, KeyringStorage)
    backend = storage.backend if storage.backend is not None else keyring.get_keyring()
    return backend.get_password(storage.service, storage.username)


def _record_problem(storage: TokenStorage) -> str | None:
    """Why the stored value is not a token record, or None if it cannot be read (or is one)."""
    try:
        raw = _read_raw(storage)
    except Exception:  # the store failed: the caller reports its error
        return None
    if not isinstance(raw, str):
        return None
    entry = f"the {_where(storage, quoted=True)}"
    clear = f"delete it with `{PROG} clear {_entry_args(storage)}` and log in again"
    if isinstance(storage, RedisStorage):
        shown = "redis-cli" + ("" if storage.location.startswith("unix:") else f" -u {shlex.quote(storage.location)}")
        read = f"{shown} GET {shlex.quote(storage.key)}"
    else:
        assert isinstance(storage, KeyringStorage)
        read = f"keyring get {shlex.quote(storage.service)} {shlex.quote(storage.username)}"
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:  # its position, never the value: it may be a secret
        return f"{entry} does not hold a token record (not valid JSON at character {exc.pos}); {clear}"
    except RecursionError:
        return f"{entry} does not hold a token record (JSON nested too deeply); {clear}"
    if isinstance(record, dict) and "version" not in record and isinstance(record.get("access_token"), str):
        return (
            f"{entry} holds a token response, not a token record (it has no version field); store it as a "
            f"record, keeping the token, with `{read} | {PROG} import {_entry_args(storage)}`"
        )
    version = record.get("version") if isinstance(record, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION:
        return (
            f"{entry} holds a token record of layout version {version}, newer than this {PROG} reads "
            f"({RECORD_VERSION}): upgrade {PROG}, or {clear}"
        )
    try:
        Token.from_record(record)
    except (ValueError, RecursionError) as exc:
        detail = str(exc)[:120] if isinstance(exc, ValueError) else "nested too deeply"
        return f"{entry} does not hold a token record ({detail}); {clear}"
    return None


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
    if seconds >= 100 * 365.25 * 86400:
        return "more than 100 years"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return " ".join([f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n][:2])


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


def _print_status(storage: TokenStorage, info: dict[str, Any]) -> None:
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
    if isinstance(storage, RedisStorage):
        where = ("Redis key", f"{storage.key} at {storage.location}")
    else:
        assert isinstance(storage, KeyringStorage)
        where = ("keyring entry", f"{storage.service} / {storage.username}")
    rows = [
        where,
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
        print(f"{label:<15} {_printable(value)}")


def _status(args: argparse.Namespace) -> int:
    storage = _storage(args)
    info = describe(_load_token(storage), show_secrets=args.show_secrets)
    if args.json:
        if isinstance(storage, RedisStorage):
            names = {"redis": storage.location, "key": storage.key}
        else:
            assert isinstance(storage, KeyringStorage)
            names = {"service": storage.service, "username": storage.username}
        print(json.dumps({**names, **info}, indent=2))
    else:
        _print_status(storage, info)
    return 0 if info["usable"] else 1


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


def _read_input(path: str) -> tuple[str, str]:
    """Return (what to call the source in messages, its text); a BOM is dropped in both cases."""
    if path == "-":
        source = "standard input"
        if sys.stdin.isatty():
            print("paste the token response (JSON), then Ctrl-D", file=sys.stderr)
        data = sys.stdin.buffer.read()
    else:
        source = path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise _CommandError(_file_error("read", path, exc)) from exc
    try:
        return source, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _CommandError(f"{source} is not UTF-8 text (byte {exc.start})") from exc


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= _MAX_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_times(source: str, response: dict[str, Any]) -> None:
    """Refuse expiry fields the library would ignore: typed input is better refused than guessed."""
    # The library ignores a bad expiry field (to keep a rotated refresh token), so check here.
    for field in ("expires_in", "expires_at", "obtained_at"):
        if response.get(field) is None:
            continue
        value = _number(response[field])
        if value is None:
            raise _CommandError(f"{source}: {field} is not a number of seconds")
        if field == "expires_in":
            if not 0 < value < _LATEST_EPOCH - time.time():
                raise _CommandError(f"{source}: expires_in is not a positive number of seconds before the year 9999")
        elif value > _LATEST_EPOCH:
            hint = " (milliseconds? divide by 1000)" if value / 1000 <= _LATEST_EPOCH else ""
            raise _CommandError(f"{source}: {field} {value:.0f} is after the year 9999, not epoch seconds{hint}")
        elif value < 0:
            raise _CommandError(f"{source}: {field} {value:.0f} is before 1970, not epoch seconds")


def _import(args: argparse.Namespace) -> int:
    storage = _storage(args)
    source, text = _read_input(args.file)
    try:
        response = json.loads(text)
    except json.JSONDecodeError as exc:  # its message quotes no input, so no secret
        raise _CommandError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except RecursionError as exc:
        raise _CommandError(f"{source} is not a token response: its JSON is nested too deeply") from exc
    if _depth(response) > _MAX_DEPTH:
        raise _CommandError(f"{source} is not a token response: its JSON is nested more than {_MAX_DEPTH} levels")
    if isinstance(response, dict):
        _check_times(source, response)
    try:
        token = Token.from_response(response)  # expires_in counts from now; else the JWT exp claim
    except ValueError as exc:
        raise _CommandError(f"{source}: {exc}") from exc
    storage.save(token)
    print(f"stored token {fingerprint(token.access_token)} in {_where(storage)}")
    _print_status(storage, describe(token))
    return 0


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


def _write_unsaved(token: Token, path: str | None) -> str:
    """Write ``token``'s record to a new file only the user can read; return its path."""
    data = json.dumps(token.to_record(), indent=2) + "\n"
    if path is None:
        directory = platformdirs.user_data_dir("requests-tokenrefresh")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="unsaved-token-", suffix=".json", dir=directory)  # mode 0600
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over another file
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    return path


def _unsaved(
    storage: _CommandStorage | _CommandRedisStorage, new: Token, rotated: bool, path: str | None
) -> _CommandError:
    """The error for a refreshed token the store did not store; the token goes to a file first."""
    store = _store_name(storage)
    why = " ".join(str(storage.save_error).split())
    what = "a new refresh token (the old one is spent)" if rotated else "a new access token"
    written, problems = None, []
    for candidate in dict.fromkeys([path, None]):  # the user's path, else the default place
        try:
            written = _write_unsaved(new, candidate)
            break
        except OSError as exc:
            problems.append(_file_error("write", candidate or "the unsaved-token file", exc))
    if written is None:
        return _CommandError(
            f"the token endpoint issued {what}, but {store} could not store it ({why}) and "
            f"{'; '.join(problems)}: it is lost, log in again"
        )
    return _CommandError(
        f"the token endpoint issued {what}, but {store} could not store it ({why}); it was written to "
        f"{written} (readable by you only): when {store} works, run "
        f"`{PROG} import {_entry_args(storage)} {shlex.quote(written)}` and delete the file"
    )


def _refresh(args: argparse.Namespace) -> int:
    storage: _CommandStorage | _CommandRedisStorage
    if args.key is not None:
        storage = _redis_storage(args, allow_delete=args.delete_on_invalid_grant)
    else:
        storage = _CommandStorage(args.service, args.username, allow_delete=args.delete_on_invalid_grant)
    old = _load_token(storage)
    if old.refresh_token is None:
        raise _CommandError("the stored token has no refresh token: log in again and import a new token")
    url = _shown_url(args.token_url)
    insecure = (
        f"refusing to send the refresh token over plain http to {url}, which is not this machine: use an "
        "https token URL, or pass --allow-insecure-http if the network to it is trusted"
    )
    try:
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
    except InsecureTransportError as exc:
        raise _CommandError(str(exc).replace("allow_insecure_http=True", "--allow-insecure-http")) from exc
    except ValueError as exc:
        if urlsplit(args.token_url).scheme.lower() == "http" and not args.allow_insecure_http:
            raise _CommandError(insecure) from exc
        raise
    try:
        new = adapter.refresh()
    except SessionExpiredError as exc:
        if exc.error != "invalid_grant":
            raise
        fate = (
            "the stored token was deleted"
            if args.delete_on_invalid_grant
            else "the stored token was kept (--delete-on-invalid-grant deletes it)"
        )
        raise _CommandError(
            f"the token endpoint {url} rejected the refresh token ({exc}); {fate}: check --token-url and "
            "--client-id, else log in again and import a new token"
        ) from exc
    except InsecureTransportError as exc:
        raise _CommandError(str(exc).replace("allow_insecure_http=True", "--allow-insecure-http")) from exc
    except RefreshError as exc:
        if exc.error in ("connection_error", "timeout"):
            raise _CommandError(f"cannot reach the token endpoint {url}: {_network_reason(exc)}") from exc
        raise
    finally:
        adapter.close()
    rotated = new.refresh_token != old.refresh_token
    if storage.save_error is not None:
        raise _unsaved(storage, new, rotated, args.unsaved_token_file)
    print(
        f"refreshed: access token {fingerprint(old.access_token)} -> {fingerprint(new.access_token)}, "
        f"refresh token {'rotated' if rotated else 'kept'} "
        f"({fingerprint(old.refresh_token)} -> {fingerprint(new.refresh_token)})"
    )
    _print_status(storage, describe(new))
    return 0


def _clear(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        stored = _load(storage) is not None
    except _CommandError:
        stored = True  # a record that is not a token: it is deleted too
    if not stored:
        print(f"nothing is stored in {_where(storage)}: nothing to delete")
        return 0
    storage.delete()
    print(f"deleted the token in {_where(storage)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.hosts is not None:
        from ._demo import run_hosts_demo

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
    from ._demo import run_demo  # defines a keyring backend class: load it only for the demo

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


def _store_problem(args: argparse.Namespace) -> str | None:
    """Why the options do not name exactly one store (keyring entry or Redis key), or None."""
    keyring_options = [name for name, value in (("--service", args.service), ("--username", args.username)) if value]
    redis_options = [name for name, value in (("--redis", args.redis), ("--key", args.key)) if value is not None]
    if keyring_options and redis_options:
        return (
            f"{' and '.join(keyring_options)} (a keyring entry) and {' and '.join(redis_options)} (a Redis key) "
            "name two different stores: give --service and --username, or --redis and --key"
        )
    if redis_options:
        if args.key is None:
            return "--redis needs --key KEY, the Redis key of the token record"
        if not args.key.strip():
            return "--key needs a non-empty Redis key"
        if args.redis is None and not os.environ.get(REDIS_URL_ENV):
            return f"--key needs --redis URL (or the URL in the environment variable {REDIS_URL_ENV})"
        return None
    if not keyring_options:
        return "name the token's store: --service and --username (keyring entry), or --redis and --key (Redis key)"
    if len(keyring_options) == 1:
        other = "--username" if keyring_options[0] == "--service" else "--service"
        return f"{keyring_options[0]} needs {other} too: the keyring entry is named by both"
    return None


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
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        sub.set_defaults(parser=sub)  # for a usage error found after parsing
        return sub

    def entry(sub: argparse.ArgumentParser) -> None:
        # Two pairs, one of them required: argparse's exclusive groups take single options, so
        # main() checks the pairs (_store_problem) and reports a usage error.
        ring = sub.add_argument_group("the token in the OS keyring")
        ring.add_argument("--service", help="keyring service name")
        ring.add_argument("--username", help="keyring user name")
        shared = sub.add_argument_group("or the token in Redis, shared by hosts")
        shared.add_argument(
            "--redis",
            metavar="URL",
            help=f"redis://, rediss:// or unix:// URL (a password in it is never printed; better: set {REDIS_URL_ENV})",
        )
        shared.add_argument("--key", help="the Redis key of the token record")
        sub.set_defaults(check=_store_problem)

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

    status = command("status", "show the stored token: type, scope, expiry, fingerprints", epilog=STATUS_EPILOG)
    entry(status)
    status.add_argument("--json", action="store_true", help="print a JSON object, for scripts")
    status.add_argument("--show-secrets", action="store_true", help="also print the access and refresh tokens")
    status.set_defaults(func=_status)

    imp = command("import", "store a token response (JSON from the app's login, a file or - for stdin)")
    entry(imp)
    imp.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="the token response (default: stdin)")
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
        "--client-auth", choices=("basic", "post"), default="basic", help="how to send the client credentials"
    )
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

    clear = command("clear", "delete the stored token")
    entry(clear)
    clear.set_defaults(func=_clear)
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
