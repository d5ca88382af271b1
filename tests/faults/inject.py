"""Where a fault goes in: wrappers around a storage and its lease that name each protocol step.

The coordinator makes one call per step of the refresh protocol (see ``matrix.STEPS``); the
wrappers here forward each call to the real storage or lease and hand it, under the step's name,
to an :class:`Injector`, which may run a fault before it (the storage goes down or is wiped),
instead of it (the call fails once, for real where the storage allows) or after it (an
interrupt, ``close()``, a process parked to be killed or stopped). Steps that are no storage call
(``request sent``, ``answer received``, ``publish``) are points the harness reaches through the
token server or the adapter's ``on_refresh``, and go through the same :meth:`Injector.at`.

Nothing here patches the package: the adapter is given a :class:`FaultStorage`, a
:class:`~requests_tokenrefresh.TokenStorage` like any user's. This module imports only the
standard library, requests and the package, so the worker processes (``worker.py``) use it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from requests_tokenrefresh import (
    RefreshError,
    RefreshLease,
    SessionExpiredError,
    Token,
    TokenStorage,
    TokenStorageError,
)

__all__ = ["FaultLease", "FaultStorage", "Injector", "Spec", "outcome_of", "retryable"]

#: What a transient fault may surface as besides RefreshError(retryable=True) (invariant 5).
RETRYABLE = ("TokenStorageError", "LeaseLostError")

_T = TypeVar("_T")


@dataclasses.dataclass
class Spec:
    """What happens at one step, the first time the coordinator reaches it.

    Attributes:
        before: runs before the step's call (a storage that goes down, or is wiped).
        around: a context manager the call runs in (the call fails once, for real).
        after: runs after the call, whether it returned or raised (an interrupt, close(), a
            process parked to be killed or stopped).
    """

    before: Callable[[], None] | None = None
    around: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    after: Callable[[], None] | None = None


class Injector:
    """Runs each step's :class:`Spec` at the step's first occurrence, and records the steps reached.

    Args:
        specs: the fault (or faults: a precondition and the fault) by step name.
    """

    def __init__(self, specs: dict[str, Spec] | None = None) -> None:
        self.specs = dict(specs or {})
        self.reached: list[str] = []  # step names, in the order first reached
        self.fired: list[str] = []  # steps whose spec ran
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []  # a fault action that failed (a harness error)

    def at(self, step: str, call: Callable[[], _T]) -> _T:
        """Make ``call``, the coordinator's call at ``step``, with the step's fault if this is its first time."""
        with self._lock:
            first = step not in self.reached
            if first:
                self.reached.append(step)
            spec = self.specs.pop(step, None) if first else None
            if spec is not None:
                self.fired.append(step)
        if spec is None:
            return call()
        if spec.before is not None:
            self._run(spec.before)
        try:
            if spec.around is not None:
                with spec.around():
                    return call()
            return call()
        finally:
            if spec.after is not None:
                self._run(spec.after)

    def _run(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (KeyboardInterrupt, SystemExit):  # the caller's interrupt is delivered elsewhere
            raise
        except Exception as exc:  # recorded: the cell fails on it, the product does not see it
            self.errors.append(exc)


class FaultStorage(TokenStorage):
    """A storage that forwards to ``inner`` and reports the coordinator's calls to ``injector``.

    Args:
        inner: the real storage.
        injector: what happens at each step.
        lease_cap: if set, a lease asked for longer is taken for this many seconds (the worker's
            victims: a killed holder's Redis lease then runs out in seconds, not in
            ``refresh_timeout`` + 10 s; the protocol is the same).
    """

    def __init__(self, inner: TokenStorage, injector: Injector, *, lease_cap: float | None = None) -> None:
        self.inner = inner
        self.injector = injector
        self.lease_cap = lease_cap
        self.known: set[str] = set()  # refresh tokens read from the store: saving one is a restore
        self._loads = 0
        self._new_saves = 0
        self._count_lock = threading.Lock()

    @property
    def _atomic_writes(self) -> bool:  # read by the coordinator with getattr()
        return bool(getattr(self.inner, "_atomic_writes", False))

    def _note(self, token: Token | None) -> Token | None:
        if token is not None and token.refresh_token:
            self.known.add(token.refresh_token)
        return token

    def load(self) -> Token | None:
        with self._count_lock:
            self._loads += 1
            first = self._loads == 1
        if first:
            return self._note(self.injector.at("first load", self.inner.load))
        return self._note(self.inner.load())

    def save(self, token: Token) -> None:
        self.inner.save(token)

    def delete(self) -> None:
        self.inner.delete()

    def refresh_lease(self, timeout: float) -> RefreshLease:
        if self.lease_cap is not None:
            timeout = min(timeout, self.lease_cap)
        return FaultLease(self, self.inner.refresh_lease(timeout))

    def new_save_number(self, token: Token) -> int:
        """0 for a token read from the store (a restore); else 1 for the first save of a new token, 2 ..."""
        if token.refresh_token in self.known:
            return 0
        with self._count_lock:
            self._new_saves += 1
            return self._new_saves

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"FaultStorage({self.inner!r})"


class FaultLease(RefreshLease):
    """A lease that forwards to ``inner`` (the storage's own) and names each call's step."""

    def __init__(self, storage: FaultStorage, inner: RefreshLease) -> None:
        super().__init__(storage)
        self._storage = storage
        self.inner = inner

    # The coordinator reads these after load() (interrupted, lost) and to pick the save path (fenced).
    @property  # type: ignore[override]
    def interrupted(self) -> bool:
        return self.inner.interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        pass  # RefreshLease.__init__ sets it; the inner lease's value is the one that counts

    @property  # type: ignore[override]
    def lost(self) -> bool:
        return self.inner.lost

    @lost.setter
    def lost(self, value: bool) -> None:
        pass

    @property  # type: ignore[override]
    def fenced(self) -> bool:
        return self.inner.fenced

    def __enter__(self) -> RefreshLease:
        self._storage.injector.at("lease taken", self.inner.__enter__)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._storage.injector.at("lease released", lambda: self.inner.__exit__(*exc_info))

    def load(self) -> Token | None:
        return self._storage._note(self._storage.injector.at("lease read", self.inner.load))

    def check(self, seconds: float) -> None:
        self._storage.injector.at("lease checked", lambda: self.inner.check(seconds))

    def extend(self, seconds: float) -> None:
        self.inner.extend(seconds)

    def save(self, token: Token) -> None:
        number = self._storage.new_save_number(token)
        injector = self._storage.injector
        if number == 1:
            injector.at("answer received", lambda: None)  # the grant returned; nothing saved yet
            injector.at("save attempted", lambda: self.inner.save(token))
        elif number == 2:
            injector.at("save retried", lambda: self.inner.save(token))
        else:
            self.inner.save(token)


def outcome_of(result: requests.Response | BaseException) -> str:
    """A request's result in a few words, the way the matrix compares them."""
    if isinstance(result, requests.Response):
        return "ok" if result.status_code == 200 else f"http {result.status_code}"
    if isinstance(result, (KeyboardInterrupt, SystemExit)):
        return type(result).__name__
    if isinstance(result, SessionExpiredError):
        return f"SessionExpiredError({result.error})"
    if isinstance(result, RefreshError):
        return f"RefreshError({result.error}, retryable={result.retryable})"
    if isinstance(result, TokenStorageError):
        return type(result).__name__
    return f"bare {type(result).__name__}: {result}"


def retryable(outcome: str) -> bool:
    """Whether ``outcome`` (of :func:`outcome_of`) is an error a transient fault may surface as."""
    return outcome in RETRYABLE or (outcome.startswith("RefreshError(") and outcome.endswith("retryable=True)"))
