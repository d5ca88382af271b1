"""The refresh lease of the storages on one machine (keyring, token file): an OS file lock.

filelock and platformdirs are imported where they are used: with keyring they cost more to
import than requests does, and a program that uses MemoryStorage or Redis needs none of them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..exceptions import TokenStorageError
from .base import RefreshLease, TokenStorage

if TYPE_CHECKING:
    import filelock

__all__ = ["FileLease", "default_lock_dir", "load_filelock"]


def load_filelock() -> None:
    """Import filelock now, in the thread that makes the storage.

    Not lazily inside the first refresh: that may run in the background while the interpreter
    exits, and there filelock's import of concurrent.futures fails on Python 3.10 ("can't
    register atexit after shutdown"), which would lose a rotated refresh token.
    """
    import filelock  # noqa: F401


def default_lock_dir() -> str:
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("requests-tokenrefresh"), "locks")


class FileLease(RefreshLease):
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
