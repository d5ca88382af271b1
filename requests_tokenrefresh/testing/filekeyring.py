"""The testing kit's :class:`FileKeyring`: a keyring backend in a JSON file that processes share.

Public as :class:`requests_tokenrefresh.testing.FileKeyring`; a module of its own so that its
users need not import the kit's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

import keyring.backend
import keyring.errors

__all__ = ["FileKeyring"]

#: How long :class:`FileKeyring` waits for another process's change of the file.
_FILE_LOCK_TIMEOUT = 10.0


class FileKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps passwords in a JSON file, which several processes can share.

    Give each process its own instance on the same file, for example as
    :class:`~requests_tokenrefresh.KeyringStorage`'s ``backend=``::

        storage = KeyringStorage("my-api", "alice", backend=FileKeyring(tmp_path / "keyring.json"))

    A change reads the file and replaces it whole: the new content goes to a temporary file in
    the same directory (mode 0600) that :func:`os.replace` renames over the old one, under an
    OS file lock on ``PATH.lock``. So a reader never sees half a file, and two processes that
    change entries at once both keep their change. (keyrings.alt's ``PlaintextKeyring``
    truncates and rewrites its file in place: another process may read it empty or cut short.)

    The file holds ``{service: {username: password}}`` in plain text: it is for tests and
    demos, not for real secrets. Its priority is -1, so keyring's backend detection never picks it.

    Args:
        path: the JSON file; made by the first write, in a directory that must exist.

    Attributes:
        path (str): the absolute path of the file.

    .. versionadded:: 0.2
    """

    priority: float = -1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # reads KEYRING_PROPERTY_* like every backend
        self.path: str = os.path.abspath(os.fspath(path))
        import filelock  # noqa: F401  # now: imported first at interpreter exit, it fails on Python 3.10

    def get_password(self, service: str, username: str) -> str | None:
        """Return the password stored for ``service`` and ``username``, or None."""
        return self._read().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store ``password`` for ``service`` and ``username``, replacing any."""
        with self._locked():
            data = self._read()
            data.setdefault(service, {})[username] = password
            self._write(data)

    def delete_password(self, service: str, username: str) -> None:
        """Delete the password stored for ``service`` and ``username``.

        Raises:
            keyring.errors.PasswordDeleteError: there is none.
        """
        with self._locked():
            data = self._read()
            if username not in data.get(service, {}):
                raise keyring.errors.PasswordDeleteError("not found")
            del data[service][username]
            if not data[service]:
                del data[service]
            self._write(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import filelock

        try:
            # A new lock object (and file descriptor) each time: threads exclude each other too.
            with filelock.FileLock(self.path + ".lock", timeout=_FILE_LOCK_TIMEOUT):
                yield
        except filelock.Timeout as exc:
            raise keyring.errors.KeyringError(f"{self.path}.lock stayed locked for {_FILE_LOCK_TIMEOUT:.0f} s") from exc

    def _read(self) -> dict[str, dict[str, str]]:
        problem = ""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Raised outside this block: a JSONDecodeError keeps the file's text (its secrets) in
            # its ``doc``, and a chained or context exception would carry it along.
            problem = f" ({exc.msg}, line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else " (not UTF-8)"
            data = None
        if not isinstance(data, dict) or not all(isinstance(entries, dict) for entries in data.values()):
            raise keyring.errors.KeyringError(f"{self.path} is not a JSON keyring file{problem}")
        return data

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        directory, name = os.path.split(self.path)
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"
