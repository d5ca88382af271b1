"""The coordinator's rules, with fake storage and refresh functions and exact counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from requests_tokenrefresh import (
    RefreshError,
    RefreshLease,
    SessionExpiredError,
    Token,
    TokenStorage,
    TokenStorageError,
)
from requests_tokenrefresh._coordinator import Coordinator

NOW = 1_000_000.0


def token(name: str, expires_in: float = 3600, refresh: str | None = None) -> Token:
    return Token(f"at-{name}", refresh or f"rt-{name}", expires_at=NOW + expires_in, obtained_at=NOW)


class Fakes(TokenStorage):
    """Storage and grant doubles that count calls; ``gate`` holds refreshes while cleared."""

    def __init__(self, stored: Token | None, refresh: Callable[[Token], Token]) -> None:
        self.stored = stored
        self.refresh_fn = refresh
        self.loads = self.saves = self.deletes = self.refreshes = 0
        self.expired: list[SessionExpiredError] = []
        self.gate = threading.Event()
        self.gate.set()
        self.now = NOW

    def load(self) -> Token | None:
        self.loads += 1
        return self.stored

    def save(self, t: Token) -> None:
        self.saves += 1
        self.stored = t

    def delete(self) -> None:
        self.deletes += 1
        self.stored = None

    def refresh(self, t: Token, seconds_left: float) -> Token:
        self.refreshes += 1
        assert self.gate.wait(10)
        return self.refresh_fn(t)

    def coordinator(self, **options: Any) -> Coordinator:
        options.setdefault("leeway", 60)
        options.setdefault("wait_timeout", 10)
        options.setdefault("refresh_timeout", 5)
        options.setdefault("lease_timeout", 5)
        return Coordinator(
            self,
            self.refresh,
            clock=lambda: self.now,
            on_session_expired=self.expired.append,
            **options,
        )


def gather(count: int, fn: Callable[[], Token], run_threads: Any) -> list[Any]:
    results: list[Any] = []

    def call(i: int) -> None:
        try:
            results.append(fn())
        except Exception as exc:
            results.append(exc)

    run_threads(count, call)
    return results


def test_waiters_use_the_refreshed_token_even_if_it_is_already_expired(run_threads: Any) -> None:
    fresh_but_short = token("new", expires_in=-5)  # the refresh took longer than the new lifetime
    fakes = Fakes(token("old", expires_in=-1), lambda t: fresh_but_short)
    coordinator = fakes.coordinator()
    results = gather(32, coordinator.token_for_request, run_threads)
    assert results == [fresh_but_short] * 32
    assert fakes.refreshes == 1  # one refresh, never a refresh loop


def test_a_failed_refresh_is_handed_to_every_waiter(run_threads: Any) -> None:
    error = RefreshError("invalid_client: bad secret", error="invalid_client")

    def fail(t: Token) -> Token:
        raise error

    fakes = Fakes(token("old", expires_in=-1), fail)
    coordinator = fakes.coordinator()
    fakes.gate.clear()
    threading.Timer(0.2, fakes.gate.set).start()
    results = gather(16, coordinator.token_for_request, run_threads)
    assert results == [error] * 16
    assert fakes.refreshes == 1
    assert fakes.stored is not None
    assert fakes.deletes == 0


def test_a_rejected_refresh_token_ends_the_session_once(run_threads: Any) -> None:
    def reject(t: Token) -> Token:
        raise SessionExpiredError("invalid_grant: revoked")

    fakes = Fakes(token("old", expires_in=-1), reject)
    coordinator = fakes.coordinator()
    results = gather(16, coordinator.token_for_request, run_threads)
    assert all(isinstance(r, SessionExpiredError) for r in results)
    assert len(fakes.expired) == 1
    assert fakes.deletes == 1
    assert fakes.refreshes == 1
    assert fakes.stored is None


def test_a_newer_token_in_the_store_is_adopted_instead_of_signing_out() -> None:
    newer = token("sibling")
    fakes = Fakes(token("old", expires_in=-1), lambda t: t)

    def reject(t: Token) -> Token:
        fakes.stored = newer  # another process (or a new login) replaced the token meanwhile
        raise SessionExpiredError("invalid_grant: already used")

    fakes.refresh_fn = reject
    coordinator = fakes.coordinator()
    assert coordinator.token_for_request() == newer
    assert fakes.expired == []
    assert fakes.deletes == 0


def test_a_record_that_cannot_be_read_after_a_rejection_is_not_deleted(caplog: pytest.LogCaptureFixture) -> None:
    """The session ends (the server said no), but what is stored may be a newer login: it stays."""

    def reject(t: Token) -> Token:
        raise SessionExpiredError("invalid_grant: revoked")

    fakes = Fakes(token("old", expires_in=-1), reject)
    coordinator = fakes.coordinator()
    loads = fakes.loads
    original = fakes.load

    def unreadable_inside_the_lease() -> Token | None:
        if fakes.loads >= loads + 2:  # the first load and the read in the lease work; the one after the rejection fails
            raise TokenStorageError("the record does not decrypt with the keys this host has")
        return original()

    fakes.load = unreadable_inside_the_lease  # type: ignore[method-assign]
    with pytest.raises(SessionExpiredError):
        coordinator.token_for_request()
    assert fakes.deletes == 0
    assert len(fakes.expired) == 1
    assert "left as it is" in caplog.text


def test_sign_out_still_happens_when_delete_fails(caplog: pytest.LogCaptureFixture) -> None:
    def reject(t: Token) -> Token:
        raise SessionExpiredError("invalid_grant: revoked")

    fakes = Fakes(token("old", expires_in=-1), reject)

    def broken_delete() -> None:
        raise TokenStorageError("keyring locked")

    coordinator = fakes.coordinator()
    fakes.delete = broken_delete  # type: ignore[method-assign]
    with pytest.raises(SessionExpiredError):
        coordinator.token_for_request()
    assert len(fakes.expired) == 1
    assert "could not delete the stored token" in caplog.text


def test_a_hung_flight_is_retired_after_the_wait_timeout(run_threads: Any) -> None:
    fakes = Fakes(token("old", expires_in=-1), lambda t: token("new"))
    coordinator = fakes.coordinator(wait_timeout=0.3)
    fakes.gate.clear()  # the first refresh hangs
    leader = threading.Thread(target=lambda: gather(1, coordinator.token_for_request, run_threads), daemon=True)
    leader.start()
    while fakes.refreshes == 0:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(RefreshError, match="refresh_timeout") as caught:
        coordinator.token_for_request()
    assert caught.value.retryable
    assert time.monotonic() - started < 5
    # The next caller does not wait for the retired flight: it starts a new one, which refreshes
    # or adopts what the released refresh stored meanwhile (no third refresh either way).
    fakes.gate.set()
    assert coordinator.token_for_request().access_token == "at-new"
    leader.join(10)
    assert fakes.refreshes in (1, 2)


def test_storage_error_on_first_load_is_raised_and_the_next_call_loads_again() -> None:
    fakes = Fakes(token("old"), lambda t: t)
    calls = 0

    def flaky_load() -> Token | None:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the first read, and the second inside the lease
            raise TokenStorageError("keyring locked")
        return fakes.stored

    coordinator = fakes.coordinator()
    fakes.load = flaky_load  # type: ignore[method-assign]
    with pytest.raises(TokenStorageError):
        coordinator.token_for_request()
    assert coordinator.token_for_request().access_token == "at-old"


@pytest.mark.parametrize("first_read", ["empty", "garbled"])
def test_a_first_load_that_finds_nothing_reads_again_inside_the_lease(first_read: str) -> None:
    # keyrings.alt truncates its file before rewriting it: a reader in between sees nothing.
    fakes = Fakes(token("old"), lambda t: t)
    reads: list[str] = []
    leased = threading.Event()

    class Lease(RefreshLease):
        def __enter__(self) -> RefreshLease:
            leased.set()
            return self

    def racing_load() -> Token | None:
        reads.append("inside" if leased.is_set() else "outside")
        if not leased.is_set():
            if first_read == "garbled":
                raise TokenStorageError("not valid JSON at character 0")
            return None
        return fakes.stored

    fakes.load = racing_load  # type: ignore[method-assign]
    fakes.refresh_lease = lambda timeout: Lease(fakes)  # type: ignore[method-assign]
    coordinator = fakes.coordinator()
    assert coordinator.token_for_request().access_token == "at-old"  # not "no token is stored"
    assert reads == ["outside", "inside"]
    assert fakes.expired == []


def test_steady_state_reads_the_store_once() -> None:
    fakes = Fakes(token("old"), lambda t: t)
    coordinator = fakes.coordinator()
    for _ in range(100):
        coordinator.token_for_request()
    assert fakes.loads == 1
    assert fakes.refreshes == 0
    assert fakes.saves == 0


def test_requests_wait_for_a_forced_refresh_instead_of_sending_a_rejected_token() -> None:
    old = token("old")
    fakes = Fakes(old, lambda t: token("new"))
    coordinator = fakes.coordinator()
    assert coordinator.token_for_request() == old
    fakes.gate.clear()
    rejected = threading.Thread(target=coordinator.token_after_rejection, args=(old,), daemon=True)
    rejected.start()
    while fakes.refreshes == 0:
        time.sleep(0.01)
    threading.Timer(0.2, fakes.gate.set).start()
    assert coordinator.token_for_request().access_token == "at-new"  # waited, did not get the old one
    rejected.join(10)
    assert fakes.refreshes == 1


def test_stale_window_is_at_most_half_the_lifetime() -> None:
    # A 60 s token with leeway 600: the window is 30 s, not "always refresh".
    short = Token("at-short", "rt", expires_at=NOW + 60, obtained_at=NOW)
    fakes = Fakes(short, lambda t: token("new"))
    coordinator = fakes.coordinator(leeway=600)
    fakes.now = NOW + 29
    assert coordinator.token_for_request() == short
    assert fakes.refreshes == 0
    fakes.now = NOW + 31
    assert coordinator.token_for_request() == short  # the refresh starts in the background
    deadline = time.monotonic() + 10
    while coordinator.current() == short and time.monotonic() < deadline:
        time.sleep(0.01)
    assert coordinator.token_for_request().access_token == "at-new"
    assert fakes.refreshes == 1


class CountingCondition:
    """The coordinator's Condition, counting how often it is taken and whether this thread holds it."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond, self.entries, self.depth = cond, 0, 0

    def __enter__(self) -> bool:
        self.entries += 1
        entered = self.cond.__enter__()
        self.depth += 1
        return entered

    def __exit__(self, *exc: Any) -> None:
        self.depth -= 1
        self.cond.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cond, name)


def test_in_the_refresh_window_requests_take_no_lock_while_the_background_refresh_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fakes = Fakes(token("old", expires_in=30), lambda t: token("new"))  # a 15 s refresh window
    coordinator = fakes.coordinator()
    assert coordinator.token_for_request().access_token == "at-old"  # loaded
    counting = CountingCondition(coordinator._cond)
    coordinator._cond = counting  # type: ignore[assignment]
    held_at_start: list[bool] = []
    start = threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        if thread.name == "token-refresh":
            held_at_start.append(counting.depth > 0)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    fakes.gate.clear()  # the background refresh waits at the server
    fakes.now = NOW + 20  # 10 s left: in the window
    assert coordinator.token_for_request().access_token == "at-old"  # starts the background refresh
    assert held_at_start == [False]  # started after the lock was released
    taken = counting.entries
    for left in (9, 5, 0.5):  # still valid: sent with, and no lock taken
        fakes.now = NOW + 30 - left
        assert coordinator.token_for_request().access_token == "at-old"
    assert counting.entries == taken
    fakes.gate.set()
    coordinator.close(10)
    assert coordinator.token_for_request().access_token == "at-new"
    assert fakes.refreshes == 1


def test_replacement_never_starts_a_refresh() -> None:
    old = token("old")
    fakes = Fakes(old, lambda t: token("new"))
    coordinator = fakes.coordinator()
    assert coordinator.token_for_request() == old
    assert coordinator.replacement(old) is None  # still current, nothing under way
    assert fakes.refreshes == 0
    newer = coordinator.token_after_rejection(old)
    assert coordinator.replacement(old) == newer  # replaced meanwhile: use the newer one
    assert fakes.refreshes == 1


def test_replacement_waits_for_a_refresh_under_way() -> None:
    old = token("old")
    fakes = Fakes(old, lambda t: token("new"))
    coordinator = fakes.coordinator()
    coordinator.token_for_request()
    fakes.gate.clear()
    refreshing = threading.Thread(target=coordinator.token_after_rejection, args=(old,), daemon=True)
    refreshing.start()
    while fakes.refreshes == 0:
        time.sleep(0.01)
    threading.Timer(0.2, fakes.gate.set).start()
    replaced = coordinator.replacement(old)
    assert replaced is not None
    assert replaced.access_token == "at-new"
    refreshing.join(10)
    assert fakes.refreshes == 1
