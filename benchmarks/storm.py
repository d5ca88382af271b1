"""Scenario 1, refresh storm: N threads released at once on an expired token, several expiries.

Each expiry is one round. A round builds the client from the token it held at the end of the
previous round (what its save callback would have persisted), marks that access token as expired
one second ago, releases N threads on a ``threading.Barrier`` and lets each send K requests. That
is the situation of a worker pool (or a freshly started process) whose token has run out: every
thread needs a new token at the same moment. The server's access tokens live an hour, so a round
contains exactly one expiry and nothing expires while it runs. After the last round one more
request tells whether the session survived (a revoked token family cannot refresh any more).
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import threading
import time
from typing import Any

from _control import ServerProcess
from clients import LIBRARIES, Seed, make_client

__all__ = ["ROTATION_MODES", "StormResult", "run_storm"]

ROTATION_MODES = ("none", "rotate", "reuse-detection")
_ROUND_TIMEOUT = 60.0  # seconds a round may take in all; threads stop sending after it
_REQUEST_TIMEOUT = (5.0, 30.0)


@dataclasses.dataclass
class StormResult:
    library: str
    mode: str
    threads: int
    per_thread: int
    expiries: int
    requests: int = 0
    failed: int = 0
    refresh_calls: list[int] = dataclasses.field(default_factory=list)  # per expiry
    refresh_ok: int = 0
    revoked_in_round: int | None = None  # first round after which the family was revoked
    survived: bool = False
    failures: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    hung_threads: int = 0
    round_seconds: list[float] = dataclasses.field(default_factory=list)

    @property
    def total_refresh_calls(self) -> int:
        return sum(self.refresh_calls)

    @property
    def refresh_per_expiry_median(self) -> float:
        return statistics.median(self.refresh_calls) if self.refresh_calls else 0.0

    @property
    def meets_target(self) -> bool:
        """0 failed requests, exactly one refresh per expiry, the session survives."""
        return (
            self.failed == 0 and self.hung_threads == 0 and self.refresh_calls == [1] * self.expiries and self.survived
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failures"] = dict(self.failures)
        return data


def _describe(exc: BaseException) -> str:
    return type(exc).__name__


def _round(client: Any, url: str, threads: int, per_thread: int) -> tuple[int, collections.Counter[str], int]:
    """Release ``threads`` threads at once, each sending ``per_thread`` GETs; count failures."""
    barrier = threading.Barrier(threads, timeout=30)
    deadline = time.monotonic() + _ROUND_TIMEOUT
    lock = threading.Lock()
    failures: collections.Counter[str] = collections.Counter()
    sent = [0]

    def worker() -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            with lock:
                failures["barrier broken"] += per_thread
                sent[0] += per_thread
            return
        for _ in range(per_thread):
            if time.monotonic() > deadline:
                with lock:
                    failures["not sent (round timeout)"] += 1
                    sent[0] += 1
                continue
            try:
                response = client.session.get(url, timeout=_REQUEST_TIMEOUT)
                outcome = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except Exception as exc:  # every exception is a failed request, whatever the library
                outcome = _describe(exc)
            with lock:
                sent[0] += 1
                if outcome is not None:
                    failures[outcome] += 1

    pool = [threading.Thread(target=worker, name=f"storm-{i}", daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max(0.0, deadline + 5 - time.monotonic()))
    hung = sum(thread.is_alive() for thread in pool)
    return sent[0], failures, hung


def run_storm(
    server: ServerProcess,
    *,
    libraries: tuple[str, ...] = LIBRARIES,
    modes: tuple[str, ...] = ROTATION_MODES,
    thread_counts: tuple[int, ...] = (64, 256),
    expiries: int = 4,
    per_thread: int = 4,
    progress: Any = print,
) -> list[StormResult]:
    results = []
    for threads in thread_counts:
        for mode in modes:
            for library in libraries:
                result = StormResult(library, mode, threads, per_thread, expiries)
                server.start(ttl=3600, rotation=mode)
                seed = Seed.from_response(server.issue())
                url = server.url + "/api/storm"
                client = None
                for round_no in range(1, expiries + 1):
                    before = server.stats()
                    client = make_client(library, server, seed.expired(), pool_maxsize=threads)
                    started = time.perf_counter()
                    sent, failures, hung = _round(client, url, threads, per_thread)
                    result.round_seconds.append(time.perf_counter() - started)
                    after = server.stats()
                    result.requests += sent
                    result.failed += sum(failures.values())
                    result.failures.update(failures)
                    result.hung_threads += hung
                    result.refresh_calls.append(after["refresh_calls"] - before["refresh_calls"])
                    result.refresh_ok += after["refresh_ok"] - before["refresh_ok"]
                    if after["revoked"] and result.revoked_in_round is None:
                        result.revoked_in_round = round_no
                    seed = client.current()
                    if round_no < expiries:
                        client.close()
                assert client is not None
                try:  # does the session still work after the last expiry?
                    result.survived = client.session.get(url, timeout=_REQUEST_TIMEOUT).status_code == 200
                except Exception:
                    result.survived = False
                client.close()
                progress(
                    f"  storm N={threads:<3} {mode:<15} {library:<22} failed {result.failed:>4}/{result.requests:<5} "
                    f"refresh calls per expiry {result.refresh_calls} revoked "
                    f"{'no' if result.revoked_in_round is None else f'round {result.revoked_in_round}'} "
                    f"survived {'yes' if result.survived else 'no'}"
                )
                results.append(result)
    return results
