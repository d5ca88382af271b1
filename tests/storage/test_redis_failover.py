"""A rotated token saved on the master only, then a Sentinel failover: no write is lost, nobody signed out.

Redis replicates asynchronously: a save the master acknowledged may be missing on the replica
that Sentinel promotes when the master dies. The rotated token is then gone, and the refresh token
the promoted replica holds is spent: the first host to refresh with it is refused, and with reuse
detection the provider revokes the family (every host signed out). RedisStorage therefore counts a
write only once a replica acknowledged it (``WAIT``, Rule 6 of requests_tokenrefresh/storage/redis.py);
until then the adapter keeps the token and saves it again, on the new master once there is one.

One master, one replica and one Sentinel (quorum 1, ``down-after-milliseconds`` 300) on 127.0.0.1
(tests/redis_cluster_support.py). Without redis-server these tests fail, saying how to install it:
they never pass by skipping.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from requests_tokenrefresh import RedisStorage, SessionExpiredError, Token, TokenRefreshAdapter, TokenStorageError
from requests_tokenrefresh.testing import AuthServer

from ..redis_cluster_support import RedisProcess, SentinelGroup
from ..redis_support import INSTALL_HELP, redis_server_path, wait_for

pytestmark = pytest.mark.slow

#: Seconds the Sentinel gets to promote the replica once the master is killed (a replica that was
#: stopped is not promoted until it answers again, and a failover that found none is retried).
FAILOVER_TIMEOUT = 30.0
#: Seconds each storage call may wait for an answer from Redis.
SOCKET_TIMEOUT = 1.0


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with SentinelGroup(tmp_path / "sentinel", sentinels=1, quorum=1, down_after=300) as started:
        yield started


class Host:
    """One host: its own Sentinel client, RedisStorage and adapter, as another machine would have."""

    def __init__(self, group: SentinelGroup, srv: AuthServer, key: str, *, refresh_timeout: float = 5.0) -> None:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        self.sentinel = Sentinel(
            group.addresses(),
            sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT},
        )
        self.client = self.sentinel.master_for(
            group.service,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
        )
        self.storage = RedisStorage(self.client, key=key)
        self.ended: list[SessionExpiredError] = []
        self.adapter = TokenRefreshAdapter(
            self.storage, token_url=srv.token_url, refresh_timeout=refresh_timeout, on_session_expired=self.ended.append
        )
        self.session = requests.Session()
        self.session.mount(srv.url + "/", self.adapter)
        self.api = srv.url + "/api/data"

    def get(self) -> int:
        return self.session.get(self.api, timeout=60).status_code

    def close(self) -> None:
        self.session.close()
        self.adapter.close()
        self.client.close()
        for connection in self.sentinel.sentinels:
            connection.close()


def _record(server: RedisProcess, key: str) -> Token | None:
    """The record on ``server``, read as the keyring's layout (``redis-cli GET key``)."""
    client = server.client()
    try:
        raw = client.get(key)
    finally:
        client.close()
    return None if raw is None else Token.from_record(json.loads(raw))


def test_a_refresh_saved_on_the_master_only_is_not_lost_to_its_failover(group: SentinelGroup) -> None:
    """The replica is stopped (its link backed up, so the master keeps what it sends it), host A
    refreshes and its save lands on the master only; the master is SIGKILLed, the replica
    continued and promoted. A keeps saving its rotated token until the new master has it; host B,
    whose token is the one A refreshed, then adopts it instead of presenting the spent refresh
    token; a host started afterwards loads it. Nobody is signed out, no refresh token is presented
    twice.

    Before ``WAIT``, A's save counted once the master had it: the promoted replica held the old
    record, B refreshed with its spent refresh token, the provider revoked the family and every
    host was signed out.
    """
    key = f"test-api:{uuid.uuid4().hex[:12]}"
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        first = Token.from_response(srv.issue())
        a = Host(group, srv, key, refresh_timeout=FAILOVER_TIMEOUT)  # its save retries span the failover
        b = Host(group, srv, key)
        hosts = [a, b]
        try:
            a.storage.save(first)
            assert a.get() == 200
            assert b.get() == 200  # both hold the first token, stored as version 1
            replica = group.replica
            assert replica is not None
            replica.pause()
            group.backlog_replica()

            refreshed: list[Token] = []
            failed: list[BaseException] = []

            def refresh() -> None:
                try:
                    refreshed.append(a.adapter.refresh())
                except Exception as exc:  # judged below
                    failed.append(exc)

            thread = threading.Thread(target=refresh, name="host-a-refresh")
            thread.start()
            master = group.master.client()
            try:
                wait_for(lambda: int(master.get(f"{key}:version") or 0) >= 2, 30, "A's save on the master")
            finally:
                master.close()
            group.kill_master()
            replica.resume()
            group.promote(FAILOVER_TIMEOUT)
            thread.join(FAILOVER_TIMEOUT + 30)
            assert not thread.is_alive(), "A's refresh did not end"
            assert failed == []
            assert srv.refresh_calls == 1
            second = refreshed[0]

            promoted = _record(group.master, key)

            outcomes: list[str] = []
            try:
                outcomes.append(b.adapter.refresh().access_token)  # as at B's next expiry
            except (SessionExpiredError, TokenStorageError) as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
            assert outcomes == [second.access_token], "B did not adopt A's rotated token"
            assert promoted is not None
            assert promoted.refresh_token == second.refresh_token, "the new master lacked A's rotated token"
            c = Host(group, srv, key)
            hosts.append(c)
            assert c.get() == 200

            assert srv.refresh_calls == 1  # B adopted, C loaded: one refresh in all
            assert not srv.revoked
            presented = [entry["refresh_token"] for entry in srv.token_log]
            assert presented == [first.refresh_token]
            assert [h.ended for h in hosts] == [[], [], []]
            stored = _record(group.master, key)
            assert stored is not None
            assert stored.refresh_token == srv._families[1].current_refresh == second.refresh_token
        finally:
            for host in hosts:
                host.close()
