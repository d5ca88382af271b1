"""The storages under test, each with the real faults it can suffer.

A :class:`Backend` makes the storage the adapter uses, stores the first token, reads the record
from outside (as another process would) and injects the storage faults of ``matrix.FAULTS`` as
the storage really suffers them where it can:

* keyring: the kit's :class:`MemoryKeyring` raising ``KeyringLocked``; the refresh lock's
  directory (under ``XDG_CACHE_HOME``) replaced by a plain file;
* file: the token file's directory replaced by a plain file (``ENOTDIR``: ``chmod`` stops no
  one when the tests run as root), the file deleted;
* Redis: an ACL that denies every command (``NOPERM``), the server stopped and started again with its
  append-only file, or started without it (restarted empty);
* Redis Cluster (three masters, append-only), on the node that holds the key's slot: the ACL;
  unreachable, the node restarts with its append-only file, and refuses its slots
  (``CLUSTERDOWN``) for the 2 s that a master which starts again waits before it serves;
  restarted empty, what a restart without persistence loses: ``FLUSHALL`` and ``SCRIPT FLUSH``;
* Redis Sentinel (a master, its replica, one Sentinel): the ACL on the master; unreachable, the
  master SIGKILLed and the Sentinel told to fail over (``SENTINEL FAILOVER``): clients find no
  master until the replica is promoted and the failover ends, about 2 s (the outage lasts at
  least 1.5 s, as the others do); restarted empty, the same with a replica that never had the
  record (its link was cut before the record was first written), waited for before the step's
  call; the old master starts again, empty, as the new one's replica before the next cell. The
  failovers are asked for, not left to ``down-after-milliseconds``: a Sentinel notices a dead
  master 0.5 to 1.5 s after the fact (it pings once a second), and the cells' outcomes must not
  depend on when. (A master stopped with SIGSTOP would hold each call until the client's socket
  timeout instead: the same dependence.) tests/storage/test_redis_sentinel.py and
  test_redis_failover.py leave failovers to the Sentinel.

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
from requests_tokenrefresh.storage.redis import DEFAULT_LEASE_MARGIN
from requests_tokenrefresh.testing import FileKeyring, MemoryKeyring

from ..redis_cluster_support import ClusterGroup, SentinelGroup
from ..redis_support import RedisServer, wait_for

__all__ = ["SERVICE", "USER", "Backend", "Outage", "make_backend", "redis_retry", "swapped_for_a_file"]

SERVICE, USER = "fault-api", "alice"
#: Seconds a storage stays unreachable (a Sentinel group: until the replica is promoted, if later).
OUTAGE = 1.5
#: Seconds a Cluster client waits to connect and for an answer, as RedisStorage's own from a URL.
SOCKET_TIMEOUT = 5.0
#: ... and a Sentinel's master client: a stopped master answers nothing, and the failover takes about 1 s.
SENTINEL_SOCKET_TIMEOUT = 1.0
#: Seconds the Sentinel gets to promote the replica.
FAILOVER_TIMEOUT = 20.0
#: Seconds between a restart empty (a Sentinel group's killed master) and the failover, where the
#: token endpoint holds a request meanwhile: more than the answer's save retries take.
FAILOVER_DELAY = 1.0


def redis_retry() -> Any:
    """One retry after a short pause, as RedisStorage gives a client it makes from a URL (redis-py's
    defaults for a Cluster or Sentinel client wait seconds, not milliseconds, through an outage)."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)


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
    _settling: threading.Thread | None = None

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
        """The storage an adapter uses (a new object on the same record, where the storage allows);
        ``lease_margin``: a Redis storage's (None: its default)."""
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

    def wipe(self, wait: bool = True) -> None:
        """Lose the record. Where the store then takes a while to serve again (a Cluster node that
        starts again, a Sentinel failover), ``wait=False`` returns once the record is gone and
        leaves the rest to :meth:`settle` (a step at which the token endpoint holds a request, which
        must be answered within the client's timeout)."""
        raise NotImplementedError

    def settle(self) -> None:
        """Wait (bounded) until a :meth:`wipe` begun with ``wait=False`` is over."""
        thread, self._settling = self._settling, None
        if thread is not None:
            thread.join(FAILOVER_TIMEOUT + 10)
            if thread.is_alive():
                raise AssertionError("the store did not serve again within its bound")

    def _in_background(self, action: Any, wait: bool) -> None:
        if wait:
            action()
            return
        thread = threading.Thread(target=action, name="fault-settle", daemon=True)
        thread.start()
        self._settling = thread

    def describe(self) -> list[str]:
        """The worker's arguments for this storage (process cells)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self) -> None:
        self._storage = MemoryStorage()

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
        return self._storage


class KeyringBackend(Backend):
    """KeyringStorage over the kit's MemoryKeyring (in-process) or FileKeyring (shared by processes)."""

    kind = "keyring"

    def __init__(self, directory: Path, *, shared: bool) -> None:
        self.shared = shared
        self.keyring_path = directory / "keyring.json"
        self.lock_dir = directory / "locks" if shared else None  # in-process: under XDG_CACHE_HOME
        self.backend: Any = FileKeyring(self.keyring_path) if shared else MemoryKeyring()

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
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

    def wipe(self, wait: bool = True) -> None:
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

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
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

    def wipe(self, wait: bool = True) -> None:
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

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
        storage = RedisStorage(self.server.url, key=self.key, lease_margin=_margin(lease_margin))
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

    def wipe(self, wait: bool = True) -> None:
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


class RedisClusterBackend(Backend):
    """A hash-tagged key of its own on the module's three-master cluster (append-only nodes)."""

    kind = "redis-cluster"

    def __init__(self, cluster: ClusterGroup, key: str) -> None:
        self.cluster = cluster
        self.key = "{" + key + "}"
        self.node = cluster.node_for(self.key)
        self._clients: list[Any] = []

    def client(self) -> Any:
        client = self.cluster.client(socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        client.retry = redis_retry()
        self._clients.append(client)
        return client

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
        return RedisStorage(self.client(), key=self.key, lease_margin=_margin(lease_margin))

    def record(self) -> Token | None:
        return RedisStorage(self.cluster.shared_client(), key=self.key).load()

    @contextlib.contextmanager
    def fail_once(self, step: str) -> Iterator[None]:
        with _denied(self.node.client()):  # the node that holds the slot; the bus is not refused
            yield

    def down(self) -> None:
        self.node.restart()  # with its append-only file; it refuses its slots for 2 s (CLUSTERDOWN)

    def up(self) -> None:
        self._wait_writable()

    def wipe(self, wait: bool = True) -> None:
        # What a restart without persistence loses, without the restart: its 2 s of CLUSTERDOWN
        # are the "unreachable" cells' (a restart with its data), here they would only add time.
        admin = self.node.client()
        try:
            admin.flushall()
            admin.script_flush()
        finally:
            admin.close()

    def _wait_writable(self) -> None:
        # A master that starts again refuses commands (CLUSTERDOWN) for 2 s before it takes its slots back.
        wait_for(self.cluster.ready, FAILOVER_TIMEOUT, "the restarted node to serve its slots", interval=0.05)

    def describe(self) -> list[str]:
        url = f"redis://127.0.0.1:{self.cluster.nodes[0].port}/0"
        return ["--storage", "redis-cluster", "--url", url, "--key", self.key]

    def close(self) -> None:
        for client in self._clients:
            client.close()


class RedisSentinelBackend(Backend):
    """A key of its own behind the module's Sentinel; a restart empty is a failover that lost the record."""

    kind = "redis-sentinel"

    def __init__(self, group: SentinelGroup, key: str, fault: str) -> None:
        from redis.sentinel import Sentinel

        self.group = group
        self.key = key
        self.fault = fault
        timeouts = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        self.sentinel = Sentinel(group.addresses(), sentinel_kwargs=timeouts)
        self._clients: list[Any] = []

    def client(self) -> Any:
        client = self.group_client()
        self._clients.append(client)
        return client

    def group_client(self) -> Any:
        return self.sentinel.master_for(
            self.group.service,
            socket_timeout=SENTINEL_SOCKET_TIMEOUT,
            socket_connect_timeout=SENTINEL_SOCKET_TIMEOUT,
            retry=redis_retry(),
        )

    def storage(self, *, lease_margin: float | None = None) -> TokenStorage:
        return RedisStorage(self.client(), key=self.key, lease_margin=_margin(lease_margin))

    def seed(self, token: Token) -> None:
        if self.fault == "restarted_empty":  # the replica that will be promoted never gets the record
            self.group.cut_replication()
        super().seed(token)

    @contextlib.contextmanager
    def fail_once(self, step: str) -> Iterator[None]:
        with _denied(self.group.master.client()):
            yield

    def down(self) -> None:
        """The master dies; no failover yet, so that no client finds a master for the outage's
        1.5 s, as with the other Redis columns (a failover asked for at once took from 0.3 to 2 s,
        and whether the answer's save was still being retried then varied from run to run)."""
        self.group.kill_master()

    def up(self) -> None:
        """The failover, once it is over (the next cell starts the old master again, as the new one's replica)."""
        self._fail_over()

    def wipe(self, wait: bool = True) -> None:
        self.group.kill_master()
        self.group.heal_replica()
        if wait:
            self._fail_over()
        else:  # the answer's save meets no master, then the promoted replica without the record

            def later() -> None:
                time.sleep(FAILOVER_DELAY)
                self._fail_over()

            self._in_background(later, wait=False)

    def _fail_over(self) -> None:
        self.group.force_failover()
        self.group.promote(FAILOVER_TIMEOUT)

    def describe(self) -> list[str]:
        address = f"127.0.0.1:{self.group.sentinels[0].port}"
        return ["--storage", "redis-sentinel", "--url", address, "--service", self.group.service, "--key", self.key]

    def close(self) -> None:
        for client in self._clients:
            client.close()
        for connection in self.sentinel.sentinels:
            connection.close()


def _margin(lease_margin: float | None) -> float:
    return DEFAULT_LEASE_MARGIN if lease_margin is None else lease_margin


@contextlib.contextmanager
def _denied(admin: Any) -> Iterator[None]:
    """Every command of the default user but ACL (which lifts it) is refused, on existing connections too."""
    try:
        admin.execute_command("ACL", "SETUSER", "default", "-@all", "+acl")
        try:
            yield
        finally:
            admin.execute_command("ACL", "SETUSER", "default", "+@all")
    finally:
        admin.close()


def make_backend(
    kind: str, directory: Path, server: Any, key: str, *, shared: bool = False, fault: str = ""
) -> Backend:
    """The backend of storage ``kind``; ``server`` is its RedisServer, ClusterGroup or SentinelGroup."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "keyring":
        return KeyringBackend(directory, shared=shared)
    if kind == "file":
        return FileBackend(directory)
    if kind == "redis-cluster":
        assert isinstance(server, ClusterGroup)
        return RedisClusterBackend(server, key)
    if kind == "redis-sentinel":
        assert isinstance(server, SentinelGroup)
        return RedisSentinelBackend(server, key, fault)
    assert isinstance(server, RedisServer)
    return RedisBackend(server, key)


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
