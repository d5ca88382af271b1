"""One injected clock: deadlines, retry pauses and lease waits pass with a FakeClock, not in real time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requests_tokenrefresh import KeyringStorage, RedisStorage, TokenStorageError
from requests_tokenrefresh._clock import SYSTEM_CLOCK, Clock, as_clock
from requests_tokenrefresh.testing import AuthServer, Canned, FakeClock, MemoryKeyring

from .redis_support import INSTALL_HELP, RedisServer, redis_server_path


def test_fake_clock_sleep_moves_wall_and_monotonic_time_at_once() -> None:
    clock = FakeClock(1000.0)
    started = time.monotonic()
    clock.sleep(3600)
    assert time.monotonic() - started < 1
    assert (clock.time(), clock(), clock.monotonic(), clock.slept) == (4600.0, 4600.0, 3600.0, 3600.0)
    clock.advance(-100)  # the wall clock may jump back; monotonic time does not
    assert (clock.time(), clock.monotonic()) == (4500.0, 3600.0)
    assert isinstance(clock, Clock)


def test_a_plain_callable_gives_wall_time_with_real_deadlines() -> None:
    clock = as_clock(lambda: 42.0)
    assert clock.time() == 42.0
    assert abs(clock.monotonic() - time.monotonic()) < 1
    assert as_clock(SYSTEM_CLOCK) is SYSTEM_CLOCK


def test_a_save_retried_until_refresh_timeout_takes_no_real_time(
    server: AuthServer, memory_keyring: MemoryKeyring, session_for: Any, expired: Any
) -> None:
    """refresh_timeout=30 of save retries, every 0.5 s: a minute of real time with the system clock."""
    storage = KeyringStorage("clock-api", "alice")
    storage.save(expired(server.issue()))
    memory_keyring.fail("set", times=1000)  # the keyring stays locked
    clock = FakeClock()
    session, _ = session_for(server, None, storage=storage, refresh_timeout=30, clock=clock)
    started = time.monotonic()
    assert session.get(server.url + "/api/data", timeout=30).status_code == 200  # kept in memory
    assert time.monotonic() - started < 10
    assert 29 <= clock.slept <= 30
    assert server.refresh_calls == 1


def test_retry_pauses_of_a_refresh_take_no_real_time(server: AuthServer, session_for: Any, expired: Any) -> None:
    server.canned.extend([Canned(503, {"error": "temporarily_unavailable"}, headers={"Retry-After": "20"})] * 2)
    clock = FakeClock()
    _, adapter = session_for(server, expired(server.issue()), refresh_timeout=60, clock=clock)
    started = time.monotonic()
    adapter.refresh()
    assert time.monotonic() - started < 10
    assert clock.slept == 40  # Retry-After honoured twice, in fake seconds
    assert server.refresh_calls == 3


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


def test_a_redis_lease_wait_runs_out_in_fake_time(redis_server: RedisServer) -> None:
    holder = RedisStorage(redis_server.url, key="clock-api:alice")
    clock = FakeClock()
    waiter = RedisStorage(redis_server.url, key="clock-api:alice", clock=clock)
    try:
        with holder.refresh_lease(600):  # another host refreshes for ten minutes
            started = time.monotonic()
            with pytest.raises(TokenStorageError, match=r"timed out after 60\.0s waiting for the refresh lease"):
                waiter.refresh_lease(30).__enter__()
            assert time.monotonic() - started < 30
            assert 59 <= clock.slept <= 60
    finally:
        holder.close()
        waiter.close()
