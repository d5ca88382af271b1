"""The four storages under test, each with the real faults it can suffer.

A :class:`Backend` makes the storage the adapter uses, stores the first token, reads the record
from outside (as another process would) and injects the storage faults of ``matrix.FAULTS`` as
the storage really suffers them where it can:

* keyring: the kit's :class:`MemoryKeyring` raising ``KeyringLocked``; the refresh lock's
  directory (under ``XDG_CACHE_HOME``) replaced by a plain file;
* file: the token file's directory replaced by a plain file (``ENOTDIR``: ``chmod`` stops no
  one when the tests run as root), the file deleted;
* Redis: an ACL that denies every command (``NOPERM``), the server stopped and started again with its
  append-only file, or started without it (restarted empty).

The process cells (:mod:`.processes`) use the same backends with a keyring that processes share
(the kit's :class:`FileKeyring`, lock files in one directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring.errors

from requests_tokenrefresh import FileStorage, KeyringStorage, MemoryStorage, RedisStorage, Token, TokenStorage
from requests_tokenrefresh.testing import FileKeyring, MemoryKeyring

from ..redis_support import RedisServer

__all__ = ["SERVICE", "USER", "Backend", "Outage", "make_backend", "swapped_for_a_file"]

SERVICE, USER = "fault-api", "alice"
#: Seconds a storage stays unreachable.
OUTAGE = 1.5


@contextlib.contextmanager
def swapped_for_a_file(directory: str) -> Iterator[None]:
    """While in the block, ``directory`` is a plain file: every path under it fails with ENOTDIR."""
    away = directory + ".away"
    os.rename(directory, away)
    try:
        Path(directory).touch()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(directory)
        os.rename(away, directory)


class Backend:
    """One storage and its faults; see the module docstring."""

    kind = ""

    def storage(self) -> TokenStorage:
        """The storage an adapter uses (a new object on the same record, where the storage allows)."""
        raise NotImplementedError

    def seed(self, token: Token) -> None:
        self.storage().save(token)

    def record(self) -> Token | None:
        """What the store holds, read from outside."""
        return self.storage().load()

    def fail_once(self, step: str) -> contextlib.AbstractContextManager[Any]:
        """A block in which the step's call fails (once)."""
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError

    def wipe(self) -> None:
        raise NotImplementedError

    def describe(self) -> list[str]:
        """The worker's arguments for this storage (process cells)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self) -> None:
        self._storage = MemoryStorage()

    def storage(self) -> TokenStorage:
        return self._storage


class KeyringBackend(Backend):
    """KeyringStorage over the kit's MemoryKeyring (in-process) or FileKeyring (shared by processes)."""

    kind = "keyring"

    def __init__(self, directory: Path, *, shared: bool) -> None:
        self.shared = shared
        self.keyring_path = directory / "keyring.json"
        self.lock_dir = directory / "locks" if shared else None  # in-process: under XDG_CACHE_HOME
        self.backend: Any = FileKeyring(self.keyring_path) if shared else MemoryKeyring()

    def storage(self) -> TokenStorage:
        return KeyringStorage(SERVICE, USER, backend=self.backend, lock_dir=self.lock_dir)

    def fail_once(self, step: str) -> contextlib.AbstractContextManager[Any]:
        if step == "lease taken":
            storage = self.storage()
            assert isinstance(storage, KeyringStorage)
            directory = os.path.dirname(storage.lock_path)
            os.makedirs(directory, exist_ok=True)
            return swapped_for_a_file(directory)
        operation = "set" if step.startswith("save") else "get"
        assert isinstance(self.backend, MemoryKeyring)
        self.backend.fail(operation, times=1)
        return contextlib.nullcontext()

    def down(self) -> None:
        assert isinstance(self.backend, MemoryKeyring)
        # Every call of every operation until up(): far more calls than an outage sees.
        self.backend.fail(times=10_000, error=keyring.errors.KeyringLocked("the keyring is locked"))

    def up(self) -> None:
        self.backend.failures.clear()

    def wipe(self) -> None:
        if isinstance(self.backend, MemoryKeyring):
            self.backend.entries.pop((SERVICE, USER), None)
        else:
            self.storage().delete()

    def describe(self) -> list[str]:
        return ["--storage", "keyring", "--path", str(self.keyring_path), "--lock-dir", str(self.lock_dir)]


class FileBackend(Backend):
    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "store"
        self.directory.mkdir(mode=0o700)
        self.path = self.directory / "token.json"
        self._swap: contextlib.AbstractContextManager[Any] | None = None

    def storage(self) -> TokenStorage:
        return FileStorage(self.path)

    def fail_once(self, step: str) -> contextlib.AbstractContextManager[Any]:
        return swapped_for_a_file(str(self.directory))

    def down(self) -> None:
        self._swap = swapped_for_a_file(str(self.directory))
        self._swap.__enter__()

    def up(self) -> None:
        swap, self._swap = self._swap, None
        if swap is not None:
            swap.__exit__(None, None, None)

    def wipe(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def describe(self) -> list[str]:
        return ["--storage", "file", "--path", str(self.path)]


class RedisBackend(Backend):
    """A key of its own on the module's redis-server (append-only, so a restart keeps the data)."""

    kind = "redis"

    def __init__(self, server: RedisServer, key: str) -> None:
        self.server = server
        self.key = key
        self._storages: list[RedisStorage] = []
        self._admin: Any = None

    def storage(self) -> TokenStorage:
        storage = RedisStorage(self.server.url, key=self.key)
        self._storages.append(storage)
        return storage

    def record(self) -> Token | None:
        storage = RedisStorage(self.server.url, key=self.key)
        try:
            return storage.load()
        finally:
            storage.close()

    def admin(self) -> Any:
        if self._admin is None:
            self._admin = self.server.client()
        return self._admin

    @contextlib.contextmanager
    def fail_once(self, step: str) -> Iterator[None]:
        # Every command but ACL (which lifts it) is refused at once, on existing connections too
        # (NOPERM): no reconnect, no retry hides it.
        self.admin().execute_command("ACL", "SETUSER", "default", "-@all", "+acl")
        try:
            yield
        finally:
            self.admin().execute_command("ACL", "SETUSER", "default", "+@all")

    def down(self) -> None:
        self._drop_admin()
        self.server.stop()

    def up(self) -> None:
        self.server.start()

    def wipe(self) -> None:
        self._drop_admin()
        self.server.stop()
        for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
            path = self.server.directory / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.server.start()

    def _drop_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def describe(self) -> list[str]:
        return ["--storage", "redis", "--url", self.server.url, "--key", self.key]

    def close(self) -> None:
        self._drop_admin()
        for storage in self._storages:
            storage.close()


def make_backend(kind: str, directory: Path, redis: RedisServer | None, key: str, *, shared: bool = False) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "keyring":
        return KeyringBackend(directory, shared=shared)
    if kind == "file":
        return FileBackend(directory)
    assert redis is not None
    return RedisBackend(redis, key)


class Outage:
    """The backend is down from :meth:`start` for ``seconds``, then up again (by a thread of its own)."""

    def __init__(self, backend: Backend, seconds: float = OUTAGE) -> None:
        self.backend = backend
        self.seconds = seconds
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.backend.down()
        self.thread = threading.Thread(target=self._end, name="fault-outage", daemon=True)
        self.thread.start()

    def _end(self) -> None:
        time.sleep(self.seconds)
        try:
            self.backend.up()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> None:
        """Wait for the storage to be back (bounded); raise if it could not be brought back."""
        if self.thread is None:
            return
        self.thread.join(self.seconds + 30)
        if self.thread.is_alive():
            raise AssertionError("the storage outage did not end within its bound")
        if self.error is not None:
            raise AssertionError(f"the storage could not be brought back: {self.error!r}")
