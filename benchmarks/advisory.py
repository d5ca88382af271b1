"""Scenario 3, advisory window: request latency while a proactive refresh is in flight vs steady state.

The token endpoint answers after ``refresh_delay`` seconds (a slow authorization server). A round
has two phases, in alternating order: *steady*, a client holding a token with an hour to live;
*in flight*, a client holding a token that is due for an early refresh but still valid (a
120-second token 70 s into its life, 50 s left; ``leeway=60`` for every client that has one).
Each phase releases T threads on a barrier, each sending GETs back to back; the samples are the
requests that *started* within ``refresh_delay`` of the release, i.e. while the refresh was under
way in the second phase. Both phases start from a new client, so both pay for new connections.
Percentiles pool the samples of all rounds; as a check against a stall of the shared machine
landing in one phase, the median over rounds of each round's p99 ratio is given too. A request that
took at least 80 % of the refresh delay is *slow*: in the second phase it most likely waited for
the refresh; the steady phase shows how many slow requests the machine makes without one.
The server does not rotate refresh tokens here, so a library that refreshes from many threads at
once is not also failing requests.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from typing import Any

from _control import ServerProcess
from clients import LIBRARIES, Seed, make_client

__all__ = ["GOOGLE_NON_BLOCKING", "NO_EARLY_REFRESH", "AdvisoryResult", "run_advisory"]

GOOGLE_NON_BLOCKING = "google-auth, with_non_blocking_refresh()"
#: Libraries without an early-refresh window: their "in flight" phase starts from an expired token.
NO_EARLY_REFRESH = frozenset({"requests-oauthlib"})
_MAX_REQUESTS_PER_THREAD = 2000


@dataclasses.dataclass
class AdvisoryResult:
    client: str
    rounds: int
    threads: int
    window: float
    steady_rounds: list[list[float]] = dataclasses.field(default_factory=list)  # latencies, seconds
    in_flight_rounds: list[list[float]] = dataclasses.field(default_factory=list)
    failed: int = 0
    refresh_calls: int = 0

    @property
    def steady(self) -> list[float]:
        return [s for r in self.steady_rounds for s in r]

    @property
    def in_flight(self) -> list[float]:
        return [s for r in self.in_flight_rounds for s in r]

    @staticmethod
    def _pct(samples: list[float], p: int) -> float:
        if len(samples) < 2:
            return samples[0] if samples else float("nan")
        return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]

    def p(self, phase: str, p: int) -> float:
        return self._pct(self.steady if phase == "steady" else self.in_flight, p)

    def _ratio(self, p: int) -> float:
        ratios = [
            self._pct(flight, p) / self._pct(steady, p)
            for steady, flight in zip(self.steady_rounds, self.in_flight_rounds, strict=True)
        ]
        return statistics.median(ratios)

    @property
    def p99_ratio(self) -> float:
        """In flight / steady p99, all rounds pooled."""
        return self.p("in_flight", 99) / self.p("steady", 99)

    @property
    def p99_ratio_rounds(self) -> float:
        """In flight / steady p99, median over rounds of each round's ratio."""
        return self._ratio(99)

    @property
    def p50_ratio(self) -> float:
        return self.p("in_flight", 50) / self.p("steady", 50)

    def slow_per_round(self, phase: str) -> float:
        """Requests per round that took at least 80 % of the refresh delay."""
        samples = self.steady if phase == "steady" else self.in_flight
        return sum(1 for s in samples if s >= 0.8 * self.window) / self.rounds

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "rounds": self.rounds,
            "threads": self.threads,
            "window": self.window,
            "samples": {"steady": len(self.steady), "in_flight": len(self.in_flight)},
            "p50": {"steady": self.p("steady", 50), "in_flight": self.p("in_flight", 50)},
            "p99": {"steady": self.p("steady", 99), "in_flight": self.p("in_flight", 99)},
            "p50_ratio": self.p50_ratio,
            "p99_ratio": self.p99_ratio,
            "p99_ratio_rounds": self.p99_ratio_rounds,
            "slow_per_round": {"steady": self.slow_per_round("steady"), "in_flight": self.slow_per_round("in_flight")},
            "failed": self.failed,
            "refresh_calls": self.refresh_calls,
        }


def _client(name: str, server: ServerProcess, seed: Seed, threads: int) -> Any:
    if name == GOOGLE_NON_BLOCKING:
        client = make_client("google-auth", server, seed, pool_maxsize=threads, leeway=60)
        client.session.credentials.with_non_blocking_refresh()
        return client
    return make_client(name, server, seed, pool_maxsize=threads, leeway=60)


def _phase(client: Any, url: str, threads: int, window: float) -> tuple[list[float], int]:
    """Release ``threads`` senders; return latencies of requests started within ``window`` s, and failures."""
    barrier = threading.Barrier(threads + 1, timeout=30)
    stop = threading.Event()
    lock = threading.Lock()
    samples: list[tuple[float, float]] = []
    failed = [0]

    def sender() -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        for _ in range(_MAX_REQUESTS_PER_THREAD):
            if stop.is_set():
                return
            started = time.perf_counter()
            try:
                ok = client.session.get(url, timeout=(5, 30)).status_code == 200
            except Exception:
                ok = False
            latency = time.perf_counter() - started
            with lock:
                samples.append((started, latency))
                failed[0] += not ok

    pool = [threading.Thread(target=sender, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(window + 0.15)  # long enough for requests that waited for the refresh to finish
    stop.set()
    for thread in pool:
        thread.join(35)
    with lock:
        return [lat for started, lat in samples if started - t0 <= window], failed[0]


def run_advisory(
    server: ServerProcess,
    *,
    clients: tuple[str, ...] = (*LIBRARIES, GOOGLE_NON_BLOCKING),
    rounds: int = 10,
    threads: int = 8,
    refresh_delay: float = 0.2,
    progress: Any = print,
) -> list[AdvisoryResult]:
    server.start(ttl=3600, rotation="none", refresh_delay=refresh_delay)
    url = server.url + "/api/advisory"
    results = []
    for name in clients:
        result = AdvisoryResult(name, rounds, threads, refresh_delay)
        for round_no in range(rounds):
            for phase in ("steady", "in_flight") if round_no % 2 == 0 else ("in_flight", "steady"):
                seed = Seed.from_response(server.issue())
                now = time.time()
                if phase == "in_flight":
                    if name in NO_EARLY_REFRESH:
                        seed = seed.expired()
                    else:
                        seed = dataclasses.replace(seed, expires_at=now + 50, obtained_at=now - 70)
                client = _client(name, server, seed, threads)
                before = server.stats()["refresh_calls"]
                latencies, failed = _phase(client, url, threads, refresh_delay)
                refreshes = server.stats()["refresh_calls"] - before
                client.close()
                result.failed += failed
                if phase == "steady":
                    result.steady_rounds.append(latencies)
                    if refreshes:
                        raise RuntimeError(f"{name} refreshed a token with an hour to live")
                else:
                    result.in_flight_rounds.append(latencies)
                    result.refresh_calls += refreshes
        progress(
            f"  advisory {name:<42} p50 {result.p('steady', 50) * 1e3:6.1f} -> "
            f"{result.p('in_flight', 50) * 1e3:6.1f} ms"
            f"  p99 {result.p('steady', 99) * 1e3:6.1f} -> {result.p('in_flight', 99) * 1e3:6.1f} ms"
            f"  (x{result.p99_ratio:.2f}, rounds x{result.p99_ratio_rounds:.2f})"
            f"  slow/round {result.slow_per_round('steady'):.1f} -> "
            f"{result.slow_per_round('in_flight'):.1f}"
            f"  refreshes/round {result.refresh_calls / rounds:.1f}  failed {result.failed}"
        )
        results.append(result)
    return results
