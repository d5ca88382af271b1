"""The one place that knows the current token, and the single-flight machinery around it.

Theory of operation
-------------------
Many threads send through one adapter. Each asks the coordinator for a token to send with
(:meth:`Coordinator.token_for_request`) and, when the server rejects it, for a token to replay with
(:meth:`Coordinator.token_after_rejection`). Work that needs I/O (reading the store, refreshing,
saving, a logout or account switch) is a *flight*: one thread, the leader, runs it; threads that
cannot go on without its result wait for it and share its outcome, token or exception alike.
The refresh path runs straight down: adapter -> coordinator -> storage lease -> retries -> grant.

Rule 1: only this module reads or writes the current token, the flight and the retry times; they
        are guarded by the one ``threading.Condition``. The one read without it is the fast path:
        ``fresh``, an immutable (token, fresh-until, Authorization value) triple that is replaced
        whole under the lock, so a reader sees the old one or the new one, never a mix. It is set
        only while nothing needs deciding (a token outside its refresh window, no forced refresh,
        nothing unsaved). The adapter reads it inline on every request (a call costs more than
        the rest of its own work); whoever finds it None or past fresh-until calls
        :meth:`Coordinator.token_for_request`.
Rule 2: no network or storage I/O, and no user callback, while the condition is held. Decide under
        the lock, do the I/O outside it, publish the outcome and ``notify_all()`` under it.
Rule 3: every wait has a timeout. A waiter whose flight outlives ``wait_timeout`` raises a
        retryable :class:`RefreshError` and retires the flight, so a hung leader cannot block the
        adapter forever; the late outcome of a retired flight is dropped.
Rule 4: at most one flight at a time, so at most one refresh per expiry; and no proactive refresh
        within MIN_REFRESH_INTERVAL of the last refresh or adoption. A token that this adapter's
        own refresh has just returned is sent even if it has already expired (a lifetime shorter
        than the refresh took) and left to the server to reject, rather than refreshed in a loop;
        any other expired token is refreshed first, whatever the interval.
Rule 5: a token that is still valid is never waited for. In the refresh window (STALE) the refresh
        runs in a background thread and every request keeps sending with the valid token, on the
        lock-free fast path (the snapshot stays valid until the token expires, or until Rules 4
        and 5 allow the background refresh to start); if that refresh fails for a reason other
        than a rejected refresh token, the old token is used until it really expires. The thread
        is started after the lock is released (a start waits for the new thread to run). It is
        joined by :meth:`close` and, being non-daemon, by interpreter exit: a rotated token is
        never lost to a process ending.
Rule 6: a rejection (401) for a token that has already been replaced is answered with the current
        token, not with another refresh. A replay never uses, and the store is never adopted
        from, a token that has expired or is within REPLAY_MARGIN of it (a tenth of its
        lifetime, if less): that one is refreshed first. A token that a refresh has just returned
        and that was then rejected on the replay is *doubted*; once a request with it has
        succeeded (the token is good: the endpoint is what refuses), for NEW_TOKEN_GRACE seconds
        (at most half its lifetime) a rejection of it is returned to the caller without a
        refresh. An endpoint that always answers 401 then costs one rotation, not one per call,
        and stalls no other request behind refreshes; a token revoked right after it was issued
        (never a success) is still refreshed.
Rule 7: a rotated token is saved before it is published, inside the lease; a failed save is retried
        (the lease extended; a storage error there is one more failure to wait out, not the end)
        until refresh_timeout runs out, and only then published unsaved, kept in memory and saved
        again later: by the next request after SAVE_RETRY_DELAY, by :meth:`close` and at
        interpreter exit. A fenced lease's save (conditional on the record it read) is retried
        with that same lease, after its release too, so a later holder waiting for it (Rule 9)
        is not in its way. A refresh token is never dropped.
Rule 8: a rejected refresh token ends the session once: the store is read again inside the lease
        (another process or a new login may have replaced the token, which is then adopted);
        otherwise the store is cleared, ``on_session_expired`` is called once, and every waiter
        gets the same error.
Rule 9: a refresh runs inside the storage's refresh lease (:class:`~.storage.RefreshLease`: an OS
        file lock for the keyring, a fenced lease in Redis, nothing for memory). Inside it the
        store is read first: a fresh token another process already refreshed is adopted without a
        network call; otherwise the lease is checked, the refresh starts from the stored refresh
        token (the newest), and the new token is saved before the lease is released. The store
        is read only at first use (again inside the lease if it looked empty and its writes are
        not atomic) and inside the lease, never per request while a token is held. If the lease
        says an earlier holder may have sent the stored refresh token without storing the answer
        (``interrupted``: it crashed, or it stalls), the holder waits up to refresh_timeout for
        that answer to be stored and adopts it; only then does it refresh. If the lease says the
        store lost writes (``lost``: a Redis restarted empty or failed over), an empty or older
        record is no sign-out: the token in memory is restored and refreshed; :meth:`close`
        puts it back too. A first read that fails is read again inside the lease, where a second
        failure is the storage's error, never "no token is stored".
Rule 10: :meth:`reset` (logout, account switch) takes effect for every request that starts after
        it; the outcome of a refresh begun before it is dropped, never saved over it. After a
        sign-out (``reset(None)``) a grant that mints (client credentials) makes no new token by
        itself: requests raise ``no_token`` until a token is set or stored again.
Rule 11: a forked child starts with a new condition and no flight (the thread that ran the
        parent's flight does not exist there); it keeps the token.
Rule 12: a flight that may reach the token endpoint or the store (load, refresh, save) runs in a
        worker thread of its own, not in the caller's: an interrupt of the caller (Ctrl-C's
        KeyboardInterrupt, a SystemExit raised by a signal handler) lands while it waits, the
        flight goes on to store what the server answered (bounded by wait_timeout), and the
        interrupt is raised after that. The worker is not a daemon: interpreter exit waits for it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable

from ._clock import SYSTEM_CLOCK, Clock, as_clock
from ._grant import Grant
from ._redact import fingerprint
from ._retry import refresh_with_retries
from .exceptions import LeaseLostError, RefreshError, SessionExpiredError, TokenStorageError
from .storage import RefreshLease, TokenStorage
from .storage.base import read_token
from .tokens import Token, TokenState

__all__ = ["Coordinator"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds before a failed advisory (STALE) refresh is tried again.
ADVISORY_RETRY_DELAY = 5.0
#: Seconds after a refresh during which the new token is not refreshed proactively (Rule 4).
MIN_REFRESH_INTERVAL = 1.0
#: Seconds before saving a token that could not be saved is tried again.
SAVE_RETRY_DELAY = 5.0
#: Seconds before expiry within which a token is not replayed with nor adopted (Rule 6; a tenth
#: of the lifetime if less).
REPLAY_MARGIN = 1.0
#: Seconds during which a new token rejected on its replay is not refreshed again (Rule 6).
NEW_TOKEN_GRACE = 30.0
#: Seconds between two attempts to save a rotated token inside the lease (Rule 7).
SAVE_RETRY_INTERVAL = 0.5
#: Seconds before a refresh token's known expiry at which to warn (a quarter of its lifetime if less).
REFRESH_TOKEN_WARNING = 86400.0
#: Seconds of the lease in which close() checks that a fenced store still has the token (Rule 9).
CLOSE_LEASE_TIMEOUT = 1.0
#: Seconds at most between two checks for a signal while a caller waits for its flight (Rule 12).
INTERRUPT_SLICE = 0.25
# Seconds an interrupted caller waits for its flight's thread to begin (interrupted inside
# Thread.start(), it cannot tell whether the thread was made; one that was begins at once).
THREAD_START_WAIT = 2.0
#: Seconds between two reads of the store while waiting for an interrupted holder's answer (Rule 9).
INTERRUPTED_POLL_INTERVAL = 0.1


class _Kind(enum.Enum):
    LOAD = "load"
    REFRESH = "refresh"
    SAVE = "save"
    RESET = "reset"


@dataclasses.dataclass(eq=False)
class _Flight:
    kind: _Kind
    started: float  # time.monotonic(): real, as the Condition's waits are (Rule 3)
    epoch: int  # the reset epoch it was begun in (Rule 10)
    forced: bool = False  # a refresh because the server rejected the current token
    unsaved: bool = False  # the token in memory is newer than the stored one (Rule 7)
    background: bool = False  # an advisory refresh in its own thread (Rule 5)
    done: bool = False
    token: Token | None = None
    error: BaseException | None = None


_coordinators: weakref.WeakSet[Coordinator] = weakref.WeakSet()


class Coordinator:
    """Holds the current token and runs loads, refreshes and saves one at a time.

    Args:
        storage: where the token is loaded from and saved to, and whose lease a refresh holds.
        grant: makes one refresh attempt, ``grant(token, seconds_left)``; it raises
            :class:`RefreshError` or :class:`SessionExpiredError`. A grant that ``mints``
            (client credentials) is also called when nothing is stored, with ``None``.
        leeway: the refresh window in seconds (at most half the token's lifetime).
        refresh_timeout: seconds one refresh may take, retries included.
        lease_timeout: seconds to wait for the storage's refresh lease (another process may
            hold it for a whole refresh).
        wait_timeout: the longest a thread waits for another thread's flight.
        clock: the one source of time (:mod:`._clock`): wall time for expiry; monotonic time and
            sleep for the deadlines and pauses of retries, save retries and the wait for an
            interrupted holder. Condition and Event waits keep real time (Rule 3).
        on_refresh, on_session_expired, on_refresh_token_expiring: the adapter's callbacks.
    """

    def __init__(
        self,
        storage: TokenStorage,
        grant: Grant,
        *,
        leeway: float,
        refresh_timeout: float,
        lease_timeout: float,
        wait_timeout: float,
        clock: Clock | Callable[[], float] = SYSTEM_CLOCK,
        on_refresh: Callable[[Token], object] | None = None,
        on_session_expired: Callable[[SessionExpiredError], object] | None = None,
        on_refresh_token_expiring: Callable[[Token], object] | None = None,
    ) -> None:
        self._storage = storage
        self._grant = grant
        self._mints = bool(getattr(grant, "mints", False))  # a plain function refreshes only
        self._leeway = leeway
        self._refresh_timeout = refresh_timeout
        self._lease_timeout = lease_timeout
        self._wait_timeout = wait_timeout
        clock = as_clock(clock)
        self._clock = clock.time  # called on every request: the bound method, not the object
        self._monotonic = clock.monotonic
        self._sleep = clock.sleep
        self._on_refresh = on_refresh
        self._on_session_expired = on_session_expired
        self._on_refresh_token_expiring = on_refresh_token_expiring
        self._store_mutex = threading.Lock()  # a reset's write vs a refresh's save (Rule 10)
        self._init_state()
        _coordinators.add(self)

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        # Guarded by _cond (Rule 1):
        self._token: Token | None = None
        self._flight: _Flight | None = None
        self._epoch = 0  # bumped by reset() (Rule 10)
        self._signed_out = False  # reset(None): a minting grant makes no token until a new one is set
        self._advisory_after = 0.0  # no advisory refresh before this epoch time
        self._unsaved = False  # the current token is not in the store yet (Rule 7)
        self._save_after = 0.0
        self._unsaved_lease: RefreshLease | None = None  # the fenced lease an unsaved token came from
        self._refreshed_at = float("-inf")  # epoch time the current token was refreshed or adopted
        self._own_refresh = False  # ... and whether this adapter's grant returned it (Rule 4)
        self._doubted_until = float("-inf")  # the current token was rejected on its replay (Rule 6)
        self._doubt_proven = False  # ... and has since carried a request that succeeded
        #: Read without the lock by the adapter after each response: is note_success() wanted?
        self.doubting = False
        self._warned_refresh_token: str | None = None  # its expiry is near, and was told
        self._background: threading.Thread | None = None
        #: The fast path's snapshot, read without the lock by the adapter (Rule 1).
        self.fresh: tuple[Token, float, str] | None = None

    # -- what the adapter asks -------------------------------------------------------------

    def token_for_request(self) -> Token:
        """Return a token to send a request with, loading or refreshing it first if needed."""
        fresh = self.fresh
        if fresh is not None and self._clock() < fresh[1]:
            return fresh[0]  # steady state: no lock taken
        while True:
            with self._cond:
                step = self._next_step()
                if isinstance(step, Token):
                    return step
                flight, token, mine = step
                if not mine:
                    # Share another thread's flight: a refresh's token is used even if it is
                    # already short-lived (one refresh, never a loop); otherwise decide again.
                    result = self._wait(flight)
                    if result is not None:
                        return result
                    continue
            if flight.background:  # Rule 5: send with the valid token; the refresh runs beside
                assert token is not None
                self._start_background(flight, token)  # outside the lock: a start waits for the GIL
                return token
            result = self._lead(flight, token)
            if result is not None:
                return result

    def _next_step(self) -> Token | tuple[_Flight, Token | None, bool]:
        """Under the lock: a token to send with, or (flight, token, mine): a flight to wait for or to run."""
        token, flight = self._token, self._flight
        now = self._clock()
        if token is None:
            return (flight, None, False) if flight is not None else (self._begin(_Kind.LOAD), None, True)
        state = token.state(now, self._leeway)
        if now - self._refreshed_at < MIN_REFRESH_INTERVAL and (state is TokenState.STALE or self._own_refresh):
            state = TokenState.FRESH  # Rule 4: just refreshed; no refresh loop
        if state is TokenState.INVALID or (flight is not None and flight.forced):
            # Expired, or the server already rejected it: sending it is pointless.
            return (flight, token, False) if flight is not None else (self._begin(_Kind.REFRESH), token, True)
        if state is TokenState.STALE and flight is None and now >= self._advisory_after:
            flight = self._begin(_Kind.REFRESH)
            flight.background = True  # Rule 5: the caller starts it, after releasing the lock
            return flight, token, True
        if self._unsaved and flight is None and now >= self._save_after:
            return self._begin(_Kind.SAVE), token, True
        return token

    def token_after_rejection(self, used: Token | None) -> Token | None:
        """Return a token to replay a request with, after the server rejected ``used``.

        Returns None when the rejection is not answered with a refresh: ``used`` is a token
        obtained moments ago (Rule 6). With ``used=None``, refresh whatever token is current
        (loading it first if needed).
        """
        explicit = used is None  # refresh(): whatever the token's age
        while True:
            with self._cond:
                token, flight = self._token, self._flight
                now = self._clock()
                if token is not None and used is None and flight is None:
                    used = token
                if flight is not None:
                    result = self._wait(flight)
                    if result is not None and (used is None or result.access_token != used.access_token):
                        return result
                    continue
                if token is not None and used is not None and token.access_token != used.access_token:
                    if _usable(token, now):
                        log.debug("401 for replaced token %s: replaying", fingerprint(used.access_token))
                        return token  # Rule 6
                    mine = self._begin(_Kind.REFRESH)  # never replay with a dying token
                elif (
                    token is not None
                    and used is not None
                    and not explicit
                    and self._doubt_proven
                    and now < self._doubted_until
                ):
                    log.debug("401 for doubted token %s: returned, not refreshed", fingerprint(used.access_token))
                    return None  # Rule 6: the endpoint, not the token, says no
                else:
                    mine = self._begin(_Kind.LOAD if token is None else _Kind.REFRESH, forced=True)
            result = self._lead(mine, token)
            if result is None and explicit and mine.kind is _Kind.LOAD:
                with self._cond:  # a load that minted a first token (client credentials) was the refresh
                    result = mine.token if mine.epoch == self._epoch else None
            if result is not None:
                return result

    def replacement(self, used: Token) -> Token | None:
        """A fresh token that has replaced ``used``, rejected on a replay; never starts a refresh.

        Waits for a refresh under way. Returns None if ``used`` is still the current token and no
        refresh is under way (``used``, if a refresh has just returned it, is then doubted: Rule
        6), if the refresh under way fails, or if the replacement is no longer fresh.
        """
        with self._cond:
            while True:
                token, flight = self._token, self._flight
                now = self._clock()
                if token is not None and token.access_token != used.access_token:
                    return token if _usable(token, now) else None
                if flight is None or flight.kind is not _Kind.REFRESH:
                    if token is not None and now - self._refreshed_at < self._grace(token):
                        self._doubted_until = self._refreshed_at + self._grace(token)
                        self._doubt_proven, self.doubting = False, True
                    return None
                try:
                    result = self._wait(flight)
                except Exception:
                    return None
                if result is not None:
                    return result

    def note_success(self, used: Token) -> None:
        """A request with ``used`` got an answer other than a rejection: a doubted token is good (Rule 6)."""
        with self._cond:
            if self._token is not None and self._token.access_token == used.access_token:
                self._doubt_proven, self.doubting = True, False

    def current(self) -> Token | None:
        """The token in memory, if any, without loading or refreshing."""
        with self._cond:
            return self._token

    def reset(self, token: Token | None) -> None:
        """Replace the token (``None``: sign out), in the store and for every later request (Rule 10).

        Raises:
            TokenStorageError: the store could not be written; in memory the change holds anyway
                (a new token is then saved again later).
        """
        with self._cond:
            self._epoch += 1
            if self._flight is not None:
                self._retire(self._flight)
            mine = self._begin(_Kind.RESET)
            self._token = token
            self._signed_out = token is None
            self._snapshot()
        try:
            with self._storage.refresh_lease(self._lease_timeout), self._store_mutex:
                if token is None:
                    self._storage.delete()
                else:
                    self._storage.save(token)
        except TokenStorageError:
            self._publish(mine, None, None, unsaved=token is not None)  # a new token: saved later
            raise
        except BaseException as exc:
            self._publish(mine, None, exc)
            raise
        self._publish(mine, None, None, unsaved=False)

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a background refresh to finish (Rule 5), then save a
        token that could not be saved before, once (Rule 7)."""
        with self._cond:
            thread = self._background
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a background refresh still runs after %.0fs; not waiting longer", timeout)
        self.save_unsaved(restore_lost=True)

    def save_unsaved(self, *, restore_lost: bool = False) -> None:
        """Save, once, a token that could not be saved (Rule 7) unless a flight is under way.

        With ``restore_lost`` (at :meth:`close`), a token that was saved is put back if a fenced
        store says it lost it since (Rule 9), in a short lease. A storage error is logged only.
        """
        with self._cond:
            token = self._token
            if token is None or self._flight is not None:
                return
            flight = self._begin(_Kind.SAVE) if self._unsaved else None
        if flight is not None:
            self._run(flight, token)
            return
        if not restore_lost:
            return
        lease = self._storage.refresh_lease(CLOSE_LEASE_TIMEOUT)
        if not lease.fenced:  # only a fenced store can tell lost writes from a sign-out
            return
        try:
            with lease:
                read_token(lease)
                if lease.lost:
                    self._restore(lease, token)
        except TokenStorageError as exc:
            log.warning("could not check the stored token before exit: %s", exc)

    # -- under the lock ----------------------------------------------------------------------

    def _begin(self, kind: _Kind, forced: bool = False) -> _Flight:
        self._flight = _Flight(kind, time.monotonic(), self._epoch, forced, self._unsaved)
        self._snapshot()
        return self._flight

    def _retire(self, flight: _Flight) -> None:
        """Drop ``flight``: its waiters decide again, its late outcome is ignored."""
        flight.done = True
        flight.token = flight.error = None
        self._flight = None
        self._cond.notify_all()

    def _grace(self, token: Token) -> float:
        if token.expires_at is None:
            return NEW_TOKEN_GRACE
        return min(NEW_TOKEN_GRACE, max(0.0, (token.expires_at - self._refreshed_at) / 2))

    def _snapshot(self) -> None:
        """Publish the fast path's (token, until, header): until then, _next_step would only return the token.

        Or None when there is something to decide. ``until`` may be earlier than needed (then the
        slow path decides the same), never later.
        """
        token, flight = self._token, self._flight
        if token is None or self._unsaved or (flight is not None and (flight.forced or flight.kind is _Kind.RESET)):
            self.fresh = None
            return
        if token.expires_at is None:
            until = float("inf")
        elif flight is not None:  # a refresh in the background (Rule 5): nothing to do while valid
            until = token.expires_at
        else:  # in the refresh window, a background refresh starts no earlier than Rules 4 and 5 allow
            starts = max(
                token.expires_at - token.refresh_window(self._leeway),  # STALE
                self._advisory_after,  # after a failed background refresh
                self._refreshed_at + MIN_REFRESH_INTERVAL,  # Rule 4
            )
            until = min(token.expires_at, starts)
        self.fresh = (token, until, token.authorization)

    def _wait(self, flight: _Flight) -> Token | None:
        """Wait for ``flight``; return its token if it was a refresh, raise its error if it failed."""
        deadline = flight.started + self._wait_timeout
        while not flight.done:
            left = deadline - time.monotonic()
            if left <= 0:
                if self._flight is flight:
                    self._flight = None  # Rule 3: retire it, the next caller starts afresh
                    self._snapshot()
                    self._cond.notify_all()
                raise RefreshError(
                    f"refresh_timeout: no token after waiting {self._wait_timeout:.0f}s for the "
                    f"{flight.kind.value} under way in another thread",
                    error="refresh_timeout",
                    retryable=True,
                )
            self._cond.wait(min(left, INTERRUPT_SLICE))  # a signal for the main thread is seen in time
        if flight.error is not None:
            raise flight.error
        return flight.token if flight.kind is _Kind.REFRESH else None

    def _start_background(self, flight: _Flight, token: Token) -> None:
        """Outside the lock: start ``flight`` in a thread, then record it for :meth:`close`."""
        # Not a daemon: interpreter exit waits for it (bounded by the refresh and lease timeouts),
        # so a refresh token rotated on the server is always saved (Rule 5).
        thread = threading.Thread(
            target=self._run_in_background, args=(flight, token), name="token-refresh", daemon=False
        )  # daemon=False said: a thread started by a daemon thread would be a daemon too
        thread.start()
        with self._cond:
            if thread.is_alive():  # one that has already ended is not waited for
                self._background = thread

    # -- outside the lock: the leader's I/O (Rule 2) --------------------------------------------

    def _publish(
        self,
        flight: _Flight,
        token: Token | None,
        error: BaseException | None,
        *,
        current: Token | None = None,
        clear: bool = False,
        unsaved: bool | None = None,
        refreshed: bool = False,
        adopted: bool = False,
        advisory_after: float | None = None,
        save_after: float | None = None,
    ) -> bool:
        """Hand ``flight``'s outcome to its waiters and, unless it was retired, update the state."""
        with self._cond:
            if flight.done:
                return False  # retired (Rule 3, Rule 10): its outcome is dropped
            flight.done, flight.token, flight.error = True, token, error
            is_current = self._flight is flight
            if is_current:
                self._flight = None
                now = self._clock()
                if current is not None or clear:
                    self._token = current
                if unsaved is not None:
                    self._unsaved = unsaved
                    if not unsaved:
                        self._unsaved_lease = None
                if current is not None or clear:
                    self._doubted_until, self._doubt_proven, self.doubting = float("-inf"), False, False
                if refreshed or adopted:
                    self._refreshed_at, self._own_refresh = now, refreshed
                if advisory_after is not None:
                    self._advisory_after = now + advisory_after
                if save_after is not None:
                    self._save_after = now + save_after
                self._snapshot()
            self._cond.notify_all()
            return is_current

    def _lead(self, flight: _Flight, token: Token | None) -> Token | None:
        """Run ``flight`` in a worker thread and wait for it (Rule 12); return what :meth:`_run` returns."""
        outcome: list[Token | None] = []
        failure: list[BaseException] = []
        began, finished = threading.Event(), threading.Event()

        def work() -> None:
            began.set()
            try:
                outcome.append(self._run(flight, token))
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)
            finally:
                finished.set()

        # Waited for on an Event, not with join(): an interrupted join() marks a live thread as
        # stopped on Python 3.11 (bpo-45274's fix), and interpreter exit then does not wait for it.
        worker = threading.Thread(target=work, name=f"token-{flight.kind.value}", daemon=False)  # even from a daemon
        try:
            worker.start()  # inside: an interrupt while start() waits for the thread is one too
            _wait_in_slices(finished, self._wait_timeout)
        except BaseException:
            # Interrupted (Ctrl-C, SystemExit from a signal handler): the request may be on its
            # way; let the flight store the answer, then raise the interrupt. A second interrupt
            # ends this wait; the worker, not a daemon, still finishes before the interpreter exits.
            log.warning("interrupted during a token %s; letting it finish first", flight.kind.value)
            # A flight interrupted before its thread was made never runs: nothing to wait for.
            _wait_in_slices(began, THREAD_START_WAIT)
            if began.is_set():
                _wait_in_slices(finished, self._wait_timeout)
            raise
        if not finished.is_set():
            raise RefreshError(
                f"refresh_timeout: the token {flight.kind.value} did not finish within {self._wait_timeout:.0f}s",
                error="refresh_timeout",
                retryable=True,
            )
        if failure:
            raise failure[0]
        return outcome[0]

    def _run(self, flight: _Flight, token: Token | None) -> Token | None:
        """Run ``flight`` as its leader; return the token to send with, or None to decide again."""
        try:
            if flight.kind is _Kind.LOAD:
                self._run_load(flight)
                return None
            assert token is not None
            if flight.kind is _Kind.SAVE:
                self._run_save(flight, token)
                return None
            return self._run_refresh(flight, token)
        except BaseException as exc:
            self._publish(flight, None, exc)  # an unexpected error: never leave waiters hanging
            raise

    def _run_in_background(self, flight: _Flight, token: Token) -> None:
        try:
            self._run(flight, token)
        except Exception:  # noqa: S110 - already handed to the flight's waiters, and logged
            pass
        finally:
            with self._cond:
                if self._background is threading.current_thread():
                    self._background = None

    def _run_load(self, flight: _Flight) -> None:
        with self._cond:  # after a sign-out, client credentials are not used again by themselves
            mints = self._mints and not self._signed_out
        failed = False
        try:
            stored = read_token(self._storage)
        except TokenStorageError:
            stored, failed = None, True
        if stored is None and (mints or failed or not getattr(self._storage, "_atomic_writes", False)):
            # A writer may be rewriting the record (some backends truncate first), or the read
            # failed: read again inside the lease, where no refresh writes, before telling anyone
            # to log in (Rule 9); a read that fails again there is the storage's error, not a
            # sign-out. A store whose writes are atomic (Redis) is not read again after a read
            # that found nothing: after a sign-out each request then costs one read, not a lease.
            try:
                with self._storage.refresh_lease(self._lease_timeout) as lease:
                    stored = read_token(lease)
                    if stored is None and mints:  # client credentials: make the first token
                        self._refresh_in_lease(flight, None, lease)
                        return
            except (RefreshError, TokenStorageError) as exc:
                self._publish(flight, None, exc)
                raise
        if stored is None:
            missing = SessionExpiredError(
                "no token is stored: log in and save a token to the storage first", error="no_token"
            )
            self._publish(flight, None, missing)
            raise missing
        log.debug("loaded token %s from storage", fingerprint(stored.access_token))
        self._publish(flight, None, None, current=stored, unsaved=False)
        self._check_refresh_expiry(stored)

    def _run_save(self, flight: _Flight, token: Token) -> None:
        with self._cond:
            pending = self._unsaved_lease
        try:
            if pending is not None:  # fenced: saved only over the record its refresh read (Rule 7)
                pending.save(token)
            else:
                with self._storage.refresh_lease(self._lease_timeout) as lease:
                    lease.save(token)
        except LeaseLostError as exc:
            # The record was written since that refresh read it: a newer token, or a sign-out.
            try:
                newer = read_token(self._storage)
            except TokenStorageError:
                self._publish(flight, None, None, save_after=SAVE_RETRY_DELAY)
                return
            log.warning("token %s not saved (%s); using what the store holds now", fingerprint(token.access_token), exc)
            if newer is None:
                self._publish(flight, None, None, clear=True, unsaved=False)
            else:
                self._publish(flight, None, None, current=newer, unsaved=False, adopted=True)
        except TokenStorageError as exc:
            log.warning("token %s still not saved (%s); will retry", fingerprint(token.access_token), exc)
            self._publish(flight, None, None, save_after=SAVE_RETRY_DELAY)
        else:
            log.info("saved token %s that could not be saved before", fingerprint(token.access_token))
            self._publish(flight, None, None, unsaved=False)

    def _run_refresh(self, flight: _Flight, old: Token) -> Token | None:
        try:
            with self._storage.refresh_lease(self._lease_timeout) as lease:
                return self._refresh_in_lease(flight, old, lease)
        except (RefreshError, TokenStorageError) as exc:
            if not flight.forced and old.state(self._clock(), self._leeway) is not TokenState.INVALID:
                # Rule 5: an advisory refresh failed; the old token is still good.
                log.warning("refresh failed (%s); using the current token until it expires", _reason(exc))
                self._publish(flight, None, exc, advisory_after=ADVISORY_RETRY_DELAY)
                return old
            self._publish(flight, None, exc)
            raise

    def _refresh_in_lease(self, flight: _Flight, old: Token | None, lease: RefreshLease) -> Token | None:
        """Refresh ``old`` (None: mint a first token) inside ``lease``; see Rules 7-9."""
        stored = None if flight.unsaved else read_token(lease)  # an unsaved token is the newest
        if lease.lost and old is not None:
            stored = self._restore(lease, old)
        if lease.interrupted and not flight.unsaved:
            stored = self._await_interrupted(lease, stored)
        if stored is None and not flight.unsaved and not self._mints:
            deleted = SessionExpiredError(
                "the stored token was deleted (signed out elsewhere?): log in again", error="no_token"
            )
            return self._end_session(flight, lease, old, deleted)
        base = stored or old  # the token whose refresh token is presented: the newest
        if base is not None and _usable(base, self._clock()) and (old is None or base.access_token != old.access_token):
            log.info("adopting token %s refreshed elsewhere", fingerprint(base.access_token))
            return self._done(flight, base, unsaved=False, own=False)
        if lease.interrupted:
            log.warning("an earlier refresh of this token was interrupted; its refresh token may be spent")
        try:
            lease.check(self._refresh_timeout)
        except LeaseLostError as exc:  # nothing is sent; the next try reads the store again
            raise RefreshError(f"lease_lost: {exc}", error="lease_lost", retryable=True) from exc
        try:
            new = refresh_with_retries(
                self._grant, base, timeout=self._refresh_timeout, sleep=self._sleep, monotonic=self._monotonic
            )
        except BaseException as exc:
            # No token to store: a later holder must not wait for this refresh's answer (Rule 9).
            with contextlib.suppress(TokenStorageError):
                lease.forget()
            if isinstance(exc, SessionExpiredError):
                return self._end_session(flight, lease, base, exc)
            raise
        outcome = self._save_in_lease(flight, lease, new)
        if outcome is None:
            return None  # a reset came meanwhile (Rule 10): this token belongs to no one now
        saved, unsaved = outcome
        if saved is not new:
            return self._done(flight, saved, unsaved=False, own=False)  # another holder's newer token
        log.info(
            "refreshed token %s -> %s (refresh token %s -> %s), expires in %s",
            fingerprint(base.access_token if base else None),
            fingerprint(new.access_token),
            fingerprint(base.refresh_token if base else None),
            fingerprint(new.refresh_token),
            "unknown" if new.expires_at is None else f"{new.expires_at - self._clock():.0f}s",
        )
        result = self._done(flight, new, unsaved, own=True)
        self._callback(self._on_refresh, new)
        self._check_refresh_expiry(new)
        return result

    def _restore(self, lease: RefreshLease, old: Token) -> Token:
        """The store lost writes (Rule 9): put back the token held in memory, the newest known here."""
        log.warning(
            "the store lost the token record (restarted empty, flushed or failed over?): restoring token %s",
            fingerprint(old.access_token),
        )
        try:
            lease.save(old)
        except TokenStorageError as exc:  # the refresh's own save writes it again
            log.warning("could not restore token %s yet: %s", fingerprint(old.access_token), exc)
        return old

    def _await_interrupted(self, lease: RefreshLease, stored: Token | None) -> Token | None:
        """Wait up to refresh_timeout for an interrupted holder to store its answer (Rule 9).

        Its request with the stored refresh token may have reached the server: presenting that
        token again would spend it twice. Returns what the store holds then.
        """
        deadline = self._monotonic() + self._refresh_timeout
        log.info("waiting up to %.0fs for an interrupted refresh to store its answer", self._refresh_timeout)
        while lease.interrupted and self._monotonic() + INTERRUPTED_POLL_INTERVAL < deadline:
            self._sleep(INTERRUPTED_POLL_INTERVAL)
            with contextlib.suppress(TokenStorageError):  # a storage blip: read again next time
                stored = read_token(lease)
        if lease.interrupted:
            log.warning("the interrupted refresh stored no answer within %.0fs; refreshing", self._refresh_timeout)
        try:
            lease.extend(self._lease_timeout)
        except TokenStorageError as exc:  # LeaseLostError too: check() says whether to go on
            log.debug("could not extend the refresh lease after waiting: %s", exc)
        return stored

    def _check_refresh_expiry(self, token: Token) -> None:
        """Warn once per refresh token whose end (if the server said) is near: log in again before it."""
        expires_at = token.refresh_token_expires_at
        if expires_at is None:
            return
        now = self._clock()
        lifetime = None if token.obtained_at is None else expires_at - token.obtained_at
        window = REFRESH_TOKEN_WARNING if lifetime is None else min(REFRESH_TOKEN_WARNING, lifetime / 4)
        if expires_at - now > window:
            return
        with self._cond:
            if self._warned_refresh_token == token.refresh_token:
                return
            self._warned_refresh_token = token.refresh_token
        log.warning(
            "refresh token %s %s: log in again before then",
            fingerprint(token.refresh_token),
            "has expired" if expires_at <= now else f"expires in {expires_at - now:.0f}s",
        )
        self._callback(self._on_refresh_token_expiring, token)

    def _save_in_lease(self, flight: _Flight, lease: RefreshLease, new: Token) -> tuple[Token, bool] | None:
        """Save ``new`` before the lease is released (Rule 7).

        Returns (``new``, whether it is still unsaved), (a newer token another holder stored
        meanwhile, False), or None when a reset dropped this refresh (Rule 10).
        """
        deadline = self._monotonic() + self._refresh_timeout
        while True:
            with self._store_mutex:
                with self._cond:
                    if flight.epoch != self._epoch:
                        log.info("dropping refreshed token %s: signed out meanwhile", fingerprint(new.access_token))
                        return None
                try:
                    lease.save(new)
                    return new, False
                except LeaseLostError as exc:
                    log.warning("refreshed token %s not saved: %s", fingerprint(new.access_token), exc)
                    error: TokenStorageError = exc
                    try:
                        newer = read_token(self._storage)
                    except TokenStorageError as load_error:
                        error = load_error
                    else:
                        if newer is not None:
                            return newer, False
                except TokenStorageError as exc:
                    error = exc
            if self._monotonic() + SAVE_RETRY_INTERVAL >= deadline or isinstance(error, LeaseLostError):
                # Rule 7: keep it in memory and save again later.
                log.warning(
                    "refreshed token %s not saved (%s); keeping it in memory", fingerprint(new.access_token), error
                )
                with self._cond:
                    self._unsaved_lease = lease if lease.fenced and not isinstance(error, LeaseLostError) else None
                return new, True
            log.warning("refreshed token %s not saved yet (%s); retrying", fingerprint(new.access_token), error)
            self._sleep(SAVE_RETRY_INTERVAL)
            # Then the save says whether a newer token is there; a storage blip is one more failure.
            with contextlib.suppress(TokenStorageError):
                lease.extend(self._refresh_timeout)

    def _done(self, flight: _Flight, token: Token, unsaved: bool, own: bool) -> Token | None:
        """Publish a refresh's (or an adopted) token; return it to the leader unless a reset dropped the flight."""
        self._publish(
            flight,
            token,
            None,
            current=token,
            unsaved=unsaved,
            refreshed=own,
            adopted=not own,
            save_after=SAVE_RETRY_DELAY,
        )
        with self._cond:
            return token if flight.epoch == self._epoch else None

    def _end_session(
        self, flight: _Flight, lease: RefreshLease, old: Token | None, exc: SessionExpiredError
    ) -> Token | None:
        try:
            stored = read_token(lease)
        except TokenStorageError as load_error:
            # What is stored cannot be read: it may be a newer login. Keep it; end this session.
            log.warning("session expired (%s); the stored record is left as it is: %s", exc.error, load_error)
        else:
            if stored is not None and old is not None and stored.refresh_token != old.refresh_token:
                # Rule 8: someone else already replaced the rejected token; adopt theirs.
                log.info(
                    "refresh token rejected, but the store holds a newer token %s: adopting it",
                    fingerprint(stored.access_token),
                )
                return self._done(flight, stored, unsaved=False, own=False)
            log.warning("session expired (%s); deleting the stored token", exc.error)
            try:
                self._storage.delete()
            except TokenStorageError as delete_error:
                log.warning("could not delete the stored token: %s", delete_error)
        if self._publish(flight, None, exc, clear=True, unsaved=False):
            self._callback(self._on_session_expired, exc)
        raise exc

    @staticmethod
    def _callback(callback: Callable[..., object] | None, argument: object) -> None:
        if callback is None:
            return
        try:
            callback(argument)
        except Exception:
            log.exception("the %s callback raised; ignoring it", getattr(callback, "__name__", "user"))


def _usable(token: Token, now: float) -> bool:
    """Whether ``token`` may be replayed with or adopted: not expired, nor about to be (Rule 6)."""
    if token.expires_at is None:
        return True
    lifetime = math.inf if token.obtained_at is None else token.expires_at - token.obtained_at
    return token.expires_at - now > min(REPLAY_MARGIN, lifetime / 10)


def _wait_in_slices(event: threading.Event, timeout: float) -> None:
    """Wait up to ``timeout`` real seconds for ``event``, in slices of INTERRUPT_SLICE.

    A signal that arrives just before a wait begins does not end that wait: its Python handler
    (Ctrl-C's KeyboardInterrupt) runs when the wait returns. Short slices bound that delay.
    """
    deadline = time.monotonic() + timeout
    while not event.is_set() and (left := deadline - time.monotonic()) > 0:
        event.wait(min(left, INTERRUPT_SLICE))


def _reason(exc: Exception) -> str:
    return exc.error if isinstance(exc, RefreshError) else str(exc)


def _after_fork_in_child() -> None:
    for coordinator in list(_coordinators):
        token = coordinator._token  # the parent's; the flight's thread is not in this process
        coordinator._init_state()
        coordinator._store_mutex = threading.Lock()
        coordinator._token = token
        coordinator._snapshot()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _save_unsaved_at_exit() -> None:
    """Interpreter exit: one more try to save each token that could not be saved (Rule 7)."""
    for coordinator in list(_coordinators):
        try:
            coordinator.save_unsaved()
        except Exception:
            log.exception("could not save a token at exit")
