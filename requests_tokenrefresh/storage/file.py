"""FileStorage: the token record in a JSON file of its own, for machines without a keyring.

Rules of the file
-----------------
Rule 1: the file holds :meth:`Token.to_record` as compact JSON with sorted keys (the keyring's
        layout), readable and writable by its owner only (mode 0600).
Rule 2: a save never changes the file in place. It writes a new file next to it, created with
        mode 0600 (``O_CREAT | O_EXCL``: the umask can narrow that mode, never widen it), flushes
        it to disk, and renames it over the old one (``os.replace``). A reader in any process
        sees the old record or the new one, never half of one. On POSIX the directory is flushed
        too, so the rename survives a power cut.
Rule 3: a load refuses, like ssh does for a private key, a file that its group or others may
        read or write, and a path that is a symbolic link; and it refuses a file that holds no
        token record. It never repairs or overwrites what it refuses: the message says how to.
Rule 4: processes sharing the file refresh one at a time: the refresh lease is an OS file lock
        (``flock`` / ``LockFileEx``) on ``PATH.lock``, which the OS releases if its holder dies.

Nothing in the package selects this storage by itself: a program passes it explicitly. Every
:class:`OSError` becomes a :class:`~requests_tokenrefresh.TokenStorageError` whose message names
the path, never a token, with the cause chained.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shlex
import stat
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import TokenStorageError
from ..tokens import Token
from .base import NEWER_RECORD_ADVICE, RefreshLease, TokenStorage, describe, record_kind
from .filelease import FileLease, load_filelock

__all__ = ["FileStorage"]

log: logging.Logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_POSIX = os.name == "posix"
#: Seconds a Windows rename or open keeps retrying while another process has the file open.
WINDOWS_SHARING_RETRY = 1.0


class FileStorage(TokenStorage):
    """Keeps the token as one JSON record in a file readable by its owner only.

    For servers, containers and CI runners without a keyring. The token is in clear on disk:
    anyone who can read the file as its owner, or as root, has the refresh token. The file is
    replaced atomically at every save and several processes may share it: their refreshes take
    turns through an OS file lock.

    ``path`` must not be a symbolic link (a load refuses one, as does a save). A file that its
    group or others may read or write is refused, with the ``chmod`` that fixes it.

    Args:
        path: the token file, for example ``~/.config/my-app/token.json`` (``~`` is expanded).
            Its directory is created, with mode 0700, at the first save if missing.
        lock_path: the inter-process refresh lock file (it holds no secret); ``PATH.lock`` by
            default.

    Example::

        storage = FileStorage("~/.config/my-app/token.json")
        adapter = TokenRefreshAdapter(storage, token_url="https://auth.example.com/oauth/token")

    .. versionadded:: 0.2
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_path: str | os.PathLike[str] | None = None) -> None:
        self.path: str = _absolute(path, "path")
        #: The inter-process refresh lock file.
        self.lock_path: str = _absolute(lock_path, "lock_path") if lock_path is not None else self.path + ".lock"
        load_filelock()

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """An OS file lock (``flock`` / ``LockFileEx``) on :attr:`lock_path`, released if the holder dies."""
        return FileLease(self, self.lock_path, timeout)

    def load(self) -> Token | None:
        try:
            raw = _retry_sharing(self._read)
        except FileNotFoundError:
            return None
        except TokenStorageError:
            raise
        except OSError as exc:
            raise TokenStorageError(f"cannot read the token file {self.path}: {_reason(exc)}") from exc
        record: Any = None
        try:
            record = json.loads(raw.decode("utf-8"))
            return Token.from_record(record)
        except UnicodeDecodeError as exc:
            raise TokenStorageError(
                f"the token file {self.path} does not hold a token record (not UTF-8 text); {self._advice(None)}"
            ) from exc
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError too
            raise TokenStorageError(
                f"the token file {self.path} does not hold a token record ({describe(exc)}); {self._advice(record)}"
            ) from exc

    def _read(self) -> bytes:
        """The file's bytes, once it is known to be a private regular file and no link."""
        if not _POSIX and os.path.islink(self.path):
            raise self._symlink_error()
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        # O_NONBLOCK: a FIFO planted at the path must not hang the open (a regular file ignores it).
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(self.path):
                raise self._symlink_error() from None
            raise
        with open(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise TokenStorageError(f"the token file {self.path} is not a regular file: pass the path of a file")
            if _POSIX and info.st_mode & 0o077:
                raise TokenStorageError(
                    f"the token file {self.path} may be read or written by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):03o}) and it holds a refresh token in clear, so it is not "
                    f"used: make it private with `chmod 600 {shlex.quote(self.path)}`, or delete it and log "
                    "in again if others may have read it"
                )
            return f.read()

    def _symlink_error(self) -> TokenStorageError:
        return TokenStorageError(
            f"the token file {self.path} is a symbolic link, which is not followed (a link can point "
            "the token anywhere): use the link's target as the path"
        )

    def _advice(self, record: Any) -> str:
        """What to do about a file that holds ``record`` (parsed JSON, or None), which is no token record."""
        kind = record_kind(record)
        if kind == "newer":
            return NEWER_RECORD_ADVICE
        if kind == "response":
            return (
                "it looks like a token response stored by hand: store it with "
                "FileStorage.save(Token.from_response(response)) instead"
            )
        return f"it is left as it is: remove it (`rm {shlex.quote(self.path)}`) and log in again"

    def save(self, token: Token) -> None:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        try:
            raw = json.dumps(token.to_record(), separators=(",", ":"), sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TokenStorageError(
                f"cannot write the token file {self.path}: the token's extra data is not JSON ({type(exc).__name__})"
            ) from exc
        if os.path.islink(self.path):
            raise self._symlink_error()
        directory, name = os.path.split(self.path)
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._write(temporary, raw)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise TokenStorageError(f"cannot write the token file {self.path}: {_reason(exc)}") from exc
        log.debug("saved the token to %s", self.path)

    def _write(self, temporary: str, raw: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temporary, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with open(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        _retry_sharing(lambda: os.replace(temporary, self.path))
        if _POSIX:
            # The rename is done (the save succeeded); this makes it durable. Some file systems
            # cannot fsync a directory: that costs durability only, so it is not an error.
            try:
                dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError as exc:
                log.debug("cannot flush the directory of %s to disk: %s", self.path, _reason(exc))

    def delete(self) -> None:
        """Remove the token file (a symbolic link at the path itself, not its target); no error if missing.

        The lock file stays: another process may be holding it.
        """
        try:
            _retry_sharing(lambda: os.remove(self.path))
        except FileNotFoundError:
            log.debug("no token file to delete at %s", self.path)
        except OSError as exc:
            raise TokenStorageError(f"cannot delete the token file {self.path}: {_reason(exc)}") from exc

    def __repr__(self) -> str:
        return f"FileStorage({self.path!r})"


def _absolute(path: str | os.PathLike[str], name: str) -> str:
    value = os.fspath(path)
    if not isinstance(value, str) or not value:
        raise ValueError(f"FileStorage {name} must be a non-empty str or os.PathLike[str]")
    return os.path.abspath(os.path.expanduser(value))


def _reason(exc: OSError) -> str:
    """The OS's sentence for ``exc`` ("Permission denied"), without "[Errno 13]"."""
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def _retry_sharing(op: Callable[[], _T]) -> _T:
    """Run ``op``; on Windows, retry a sharing violation (another process has the file open) for a moment."""
    deadline = time.monotonic() + WINDOWS_SHARING_RETRY
    while True:
        try:
            return op()
        except PermissionError:
            if _POSIX or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
