"""RedisStorage against a real redis-server: the record, the lease, its fence and the adapter over it.

The server is Debian's redis-server, started on 127.0.0.1 on a free port without persistence and
stopped by PID (tests/redis_support.py). Without redis-server these tests fail, saying how to
install it: they never pass by skipping.
"""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from requests_tokenrefresh import LeaseLostError, RefreshError, SessionExpiredError, Token, TokenStorageError
from requests_tokenrefresh.storage.redis import INSTALL_HELP, RedisStorage
from requests_tokenrefresh.testing import AuthServer, Canned

from ..redis_support import INSTALL_HELP as SERVER_HELP
from ..redis_support import RedisServer, free_port, lease_left, lease_owner, redis_server_path, wait_for


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(SERVER_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Any]:
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture
def key() -> str:
    return f"test-api:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make(redis_server: RedisServer, key: str) -> Iterator[Callable[..., RedisStorage]]:
    """``make(**options)``: a RedisStorage on the test server and the test's key, closed at the end."""
    made: list[RedisStorage] = []

    def factory(target: Any = None, **options: Any) -> RedisStorage:
        options.setdefault("key", key)
        storage = RedisStorage(target if target is not None else redis_server.url, **options)
        made.append(storage)
        return storage

    yield factory
    for storage in made:
        storage.close()


def token(n: int = 1, **fields: Any) -> Token:
    fields.setdefault("expires_at", time.time() + 3600)
    return Token(f"at-{n}-{uuid.uuid4().hex}", f"rt-{n}-{uuid.uuid4().hex}", **fields)


def wait_lease_gone(client: Any, key: str, timeout: float = 10.0) -> None:
    wait_for(lambda: lease_left(client, key) is None, timeout, "the lease to run out")


# -- the record --------------------------------------------------------------------------------


def test_round_trip(make: Callable[..., RedisStorage]) -> None:
    storage = make()
    assert storage.load() is None
    saved = token(extra={"user": {"id": 7}}, scope="api read")
    storage.save(saved)
    loaded = storage.load()
    assert loaded is not None
    assert loaded.to_record() == saved.to_record()
    storage.delete()
    assert storage.load() is None
    storage.delete()  # nothing to delete: no error


def test_record_is_the_keyring_layout_without_ttl(make: Callable[..., RedisStorage], client: Any, key: str) -> None:
    saved = token()
    make().save(saved)
    raw = client.get(key)
    assert json.loads(raw) == saved.to_record()
    assert raw.decode() == json.dumps(saved.to_record(), separators=(",", ":"), sort_keys=True)
    assert client.ttl(key) == -1  # never expires
    assert int(client.get(f"{key}:version")) == 1


def test_record_that_is_not_a_token_is_a_clear_error(make: Callable[..., RedisStorage], client: Any, key: str) -> None:
    client.set(key, b"{not json")
    with pytest.raises(TokenStorageError, match=rf"does not hold a token record.*redis-cli DEL {key}"):
        make().load()
    client.delete(key)
    client.rpush(key, b"x")  # a key of another type: Redis answers WRONGTYPE
    with pytest.raises(TokenStorageError, match=r"cannot read Redis key .*ResponseError") as info:
        make().load()
    assert info.value.__cause__ is not None


def test_decode_responses_client_works(make: Callable[..., RedisStorage], redis_server: RedisServer) -> None:
    c = redis_server.client(decode_responses=True)
    try:
        storage = make(c)
        storage.save(token())
        with storage.refresh_lease(5) as lease:
            stored = lease.load()
            assert stored is not None
            lease.check(1)
            lease.save(token(2))
        assert storage.load() is not None
    finally:
        c.close()


def test_pickle_a_storage_made_from_a_url(make: Callable[..., RedisStorage], redis_server: RedisServer) -> None:
    storage = make(lease_margin=0.5, min_replicas=0, replica_timeout=0.2)
    storage.save(token())
    copy = pickle.loads(pickle.dumps(storage))  # noqa: S301 - our own bytes
    try:
        assert (copy.key, copy.lease_margin, copy.min_replicas, copy.replica_timeout) == (storage.key, 0.5, 0, 0.2)
        assert copy.load().to_record() == storage.load().to_record()  # type: ignore[union-attr]
    finally:
        copy.close()
    c = redis_server.client()
    try:
        with pytest.raises(TypeError, match="make it from a URL"):
            pickle.dumps(make(c))
    finally:
        c.close()


# -- the lease ---------------------------------------------------------------------------------


def test_lease_excludes_a_second_owner(make: Callable[..., RedisStorage], key: str) -> None:
    first, second = make(), make()
    with first.refresh_lease(10):
        started = time.monotonic()
        with pytest.raises(TokenStorageError, match=rf"another host .*holds it.*{key}|{key}.*another host"):
            second.refresh_lease(0.3).__enter__()
        assert 0.55 <= time.monotonic() - started < 5  # it waits out two leases
    with second.refresh_lease(1):  # released: free again at once
        pass


def test_lease_runs_out_and_the_old_holder_cannot_release_the_new_one(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    old = make().refresh_lease(0.3)
    old.__enter__()
    wait_lease_gone(client, key)
    with make().refresh_lease(10) as new:
        old.__exit__(None, None, None)  # compare-and-delete: not the owner any more, nothing happens
        assert lease_owner(client, key) == new.owner  # type: ignore[attr-defined]
        assert new.fence == old.fence + 1  # type: ignore[attr-defined]


def test_stale_holder_save_is_rejected_and_the_record_unchanged(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    storage = make()
    storage.save(token(1))
    stale = storage.refresh_lease(0.3)
    stale.__enter__()
    assert stale.load() is not None
    wait_lease_gone(client, key)
    newer = token(2)
    with make().refresh_lease(10) as lease:
        lease.load()
        lease.check(1)
        lease.save(newer)
    before = client.get(key)
    with pytest.raises(LeaseLostError, match="written by another holder"):
        stale.save(token(3))
    stale.__exit__(None, None, None)
    assert client.get(key) == before
    assert storage.load().access_token == newer.access_token  # type: ignore[union-attr]


def test_save_without_load_is_conditional_on_the_version_when_the_lease_was_taken(
    make: Callable[..., RedisStorage],
) -> None:
    storage = make()
    storage.save(token(1))
    with storage.refresh_lease(10) as lease:
        lease.save(token(2))  # nobody wrote since the lease was taken
    with storage.refresh_lease(10) as lease:
        make().save(token(3))
        with pytest.raises(LeaseLostError):
            lease.save(token(4))
    assert storage.load().access_token.startswith("at-3-")  # type: ignore[union-attr]


def test_save_after_a_login_elsewhere_is_rejected(make: Callable[..., RedisStorage]) -> None:
    storage = make()
    storage.save(token(1))
    with storage.refresh_lease(10) as lease:
        lease.load()
        login = token(9)
        make().save(login)  # a plain save outside the lease bumps the version
        with pytest.raises(LeaseLostError):
            lease.check(1)  # nothing would be sent with the replaced refresh token ...
        with pytest.raises(LeaseLostError):
            lease.save(token(2))  # ... nor stored over the login
    assert storage.load().access_token == login.access_token  # type: ignore[union-attr]


def test_holder_whose_lease_ran_out_saves_if_nobody_wrote(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    """Its refresh was sent: its answer holds the only live refresh token, so it is kept."""
    storage = make(lease_margin=0)
    storage.save(token(1))
    lease = storage.refresh_lease(0.3)
    lease.__enter__()
    lease.load()
    lease.check(0)
    wait_lease_gone(client, key)
    rotated = token(2)
    lease.save(rotated)
    lease.__exit__(None, None, None)
    assert storage.load().access_token == rotated.access_token  # type: ignore[union-attr]


def test_check_asks_the_server_how_much_time_is_left(make: Callable[..., RedisStorage], client: Any, key: str) -> None:
    storage = make(lease_margin=0.5)
    storage.save(token())
    with storage.refresh_lease(3) as lease:
        lease.load()
        lease.check(1)  # 1 + 0.5 s of 3 s
        with pytest.raises(LeaseLostError, match=r"ms left, less than the 3500 ms"):
            lease.check(3)
    short = storage.refresh_lease(0.3)
    with short:
        short.load()
        with pytest.raises(LeaseLostError, match="ms left"):
            short.check(0)  # the margin alone is more than the lease has
        wait_lease_gone(client, key)
        with pytest.raises(LeaseLostError, match="ran out"):
            short.check(0)
        with pytest.raises(LeaseLostError, match="cannot be extended"):
            short.extend(5)


def test_extend_keeps_the_lease(make: Callable[..., RedisStorage], client: Any, key: str) -> None:
    storage = make(lease_margin=0)
    with storage.refresh_lease(0.5) as lease:
        lease.extend(10)
        assert (lease_left(client, key) or 0) > 5
        lease.check(5)


def test_interrupted_marker_after_a_holder_crashed(make: Callable[..., RedisStorage], client: Any, key: str) -> None:
    storage = make(lease_margin=0)
    storage.save(token(1))
    crashed = storage.refresh_lease(0.3)
    crashed.__enter__()
    crashed.load()
    assert not crashed.interrupted
    crashed.check(0)  # the refresh request would go out now; the holder "dies" before saving
    wait_lease_gone(client, key)
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        assert lease.interrupted
        lease.check(1)
        lease.save(token(2))
    with storage.refresh_lease(10) as lease:
        lease.load()
        assert not lease.interrupted  # the save cleared the marker
    with storage.refresh_lease(10) as lease:  # a holder that never sent leaves no marker
        lease.load()
    with storage.refresh_lease(10) as lease:
        lease.load()
        assert not lease.interrupted


def test_waiter_takes_the_lease_as_soon_as_it_is_released(make: Callable[..., RedisStorage]) -> None:
    holder, waiter = make(), make()
    took: list[float] = []
    entered = threading.Event()

    def wait() -> None:
        entered.wait(10)
        with waiter.refresh_lease(10):
            took.append(time.monotonic())

    thread = threading.Thread(target=wait)
    with holder.refresh_lease(10):
        thread.start()
        entered.set()
        time.sleep(0.2)
        released = time.monotonic()
    thread.join(15)
    assert not thread.is_alive()
    assert took
    assert took[0] - released < 1.0


def test_waiters_behind_a_crashed_holder_wait_for_the_next_holders_refresh(
    make: Callable[..., RedisStorage],
) -> None:
    """A crashed holder's lease runs out after its timeout; the waiter that takes it then refreshes
    (here: holds it half a lease), and the other waiter, queued just after the crash, still gets
    it. Waiting one lease only, that waiter gave up while the first refreshed."""
    lease = 2.0  # the margins either side are half a lease: 1 s, for a loaded machine
    crashed = make().refresh_lease(lease)
    crashed.__enter__()  # never released: its holder "died"
    took: list[float] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            with make().refresh_lease(lease):
                took.append(time.monotonic())
                if len(took) == 1:  # the first to get it refreshes; which one polls first varies
                    time.sleep(0.5 * lease)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    waiters = [threading.Thread(target=take) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(10)
    assert not errors, errors
    assert len(took) == 2
    assert took[1] - took[0] >= 0.45 * lease  # the second waited for the first one's refresh


# -- failures and arguments --------------------------------------------------------------------


def test_unreachable_redis_is_a_clear_storage_error(key: str) -> None:
    port = free_port()  # nothing listens there
    storage = RedisStorage(f"redis://:hunter2-password@127.0.0.1:{port}/0", key=key)
    try:
        started = time.monotonic()
        for operation in (storage.load, lambda: storage.save(token()), storage.delete):
            with pytest.raises(
                TokenStorageError, match=rf"cannot \w+ Redis key '{key}' at redis://:\*\*\*@127"
            ) as info:
                operation()
            assert "hunter2" not in str(info.value)
        with pytest.raises(TokenStorageError, match="refresh lease"):
            storage.refresh_lease(5).__enter__()
        assert time.monotonic() - started < 30
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("target", "options", "error", "match"),
    [
        ("http://127.0.0.1:6379", {}, ValueError, "redis://, rediss:// or unix://"),
        ("127.0.0.1:6379", {}, ValueError, "redis://"),
        ("redis://127.0.0.1:notaport/0", {}, ValueError, "not a usable Redis URL|redis://"),
        ("redis://127.0.0.1/0", {"key": ""}, ValueError, "key must be a non-empty string"),
        ("redis://127.0.0.1/0", {"key": 5}, ValueError, "key must be a non-empty string"),
        ("redis://127.0.0.1/0", {"lease_margin": -1}, ValueError, "lease_margin"),
        ("redis://127.0.0.1/0", {"lease_margin": float("nan")}, ValueError, "lease_margin"),
        ("redis://127.0.0.1/0", {"min_replicas": -1}, ValueError, "min_replicas"),
        ("redis://127.0.0.1/0", {"min_replicas": True}, ValueError, "min_replicas"),
        ("redis://127.0.0.1/0", {"min_replicas": 1.0}, ValueError, "min_replicas"),
        ("redis://127.0.0.1/0", {"replica_timeout": 0}, ValueError, "replica_timeout"),
        ("redis://127.0.0.1/0", {"replica_timeout": float("inf")}, ValueError, "replica_timeout"),
        ("redis://127.0.0.1/0", {"replica_timeout": "1"}, ValueError, "replica_timeout"),
        (object(), {}, TypeError, "redis.Redis client or a redis:// URL"),
    ],
)
def test_bad_arguments(target: Any, options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RedisStorage(target, **{"key": "test-api:bad-arguments", **options})


def test_the_key_has_no_default() -> None:
    """Two programs that both left the key out would share one record and sign each other out."""
    with pytest.raises(TypeError, match="key"):
        RedisStorage("redis://127.0.0.1:6379/0")  # type: ignore[call-arg]


def test_bad_lease_timeout(make: Callable[..., RedisStorage]) -> None:
    for bad in (0, -1, float("inf"), "5", True):
        with pytest.raises(ValueError, match="lease timeout"):
            make().refresh_lease(bad)  # type: ignore[arg-type]


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"pip install requests-tokenrefresh\[redis\]"):
        RedisStorage("redis://127.0.0.1:6379/0", key="test-api:no-redis")
    assert "requests-tokenrefresh[redis]" in INSTALL_HELP


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret-pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://alice:s3cret-pw@127.0.0.1:6379/0", "redis://alice:***@127.0.0.1:6379/0"),
        ("rediss://alice:s3cret-pw@cache.example.com:6380/2", "rediss://alice:***@cache.example.com:6380/2"),
        ("unix:///run/redis.sock?db=1&password=s3cret-pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_repr_hides_the_password(url: str, shown: str) -> None:
    storage = RedisStorage(url, key="example-api:alice")
    try:
        assert repr(storage) == f"RedisStorage({shown!r}, key='example-api:alice')"
        assert "s3cret" not in repr(storage)
    finally:
        storage.close()


def test_repr_of_a_client_storage(make: Callable[..., RedisStorage], redis_server: RedisServer) -> None:
    c = redis_server.client(password=None)
    try:
        assert repr(make(c, key="k")) == f"RedisStorage('redis://127.0.0.1:{redis_server.port}/0', key='k')"
    finally:
        c.close()


# -- with the adapter --------------------------------------------------------------------------


def _adapter_session(srv: AuthServer, storage: RedisStorage, **options: Any) -> tuple[Any, Any]:
    import requests

    from requests_tokenrefresh import TokenRefreshAdapter

    adapter = TokenRefreshAdapter(storage, token_url=srv.token_url, pool_maxsize=32, **options)
    session = requests.Session()
    session.mount(srv.url + "/", adapter)
    return session, adapter


def test_adapters_over_one_record_refresh_once(
    make: Callable[..., RedisStorage], run_threads: Callable[..., None], expired: Callable[..., Token]
) -> None:
    """Two adapters (two "hosts" in one process) x 12 threads, an expired token: one refresh."""
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = make()
        storage.save(expired(srv.issue()))
        sessions = [_adapter_session(srv, make())[0] for _ in range(2)]
        statuses: list[int] = []

        def send(i: int) -> None:
            statuses.append(sessions[i % 2].get(srv.url + "/api/data", timeout=30).status_code)

        run_threads(24, send, timeout=60)
        assert statuses == [200] * 24
        assert srv.refresh_calls == 1
        assert not srv.revoked
        assert storage.load().refresh_token == srv._families[1].current_refresh  # type: ignore[union-attr]
        presented = [e["refresh_token"] for e in srv.token_log]
        assert len(presented) == len(set(presented))


def test_steady_state_sends_no_redis_command(
    make: Callable[..., RedisStorage], client: Any, redis_server: RedisServer
) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        make().save(Token.from_response(srv.issue()))
        session, _ = _adapter_session(srv, make())
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200  # loads the token
        before = _commands(client)
        for _ in range(50):
            assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
        assert _commands(client) - before == 1  # the INFO call itself


def test_redis_down_a_valid_token_keeps_working(tmp_path: Path, key: str) -> None:
    with RedisServer(tmp_path / "redis") as own, AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = RedisStorage(own.url, key=key)
        try:
            storage.save(Token.from_response(srv.issue()))
            session, _ = _adapter_session(srv, storage)
            assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
            own.stop()
            for _ in range(5):
                assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
            assert srv.refresh_calls == 0
        finally:
            storage.close()


def _commands(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


# -- faults at the steps of the refresh protocol --------------------------------------------------


def _current_refresh(srv: AuthServer) -> str:
    return srv._families[1].current_refresh


def test_a_redis_outage_at_the_save_keeps_the_rotated_token(tmp_path: Path, key: str, expired: Any) -> None:
    """Step "save attempted", fault "storage unreachable for 1.2 s": the save is retried, not dropped.

    The lease's extension between two tries fails too while Redis is down; that was taken for the
    end of the refresh, and the rotated token was thrown away (the next refresh spent the old one).
    """
    with RedisServer(tmp_path / "aof", appendonly=True) as own, AuthServer(ttl=3600) as srv:
        storage = RedisStorage(own.url, key=key)
        try:
            storage.save(expired(srv.issue()))
            session, _ = _adapter_session(srv, storage, refresh_timeout=15)
            srv.hold_refresh()
            answers: list[Any] = []
            sender = threading.Thread(target=lambda: answers.append(session.get(srv.url + "/api/data", timeout=60)))
            sender.start()
            wait_for(lambda: srv.refresh_calls == 1, 15, "the refresh request")
            own.stop()  # Redis is gone between the token endpoint's answer and the save
            srv.release_refresh()
            time.sleep(1.2)
            own.start()  # the same port, the same data (append-only file)
            sender.join(60)
            assert not sender.is_alive()
            assert [a.status_code for a in answers] == [200]
            assert storage.load().refresh_token == _current_refresh(srv)  # type: ignore[union-attr]
            assert srv.refresh_calls == 1
            assert not srv.revoked
        finally:
            storage.close()


@pytest.mark.parametrize("loss", ["restart", "flushdb"])
def test_redis_that_lost_its_data_signs_nobody_out(loss: str, tmp_path: Path, key: str) -> None:
    """Step "first read inside the lease", fault "storage restarted empty": restore, never sign out.

    A sign-out bumps the version; a restart without persistence or FLUSHDB loses the counter too.
    The first host to refresh restores the token it holds and refreshes it; the other adopts.
    """
    with RedisServer(tmp_path / "redis") as own, AuthServer(ttl=3600) as srv:
        first, second = RedisStorage(own.url, key=key), RedisStorage(own.url, key=key)
        try:
            first.save(Token.from_response(srv.issue()))
            ended: list[Any] = []
            hosts = [_adapter_session(srv, s, on_session_expired=ended.append) for s in (first, second)]
            for session, _ in hosts:
                assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
            if loss == "restart":
                own.restart()
            else:
                with own.client() as c:
                    c.flushdb()
            hosts[0][1].refresh()  # as after a 401 or at expiry
            hosts[1][1].refresh()  # finds the restored, refreshed record: adopts it
            for session, _ in hosts:
                assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
            assert ended == []
            assert srv.refresh_calls == 1
            assert not srv.revoked
            assert first.load().refresh_token == _current_refresh(srv)  # type: ignore[union-attr]
        finally:
            first.close()
            second.close()


def test_a_sign_out_still_ends_the_session(make: Callable[..., RedisStorage]) -> None:
    """The other side of Rule 5: a deleted record with a bumped version is a sign-out."""
    with AuthServer(ttl=3600) as srv:
        storage = make()
        storage.save(Token.from_response(srv.issue()))
        ended: list[Any] = []
        session, adapter = _adapter_session(srv, storage, on_session_expired=ended.append)
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
        make().delete()  # `requests-tokenrefresh logout` on another host
        with pytest.raises(SessionExpiredError, match=r"no_token|deleted"):
            adapter.refresh()
        assert len(ended) == 1
        assert srv.refresh_calls == 0


def test_no_key_has_a_ttl_so_no_eviction_policy_can_take_one(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    storage = make()
    storage.save(token())
    with storage.refresh_lease(30) as lease:
        lease.load()
        lease.check(5)
        names = [key, *(f"{key}:{suffix}" for suffix in ("version", "lease", "fence", "inflight"))]
        assert all(client.exists(name) for name in names)
        assert [client.ttl(name) for name in names] == [-1] * 5


def test_a_server_that_may_evict_any_key_is_refused(tmp_path: Path, key: str) -> None:
    with RedisServer(tmp_path / "redis") as own:
        with own.client() as c:
            c.config_set("maxmemory-policy", "allkeys-lru")
        storage = RedisStorage(own.url, key=key)
        try:
            for operation in (
                storage.load,
                lambda: storage.save(token()),
                lambda: storage.refresh_lease(5).__enter__(),
            ):
                with pytest.raises(TokenStorageError, match=r"maxmemory-policy allkeys-lru.*noeviction or volatile"):
                    operation()
        finally:
            storage.close()
        with own.client() as c:
            c.config_set("maxmemory-policy", "volatile-lru")
        storage = RedisStorage(own.url, key=key)
        try:
            storage.save(token())  # a cache's policy that never evicts keys without a TTL
        finally:
            storage.close()


def test_a_server_that_denies_config_is_used_with_a_warning(
    redis_server: RedisServer, client: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"no-config-{uuid.uuid4().hex[:8]}"
    client.acl_setuser(user, enabled=True, passwords=["+pw-for-test"], keys=["*"], commands=["+@all", "-config"])
    storage = RedisStorage(f"redis://{user}:pw-for-test@127.0.0.1:{redis_server.port}/0", key=key)
    try:
        storage.save(token())
        assert storage.load() is not None
        assert "cannot read the eviction policy" in caplog.text
    finally:
        storage.close()
        client.acl_deluser(user)


def test_after_a_sign_out_a_request_costs_one_read_not_a_lease(make: Callable[..., RedisStorage], client: Any) -> None:
    with AuthServer(ttl=3600) as srv:
        storage = make()
        storage.save(Token.from_response(srv.issue()))
        session, _ = _adapter_session(srv, make())
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
        srv.revoke_families()
        srv.revoke_access_tokens()
        with pytest.raises(SessionExpiredError):
            session.get(srv.url + "/api/data", timeout=30)
        before = _commands(client)
        for _ in range(10):
            with pytest.raises(SessionExpiredError, match="no token is stored"):
                session.get(srv.url + "/api/data", timeout=30)
        # One read each (three GETs in one round trip), and the INFO call itself. Taking the lease
        # as well cost 14 commands a request.
        assert _commands(client) - before == 10 * 3 + 1


def test_a_refresh_that_ends_without_a_token_leaves_no_in_flight_marker(
    make: Callable[..., RedisStorage], client: Any, key: str, expired: Any
) -> None:
    """Step "request sent", fault "token endpoint answers 5xx" (then an error): nothing to wait for.

    The marker tells a later holder that an answer may still be stored; a holder that gave up has
    none to store, and the next holder waited refresh_timeout for nothing.
    """
    with AuthServer(ttl=3600) as srv:
        make().save(expired(srv.issue()))
        srv.canned.extend([Canned(503, {"error": "temporarily_unavailable"})] * 10)
        _, adapter = _adapter_session(srv, make(), refresh_timeout=1)
        with pytest.raises(RefreshError) as caught:
            adapter.refresh()
        assert caught.value.retryable
        assert srv.refresh_calls >= 1
        assert not client.exists(f"{key}:inflight")
        srv.canned.clear()
        _, other = _adapter_session(srv, make(), refresh_timeout=20)
        started = time.monotonic()
        other.refresh()
        assert time.monotonic() - started < 10  # no wait of refresh_timeout for an answer


class _FirstReadFails(RedisStorage):
    """A Redis blip at the first read (step "first load", fault "storage error once")."""

    failures = 1

    def load(self) -> Token | None:
        if self.failures:
            self.failures -= 1
            raise TokenStorageError("cannot read Redis key: ConnectionError (a blip)")
        return super().load()


def test_a_storage_error_at_the_first_read_is_no_sign_out(redis_server: RedisServer, key: str) -> None:
    with AuthServer(ttl=3600) as srv:
        RedisStorage(redis_server.url, key=key).save(Token.from_response(srv.issue()))
        storage = _FirstReadFails(redis_server.url, key=key)
        try:
            ended: list[Any] = []
            session, _ = _adapter_session(srv, storage, on_session_expired=ended.append)
            assert session.get(srv.url + "/api/data", timeout=30).status_code == 200  # read again in the lease
            assert storage.failures == 0
            assert ended == []
        finally:
            storage.close()


def test_close_puts_back_a_token_redis_lost_after_it_was_saved(make: Callable[..., RedisStorage], client: Any) -> None:
    """Step "lease released", fault "storage restarted empty": no later refresh will restore it if every host ends."""
    with AuthServer(ttl=3600) as srv:
        storage = make()
        storage.save(Token.from_response(srv.issue()))
        session, adapter = _adapter_session(srv, storage)
        assert session.get(srv.url + "/api/data", timeout=30).status_code == 200
        client.flushdb()
        adapter.close()
        restored = make().load()
        assert restored is not None
        assert restored.refresh_token == _current_refresh(srv)


# -- replicas (Rule 6; tests/storage/test_redis_failover.py has real ones) -----------------------


def test_a_server_without_replicas_is_written_without_wait(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    """The default asks the master for its replicas (INFO) and, with none, sends no WAIT."""
    storage = make()
    before = int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    storage.save(token(1))
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        lease.check(1)
        lease.save(token(2))
    assert int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) == before
    assert storage._replicas == 0


def test_a_write_no_replica_acknowledges_is_a_retryable_storage_error(
    make: Callable[..., RedisStorage], client: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``min_replicas=1`` on a master without one: each write reaches the master, then waits
    ``replica_timeout`` for an acknowledgement that cannot come, and raises TokenStorageError (not
    LeaseLostError: the adapter keeps the token and saves it again). The same save made again
    goes over the lease's own unacknowledged write."""
    storage = make(min_replicas=1, replica_timeout=0.05)
    with pytest.raises(TokenStorageError, match=r"did not acknowledge it within 0\.05s") as info:
        storage.save(token(1))
    assert type(info.value) is TokenStorageError
    assert json.loads(client.get(key))["access_token"].startswith("at-1-")  # on the master all the same
    new = token(2)
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        lease.check(1)  # the in-flight marker is not acknowledged either: logged, not refused
        assert "in-flight marker" in caplog.text
        for version in (2, 3):
            started = time.monotonic()
            with pytest.raises(TokenStorageError, match="WAIT") as info:
                lease.save(new)
            assert type(info.value) is TokenStorageError
            assert 0.05 <= time.monotonic() - started < 5
            assert int(client.get(f"{key}:version")) == version  # written again over its own write
    loaded = make(min_replicas=0).load()
    assert loaded is not None
    assert loaded.access_token == new.access_token


def test_a_conditional_save_over_a_record_that_went_back_is_written(
    make: Callable[..., RedisStorage], client: Any, key: str
) -> None:
    """Redis lost writes while the lease was held (a restart without its data, a failover to a
    replica that lacked them): the version is lower than the one the lease read. Nothing newer is
    there (a sign-out bumps the version), so the rotated token is written back, above every version
    seen, not refused as if another holder had written (which dropped it: the adapter then read an
    empty store as a sign-out)."""
    storage = make()
    storage.save(token(1))
    storage.save(token(2))
    new = token(3)
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        client.delete(key, f"{key}:version")  # FLUSHDB, for this record
        lease.save(new)
    assert int(client.get(f"{key}:version")) == 3  # above the 2 this storage saw
    loaded = make().load()
    assert loaded is not None
    assert loaded.access_token == new.access_token
    with storage.refresh_lease(10) as lease:
        assert lease.load() is not None
        storage.delete()  # a sign-out elsewhere: the version goes up
        with pytest.raises(LeaseLostError, match="written by another holder"):
            lease.save(token(4))
