"""RedisStorage over Redis Sentinel: the master SIGKILLed under traffic, its replica promoted.

One master, one replica and three Sentinels (quorum 2, ``down-after-milliseconds 500``) on
127.0.0.1 (tests/redis_cluster_support.py); the storage's client is
``Sentinel([...]).master_for(service)``. Without redis-server these tests fail, saying how to
install it: they never pass by skipping.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_tokenrefresh import (
    RedisStorage,
    RefreshError,
    SessionExpiredError,
    Token,
    TokenRefreshAdapter,
    TokenStorageError,
)
from requests_tokenrefresh.testing import AuthServer

from ..redis_cluster_support import SentinelGroup
from ..redis_support import INSTALL_HELP, redis_server_path, wait_for

pytestmark = pytest.mark.slow

#: Seconds the Sentinels get to promote the replica once the master is killed.
FAILOVER_TIMEOUT = 15.0
#: Seconds each storage call may wait for an answer from Redis.
SOCKET_TIMEOUT = 0.5


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with SentinelGroup(tmp_path / "sentinel") as started:
        yield started


@pytest.fixture
def master_client(group: SentinelGroup) -> Iterator[Any]:
    """The client a host builds: the Sentinels' current master, found again after a failover.

    One retry of a failed command, as RedisStorage gives a client it makes from a URL: redis-py's
    default (ten, backing off up to a second each) would mostly wait the failover out, and the
    errors a caller gets meanwhile are what this module checks.
    """
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    sentinel = Sentinel(
        group.addresses(),
        sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT},
    )
    client = sentinel.master_for(
        group.service,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
    )
    yield client
    client.close()
    for connection in sentinel.sentinels:
        connection.close()


@pytest.fixture
def key() -> str:
    return f"test-api:{uuid.uuid4().hex[:12]}"


class Traffic:
    """Threads that send through one session until stopped; every outcome is kept with its time."""

    def __init__(self, session: requests.Session, url: str, threads: int) -> None:
        self.session, self.url = session, url
        self.outcomes: list[tuple[float, BaseException | None]] = []  # (monotonic time, error or None)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test never stops it
        while not self.stopping.is_set() and time.monotonic() < deadline:
            error: BaseException | None = None
            try:
                response = self.session.get(self.url, timeout=30)
                if response.status_code != 200:
                    error = AssertionError(f"HTTP {response.status_code}")
            except Exception as exc:  # kept, and judged by the test
                error = exc
            with self.lock:
                self.outcomes.append((time.monotonic(), error))
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(t.is_alive() for t in self.threads), "a traffic thread is still running"

    def since(self, moment: float) -> list[BaseException | None]:
        with self.lock:
            return [error for at, error in self.outcomes if at >= moment]

    def wait_successes(self, after: float, count: int, timeout: float) -> None:
        wait_for(
            lambda: sum(error is None for error in self.since(after)) >= count,
            timeout,
            f"{count} requests to succeed",
            interval=0.05,
        )


def _typed(error: BaseException) -> bool:
    """A failure a caller can handle: the storage failed, or a refresh failed and may be retried."""
    if isinstance(error, SessionExpiredError):
        return False
    return isinstance(error, TokenStorageError) or (isinstance(error, RefreshError) and error.retryable)


@pytest.mark.parametrize("moment", ["mid-refresh", "between-refreshes"])
def test_a_failover_under_traffic_signs_nobody_out_and_spends_no_refresh_token_twice(
    moment: str, group: SentinelGroup, master_client: Any, key: str
) -> None:
    """Six threads through one adapter, 2-s tokens (a refresh a second), the master SIGKILLed.

    ``mid-refresh``: killed while a refresh request is at the token endpoint; the rotated token's
    save fails and is retried (Rule 7) until the replica is promoted, and lands there.
    ``between-refreshes``: killed 0.8 s after a refresh; the next refresh falls in the failover,
    and requests whose token has expired meanwhile fail with a TokenStorageError (or a retryable
    RefreshError) until the promotion, while those with a still-valid token go through.

    Then refreshes resume on the new master. No refresh token is presented twice, the session
    never ends, and the stored refresh token is the one the server holds current.
    """
    ended: list[SessionExpiredError] = []
    with AuthServer(ttl=2, rotation="reuse-detection") as srv:
        storage = RedisStorage(master_client, key=key)
        storage.save(Token.from_response(srv.issue()))
        adapter = TokenRefreshAdapter(
            storage, token_url=srv.token_url, pool_maxsize=16, refresh_timeout=3, on_session_expired=ended.append
        )
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        # A second host, idle: its refresh while the master is down starts a flight of its own.
        other = TokenRefreshAdapter(RedisStorage(master_client, key=key), token_url=srv.token_url, refresh_timeout=3)
        other_session = requests.Session()
        other_session.mount(srv.url + "/", other)
        assert other_session.get(srv.url + "/api/data", timeout=30).status_code == 200
        old_master = group.master.port
        with Traffic(session, srv.url + "/api/data", threads=6) as traffic:
            start = time.monotonic()
            wait_for(lambda: srv.refresh_calls >= 2, 15, "two refreshes before the failover")
            if moment == "mid-refresh":
                srv.hold_refresh()
                calls = srv.refresh_calls
                wait_for(lambda: srv.refresh_calls > calls, 15, "a refresh request at the token endpoint")
            else:
                time.sleep(0.8)
            before = traffic.since(start)
            group.kill_master()
            killed = time.monotonic()
            srv.release_refresh()
            with pytest.raises(TokenStorageError, match="cannot take the refresh lease"):
                other.refresh()  # the Sentinels still name the dead master for down-after-milliseconds
            group.wait_failover(FAILOVER_TIMEOUT)
            promoted = time.monotonic()
            refreshes_then = srv.refresh_calls
            wait_for(lambda: srv.refresh_calls >= refreshes_then + 2, 20, "two refreshes on the new master")
            recovered = time.monotonic()
            traffic.wait_successes(recovered, 50, 20)
        adapter.close()  # waits for a refresh under way: its token is saved before the checks
        other.close()
        assert group.master_port() not in (None, old_master)

        assert [e for e in before if e is not None] == []
        failures = [e for e in traffic.since(killed) if e is not None]
        untyped = [f"{type(e).__name__}: {e}" for e in failures if not _typed(e)]
        assert untyped == [], untyped
        if moment == "between-refreshes":
            # The token expired ~1.2 s after the kill; the promotion takes 0.5 s (down-after) + an election.
            assert failures, "no request needed a refresh during the failover"
        # The last requests all succeeded: the failover is over for the adapter.
        assert [e for e in traffic.since(recovered) if e is not None] == []
        assert ended == []
        assert not srv.revoked
        presented = [entry["refresh_token"] for entry in srv.token_log]
        assert len(presented) == len(set(presented)), "a refresh token was presented twice"
        assert all(entry["status"] == 200 for entry in srv.token_log)
        stored = storage.load()
        assert stored is not None
        assert stored.refresh_token == srv._families[1].current_refresh
        print(  # shown with -s: how the run went
            f"refreshes {srv.refresh_calls}, requests {len(traffic.outcomes)}, failed {len(failures)}, "
            f"failover {promoted - killed:.1f}s, recovered {recovered - promoted:.1f}s after it"
        )


def test_a_failover_that_lost_the_last_refresh_restores_it_from_memory(
    group: SentinelGroup, master_client: Any, key: str
) -> None:
    """The rotated token's write reached the master, not the replica; then the master died.

    The promoted replica holds the record before the refresh: its refresh token is spent, and
    presenting it would revoke the family. Its version is lower than the one this host wrote
    (Rule 5): the host restores the token it holds and refreshes that one; nobody is signed out.
    """
    ended: list[SessionExpiredError] = []
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = RedisStorage(master_client, key=key)
        first = Token.from_response(srv.issue())
        storage.save(first)
        adapter = TokenRefreshAdapter(storage, token_url=srv.token_url, on_session_expired=ended.append)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200  # loads version 1

        group.cut_replication()
        second = adapter.refresh()  # stored on the master only, as version 2
        assert srv.refresh_calls == 1
        group.kill_master()
        group.heal_replica()
        group.wait_failover(FAILOVER_TIMEOUT)

        assert group.replica is not None
        with group.replica.client() as promoted:
            assert int(promoted.get(f"{key}:version")) == 1  # the write was lost ...
            lost = storage.load()
            assert lost is not None
            assert lost.refresh_token == first.refresh_token  # ... and the record holds a spent token
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200  # no Redis call

        third = adapter.refresh()  # as at the next expiry: restores `second`, refreshes it
        assert third.refresh_token not in (first.refresh_token, second.refresh_token)
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
        assert srv.refresh_calls == 2
        assert [entry["refresh_token"] for entry in srv.token_log] == [first.refresh_token, second.refresh_token]
        assert not srv.revoked
        assert ended == []
        stored = storage.load()
        assert stored is not None
        assert stored.refresh_token == srv._families[1].current_refresh == third.refresh_token
        with group.replica.client() as promoted:
            assert int(promoted.get(f"{key}:version")) > 2  # above every version a host saw

        # A host that starts now (it never saw the lost version) adopts the restored line.
        newcomer = TokenRefreshAdapter(RedisStorage(master_client, key=key), token_url=srv.token_url)
        newcomer_session = requests.Session()
        newcomer_session.mount(srv.url + "/", newcomer)
        assert newcomer_session.get(srv.url + "/api/data", timeout=30).status_code == 200
        assert srv.refresh_calls == 2
        newcomer.close()
        adapter.close()


def test_the_storage_names_the_sentinel_service_it_reaches(group: SentinelGroup, master_client: Any, key: str) -> None:
    """Its repr and its errors say where the record is: the Sentinels' service, not redis-py's
    default address (a master_for client's pool has no host or port of its own)."""
    storage = RedisStorage(master_client, key=key)
    assert "localhost:6379" not in repr(storage)
    assert group.service in repr(storage)
