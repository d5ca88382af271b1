"""The one place that knows the current token, and the single-flight machinery around it.

Theory of operation
-------------------
Many threads send through one adapter. Each asks the coordinator for a token to send with
(:meth:`Coordinator.token_for_request`) and, when the server rejects it, for a token to replay with
(:meth:`Coordinator.token_after_rejection`). Work that needs I/O (reading the store, refreshing,
saving) is a *flight*: one thread, the leader, runs it; threads that cannot go on without its
result wait for it and share its outcome, token or exception alike.

Rule 1: only this module reads or writes the current token, the flight and the retry times; they
        are guarded by the one ``threading.Condition``. The one read without it is the fast path:
        ``_fresh``, an immutable (token, fresh-until) pair that is replaced whole under the lock,
        so a reader sees the old pair or the new one, never a mix. It is set only while nothing
        needs deciding (a token outside its refresh window, no forced refresh, nothing unsaved).
Rule 2: no network or keyring I/O, and no user callback, while the condition is held. Decide under
        the lock, do the I/O outside it, publish the outcome and ``notify_all()`` under it.
Rule 3: every wait has a timeout. A waiter whose flight outlives ``wait_timeout`` raises a
        retryable :class:`RefreshError` and retires the flight, so a hung leader cannot block the
        adapter forever; the late outcome of a retired flight is dropped.
Rule 4: at most one flight at a time, so at most one refresh per expiry; and no proactive refresh
        within MIN_REFRESH_INTERVAL of the last one, so a token whose lifetime is shorter than the
        refresh took (or a skewed clock) is sent as it is and left to the server to reject.
Rule 5: a token that is still valid is never waited for. In the refresh window (STALE) the refresh
        runs in a background thread and every request keeps sending with the valid token; if that
        refresh fails for a reason other than a rejected refresh token, the old token is used
        until it really expires.
Rule 6: a rejection (401) for a token that has already been replaced is answered with the current
        token, not with another refresh.
Rule 7: a rotated token is saved before it is published; if saving fails it is published anyway,
        kept in memory and saved again later. A refresh token is never dropped.
Rule 8: a rejected refresh token ends the session once: the store is read again (another process
        or a new login may have replaced the token, which is then adopted); otherwise the store
        is cleared, ``on_session_expired`` is called once, and every waiter gets the same error.
Rule 9: across processes, a refresh runs under the storage's inter-process lock. Inside it the
        store is read first: a token another process already refreshed is adopted without a
        network call; otherwise the refresh starts from the stored refresh token (the newest),
        and the rotated token is saved before the lock is released. The store is read only at
        first use and inside that lock (which a 401 also leads to), never per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from ._redact import fingerprint
from .exceptions import RefreshError, SessionExpiredError, TokenStorageError
from .tokens import Token, TokenState

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

#: Seconds before a failed advisory (STALE) refresh is tried again.
ADVISORY_RETRY_DELAY = 5.0
#: Seconds after a refresh during which the new token is not refreshed proactively (Rule 4).
MIN_REFRESH_INTERVAL = 1.0
#: Seconds before saving a token that could not be saved is tried again.
SAVE_RETRY_DELAY = 5.0


@dataclasses.dataclass(eq=False)
class _Flight:
    kind: str  # "load", "refresh" or "save"
    started: float  # time.monotonic()
    forced: bool = False  # a refresh because the server rejected the current token
    unsaved: bool = False  # the token in memory is newer than the stored one (Rule 7)
    done: bool = False
    token: Token | None = None
    error: BaseException | None = None


class Coordinator:
    """Holds the current token and runs loads, refreshes and saves one at a time.

    Args:
        load, save, delete: the storage operations.
        refresh: makes a new token from the current one (retries included); raises
            :class:`RefreshError` or :class:`SessionExpiredError`.
        lock: returns the inter-process refresh lock, a context manager (Rule 9); it raises
            :class:`TokenStorageError` if it cannot be had in time.
        leeway: the refresh window in seconds (at most half the token's lifetime).
        wait_timeout: the longest a thread waits for another thread's flight.
        clock: epoch seconds now.
        on_refresh, on_session_expired: the adapter's callbacks.
    """

    def __init__(
        self,
        *,
        load: Callable[[], Token | None],
        save: Callable[[Token], None],
        delete: Callable[[], None],
        refresh: Callable[[Token], Token],
        lock: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        leeway: float,
        wait_timeout: float,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[Token], object] | None = None,
        on_session_expired: Callable[[SessionExpiredError], object] | None = None,
    ) -> None:
        self._load, self._save, self._delete, self._refresh = load, save, delete, refresh
        self._lock = lock
        self._leeway = leeway
        self._wait_timeout = wait_timeout
        self._clock = clock
        self._on_refresh = on_refresh
        self._on_session_expired = on_session_expired
        self._cond = threading.Condition()
        # Guarded by _cond (Rule 1):
        self._token: Token | None = None
        self._flight: _Flight | None = None
        self._advisory_after = 0.0  # no advisory refresh before this epoch time
        self._unsaved = False  # the current token is not in the store yet (Rule 7)
        self._save_after = 0.0
        self._refreshed_at = float("-inf")  # epoch time of the last successful refresh
        self._fresh: tuple[Token, float] | None = None  # the fast path's snapshot (Rule 1)

    # -- what the adapter asks -------------------------------------------------------------

    def token_for_request(self) -> Token:
        """Return a token to send a request with, loading or refreshing it first if needed."""
        fresh = self._fresh
        if fresh is not None and self._clock() < fresh[1]:
            return fresh[0]  # steady state: no lock taken
        while True:
            with self._cond:
                token, flight = self._token, self._flight
                now = self._clock()
                if token is None:
                    if flight is not None:
                        self._wait(flight)
                        continue
                    mine = self._begin("load")
                else:
                    state = token.state(now, self._leeway)
                    if now - self._refreshed_at < MIN_REFRESH_INTERVAL:
                        state = TokenState.FRESH  # Rule 4: just refreshed; no refresh loop
                    if state is TokenState.INVALID:
                        if flight is not None:
                            result = self._wait(flight)
                            if result is not None:
                                return result  # a refresh's waiters use its token (one refresh, no loop)
                            continue
                        mine = self._begin("refresh")
                    elif flight is not None and flight.forced:
                        # The server already rejected this token: sending with it is pointless.
                        result = self._wait(flight)
                        if result is not None:
                            return result
                        continue
                    elif state is TokenState.STALE and flight is None and now >= self._advisory_after:
                        # Rule 5: refresh in the background; this request goes on with the valid token.
                        advisory = self._begin("refresh")
                        threading.Thread(
                            target=self._run_in_background, args=(advisory, token), name="token-refresh", daemon=True
                        ).start()
                        return token
                    elif self._unsaved and flight is None and now >= self._save_after:
                        mine = self._begin("save")
                    else:
                        return token  # FRESH, or STALE with a refresh already under way (Rule 5)
            result = self._run(mine, token)
            if result is not None:
                return result

    def token_after_rejection(self, used: Token | None) -> Token:
        """Return a token to replay a request with, after the server rejected ``used``.

        With ``used=None``, refresh whatever token is current (loading it first if needed).
        """
        while True:
            with self._cond:
                token, flight = self._token, self._flight
                if token is not None and used is None and flight is None:
                    used = token
                if token is not None and used is not None and token.access_token != used.access_token:
                    log.debug("401 for replaced token %s: replaying without a refresh", fingerprint(used.access_token))
                    return token  # Rule 6
                if flight is not None:
                    result = self._wait(flight)
                    if result is not None:
                        return result
                    continue
                mine = self._begin("load" if token is None else "refresh", forced=True)
            result = self._run(mine, token)
            if result is not None:
                return result

    def replacement(self, used: Token) -> Token | None:
        """A token that has replaced ``used``, waiting for a refresh under way; never starts one.

        Returns None if ``used`` is still the current token and no refresh is under way, or if
        the refresh under way fails.
        """
        with self._cond:
            while True:
                token, flight = self._token, self._flight
                if token is not None and token.access_token != used.access_token:
                    return token
                if flight is None or flight.kind != "refresh":
                    return None
                try:
                    result = self._wait(flight)
                except Exception:
                    return None
                if result is not None:
                    return result

    def current(self) -> Token | None:
        """The token in memory, if any, without loading or refreshing."""
        with self._cond:
            return self._token

    # -- under the lock ----------------------------------------------------------------------

    def _begin(self, kind: str, forced: bool = False) -> _Flight:
        self._flight = _Flight(kind, time.monotonic(), forced, self._unsaved)
        self._snapshot()
        return self._flight

    def _snapshot(self) -> None:
        """Publish the fast path's (token, fresh-until) pair, or None when there is something to decide."""
        token, flight = self._token, self._flight
        if token is None or self._unsaved or (flight is not None and flight.forced):
            self._fresh = None
        elif token.expires_at is None:
            self._fresh = (token, float("inf"))
        else:
            self._fresh = (token, token.expires_at - token.refresh_window(self._leeway))

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
                    f"refresh_timeout: no token after waiting {self._wait_timeout:.0f}s for the {flight.kind} "
                    "under way in another thread",
                    error="refresh_timeout",
                    retryable=True,
                )
            self._cond.wait(left)
        if flight.error is not None:
            raise flight.error
        return flight.token if flight.kind == "refresh" else None

    def _publish(self, flight: _Flight, token: Token | None, error: BaseException | None, **state: object) -> bool:
        with self._cond:
            flight.done, flight.token, flight.error = True, token, error
            current = self._flight is flight
            if current:
                self._flight = None
                for name, value in state.items():
                    setattr(self, name, value)
                self._snapshot()
            self._cond.notify_all()
            return current

    # -- outside the lock: the leader's I/O (Rule 2) --------------------------------------------

    def _run(self, flight: _Flight, token: Token | None) -> Token | None:
        """Run ``flight`` as its leader; return the token to send with, or None to decide again."""
        try:
            if flight.kind == "load":
                self._run_load(flight)
                return None
            if flight.kind == "save":
                assert token is not None
                self._run_save(flight, token)
                return None
            assert token is not None
            return self._run_refresh(flight, token)
        except BaseException as exc:
            if not flight.done:  # an unexpected error: never leave waiters hanging
                self._publish(flight, None, exc)
            raise

    def _run_in_background(self, flight: _Flight, token: Token) -> None:
        with contextlib.suppress(Exception):  # already published to the flight's waiters, and logged
            self._run(flight, token)

    def _run_load(self, flight: _Flight) -> None:
        try:
            stored = self._load()
        except TokenStorageError as exc:
            self._publish(flight, None, exc)
            raise
        if stored is None:
            missing = SessionExpiredError(
                "no token is stored: log in and save a token to the storage first", error="no_token"
            )
            self._publish(flight, None, missing)
            raise missing
        log.debug("loaded token %s from storage", fingerprint(stored.access_token))
        self._publish(flight, None, None, _token=stored, _unsaved=False)

    def _run_save(self, flight: _Flight, token: Token) -> None:
        try:
            self._save(token)
        except TokenStorageError as exc:
            log.warning("token %s still not saved (%s); will retry", fingerprint(token.access_token), exc)
            self._publish(flight, None, None, _save_after=self._clock() + SAVE_RETRY_DELAY)
        else:
            log.info("saved token %s that could not be saved before", fingerprint(token.access_token))
            self._publish(flight, None, None, _unsaved=False)

    def _run_refresh(self, flight: _Flight, old: Token) -> Token:
        base = old  # the token whose refresh token is presented
        try:
            with self._lock():
                stored = None if flight.unsaved else self._load()  # an unsaved token is the newest
                if stored is not None:
                    usable = stored.state(self._clock(), self._leeway) is not TokenState.INVALID
                    if stored.access_token != old.access_token and usable:
                        log.info("adopting token %s refreshed elsewhere", fingerprint(stored.access_token))
                        return self._done(flight, stored, unsaved=False)
                    base = stored  # its refresh token is the newest
                elif not flight.unsaved:
                    raise SessionExpiredError(
                        "the stored token was deleted (signed out elsewhere?): log in again", error="no_token"
                    )
                new = self._refresh(base)
                unsaved = not self._try_save(new)
        except SessionExpiredError as exc:
            return self._end_session(flight, base, exc)
        except (RefreshError, TokenStorageError) as exc:
            if not flight.forced and old.state(self._clock(), self._leeway) is not TokenState.INVALID:
                # Rule 5: an advisory refresh failed; the old token is still good.
                log.warning("refresh failed (%s); using the current token until it expires", _reason(exc))
                self._publish(flight, None, exc, _advisory_after=self._clock() + ADVISORY_RETRY_DELAY)
                return old
            self._publish(flight, None, exc)
            raise
        log.info(
            "refreshed token %s -> %s (refresh token %s -> %s), expires in %s",
            fingerprint(base.access_token),
            fingerprint(new.access_token),
            fingerprint(base.refresh_token),
            fingerprint(new.refresh_token),
            "unknown" if new.expires_at is None else f"{new.expires_at - self._clock():.0f}s",
        )
        self._done(flight, new, unsaved)
        self._callback(self._on_refresh, new)
        return new

    def _try_save(self, token: Token) -> bool:
        try:
            self._save(token)
        except TokenStorageError as exc:  # Rule 7: keep it in memory, save again later
            log.warning("refreshed token %s not saved (%s); keeping it in memory", fingerprint(token.access_token), exc)
            return False
        return True

    def _done(self, flight: _Flight, token: Token, unsaved: bool) -> Token:
        now = self._clock()
        self._publish(
            flight, token, None, _token=token, _unsaved=unsaved, _save_after=now + SAVE_RETRY_DELAY, _refreshed_at=now
        )
        return token

    def _end_session(self, flight: _Flight, old: Token, exc: SessionExpiredError) -> Token:
        try:
            stored = self._load()
        except TokenStorageError:
            stored = None
        if stored is not None and stored.refresh_token != old.refresh_token:
            # Rule 8: someone else already replaced the rejected token; adopt theirs.
            log.info(
                "refresh token rejected, but the store holds a newer token %s: adopting it",
                fingerprint(stored.access_token),
            )
            return self._done(flight, stored, unsaved=False)
        log.warning("session expired (%s); deleting the stored token", exc.error)
        try:
            self._delete()
        except TokenStorageError as delete_error:
            log.warning("could not delete the stored token: %s", delete_error)
        self._publish(flight, None, exc, _token=None, _unsaved=False)
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


def _reason(exc: Exception) -> str:
    return exc.error if isinstance(exc, RefreshError) else str(exc)
