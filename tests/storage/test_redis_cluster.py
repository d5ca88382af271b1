"""RedisStorage over a real Redis Cluster: a hash-tagged key, the lease, one refresh, a cluster down.

Three masters and no replicas on 127.0.0.1 (tests/redis_cluster_support.py), created with
``redis-cli --cluster create`` and used through ``redis.cluster.RedisCluster``. Without
redis-server these tests fail, saying how to install it: they never pass by skipping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_tokenrefresh import LeaseLostError, RedisStorage, Token, TokenRefreshAdapter, TokenStorageError
from requests_tokenrefresh.testing import AuthServer

from ..redis_cluster_support import ClusterGroup, redis_cli_path
from ..redis_support import INSTALL_HELP, lease_left, redis_server_path, wait_for

pytestmark = pytest.mark.slow

SUFFIXES = ("version", "lease", "fence", "inflight")


def _require_redis() -> None:
    if redis_server_path() is None or redis_cli_path() is None:
        pytest.fail(INSTALL_HELP + " (the cluster tests need redis-cli too; it comes with redis-server)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    _require_redis()
    with ClusterGroup(tmp_path_factory.mktemp("cluster")) as group:
        yield group


@pytest.fixture
def client(cluster: ClusterGroup) -> Iterator[Any]:
    c = cluster.client()
    yield c
    c.close()


@pytest.fixture
def key() -> str:
    return "{api:alice-" + uuid.uuid4().hex[:12] + "}"


@pytest.fixture
def make(client: Any, key: str) -> Callable[..., RedisStorage]:
    """``make(**options)``: a RedisStorage over the test's RedisCluster client and hash-tagged key."""

    def factory(**options: Any) -> RedisStorage:
        options.setdefault("key", key)
        return RedisStorage(client, **options)

    return factory


def token(n: int = 1, **fields: Any) -> Token:
    fields.setdefault("expires_at", time.time() + 3600)
    return Token(f"at-{n}-{uuid.uuid4().hex}", f"rt-{n}-{uuid.uuid4().hex}", **fields)


def _adapter_session(srv: AuthServer, storage: RedisStorage, **options: Any) -> requests.Session:
    adapter = TokenRefreshAdapter(storage, token_url=srv.token_url, pool_maxsize=32, **options)
    session = requests.Session()
    session.mount(srv.url + "/", adapter)
    return session


# -- the key -----------------------------------------------------------------------------------


def test_a_hash_tagged_key_keeps_all_five_keys_on_one_node(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    storage = make()
    assert storage.load() is None
    saved = token(extra={"user": {"id": 7}})
    storage.save(saved)
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        lease.check(1)  # sets the in-flight marker: all five keys exist now
        names = [key, *(f"{key}:{suffix}" for suffix in SUFFIXES)]
        assert len({client.keyslot(name) for name in names}) == 1
        assert all(client.exists(name) for name in names)
        lease.save(token(2))
    loaded = storage.load()
    assert loaded is not None
    assert loaded.access_token.startswith("at-2-")
    storage.delete()
    assert storage.load() is None


@pytest.mark.parametrize("untagged", ["api:alice", "api:{}alice", "}api{:alice"])
def test_a_key_without_a_hash_tag_is_refused_at_construction(client: Any, untagged: str) -> None:
    with pytest.raises(TokenStorageError, match=r"no hash tag.*\{") as info:
        RedisStorage(client, key=untagged)
    assert "{" + untagged + "}" in str(info.value)  # the message shows the key to use instead


def test_the_storage_names_a_node_of_the_cluster_it_reaches(
    make: Callable[..., RedisStorage], cluster: ClusterGroup
) -> None:
    """Its repr and its errors say where the record is: a node's address, not only the client's class."""
    shown = repr(make())
    assert any(f"127.0.0.1:{node.port}" in shown for node in cluster.nodes), shown


# -- the lease ---------------------------------------------------------------------------------


def test_the_lease_excludes_a_second_owner_and_fences_a_stale_holder(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    storage = make(lease_margin=0)
    storage.save(token(1))
    stale = storage.refresh_lease(1.5)
    stale.__enter__()
    assert stale.load() is not None
    started = time.monotonic()
    with pytest.raises(TokenStorageError, match="another host"):
        make().refresh_lease(0.1).__enter__()  # waits out two of its own leases, then gives up
    assert time.monotonic() - started < 1.5
    wait_for(lambda: lease_left(client, key) is None, 10, "the stale lease to run out")
    newer = token(2)
    with make().refresh_lease(10) as lease:
        assert lease.load() is not None
        assert not lease.interrupted  # the stale holder never passed its check
        lease.check(1)
        lease.save(newer)
        assert lease.fence == stale.fence + 1  # type: ignore[attr-defined]
    with pytest.raises(LeaseLostError, match="written by another holder"):
        stale.save(token(3))
    stale.__exit__(None, None, None)  # not its lease any more: nothing is released
    loaded = storage.load()
    assert loaded is not None
    assert loaded.access_token == newer.access_token


def test_two_adapters_over_the_cluster_refresh_once(
    make: Callable[..., RedisStorage], run_threads: Callable[..., None], expired: Callable[..., Token]
) -> None:
    """Two adapters (two "hosts") x 12 threads, an expired token, reuse detection: one refresh."""
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = make()
        storage.save(expired(srv.issue()))
        sessions = [_adapter_session(srv, make()) for _ in range(2)]
        statuses: list[int] = []

        def send(i: int) -> None:
            statuses.append(sessions[i % 2].get(srv.url + "/api/data", timeout=30).status_code)

        run_threads(24, send, timeout=60)
        assert statuses == [200] * 24
        assert srv.refresh_calls == 1
        assert not srv.revoked
        stored = storage.load()
        assert stored is not None
        assert stored.refresh_token == srv._families[1].current_refresh
        presented = [e["refresh_token"] for e in srv.token_log]
        assert len(presented) == len(set(presented))


# -- a cluster that is down --------------------------------------------------------------------


def test_a_cluster_that_is_down_is_a_storage_error_and_a_valid_token_keeps_working(tmp_path: Path) -> None:
    """Every master stopped (by PID): each storage call raises TokenStorageError, never redis-py's
    RedisClusterException or ConnectionError; the adapter sends with the token it holds."""
    _require_redis()
    from redis.exceptions import RedisClusterException, RedisError

    key = "{api:alice}"
    with ClusterGroup(tmp_path / "cluster") as group, AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        client = group.client()
        try:
            storage = RedisStorage(client, key=key)
            storage.save(Token.from_response(srv.issue()))
            session = _adapter_session(srv, storage)
            assert session.get(srv.url + "/api/data", timeout=30).status_code == 200  # loads the token
            group.stop()
            assert not any(node.alive() for node in group.nodes)
            operations: list[tuple[str, Callable[[], object]]] = [
                ("read", storage.load),
                ("write", lambda: storage.save(token(2))),
                ("delete", storage.delete),
                ("take the refresh lease of", lambda: storage.refresh_lease(5).__enter__()),
            ]
            for action, operation in operations:
                started = time.monotonic()
                with pytest.raises(TokenStorageError) as info:
                    operation()
                assert type(info.value) is TokenStorageError, f"{action}: {type(info.value).__name__}: {info.value}"
                assert not isinstance(info.value, (RedisClusterException, RedisError))
                assert f"cannot {action} Redis key '{key}'" in str(info.value)
                assert time.monotonic() - started < 30
            for _ in range(5):
                assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
            assert srv.refresh_calls == 0
        finally:
            client.close()
