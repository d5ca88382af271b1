"""refresh_with_retries: transient failures are retried with bounded backoff inside the deadline."""

from __future__ import annotations

import itertools
import types

import pytest
import requests

from requests_tokenrefresh import (
    InsecureTransportError,
    RefreshError,
    SessionExpiredError,
    Token,
    TokenStorageError,
    _retry,
)
from requests_tokenrefresh._retry import BACKOFF_BASE, BACKOFF_CAP, MAX_ATTEMPTS, refresh_with_retries

OLD = Token("at-old", "rt-old")
NEW = Token("at-new", "rt-new")


class FakeTime:
    """A monotonic clock that moves only when the fake sleep (or a test) moves it."""

    def __init__(self, start: float = 500.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class Attempt:
    """Plays ``outcomes`` in order: an exception is raised, a token returned; each call costs ``cost`` s."""

    def __init__(self, clock: FakeTime, *outcomes: Token | BaseException, cost: float = 0.0) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.cost = cost
        self.calls: list[tuple[Token, float]] = []

    def __call__(self, token: Token, seconds_left: float) -> Token:
        self.calls.append((token, seconds_left))
        self.clock.now += self.cost
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def transient(retry_after: float | None = None) -> RefreshError:
    return RefreshError(
        "http_503 (HTTP 503 from the token endpoint)", error="http_503", retryable=True, retry_after=retry_after
    )


def run(attempt: Attempt, clock: FakeTime, timeout: float = 30.0) -> Token:
    return refresh_with_retries(attempt, OLD, timeout=timeout, sleep=clock.sleep, monotonic=clock.monotonic)


def test_success_on_the_first_try() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, NEW)

    assert run(attempt, clock, timeout=30.0) is NEW

    assert attempt.calls == [(OLD, 30.0)]
    assert clock.sleeps == []


def test_transient_error_then_success() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, transient(), NEW)

    assert run(attempt, clock) is NEW

    assert len(attempt.calls) == 2
    assert [token for token, _ in attempt.calls] == [OLD, OLD]
    assert len(clock.sleeps) == 1
    assert BACKOFF_BASE * 0.5 <= clock.sleeps[0] <= BACKOFF_BASE


def test_backoff_delays_grow_with_jitter_and_stay_capped() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, *(transient() for _ in range(MAX_ATTEMPTS - 1)), NEW)

    assert run(attempt, clock) is NEW

    assert len(attempt.calls) == MAX_ATTEMPTS
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1
    for number, delay in enumerate(clock.sleeps):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**number)
        assert ceiling * 0.5 <= delay <= ceiling
    assert clock.sleeps == sorted(clock.sleeps)


@pytest.mark.parametrize(("jitter", "factor"), [("high", 1.0), ("low", 0.5)])
def test_backoff_doubles_up_to_the_cap(monkeypatch: pytest.MonkeyPatch, jitter: str, factor: float) -> None:
    # Pin the jitter to one end of its range and allow enough attempts to reach the cap.
    pick = (lambda low, high: high) if jitter == "high" else (lambda low, high: low)
    monkeypatch.setattr(_retry, "random", types.SimpleNamespace(uniform=pick))
    monkeypatch.setattr(_retry, "MAX_ATTEMPTS", 9)
    clock = FakeTime()
    attempt = Attempt(clock, *(transient() for _ in range(8)), NEW)

    assert run(attempt, clock, timeout=1000.0) is NEW

    expected = [min(BACKOFF_CAP, BACKOFF_BASE * 2**n) * factor for n in range(8)]
    assert clock.sleeps == pytest.approx(expected)
    assert max(clock.sleeps) == pytest.approx(BACKOFF_CAP * factor)
    assert all(d <= BACKOFF_CAP for d in clock.sleeps)


def test_retry_after_is_honoured_exactly() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, transient(retry_after=2.5), NEW)

    assert run(attempt, clock, timeout=30.0) is NEW

    assert clock.sleeps == [2.5]
    assert [left for _, left in attempt.calls] == [30.0, 27.5]


def test_retry_after_of_zero_retries_without_waiting() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, transient(retry_after=0.0), NEW)

    assert run(attempt, clock) is NEW

    assert clock.sleeps == [0.0]


def test_retry_after_longer_than_the_time_left_gives_up_at_once() -> None:
    clock = FakeTime()
    error = transient(retry_after=60.0)
    attempt = Attempt(clock, error, NEW)

    with pytest.raises(RefreshError) as info:
        run(attempt, clock, timeout=10.0)

    assert info.value is error
    assert info.value.retryable is True
    assert len(attempt.calls) == 1
    assert clock.sleeps == []


def test_backoff_longer_than_the_time_left_gives_up() -> None:
    # The attempt used 9.95 s of 10: even the shortest backoff (BACKOFF_BASE / 2) does not fit.
    clock = FakeTime()
    error = transient()
    attempt = Attempt(clock, error, NEW, cost=10.0 - BACKOFF_BASE * 0.25)

    with pytest.raises(RefreshError) as info:
        run(attempt, clock, timeout=10.0)

    assert info.value is error
    assert len(attempt.calls) == 1
    assert clock.sleeps == []


def test_at_most_max_attempts_then_the_last_error() -> None:
    clock = FakeTime()
    errors = [transient() for _ in range(MAX_ATTEMPTS + 2)]
    attempt = Attempt(clock, *errors)

    with pytest.raises(RefreshError) as info:
        run(attempt, clock, timeout=1000.0)

    assert len(attempt.calls) == MAX_ATTEMPTS
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1
    assert info.value is errors[MAX_ATTEMPTS - 1]
    assert info.value.retryable is True


@pytest.mark.parametrize(
    "error",
    [
        RefreshError("invalid_client: bad secret", error="invalid_client"),
        RefreshError("invalid_token_response: no access_token", error="invalid_token_response"),
        SessionExpiredError("invalid_grant: expired"),
        SessionExpiredError("no refresh token is stored: log in again", error="no_refresh_token"),
    ],
    ids=["invalid_client", "invalid_token_response", "invalid_grant", "no_refresh_token"],
)
def test_permanent_errors_are_raised_at_once(error: RefreshError) -> None:
    clock = FakeTime()
    attempt = Attempt(clock, error, NEW)

    with pytest.raises(RefreshError) as info:
        run(attempt, clock)

    assert info.value is error
    assert len(attempt.calls) == 1
    assert clock.sleeps == []


def test_other_exceptions_propagate_at_once() -> None:
    clock = FakeTime()
    error = ValueError("a bug in a refresher")
    attempt = Attempt(clock, error, NEW)

    with pytest.raises(ValueError, match="a bug in a refresher") as info:
        run(attempt, clock)

    assert info.value is error
    assert len(attempt.calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: requests.ConnectionError("refused"), "connection_error"),
        (lambda: requests.exceptions.SSLError("handshake"), "connection_error"),
        (lambda: requests.Timeout("slow"), "timeout"),
        (lambda: requests.exceptions.ReadTimeout("read"), "timeout"),
        (lambda: requests.exceptions.ConnectTimeout("connect"), "timeout"),
        (lambda: requests.exceptions.ChunkedEncodingError("cut off"), "connection_error"),
    ],
    ids=["ConnectionError", "SSLError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError"],
)
def test_network_errors_become_retryable_refresh_errors(make: object, code: str) -> None:
    clock = FakeTime()
    originals = [make() for _ in range(MAX_ATTEMPTS)]  # type: ignore[operator]
    attempt = Attempt(clock, *originals)

    with pytest.raises(RefreshError) as info:
        run(attempt, clock, timeout=1000.0)

    exc = info.value
    assert type(exc) is RefreshError
    assert exc.error == code
    assert exc.retryable is True
    # The cause is the last error, scrubbed of the request it failed on (it holds the refresh token).
    assert type(exc.__cause__) is type(originals[-1])
    assert exc.__cause__.args == originals[-1].args
    assert exc.__cause__.request is None
    assert len(attempt.calls) == MAX_ATTEMPTS
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1


def test_network_error_then_success() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, requests.ConnectionError("reset"), requests.Timeout("slow"), NEW)

    assert run(attempt, clock) is NEW

    assert len(attempt.calls) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.MissingSchema("Invalid URL 'token': No scheme supplied"),
        requests.exceptions.InvalidURL("bad url"),
        requests.exceptions.InvalidHeader("bad header value"),
        TokenStorageError("the keyring is locked"),
        InsecureTransportError("token over plain http"),
    ],
    ids=["MissingSchema", "InvalidURL", "InvalidHeader", "TokenStorageError", "InsecureTransportError"],
)
def test_permanent_request_exceptions_are_not_retried(error: requests.RequestException) -> None:
    clock = FakeTime()
    attempt = Attempt(clock, error, error, error, error, NEW)

    with pytest.raises(requests.RequestException) as info:
        run(attempt, clock)

    assert info.value is error
    assert len(attempt.calls) == 1
    assert clock.sleeps == []


def test_attempt_gets_a_positive_shrinking_time_budget() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, *(transient() for _ in range(MAX_ATTEMPTS - 1)), NEW, cost=1.0)

    assert run(attempt, clock, timeout=20.0) is NEW

    lefts = [left for _, left in attempt.calls]
    assert lefts[0] == 20.0
    assert all(left > 0 for left in lefts)
    assert all(later < earlier for earlier, later in itertools.pairwise(lefts))
    # Each budget is exactly what the deadline leaves after the earlier attempts and sleeps.
    for number, left in enumerate(lefts):
        assert left == pytest.approx(20.0 - number * 1.0 - sum(clock.sleeps[:number]))


def test_attempt_gets_a_positive_budget_even_with_no_time() -> None:
    clock = FakeTime()
    attempt = Attempt(clock, NEW)

    assert run(attempt, clock, timeout=0.0) is NEW

    assert attempt.calls[0][1] > 0


def test_the_chained_network_error_does_not_carry_the_token_request() -> None:
    clock = FakeTime()
    request = requests.Request("POST", "https://auth.example/token", data={"refresh_token": "rt-secret"}).prepare()
    error = requests.ConnectionError("refused", request=request)
    attempt = Attempt(clock, *([error] * MAX_ATTEMPTS))
    with pytest.raises(RefreshError) as info:
        run(attempt, clock, timeout=1000.0)
    cause = info.value.__cause__
    assert isinstance(cause, requests.ConnectionError)
    assert cause.request is None
    assert "rt-secret" not in repr(vars(cause))
