"""Keyring backends for tests: :class:`MemoryKeyring` (a dict that can fail chosen calls) and
:func:`use_keyring`, which installs one for a block and then restores the previous backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar, overload

import keyring
import keyring.backend
import keyring.errors

__all__ = ["MemoryKeyring", "use_keyring"]

_Backend = TypeVar("_Backend", bound=keyring.backend.KeyringBackend)

#: The operations of a keyring backend, by the name :meth:`MemoryKeyring.fail` takes.
_OPERATIONS = ("get", "set", "delete")


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps passwords in a dict of this process, and counts its calls.

    Install it with :func:`use_keyring` (or ``keyring.set_keyring``), or give it to
    :class:`~requests_tokenrefresh.KeyringStorage` as ``backend=``. Its priority is -1, below
    keyring's fail backend, so keyring's own backend detection never picks it.

    To see what your code does when the keyring is locked or broken, make calls fail with
    :meth:`fail`::

        backend.fail("set")            # the next save raises keyring.errors.KeyringLocked

    Attributes:
        entries (dict[tuple[str, str], str]): the stored passwords by ``(service, username)``;
            a test may read or change it.
        reads (int): calls of :meth:`get_password`, failed ones included.
        writes (int): calls of :meth:`set_password`, failed ones included.
        deletes (int): calls of :meth:`delete_password`, including failed ones and those for a
            missing entry.
        failures (dict[str, list[Exception | None]]): what the next calls of each operation
            (``"get"``, ``"set"``, ``"delete"``) do, in order: each call takes the first item of
            its list; an exception is raised, None lets the call through. :meth:`fail` fills it;
            a test may change it, and ``failures.clear()`` lets every call through again.

    .. versionadded:: 0.2
    """

    # Defining a subclass registers it with keyring's detection: never let it win there.
    priority = -1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # reads KEYRING_PROPERTY_* like every backend
        self.entries: dict[tuple[str, str], str] = {}
        self.reads: int = 0
        self.writes: int = 0
        self.deletes: int = 0
        self.failures: dict[str, list[Exception | None]] = {}

    def fail(self, *operations: str, times: int = 1, after: int = 0, error: Exception | None = None) -> None:
        """Make calls of ``operations`` fail, as a locked or broken platform keyring does.

        Of each operation, the next ``after`` calls go through, the ``times`` calls after them
        raise ``error`` and change nothing, and later calls go through again::

            backend.fail("set")                      # the next save fails
            backend.fail("get", after=1, times=2)    # the second and third reads from now fail
            backend.fail(error=OSError(5, "I/O error"))  # the next call of each operation fails

        A later :meth:`fail` of an operation replaces what is left of an earlier one.

        Args:
            operations: ``"get"`` (:meth:`get_password`), ``"set"`` (:meth:`set_password`),
                ``"delete"`` (:meth:`delete_password`); all three if none is named.
            times: how many calls fail.
            after: how many calls go through first.
            error: what each failing call raises (the same object every time); a new
                :class:`keyring.errors.KeyringLocked` for each call if None.

        Raises:
            ValueError: an operation is none of those three, or ``times`` or ``after`` is negative.

        .. versionadded:: 0.2
        """
        unknown = set(operations) - set(_OPERATIONS)
        if unknown or times < 0 or after < 0:
            raise ValueError(
                f"fail() takes operations among {', '.join(_OPERATIONS)} and counts of 0 or more, "
                f"not operations={operations!r}, times={times!r}, after={after!r}"
            )
        for operation in operations or _OPERATIONS:
            script: list[Exception | None] = [None] * after
            for _ in range(times):
                script.append(keyring.errors.KeyringLocked("the keyring is locked") if error is None else error)
            self.failures[operation] = script

    def _outcome(self, operation: str) -> None:
        script = self.failures.get(operation)
        if script:
            error = script.pop(0)
            if error is not None:
                raise error

    def get_password(self, service: str, username: str) -> str | None:
        """Return the password stored for ``service`` and ``username``, or None."""
        self.reads += 1
        self._outcome("get")
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store ``password`` for ``service`` and ``username``, replacing any."""
        self.writes += 1
        self._outcome("set")
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        """Delete the password stored for ``service`` and ``username``.

        Raises:
            keyring.errors.PasswordDeleteError: there is none.
        """
        self.deletes += 1
        self._outcome("delete")
        try:
            del self.entries[(service, username)]
        except KeyError:
            raise keyring.errors.PasswordDeleteError("not found") from None

    def __repr__(self) -> str:
        # Never the passwords: they are tokens.
        return f"MemoryKeyring(<{len(self.entries)} entries>, reads={self.reads}, writes={self.writes})"


@overload
def use_keyring() -> contextlib.AbstractContextManager[MemoryKeyring]: ...


@overload
def use_keyring(backend: _Backend) -> contextlib.AbstractContextManager[_Backend]: ...


def use_keyring(
    backend: keyring.backend.KeyringBackend | None = None,
) -> contextlib.AbstractContextManager[keyring.backend.KeyringBackend]:
    """Install ``backend`` as keyring's backend for a ``with`` block, then put the previous one back.

    ::

        with use_keyring() as backend:      # a new MemoryKeyring
            KeyringStorage("my-api", "alice").save(token)
        assert backend.writes == 1

    The previous backend is the one :func:`keyring.get_keyring` returns on entry (keyring
    chooses one then if none was chosen yet; nothing is read from it or written to it). The
    backend is process-wide: do not use this in tests that run in parallel threads.

    Args:
        backend: the backend to install; a new :class:`MemoryKeyring` if None.

    Returns:
        A context manager whose ``with`` block runs with ``backend`` installed; ``as`` gives the
        backend.

    .. versionadded:: 0.2
    """
    return _installed(MemoryKeyring() if backend is None else backend)


@contextlib.contextmanager
def _installed(backend: _Backend) -> Iterator[_Backend]:
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)
