"""The commands that read and write the record itself: ``status``, ``import`` and ``clear``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .._redact import fingerprint
from ..login import refresh_token_expires_at
from ..storage import FileStorage, KeyringStorage, RedisStorage, TokenStorage
from ..storage.base import ENCRYPTED_MARKER
from ..tokens import Token, parse_number
from .format import _LATEST_EPOCH, _CommandError, _duration, _file_error, _printable, _when
from .store import _inner, _keeping_encryption, _load, _load_token, _plain_storage, _replacing, _storage, _where

__all__ = ["describe"]

# A token response nested deeper than this is not one; refusing it early keeps json.dumps in range.
_MAX_DEPTH = 64

# A refresh token with less time than this left is worth a word: log in again soon.
_SOON = 86400.0

_EXPIRED = {
    True: "yes (expired; the refresh token can renew it)",
    False: "no (expired and no refresh token: log in again)",
}


def _kept(info: dict[str, Any]) -> str:
    return "kept with the record" if info["dpop_key_in_record"] else "held by its user: not in the record"


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
        # The thumbprint of the DPoP key the token is bound to (RFC 7638), whether the record
        # keeps the key or its user holds it: never the key itself.
        "dpop_jkt": token.dpop_jkt,
        "dpop_key_in_record": token.dpop_key is not None,
    }
    renewable = token.refresh_token is not None
    refresh_expires_at = refresh_token_expires_at(token) if renewable else None
    if refresh_expires_at is not None:  # only when the server said: the keys of other records stay as they were
        refresh_expires_in = round(refresh_expires_at - now, 1)
        renewable = refresh_expires_in > 0
        info["refresh_token_expires_at"] = refresh_expires_at
        info["refresh_token_expires_in"] = refresh_expires_in
        info["refresh_token_expired"] = not renewable
    info["usable"] = not expired or renewable
    if show_secrets:
        info["access_token"] = token.access_token
        info["refresh_token"] = token.refresh_token
    return info


def _print_status(storage: TokenStorage, info: dict[str, Any]) -> None:
    storage = _inner(storage)  # the store itself, whether or not its record is encrypted
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
    refresh = "present" if info["has_refresh_token"] else "none"
    if "refresh_token_expires_at" in info:
        left, at = info["refresh_token_expires_in"], _when(info["refresh_token_expires_at"])
        if info["refresh_token_expired"]:
            refresh = f"present, but it expired {_duration(left)} ago ({at}): log in again"
            usable = (
                "no (expired, and so has the refresh token: log in again)"
                if info["expired"]
                else "yes, until the access token expires (the refresh token has expired: log in again)"
            )
        elif left <= _SOON:
            refresh = f"present, expires in {_duration(left)} ({at}): less than a day left, log in again soon"
        else:
            refresh = f"present, expires in {_duration(left)} ({at})"
    if isinstance(storage, RedisStorage):
        where = ("Redis key", f"{storage.key} at {storage.location}")
    elif isinstance(storage, FileStorage):
        where = ("token file", storage.path)
    else:
        assert isinstance(storage, KeyringStorage)
        where = ("keyring entry", f"{storage.service} / {storage.username}")
    rows = [
        where,
        ("token type", info["token_type"]),
        ("scope", info["scope"] if info["scope"] is not None else "-"),
        ("expires", expires),
        ("refresh token", refresh),
        ("fingerprints", fingerprints),
        *([("DPoP key", f"thumbprint {info['dpop_jkt']} ({_kept(info)})")] if info["dpop_jkt"] else []),
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
        inner = _inner(storage)
        if isinstance(inner, RedisStorage):
            names = {"redis": inner.location, "key": inner.key}
        elif isinstance(inner, FileStorage):
            names = {"file": inner.path}
        else:
            assert isinstance(inner, KeyringStorage)
            names = {"service": inner.service, "username": inner.username}
        print(json.dumps({**names, **info}, indent=2))
    else:
        _print_status(storage, info)
    return 0 if info["usable"] else 1


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
        value = parse_number(response[field])
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
    if token.access_token == ENCRYPTED_MARKER:
        raise _CommandError(
            f"{source} is an encrypted record's stand-in (EncryptedStorage's), not a token response: "
            "copy the record itself, or import a token response"
        )
    if not args.force:
        _replacing(storage, "import", force=False)  # a value that is not a token stays
    else:
        _keeping_encryption(storage, "import")  # no token in clear over an encrypted one, forced or not
    storage.save(token)
    print(f"stored token {fingerprint(token.access_token)} in {_where(storage)}")
    _print_status(storage, describe(token))
    return 0


def _clear(args: argparse.Namespace) -> int:
    storage = _plain_storage(args)  # an encrypted record is deleted whatever its key: no key is read
    try:
        stored = _load(storage) is not None
    except _CommandError:
        stored = True  # a record that is not a token, or an encrypted one: it is deleted too
    if not stored:
        print(f"nothing is stored in {_where(storage)}: nothing to delete")
        return 0
    storage.delete()
    print(f"deleted the token in {_where(storage)}")
    return 0
