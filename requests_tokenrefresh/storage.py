"""Where tokens live between requests and between runs.

:class:`TokenStorage` is the interface; :class:`KeyringStorage` keeps one JSON record in the OS
keyring (so ``keyring get SERVICE USERNAME`` shows it) and :class:`MemoryStorage` keeps the token
in the process, for tests and short scripts. Every backend failure becomes a
:class:`~requests_tokenrefresh.TokenStorageError` with the original error chained.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import filelock

# keyring, filelock and platformdirs are imported where they are used: together they cost more to
# import than requests does, and a program that uses MemoryStorage or Redis needs none of them.

from ._redact import fingerprint
from .exceptions import TokenStorageError
from .tokens import RECORD_VERSION, Token

__all__ = ["KeyringStorage", "MemoryStorage", "RefreshLease", "TokenStorage"]

log: logging.Logger = logging.getLogger(__name__)

#: Bytes one Windows Credential Manager entry holds (CRED_MAX_CREDENTIAL_BLOB_SIZE).
WINDOWS_CREDENTIAL_BYTES = 2560

NO_KEYRING_HELP = (
    "no usable keyring backend: start and unlock a Secret Service (GNOME Keyring, KWallet) or "
    "macOS/Windows keychain; or install an alternative backend such as keyrings.alt or "
    "keyrings.cryptfile and select it with PYTHON_KEYRING_BACKEND; or use MemoryStorage()"
)


class TokenStorage(abc.ABC):
    """Loads, saves and deletes the one token of a user of an API.

    Implementations must be safe to call from several threads, and raise
    :class:`~requests_tokenrefresh.TokenStorageError` for any failure.

    .. versionadded:: 0.1
    """

    @abc.abstractmethod
    def load(self) -> Token | None:
        """Return the stored token, or None if nothing is stored."""

    @abc.abstractmethod
    def save(self, token: Token) -> None:
        """Store ``token``, replacing what was stored."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Remove the stored token; no error if there is none."""

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """Return the lease that one refresher holds at a time among all users of this storage.

        The default is a :class:`RefreshLease` that excludes nobody: storage private to one
        process needs none (the adapter already coordinates its threads). Storage shared between
        processes or hosts returns a subclass that really excludes (:class:`KeyringStorage`: an
        OS file lock).

        .. versionadded:: 0.2
        """
        return RefreshLease(self)


class RefreshLease:
    """The right to refresh a stored token, held by one refresher at a time.

    The adapter uses a lease like this, and only like this::

        with storage.refresh_lease(timeout) as lease:   # TokenStorageError if not had in time
            stored = lease.load()       # the newest token, read inside the lease
            lease.check(seconds)        # right before the refresh request is sent
            new = refresh(stored)
            lease.save(new)             # retried (after extend()) while it fails

    Subclasses for shared storage exclude other holders in ``__enter__`` and release in
    ``__exit__``. One whose exclusion can run out (a lease with an expiry, on a server) also
    overrides :meth:`check`, :meth:`extend` and makes :meth:`save` conditional, so that a holder
    whose lease ran out while it stalled never sends a refresh nor overwrites a newer token.

    Attributes:
        storage: the storage this lease is for.
        interrupted: set by :meth:`load` when an earlier holder may have sent the stored refresh
            token and not saved the answer (yet): it crashed, or stalled past its lease.
        lost: set by :meth:`load` (or on entering) when the storage knows it lost writes that this
            process saw (a Redis restarted without persistence, flushed, or failed over to a
            replica that lacked the last write): what it holds now is older than what was
            stored, and an empty store does not mean that anyone signed out.
        fenced: whether :meth:`save` is conditional on the record being unchanged since
            :meth:`load` (or since the lease was taken), so that a save that failed may be tried
            again after the lease was released.

    .. versionadded:: 0.2
    """

    fenced: bool = False

    def __init__(self, storage: TokenStorage) -> None:
        self.storage = storage
        self.interrupted = False
        self.lost = False

    def __enter__(self) -> RefreshLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def load(self) -> Token | None:
        """Read the stored token inside the lease."""
        return self.storage.load()

    def check(self, seconds: float) -> None:
        """Make sure the lease is still held for at least ``seconds`` more; called before refreshing.

        Raises:
            LeaseLostError: it is not (nothing must be sent).
        """

    def forget(self) -> None:
        """The refresh begun after :meth:`check` ended without a token to save: say so to later holders.

        A lease that marks a refresh in flight (so that a later holder waits for its answer)
        removes its mark; by default there is none.

        Raises:
            TokenStorageError: the storage failed (the mark then only makes a later holder wait).
        """

    def extend(self, seconds: float) -> None:
        """Hold the lease for at least ``seconds`` more (while a save is being retried).

        Raises:
            LeaseLostError: the lease was already lost.
        """

    def save(self, token: Token) -> None:
        """Store ``token``, the outcome of this lease's refresh.

        Raises:
            LeaseLostError: another holder wrote since :meth:`load` (a conditional store).
            TokenStorageError: the storage failed.
        """
        self.storage.save(token)


class MemoryStorage(TokenStorage):
    """Keeps the token in this process only; it is gone when the process ends.

    Args:
        token: an initial token, if any.

    .. versionadded:: 0.1
    """

    _atomic_writes = True  # a reader never sees a write half done (the coordinator relies on it)

    def __init__(self, token: Token | None = None) -> None:
        self._lock = threading.Lock()
        self._token = token

    def load(self) -> Token | None:
        with self._lock:
            return self._token

    def save(self, token: Token) -> None:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        with self._lock:
            self._token = token

    def delete(self) -> None:
        with self._lock:
            self._token = None

    def __repr__(self) -> str:
        return f"MemoryStorage(<{'a token' if self._token else 'empty'}>)"

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a pickled copy starts empty: tokens are never pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


class KeyringStorage(TokenStorage):
    """Keeps the token as one JSON record in the OS keyring, under ``service`` and ``username``.

    The record is :meth:`Token.to_record` as compact JSON, so ``keyring get SERVICE USERNAME``
    prints it. The keyring backend is the one ``keyring`` selects (``keyring.get_keyring()``) at
    each call, unless ``backend`` is given.

    Args:
        service: the keyring service name, for example the API's name.
        username: the keyring user name, for example the signed-in account.
        backend: a ``keyring.backend.KeyringBackend`` to use instead of the selected one.
        lock_dir: where the inter-process refresh lock file goes; by default the user cache
            directory (``~/.cache/requests-tokenrefresh/locks`` on Linux).
        max_record_bytes: refuse to save a record larger than this (UTF-8 bytes). The Windows
            Credential Manager's limit (2,560 bytes of UTF-16) applies by itself.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        service: str,
        username: str,
        *,
        backend: Any = None,
        lock_dir: str | os.PathLike[str] | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        for name, value in (("service", service), ("username", username)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"KeyringStorage {name} must be a non-empty string")
        self.service = service
        self.username = username
        self.backend = backend
        self.max_record_bytes = max_record_bytes
        directory = os.fspath(lock_dir) if lock_dir is not None else _default_lock_dir()
        entry = hashlib.sha256(f"{service}\0{username}".encode()).hexdigest()[:24]
        #: The inter-process refresh lock file (it holds no secret; the OS frees it if its holder dies).
        self.lock_path: str = os.path.join(directory, f"{entry}.lock")
        _load_filelock()

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """An OS file lock (``flock`` / ``LockFileEx``) on :attr:`lock_path`, released if the holder dies."""
        return _FileLease(self, self.lock_path, timeout)

    def _keyring(self) -> Any:
        import keyring

        return self.backend if self.backend is not None else keyring.get_keyring()

    def load(self) -> Token | None:
        raw = self._call("read", lambda kr: kr.get_password(self.service, self.username))
        if raw is None:
            return None
        record: Any = None
        try:
            record = json.loads(raw)
            return Token.from_record(record)
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError too
            raise TokenStorageError(
                f"the keyring entry {self.service!r}/{self.username!r} does not hold a token record "
                f"({_describe(exc)}); {self._advice(record)}"
            ) from exc

    def _advice(self, record: Any) -> str:
        """What to do about an entry that holds ``record`` (parsed JSON, or None), which is no token record."""
        names = f"--service {self.service} --username {self.username}"
        kind = _record_kind(record)
        if kind == "newer":
            return _NEWER_RECORD_ADVICE
        if kind == "response":
            return (
                "it looks like a token response stored by hand: keep the token by importing it, "
                f"`keyring get {self.service} {self.username} | requests-tokenrefresh import {names} -`"
            )
        return (
            f"remove it with `requests-tokenrefresh clear {names}` (or `keyring del {self.service} "
            f"{self.username}`) and log in again"
        )

    def save(self, token: Token) -> None:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        try:
            raw = json.dumps(token.to_record(), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TokenStorageError(
                f"cannot write keyring entry {self.service!r}/{self.username!r}: the token's extra data "
                f"is not JSON ({type(exc).__name__})"
            ) from exc
        self._check_size(raw)
        self._call("write", lambda kr: kr.set_password(self.service, self.username, raw), token)

    def _check_size(self, raw: str) -> None:
        limit, encoding, which = self.max_record_bytes, "utf-8", "max_record_bytes"
        if limit is None and type(self._keyring()).__name__ == "WinVaultKeyring":
            limit, encoding = WINDOWS_CREDENTIAL_BYTES, "utf-16-le"  # it stores UTF-16
            which = "the Windows Credential Manager limit"
        size = len(raw.encode(encoding))
        if limit is not None and size > limit:
            raise TokenStorageError(
                f"cannot write keyring entry {self.service!r}/{self.username!r}: the token record is "
                f"{size} bytes and this keyring backend holds at most {limit} bytes per entry ({which}); "
                "use a backend without that limit (keyrings.cryptfile, a Secret Service) or a custom TokenStorage"
            )

    def delete(self) -> None:
        try:
            self._call("delete", lambda kr: kr.delete_password(self.service, self.username))
        except TokenStorageError as exc:
            import keyring.errors

            if not isinstance(exc.__cause__, keyring.errors.PasswordDeleteError):
                raise
            # keyring raises PasswordDeleteError when there is nothing to delete.
            log.debug("nothing to delete in keyring entry %s/%s", self.service, self.username)

    def _call(self, action: str, op: Any, token: Token | None = None) -> Any:
        import keyring.errors

        try:
            return op(self._keyring())
        except keyring.errors.NoKeyringError as exc:
            raise TokenStorageError(
                f"cannot {action} keyring entry {self.service!r}/{self.username!r}: {NO_KEYRING_HELP}"
            ) from exc
        except Exception as exc:
            # Backends raise whatever their platform raises (D-Bus, Win32, OSError ...);
            # translate at this boundary and keep the cause chained.
            detail = str(exc)
            for secret in (token.access_token, token.refresh_token) if token else ():
                if secret:  # a backend that echoes what it was given must not leak it
                    detail = detail.replace(secret, f"<{fingerprint(secret)}>")
            error = TokenStorageError(
                f"cannot {action} keyring entry {self.service!r}/{self.username!r}: "
                f"the keyring backend raised {type(exc).__name__}: {detail[:200]}"
            )
            if detail == str(exc):
                raise error from exc
        # The backend's own error quotes a token: raised here, outside the except clause, the
        # translation neither chains it nor keeps it as __context__.
        raise error

    def __repr__(self) -> str:
        return f"KeyringStorage(service={self.service!r}, username={self.username!r})"


def _load_filelock() -> None:
    """Import filelock now, in the thread that makes the storage.

    Not lazily inside the first refresh: that may run in the background while the interpreter
    exits, and there filelock's import of concurrent.futures fails on Python 3.10 ("can't
    register atexit after shutdown"), which would lose a rotated refresh token.
    """
    import filelock  # noqa: F401


def _default_lock_dir() -> str:
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("requests-tokenrefresh"), "locks")


class _FileLease(RefreshLease):
    """A fresh ``filelock.FileLock`` per refresh, with its timeout translated to TokenStorageError."""

    def __init__(self, storage: TokenStorage, path: str, timeout: float) -> None:
        super().__init__(storage)
        self.path = path
        self.timeout = timeout
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> RefreshLease:
        import filelock

        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            lock = filelock.FileLock(self.path, timeout=self.timeout)
            lock.acquire()
        except filelock.Timeout as exc:
            raise TokenStorageError(
                f"timed out after {self.timeout:.0f}s waiting for the refresh lock {self.path}, held by "
                "another process that is refreshing the same token"
            ) from exc
        except OSError as exc:
            raise TokenStorageError(f"cannot use the refresh lock {self.path}: {exc.strerror or exc}") from exc
        self._lock = lock
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


#: What to do about a record of a later RECORD_VERSION.
_NEWER_RECORD_ADVICE = "it was written by a newer version of requests-tokenrefresh: upgrade this one to read it"


def _record_kind(record: Any) -> str:
    """Of a stored value that is no token record: ``"newer"`` (a later record version),
    ``"response"`` (a token response stored as it came), or ``"other"``."""
    if isinstance(record, dict):
        version = record.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION:
            return "newer"
        if version is None and isinstance(record.get("access_token"), str):
            return "response"
    return "other"


def _describe(exc: Exception) -> str:
    """Say what is wrong with a stored value without quoting it."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at character {exc.pos}"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)
