"""The one source of time: wall time, monotonic time and sleep, injected where deadlines are kept.

Wall time (:meth:`Clock.time`) says when a token expires. Monotonic time and sleep bound and pace
the loops that wait for something outside this process: the retries of a refresh, the save
retried inside a lease, the wait for an interrupted holder's answer, the wait for a Redis lease.
A test passes one object with all three (:class:`~requests_tokenrefresh.testing.FakeClock`, whose
``sleep`` moves its time, as redis-py's ``FakeLockTime`` does), so a deadline or a retry interval
is tested without waiting for it. What waits on another thread of this process (a
``threading.Condition`` or ``Event``) keeps real time: a fake clock cannot wake it.
"""

from __future__ import annotations

import time as _time  # the class attributes below are named time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    """What the adapter asks of a clock.

    .. versionadded:: 0.2
    """

    def time(self) -> float:
        """Epoch seconds now."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for deadlines."""

    def sleep(self, seconds: float) -> None:
        """Pause this thread for ``seconds``."""


class SystemClock:
    """The :mod:`time` module's clocks."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)
    sleep = staticmethod(_time.sleep)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()


class _WallClock:
    """A plain callable of epoch seconds (what the adapter's ``clock=`` may be) with real deadlines."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.time = wall

    monotonic = staticmethod(_time.monotonic)
    sleep = staticmethod(_time.sleep)


def as_clock(clock: Clock | Callable[[], float]) -> Clock:
    """``clock`` as a :class:`Clock`: one already, or a callable returning epoch seconds."""
    if isinstance(clock, Clock):
        return clock
    return _WallClock(clock)
