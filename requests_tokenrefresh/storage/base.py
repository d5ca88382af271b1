"""The storage protocol: :class:`TokenStorage` and the :class:`RefreshLease` a refresh holds.

Every backend of this package (``memory``, ``keyring``, ``file``, ``redis``) implements it, and so
can a user's. It also says what a stored value that is no token record is (:func:`record_kind`,
:func:`describe`), for the backends' error messages and the command line's refusals.
"""

from __future__ import annotations

import abc
import json
from typing import Any

from ..exceptions import TokenStorageError
from ..tokens import RECORD_VERSION, Token

__all__ = [
    "ENCRYPTED_MARKER",
    "NEWER_RECORD_ADVICE",
    "RefreshLease",
    "TokenStorage",
    "describe",
    "read_token",
    "record_kind",
]

#: The ``access_token`` of the stand-in token that an :class:`EncryptedStorage` stores in the
#: storage it wraps (its ``extra`` holds the ciphertext).
ENCRYPTED_MARKER = "requests-tokenrefresh-encrypted"


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


#: What to do about a record of a later RECORD_VERSION.
NEWER_RECORD_ADVICE = "it was written by a newer version of requests-tokenrefresh: upgrade this one to read it"


def record_kind(record: Any) -> str:
    """Of a stored value that is no token record: ``"newer"`` (a later record version),
    ``"response"`` (a token response stored as it came), or ``"other"``."""
    if isinstance(record, dict):
        version = record.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION:
            return "newer"
        if version is None and isinstance(record.get("access_token"), str):
            return "response"
    return "other"


def describe(exc: Exception) -> str:
    """Say what is wrong with a stored value without quoting it."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at character {exc.pos}"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def read_token(source: TokenStorage | RefreshLease) -> Token | None:
    """What ``source`` holds (its :meth:`~TokenStorage.load`), for a holder that uses the token.

    An :class:`~requests_tokenrefresh.EncryptedStorage`'s stand-in, read through a storage that
    is not wrapped in one (a host deployed without it), is a
    :class:`~requests_tokenrefresh.TokenStorageError`: used, its marker would be sent as an
    access token and, with no refresh token, taken for a sign-out that deletes the record.

    Raises:
        TokenStorageError: the storage failed, or holds an encrypted record.
    """
    token = source.load()
    if token is not None and token.access_token == ENCRYPTED_MARKER:
        raise TokenStorageError(
            f"{getattr(source, 'storage', source)!r} holds an encrypted record (written by an EncryptedStorage): "
            "read it through EncryptedStorage with its keys; it is left as it is"
        )
    return token
