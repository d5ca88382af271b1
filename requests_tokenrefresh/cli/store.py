"""The token's store as the options name it: a keyring entry, a Redis key or a file, and what it holds.

The commands name the store with ``--service``/``--username`` (:class:`KeyringStorage`),
``--redis``/``--key`` (:class:`RedisStorage`) or ``--file`` (:class:`FileStorage`), and with
``--encrypted`` wrap it in an :class:`EncryptedStorage` (the ``encryption`` module; messages name
the store inside, :func:`_inner`). ``refresh`` uses storages that note a failed save and a delete
it was not asked to do (:class:`_Noting`). A stored value that is not a token record is named as
such, with what to do (:func:`_record_problem`); ``import`` and ``login`` replace it only when
forced (:func:`_replacing`), and never store a token in clear over an encrypted one.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
from collections.abc import Callable
from typing import Any, TypeVar

import keyring

from ..exceptions import TokenStorageError
from ..storage import EncryptedStorage, FileStorage, KeyringStorage, RedisStorage, RefreshLease, TokenStorage
from ..storage.base import describe, record_kind
from ..tokens import RECORD_VERSION, Token
from .encryption import (
    ENCRYPTED_ADVICE,
    _encrypted,
    _encryption_args,
    _encryption_problem,
    _key_id,
    _keys_env,
    add_encryption_options,
)
from .format import PROG, _CommandError

__all__ = ["FORCE_HELP", "REDIS_URL_ENV", "add_store_options"]

#: Environment variable read when ``--key`` comes without ``--redis`` (a password in argv is visible to other users).
REDIS_URL_ENV = "REQUESTS_TOKENREFRESH_REDIS_URL"
#: The help of ``--force`` (``import``, ``login``): what :func:`_replacing` refuses unforced.
FORCE_HELP = "replace a stored value that is not a token (another program's secret, say); a token is always replaced"

_T = TypeVar("_T")


class _EncryptedRecord(_CommandError):
    """The store holds an encrypted record and the command was not given ``--encrypted``: it needs the keys."""


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


class _CommandFileStorage(_Noting, FileStorage):
    """The token file as ``refresh`` uses it (see :class:`_Noting`); its lease saves through :meth:`save`."""

    def __init__(self, path: str, *, allow_delete: bool) -> None:
        super().__init__(path)
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
        self.fenced = lease.fenced

    def __enter__(self) -> RefreshLease:
        self._lease.__enter__()
        self.lost = self._lease.lost
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lease.__exit__(*exc_info)

    def load(self) -> Token | None:
        token = self._lease.load()
        self.interrupted, self.lost = self._lease.interrupted, self._lease.lost
        return token

    def check(self, seconds: float) -> None:
        self._lease.check(seconds)

    def forget(self) -> None:
        self._lease.forget()

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


def _command_storage(
    args: argparse.Namespace, *, allow_delete: bool
) -> _CommandStorage | _CommandFileStorage | _CommandRedisStorage:
    """The store the options name, noting what ``refresh`` needs to know (see :class:`_Noting`); unencrypted."""
    if args.key is not None:
        return _redis_storage(args, allow_delete=allow_delete)
    if args.token_file is not None:
        return _CommandFileStorage(args.token_file, allow_delete=allow_delete)
    return _CommandStorage(args.service, args.username, allow_delete=allow_delete)


def _storage(args: argparse.Namespace) -> TokenStorage:
    """The store the options name: in an EncryptedStorage with ``--encrypted``."""
    return _wrap(args, _plain_storage(args))


def _plain_storage(args: argparse.Namespace) -> TokenStorage:
    """The store the options name, never wrapped (no key is read)."""
    if args.key is not None:
        return _redis_storage(args)
    if args.token_file is not None:
        return FileStorage(args.token_file)
    return KeyringStorage(args.service, args.username)


def _wrap(args: argparse.Namespace, inner: TokenStorage) -> TokenStorage:
    """``inner``, in an EncryptedStorage with ``--encrypted`` (its keys read from the environment now)."""
    return _encrypted(args, inner, f"the {_where(inner, quoted=True)}")


def _inner(storage: TokenStorage) -> TokenStorage:
    """The keyring entry, Redis key or token file itself: inside an EncryptedStorage, the storage it wraps."""
    return storage.inner if isinstance(storage, EncryptedStorage) else storage


def _where(storage: TokenStorage, quoted: bool = False) -> str:
    """Where the token lives, for messages; a Redis URL without its password."""
    storage = _inner(storage)
    if isinstance(storage, RedisStorage):
        return (
            f"Redis key {storage.key!r} at {storage.location}"
            if quoted
            else f"Redis key {storage.key} at {storage.location}"
        )
    if isinstance(storage, FileStorage):
        return f"token file {storage.path!r}" if quoted else f"token file {storage.path}"
    assert isinstance(storage, KeyringStorage)
    if quoted:
        return f"keyring entry {storage.service!r}/{storage.username!r}"
    return f"keyring entry {storage.service}/{storage.username}"


def _store_name(storage: TokenStorage) -> str:
    storage = _inner(storage)
    if isinstance(storage, FileStorage):
        return "the token file"
    return "Redis" if isinstance(storage, RedisStorage) else "the keyring"


def _entry_args(storage: TokenStorage) -> str:
    """The options that name ``storage``, ``--encrypted`` (and ``--keys-env``) included."""
    inner = _inner(storage)
    if isinstance(inner, RedisStorage):
        key = f"--key {shlex.quote(inner.key)}"
        if isinstance(inner, _Noting) and inner.url_from_env:
            return key + _encryption_args(storage)  # the URL (and its password) stays in the environment variable
        return f"--redis {shlex.quote(inner.location)} {key}" + _encryption_args(storage)  # a password shows as ***
    if isinstance(inner, FileStorage):
        return f"--file {shlex.quote(inner.path)}" + _encryption_args(storage)
    assert isinstance(inner, KeyringStorage)
    return f"--service {shlex.quote(inner.service)} --username {shlex.quote(inner.username)}" + _encryption_args(
        storage
    )


def _reading(storage: TokenStorage, read: Callable[[], _T]) -> _T:
    """``read()`` (a load, a rekey); a record that is not a token is a :class:`_CommandError` that says what to do."""
    try:
        return read()
    except TokenStorageError as exc:
        inner = _inner(storage)
        if isinstance(inner, FileStorage):
            raise  # its message names the problem and what to do
        if isinstance(inner, RedisStorage) and not isinstance(exc.__cause__, (ValueError, RecursionError)):
            raise  # Redis itself failed (unreachable, refused): asking again would only wait again
        problem = _record_problem(inner)
        if problem is None:
            raise  # the keyring itself failed, or the record does not decrypt: its message says why
        raise _CommandError(problem) from exc


def _load(storage: TokenStorage) -> Token | None:
    """The stored token, or None; a record that is not a token is a :class:`_CommandError` that says what to do.

    Raises:
        _EncryptedRecord: the record is encrypted, and ``storage`` is no EncryptedStorage.
    """
    token = _reading(storage, storage.load)
    kid = None if isinstance(storage, EncryptedStorage) else _key_id(token)
    if kid is not None:
        raise _EncryptedRecord(
            f"the {_where(storage, quoted=True)} holds an encrypted token (key id {kid!r}): {ENCRYPTED_ADVICE}"
        )
    return token


def _load_token(storage: TokenStorage) -> Token:
    token = _load(storage)
    if token is None:
        raise _CommandError(f"no token is stored in {_where(storage, quoted=True)}")
    return token


def _read_raw(storage: TokenStorage) -> Any:
    """The stored value as it is, without parsing it."""
    if isinstance(storage, FileStorage):
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(storage.path, flags)
        except FileNotFoundError:
            return None
        with open(fd, "rb") as f:
            return f.read()
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


#: What :func:`_stored_value` says of a token: a record of any layout version, or a token response stored by hand.
_A_TOKEN = "a token"


def _stored_value(storage: TokenStorage) -> str | None:
    """What the store holds, in general terms and never quoting it: None (nothing), ``_A_TOKEN``, or what it is.

    A token record, one of a newer layout and a token response (:func:`~requests_tokenrefresh.storage.base.record_kind`)
    are tokens of this entry; anything else is described as the stores describe it, "a value that is not a
    token (not valid JSON at character 0)". A store that cannot be read raises its error.
    """
    try:
        return None if storage.load() is None else _A_TOKEN
    except TokenStorageError as exc:
        if isinstance(exc.__cause__, (ValueError, RecursionError)):  # a value the store cannot read as a record
            read = exc
        elif isinstance(storage, RedisStorage) and isinstance(exc.__cause__, storage._redis.exceptions.ResponseError):
            kind = _redis_type(storage)  # WRONGTYPE: a hash, a list ...
            if kind in (None, "string", "none"):
                raise  # refused for another reason (no permission): its error says so
            return f"a value that is not a token (a Redis {kind}, not a string)"
        elif isinstance(storage, FileStorage) and _open_to_others(storage.path):
            read = exc  # refused unread: look at what it holds
        else:
            raise
    try:
        raw = _read_raw(storage)
    except Exception:
        raise read from read.__cause__  # the store's own error (and its cause) says what went wrong
    if raw is None:
        return None
    record: Any = None
    try:
        record = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        Token.from_record(record)
    except UnicodeDecodeError:
        return "a value that is not a token (not UTF-8 text)"
    except (json.JSONDecodeError, RecursionError) as exc:
        return f"a value that is not a token ({describe(exc)})"
    except ValueError:
        if record_kind(record) != "other":
            return _A_TOKEN
        return "a value that is not a token (JSON, but neither a token record nor a token response)"
    return _A_TOKEN


def _redis_type(storage: RedisStorage) -> str | None:
    """The type of the value at the key (``string``, ``hash``, ``none`` ...), or None if Redis will not say."""
    try:
        kind = storage._client.type(storage.key)
    except storage._redis.exceptions.RedisError:
        return None
    return kind.decode() if isinstance(kind, bytes) else str(kind)


def _open_to_others(path: str) -> bool:
    """Whether ``path`` is a regular file (no link) its group or others may read or write (POSIX)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return os.name == "posix" and stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o077)


def _replacing(storage: TokenStorage, command: str, *, force: bool) -> str | None:
    """What a save by ``command`` (import, login) would replace: None, ``_A_TOKEN``, or a value that is no token.

    Raises:
        _CommandError: the store holds a value that is no token and ``force`` is false: it may be
            another program's secret, and it is never replaced unasked. Or see :func:`_keeping_encryption`.
    """
    held = _stored_value(_inner(storage))
    if held == _A_TOKEN:
        _keeping_encryption(storage, command)
    if held is None or held == _A_TOKEN or force:
        return held
    raise _CommandError(
        f"the {_where(storage, quoted=True)} holds {held}; it may belong to another program, so {command} "
        "leaves it alone: pass --force to replace it"
    )


def _keeping_encryption(storage: TokenStorage, command: str) -> None:
    """Refuse a save by ``command`` (import, login) that would replace an encrypted token with one in clear,
    or with one under keys that the record's key id is not among (the holders of its key could not read it).

    Forced or not: ``--force`` is for values that are no token. A store that cannot be read says so later.
    """
    try:
        kid = _key_id(_inner(storage).load())
    except TokenStorageError:
        return
    if kid is None:
        return  # nothing, or a token in clear: replaced (encrypted, with --encrypted)
    clear = f"`{PROG} clear {_entry_args(_inner(storage))}`"
    where = _where(storage, quoted=True)
    if not isinstance(storage, EncryptedStorage):
        raise _CommandError(
            f"the {where} holds an encrypted token (key id {kid!r}), which {command} would replace with a token "
            f"in clear: {ENCRYPTED_ADVICE}; or delete it first with {clear}"
        )
    try:
        storage.load()
    except TokenStorageError as exc:
        raise _CommandError(
            f"{' '.join(str(exc).split())}; {command} would replace it with a record that the holders of key id "
            f"{kid!r} cannot read: check {_keys_env(storage)}, or delete it first with {clear}"
        ) from exc


def _store_problem(args: argparse.Namespace) -> str | None:
    """Why the store options (and the encryption options) do not fit together, or None."""
    return _entry_problem(args) or _encryption_problem(args)


def _entry_problem(args: argparse.Namespace) -> str | None:
    """Why the options do not name exactly one store (keyring entry, Redis key or token file), or None."""
    keyring_options = [name for name, value in (("--service", args.service), ("--username", args.username)) if value]
    redis_options = [name for name, value in (("--redis", args.redis), ("--key", args.key)) if value is not None]
    if args.token_file is not None and (keyring_options or redis_options):
        other = " and ".join(keyring_options + redis_options)
        return f"--file (a token file) and {other} name two different stores: give only one store"
    if args.token_file is not None:
        return None if args.token_file.strip() else "--file needs the path of the token file"
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
        return (
            "name the token's store: --service and --username (keyring entry), --redis and --key (Redis key), "
            "or --file PATH (token file)"
        )
    if len(keyring_options) == 1:
        other = "--username" if keyring_options[0] == "--service" else "--service"
        return f"{keyring_options[0]} needs {other} too: the keyring entry is named by both"
    return None


def add_store_options(sub: argparse.ArgumentParser, *, encrypted: bool = False) -> None:
    """Add the options that name the token's store; ``main`` checks them with :func:`_store_problem`.

    The encryption options too; ``encrypted``: the command always works on an encrypted record (``rekey``).
    """
    # Pairs, one of them required: argparse's exclusive groups take single options, so main()
    # checks the pairs (_store_problem) and reports a usage error.
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
    plain = sub.add_argument_group("or the token in a file only you can read")
    plain.add_argument(
        "--file", dest="token_file", metavar="PATH", help="the token file (FileStorage), for machines without a keyring"
    )
    add_encryption_options(sub, implied=encrypted)
    sub.set_defaults(check=_store_problem)
