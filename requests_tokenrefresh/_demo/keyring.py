"""The demo's keyring: :class:`DemoFileKeyring` where keyring has no backend, and the demo's own entry.

The demo never touches a keyring entry that holds anything but a demo token: its tokens carry the
extra field ``requests_tokenrefresh_demo`` (:func:`_claim`), and at the end it deletes the entry
only if it still holds the token of this run (:func:`_release`).
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable
from typing import Any, TextIO

import keyring
import keyring.errors
from keyring.backends import chainer, fail

from ..exceptions import TokenStorageError
from ..storage import KeyringStorage
from ..testing.filekeyring import FileKeyring
from ..tokens import Token

__all__ = ["DEMO_KEYRING_ENV", "DemoFileKeyring", "keyring_problem"]

#: The environment variable that names :class:`DemoFileKeyring`'s file.
DEMO_KEYRING_ENV = "REQUESTS_TOKENREFRESH_DEMO_KEYRING"
_BACKEND_PATH = "requests_tokenrefresh._demo.DemoFileKeyring"
# The extra field that marks a token as the demo's; its value names the run that made it.
_MARK = "requests_tokenrefresh_demo"


class _EntryInUseError(ValueError):
    """The keyring entry holds something the demo did not put there."""


class _ClassProperty:
    """keyring reads ``priority`` on the class; a plain property would not work there."""

    def __init__(self, fget: Callable[[Any], float]) -> None:
        self.fget = fget

    def __get__(self, obj: object, owner: type[Any]) -> float:
        return self.fget(owner)


class DemoFileKeyring(FileKeyring):
    """The testing kit's :class:`~requests_tokenrefresh.testing.FileKeyring`, for the demo only.

    keyring never picks it on its own: it is viable only while ``REQUESTS_TOKENREFRESH_DEMO_KEYRING``
    names its file, and it registers no entry point. Select it explicitly::

        PYTHON_KEYRING_BACKEND=requests_tokenrefresh._demo.DemoFileKeyring \\
        REQUESTS_TOKENREFRESH_DEMO_KEYRING=/tmp/demo/keyring.json keyring get SERVICE USERNAME

    The rest is ``FileKeyring``'s: a plaintext JSON file replaced atomically under a file lock, so
    the demo's processes can write it at once without losing a change.

    Args:
        path: the file; by default the one the environment variable names.

    Raises:
        keyring.errors.KeyringError: no ``path``, and the environment variable is not set.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        path = path or os.environ.get(DEMO_KEYRING_ENV)
        if not path:  # not the working directory: a file keyring there would be a surprise
            raise keyring.errors.KeyringError(f"set {DEMO_KEYRING_ENV} to the demo keyring file")
        super().__init__(path)

    @_ClassProperty
    def priority(cls) -> float:
        if not os.environ.get(DEMO_KEYRING_ENV):
            raise RuntimeError(f"set {DEMO_KEYRING_ENV} to the keyring file to use this demo backend")
        return 0.1

    def __str__(self) -> str:
        return f"{_BACKEND_PATH} ({self.path})"


def keyring_problem() -> str | None:
    """Return why keyring's selected backend cannot store tokens, or None if it looks usable."""
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a bad PYTHON_KEYRING_BACKEND or keyringrc.cfg raises anything
        return f"keyring could not load its backend ({type(exc).__name__}: {exc})"
    if isinstance(backend, fail.Keyring):
        return "keyring found no backend"
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return "keyring found no backend to chain"
    return None


def _backend_name(backend: object) -> str:
    return (
        str(backend) if isinstance(backend, DemoFileKeyring) else f"{type(backend).__module__}.{type(backend).__name__}"
    )


def _claim(storage: KeyringStorage) -> None:
    """Refuse an entry that holds anything but a demo token (one an earlier ``--keep`` run left).

    Raises:
        _EntryInUseError: it holds a token the demo did not make, or a value that is not a token.
        TokenStorageError: the keyring failed.
    """
    try:
        stored = storage.load()
    except TokenStorageError as exc:
        if not isinstance(exc.__cause__, (ValueError, RecursionError)):
            raise
        stored = None
        foreign = True
    else:
        foreign = stored is not None and _MARK not in stored.extra
    if foreign:
        what = "a token the demo did not create" if stored is not None else "a value that is not a demo token"
        raise _EntryInUseError(
            f"keyring entry {storage.service!r}/{storage.username!r} already holds {what}; the demo leaves it "
            "alone: name an entry of its own with --service and --username"
        )


def _release(storage: KeyringStorage, mark: str) -> bool:
    """Delete the entry if it still holds this run's token; return whether it was deleted."""
    try:
        stored = storage.load()
        if stored is None or stored.extra.get(_MARK) != mark:
            return False  # someone else wrote the entry meanwhile: it is theirs now
        storage.delete()
    except TokenStorageError:
        return False
    return True


def _open_storage(service: str, username: str, seed: Token, out: TextIO) -> tuple[KeyringStorage, bool]:
    """Store ``seed`` in the selected keyring, else in a new temporary file keyring; return (storage, is_system)."""
    problem = keyring_problem()
    if problem is None:
        storage = KeyringStorage(service, username)
        try:
            _claim(storage)
            storage.save(seed)
        except TokenStorageError as exc:
            problem = str(exc)
        else:
            print(f"keyring:  {_backend_name(keyring.get_keyring())}, entry {service}/{username}", file=out)
            print(f"          inspect it with: keyring get {shlex.quote(service)} {shlex.quote(username)}", file=out)
            return storage, True
    path = os.path.join(tempfile.mkdtemp(prefix="requests-tokenrefresh-demo-"), "keyring.json")
    storage = KeyringStorage(service, username, backend=DemoFileKeyring(path))
    storage.save(seed)
    print(f"keyring:  no usable keyring backend ({problem})", file=out)
    print(f"          using a temporary plaintext file keyring for this demo: {path}", file=out)
    print("          inspect the stored record with:", file=out)
    print(
        f"  PYTHON_KEYRING_BACKEND={_BACKEND_PATH} {DEMO_KEYRING_ENV}={shlex.quote(path)} "
        f"keyring get {shlex.quote(service)} {shlex.quote(username)}",
        file=out,
    )
    return storage, False
