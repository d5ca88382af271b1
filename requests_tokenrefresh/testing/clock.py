"""FakeClock: a clock that moves only when the test moves it (see :mod:`requests_tokenrefresh._clock`)."""

from __future__ import annotations

import threading
import time

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when the test moves it; pass it as the adapter's ``clock=``.

    ::

        clock = FakeClock()
        adapter = TokenRefreshAdapter(storage, token_url=server.token_url, clock=clock)
        clock.advance(3600)   # the access token has expired, as far as the adapter knows

    It has the three clocks the adapter reads: wall time (:meth:`time`, and calling the clock:
    :attr:`now`), monotonic time (:meth:`monotonic`) and :meth:`sleep`, which returns at once
    and moves both by the time slept, as redis-py's ``FakeLockTime`` does. Tokens the adapter
    obtains count their ``expires_in`` from it, so they expire when it is moved past their
    lifetime, not in real time; retry pauses, save retries and their deadlines pass as soon as
    the adapter sleeps them. Waits for another thread of the process (one refresh for many
    threads) keep real time. It does not move :class:`AuthServer`'s clock: the server keeps
    real time. A :class:`~requests_tokenrefresh.RedisStorage` takes one too (``clock=``), for the
    wait for its lease.

    Args:
        start: the initial epoch seconds; the current time if None.

    Attributes:
        now (float): the current fake wall time; a test may set it directly (a clock jump,
            which monotonic time does not follow).
        slept (float): the seconds :meth:`sleep` has been asked for in all.

    .. versionadded:: 0.2
    """

    def __init__(self, start: float | None = None) -> None:
        self.now: float = time.time() if start is None else float(start)
        self.slept: float = 0.0
        self._monotonic = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return :attr:`now`."""
        return self.now

    def time(self) -> float:
        """Return :attr:`now`."""
        return self.now

    def monotonic(self) -> float:
        """Seconds that move only with :meth:`advance` and :meth:`sleep`."""
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` and return at once (after yielding to other threads)."""
        with self._lock:
            self.slept += max(seconds, 0.0)
        self.advance(max(seconds, 0.0))
        time.sleep(0)  # let other threads run, as a real sleep would

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (backward if negative) and return the new time.

        Monotonic time moves forward only.
        """
        with self._lock:
            self.now += seconds
            self._monotonic += max(seconds, 0.0)
            return self.now

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r})"
