"""One cell of the fault matrix: run it, observe it, classify it, check the invariants.

A cell starts from an access token that has expired (stored, and issued by a fresh loopback
:class:`AuthServer` that rotates refresh tokens and revokes the family on reuse), so the first
request refreshes and goes through every step. The fault is armed at one step (:mod:`.inject`),
the request is sent, the fault is lifted, and a recovery phase follows: three more requests and
``close()``. Then :func:`check` asserts the invariants:

1. no refresh token presented again after the server accepted it, and no family revoked;
2. no rotated token dropped: after recovery the store holds the server's current refresh token;
3. no sign-out (``on_session_expired``, a deleted record) unless the store was emptied;
4. every wait bounded: the cell runs under a time limit, and no thread it started is left;
5. every error typed: ``RefreshError(retryable=True)`` or ``TokenStorageError`` for a transient
   fault, ``SessionExpiredError`` only for an empty store or a rejected refresh token, the
   interrupt itself for an interrupt; nothing else;

except where the declared outcome is one of the documented residual windows (``revoked``) or an
empty store (``no token``, ``ok, left empty``), which relax 1-3 as the outcome says. Every cell is
deterministic: the retry jitter is seeded with the cell's id, and faults are placed by step, not
by time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from requests_tokenrefresh import SessionExpiredError, Token, TokenRefreshAdapter, TokenStorageError
from requests_tokenrefresh._redact import fingerprint
from requests_tokenrefresh.testing import AuthServer, Canned

from .backends import Backend, Outage
from .inject import FaultStorage, Injector, Spec, outcome_of, retryable
from .matrix import FAULTS, STEPS, cell_id

__all__ = [
    "REDIS_LEASE",
    "REDIS_MARGIN",
    "REFRESH_TIMEOUT",
    "Observation",
    "Scene",
    "check",
    "classify",
    "run_in_process",
    "typed",
]

#: The adapters' refresh_timeout: short, so that a give-up costs a second.
REFRESH_TIMEOUT = 1.0
#: A Redis lease (the adapter asks for refresh_timeout + 10 s) and lease_margin (its check then asks
#: for 1.2 s), so that a lease no one could release runs out in under two seconds; the protocol is
#: the same.
REDIS_LEASE, REDIS_MARGIN = 1.75, 0.2
#: Requests after the fault is lifted.
RECOVERY_REQUESTS = 3
#: Seconds the harness waits for anything (a step, a thread, an interrupt's delivery).
BOUND = 30.0
STEP_NAMES = {s.key: s.name for s in STEPS}
FAULT_KEYS = {f.key for f in FAULTS}


class HarnessError(AssertionError):
    """The harness could not place the fault (a bug of the harness, not of the product)."""


def expired_seed(srv: AuthServer) -> Token:
    """A login token from ``srv`` whose access token expired a second ago: the first request refreshes."""
    token = Token.from_response(srv.issue())
    now = time.time()
    return Token(token.access_token, token.refresh_token, expires_at=now - 1, obtained_at=now - 3601)


@dataclasses.dataclass
class Observation:
    """What a cell did, in words; the facts :func:`classify` and :func:`check` use."""

    cell: str
    first: str = ""  # the request met by the fault (process cells: the other process's first request)
    stored_after: str = ""  # the record right after it: current, spent, none, unreadable
    recovery: list[str] = dataclasses.field(default_factory=list)
    stored_final: str = ""  # after recovery and close()
    memory_final: str = ""  # the adapter's token after recovery
    nothing_rotated: bool = False  # the server's current refresh token is still the first one
    session_expired: int = 0  # on_session_expired calls
    revoked: bool = False
    reused: list[str] = dataclasses.field(default_factory=list)  # refresh tokens presented after acceptance
    token_requests: list[str] = dataclasses.field(default_factory=list)  # "<refresh token fp> <status>"
    steps: list[str] = dataclasses.field(default_factory=list)  # reached, in order
    fired: list[str] = dataclasses.field(default_factory=list)  # where a fault was placed
    others: list[str] = dataclasses.field(default_factory=list)  # other processes' outcomes
    harness_errors: list[str] = dataclasses.field(default_factory=list)
    threads_left: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    log: list[str] = dataclasses.field(default_factory=list)

    def brief(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("log")
        return data


def token_state(token: Token | None, srv: AuthServer) -> str:
    if token is None:
        return "none"
    with srv.lock:
        current = srv._families[1].current_refresh
    return "current" if token.refresh_token == current else "spent"


def read_state(backend: Backend, srv: AuthServer) -> str:
    try:
        return token_state(backend.record(), srv)
    except TokenStorageError as exc:
        return f"unreadable ({exc})"


def observe_server(obs: Observation, srv: AuthServer, seed: Token) -> None:
    """Invariant 1's facts: which refresh token was presented when, and whether the family was revoked."""
    accepted: set[str] = set()
    with srv.lock:
        log = [dict(entry) for entry in srv.token_log]
        current = srv._families[1].current_refresh
    for entry in log:
        presented = entry["refresh_token"] or ""
        obs.token_requests.append(f"{fingerprint(presented)} {entry['status']}")
        if presented in accepted:
            obs.reused.append(fingerprint(presented))
        if entry["status"] == 200:
            accepted.add(presented)
    obs.revoked = srv.revoked
    obs.nothing_rotated = current == seed.refresh_token


def classify(obs: Observation) -> str:
    """The outcome code (a key of ``matrix.OUTCOMES``) that the observation shows."""
    if obs.revoked:
        return "revoked"
    first = obs.first
    if first in ("KeyboardInterrupt", "SystemExit"):
        return "interrupt" if obs.stored_after == "current" else f"interrupt, {obs.stored_after} stored"
    if first == "SessionExpiredError(no_token)":
        return "no token"
    if retryable(first):
        return "retry"
    if first == "ok":
        if obs.stored_after == "current":
            return "ok"
        if obs.stored_final == "current":
            return "ok, saved later"
        if obs.stored_final == "none" and obs.memory_final == "current":
            return "ok, left empty"
        return f"ok, but {obs.stored_final} stored at the end"
    return f"unexpected: {first}"


def typed(outcome: str, declared: str) -> bool:
    """Invariant 5: whether a request may end so in a cell whose declared outcome is ``declared``."""
    if outcome == "ok" or retryable(outcome):
        return True
    if outcome in ("KeyboardInterrupt", "SystemExit"):
        return declared == "interrupt"
    if outcome.startswith("SessionExpiredError("):  # an empty store, or a rejected refresh token
        return declared in ("no token", "revoked")
    # In a residual window the family is revoked: a replay may get 401, a refresh invalid_grant.
    return declared == "revoked" and outcome.startswith(("RefreshError(", "http 401"))


def check(obs: Observation, declared: str, fault: str) -> None:
    """Assert the declared outcome and the invariants; the message carries the whole observation."""
    problems: list[str] = []
    observed = classify(obs)
    if observed != declared:
        problems.append(f"outcome {observed!r}, declared {declared!r}")
    if obs.harness_errors:
        problems.append(f"harness: {obs.harness_errors}")
    if fault not in ("endpoint_5xx",) and not obs.fired:
        problems.append("the fault was never placed: its step was not reached")
    if declared != "revoked":
        if obs.revoked or obs.reused:
            problems.append(f"invariant 1: refresh token presented again {obs.reused}, revoked={obs.revoked}")
        if declared == "no token":
            if not obs.nothing_rotated:
                problems.append("invariant 2: a refresh token was rotated, and the store is empty")
        elif declared == "ok, left empty":
            if obs.memory_final != "current":
                problems.append(f"invariant 2: the adapter holds a {obs.memory_final} token")
        elif obs.stored_final != "current":
            problems.append(f"invariant 2: the store holds {obs.stored_final}, not the current refresh token")
        if obs.session_expired > (1 if declared == "no token" else 0):
            problems.append(f"invariant 3: on_session_expired called {obs.session_expired} times")
    if obs.threads_left:
        problems.append(f"invariant 4: threads left: {obs.threads_left}")
    for outcome in [obs.first, *obs.recovery, *obs.others]:
        if not typed(outcome, declared):
            problems.append(f"invariant 5: {outcome}")
    if problems:
        detail = json.dumps(obs.brief(), indent=1)
        raise AssertionError(
            f"cell {obs.cell} (seed: the cell id): " + "; ".join(problems) + f"\n{detail}\nlog:\n" + "\n".join(obs.log)
        )


@contextlib.contextmanager
def captured_log(obs: Observation, limit: int = 60) -> Iterator[None]:
    """The package's log lines of the cell (WARNING and up, INFO for refreshes), for the failure message."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.threadName} {record.levelname} {record.name}: {record.getMessage()}")

    handler = Collect(logging.INFO)
    logger = logging.getLogger("requests_tokenrefresh")
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        obs.log = lines[-limit:]


def wait_until(condition: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {bound}s waiting for {what}")
        time.sleep(0.005)


def threads_left(before: set[threading.Thread], bound: float = 10.0) -> list[str]:
    """Threads started since ``before`` that are still alive after up to ``bound`` seconds.

    Daemon threads of the token server (its handlers) are not counted; the adapter's, the
    harness's and every non-daemon thread are.
    """
    deadline = time.monotonic() + bound
    left: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - before:
        if thread.daemon and not thread.name.startswith(("token-", "fault-")):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return sorted(t.name for t in left)


@dataclasses.dataclass
class Scene:
    """What an in-process cell needs: where it runs and the storage under test."""

    step: str
    fault: str
    backend: Backend
    declared: str

    @property
    def cell(self) -> str:
        return cell_id(self.step, self.fault, self.backend.kind)


class Interrupts:
    """Delivers SIGINT (KeyboardInterrupt) or SIGTERM (SystemExit) to the main thread, and knows it arrived."""

    def __init__(self, active: bool) -> None:
        self.active = active  # install the handlers (only cells that interrupt: a real Ctrl-C stays one)
        self.delivered = threading.Event()
        self.main = threading.main_thread().ident
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.delivered.set()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM) if self.active else ():
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def deliver(self, sig: int) -> None:
        """From another thread: interrupt the main thread, and return once its handler ran."""
        assert self.main is not None
        self.delivered.clear()
        signal.pthread_kill(self.main, sig)
        if not self.delivered.wait(BOUND):
            raise HarnessError("the interrupt never reached the main thread")


def fault_spec(
    scene: Scene, adapter: Callable[[], TokenRefreshAdapter], interrupts: Interrupts, outage: Outage
) -> Spec:
    """The :class:`Spec` that places ``scene.fault`` at its step (in-process faults)."""
    step, fault, backend = STEP_NAMES[scene.step], scene.fault, scene.backend
    if fault == "error_once":
        return Spec(around=lambda: backend.fail_once(step))
    if fault == "unreachable":
        return Spec(before=outage.start)
    if fault == "restarted_empty":
        return Spec(before=lambda: backend.wipe(wait=scene.step != "request_sent"))
    if fault == "keyboard_interrupt":
        return Spec(after=lambda: interrupts.deliver(signal.SIGINT))
    if fault == "system_exit":
        return Spec(after=lambda: interrupts.deliver(signal.SIGTERM))
    if fault == "close":

        def close() -> None:
            closer = threading.Thread(target=adapter().close, name="fault-close")
            closer.start()
            closer.join(BOUND)  # a close() that hangs is left for threads_left() to report

        return Spec(after=close)
    if fault in ("endpoint_5xx", "endpoint_never"):
        return Spec()
    raise HarnessError(f"not an in-process fault: {fault}")


def first_save_fails(backend: Backend) -> Spec:
    """The precondition of the ``save retried`` step: the first save fails once."""
    if backend.kind == "memory":
        raise HarnessError("a MemoryStorage save cannot fail")
    return Spec(around=lambda: backend.fail_once("save attempted"))


def run_in_process(scene: Scene) -> Observation:
    """Run one in-process cell (storage faults, interrupts, close(), the token endpoint)."""
    obs = Observation(scene.cell)
    random.seed(scene.cell)  # the retry jitter: a failing cell replays
    started = time.monotonic()
    before = set(threading.enumerate())
    expired_calls: list[SessionExpiredError] = []
    srv = AuthServer(ttl=3600, rotation="reuse-detection").start()
    session = requests.Session()
    adapter: TokenRefreshAdapter | None = None
    outage = Outage(scene.backend)
    try:
        interrupting = scene.fault in ("keyboard_interrupt", "system_exit")
        with captured_log(obs), Interrupts(interrupting) as interrupts:
            seed = expired_seed(srv)
            scene.backend.seed(seed)
            injector = Injector()
            adapter_ref: list[TokenRefreshAdapter] = []
            step_name = STEP_NAMES[scene.step]
            if scene.step == "save_retried":
                injector.specs["save attempted"] = first_save_fails(scene.backend)
            injector.specs[step_name] = fault_spec(scene, lambda: adapter_ref[0], interrupts, outage)
            redis = scene.backend.kind.startswith("redis")
            storage = scene.backend.storage(lease_margin=REDIS_MARGIN if redis else None)
            adapter = TokenRefreshAdapter(
                FaultStorage(storage, injector, lease_cap=REDIS_LEASE if redis else None),
                token_url=srv.token_url,
                refresh_timeout=REFRESH_TIMEOUT,
                on_refresh=lambda token: injector.at("publish", lambda: None),
                on_session_expired=expired_calls.append,
                pool_maxsize=4,
            )
            adapter_ref.append(adapter)
            session.mount(srv.url + "/", adapter)
            api = srv.url + "/api/data"

            done = threading.Event()
            controller = None
            if scene.fault == "endpoint_5xx":
                srv.canned = [Canned(503, {"error": "temporarily_unavailable"})] * 50
            elif scene.step == "request_sent":
                srv.hold_refresh()
                controller = threading.Thread(
                    target=_control_request_sent, args=(srv, injector, scene.fault, done, obs), name="fault-control"
                )
                controller.start()
            try:
                obs.first = outcome_of(session.get(api, timeout=BOUND))
            except BaseException as exc:  # the cell's subject: every kind is recorded and judged
                obs.first = outcome_of(exc)
                if not isinstance(exc, (KeyboardInterrupt, SystemExit, requests.RequestException)):
                    obs.harness_errors.append(f"the request raised {exc!r}")
            finally:
                done.set()
            if obs.first in ("KeyboardInterrupt", "SystemExit"):
                obs.stored_after = read_state(scene.backend, srv)  # at once: stored before the raise?
            if controller is not None:
                controller.join(BOUND)
            srv.canned.clear()
            srv.release_refresh(drop=True)  # nothing is held any more unless the cell failed
            outage.join()
            scene.backend.settle()
            if not obs.stored_after:
                obs.stored_after = read_state(scene.backend, srv)
            for _ in range(RECOVERY_REQUESTS):
                try:
                    obs.recovery.append(outcome_of(session.get(api, timeout=BOUND)))
                except requests.RequestException as exc:
                    obs.recovery.append(outcome_of(exc))
            obs.memory_final = token_state(adapter._coordinator.current(), srv)
            try:
                adapter.close()
            except Exception as exc:  # close() raises nothing: judged by invariant 5
                obs.recovery.append(outcome_of(exc))
            obs.stored_final = read_state(scene.backend, srv)
            obs.steps, obs.fired = list(injector.reached), list(injector.fired)
            obs.harness_errors += [repr(e) for e in injector.errors]
            obs.session_expired = len(expired_calls)
            observe_server(obs, srv, seed)
    finally:
        srv.release_refresh(drop=True)
        with contextlib.suppress(Exception):
            outage.join()
        with contextlib.suppress(Exception):
            scene.backend.settle()
        session.close()
        session.adapters.clear()  # closed once: a later close() would reach a storage closed below
        if adapter is not None:
            adapter.close()
        scene.backend.close()
        srv.stop()
        obs.threads_left = threads_left(before)
        obs.seconds = round(time.monotonic() - started, 2)
    return obs


def _control_request_sent(
    srv: AuthServer, injector: Injector, fault: str, done: threading.Event, obs: Observation
) -> None:
    """The ``request sent`` step: once the token endpoint holds the request, place the fault, then answer."""
    try:
        wait_until(lambda: srv.refresh_calls >= 1, "the refresh request")
        injector.at("request sent", lambda: None)
        if fault == "endpoint_never":
            done.wait(BOUND)  # the client gives up first; then the request is dropped unprocessed
            srv.release_refresh(drop=True)
        else:
            srv.release_refresh()
    except Exception as exc:
        obs.harness_errors.append(repr(exc))
        srv.release_refresh(drop=True)


def record(obs: Observation, step: str, fault: str, storage: str, declared: str) -> None:
    """With RTR_FAULT_MATRIX=path, add this cell's observed outcome to that JSON file."""
    path = os.environ.get("RTR_FAULT_MATRIX")
    if not path:
        return
    target = Path(path)
    results: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    results[obs.cell] = {
        "step": step,
        "fault": fault,
        "storage": storage,
        "declared": declared,
        "observed": classify(obs),
        "seconds": obs.seconds,
    }
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, target)
