"""Soak test (opt-in, not collected by pytest): many threads through one adapter for a set time.

    python tests/soak.py --duration 60            # 64 threads, 2-second tokens, 5% faults
    python tests/soak.py --duration 600 --json soak.json

64 threads send GET requests through one TokenRefreshAdapter (MemoryStorage) to the loopback
server of ``tests/test_stress.py``: refresh tokens rotate with reuse detection, access tokens live
``--ttl`` seconds, and ``--fault-rate`` of the refresh calls get a transient fault (half 503
``temporarily_unavailable``, half a connection dropped before the call is processed). The same
checks as the stress test run on every request and every refresh call; the script prints requests,
refreshes per expiry, failures by cause, latency percentiles and memory before/after, and exits 1
if an invariant failed, the token family was revoked, a thread outlived its bound, or memory grew
beyond ``--max-rss-growth-mb`` (RSS, over the measured phase) or ``--max-traced-growth-kb``
(tracemalloc, over the traced phase).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests
import urllib3
from test_stress import (
    Outcome,
    StressServer,
    background_refreshes,
    call,
    check_token_calls,
    join_all,
    judge,
    recording_adapter,
)

import requests_tokenrefresh
from requests_tokenrefresh import MemoryStorage, Token

# Latency histogram: bucket i holds latencies up to FIRST * GROWTH**i seconds (5% resolution),
# so that recording a request allocates nothing and memory stays flat however long the run.
FIRST, GROWTH, BUCKETS = 1e-4, 1.05, 320


def bucket(seconds: float) -> int:
    if seconds <= FIRST:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log(seconds / FIRST) / math.log(GROWTH)))


def percentile(histogram: list[int], share: float) -> float:
    total = sum(histogram)
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= share * total:
            return FIRST * GROWTH**index
    return math.inf


def rss_mib() -> float:
    """The resident set size of this process now (VmRSS), else its peak (ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


#: The phases of a run: latency is reported for "measured" only (tracemalloc slows everything).
PHASES = ("warm-up", "measured", "traced")


class Worker:
    """One thread's counts: nothing grows with the number of requests."""

    def __init__(self) -> None:
        self.histograms = {phase: [0] * BUCKETS for phase in PHASES}
        self.causes: collections.Counter[str] = collections.Counter()
        self.problems: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.slowest = dict.fromkeys(PHASES, 0.0)
        self.leaked = 0

    def record(self, phase: str, outcome: Outcome, cause: str, problem: str | None) -> None:
        took = outcome.end - outcome.start
        self.histograms[phase][bucket(took)] += 1
        self.slowest[phase] = max(self.slowest[phase], took)
        self.causes[cause] += 1
        self.leaked += outcome.leaked
        if problem is not None:
            kind = problem.split(":")[0][:80]
            self.problems[kind] += 1
            if len(self.examples) < 5:
                self.examples.append(problem)


class Gate:
    """Lets the main thread stop the traffic between requests, so that memory is measured at rest."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.cond = threading.Condition()
        self.open = True
        self.waiting = 0

    def passage(self) -> None:
        """Called by a worker between two requests: waits while the gate is closed."""
        with self.cond:
            if self.open:
                return
            self.waiting += 1
            self.cond.notify_all()
            while not self.open:
                self.cond.wait()
            self.waiting -= 1

    def close(self, timeout: float) -> bool:
        """Close the gate and wait until every worker stands at it; whether they all did in time."""
        with self.cond:
            self.open = False
            return self.cond.wait_for(lambda: self.waiting == self.threads, timeout)

    def reopen(self) -> None:
        with self.cond:
            self.open = True
            self.cond.notify_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--ttl", type=float, default=2.0, help="access token lifetime in seconds")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of refresh calls with a fault")
    parser.add_argument("--refresh-timeout", type=float, default=10.0, help="the adapter's refresh_timeout")
    parser.add_argument("--max-rss-growth-mb", type=float, default=8.0)
    parser.add_argument("--max-traced-growth-kb", type=float, default=256.0)
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args(argv)
    # The timeline: warm-up (1/6), measured (to 2/3: throughput, latency, RSS growth), traced (the
    # rest: tracemalloc, which slows every allocation, compares a snapshot taken a quarter into it,
    # once the long-lived structures (pooled connections, the server's handlers) have been rebuilt
    # under tracing, with one taken just before the end). Memory
    # is measured with the traffic stopped between requests (the gate), so that no request is
    # half-way and no garbage is waiting for the collector.
    warm_end = args.duration / 6
    trace_start = args.duration * 2 / 3
    rss_start = rss_mib()

    server = StressServer(
        ttl=args.ttl,
        rotation="reuse-detection",
        fault_rate=args.fault_rate,
        max_faults_in_row=1_000_000,  # no cap: independent faults
        api_work=(0.0, 0.0),
        seed=int(time.time()),
    )
    server.api_log = collections.deque(maxlen=100)  # type: ignore[assignment]  # bounded: memory must stay flat
    server.start()
    adapter = recording_adapter(
        server, MemoryStorage(Token.from_response(server.issue())), "soak", refresh_timeout=args.refresh_timeout
    )
    recorder = adapter.recorder
    assert recorder is not None
    workers = [Worker() for _ in range(args.threads)]
    phase = ["warm-up"]
    gate = Gate(args.threads)
    start = time.monotonic()
    stop = start + args.duration

    def work(i: int) -> None:
        me = workers[i]
        session = requests.Session()
        session.mount(server.url + "/", adapter)
        url = f"{server.url}/api/{i}"
        while time.monotonic() < stop:
            gate.passage()
            now = phase[0]
            outcome = call(session, url, recorder)
            cause, problem = judge(outcome, server, args.refresh_timeout)
            me.record(now, outcome, cause, problem)
        del session.adapters[server.url + "/"]  # shared: closed once, below
        session.close()

    rss_timeline: list[tuple[int, float]] = []  # (seconds, MiB) every 10 s, taken while the traffic runs

    def at(offset: float) -> None:
        while (left := start + offset - time.monotonic()) > 0:
            time.sleep(min(left, 10.0 - (time.monotonic() - start) % 10.0))
            elapsed = time.monotonic() - start
            if elapsed % 10.0 < 0.05 or 10.0 - elapsed % 10.0 < 0.05:
                rss_timeline.append((round(elapsed), round(rss_mib(), 1)))

    def at_rest() -> None:
        if not gate.close(timeout=6 * args.refresh_timeout + 5.0):
            raise SystemExit("soak: FAILED (the workers did not stop at the gate: a request is stuck)")
        gc.collect()

    threads = [threading.Thread(target=work, args=(i,), name=f"soak-{i}", daemon=True) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    at(warm_end)
    at_rest()
    rss_warm = rss_mib()
    phase[0] = "measured"
    gate.reopen()
    measured_from = time.monotonic()
    at(trace_start)
    measured_for = time.monotonic() - measured_from
    at_rest()
    rss_measured = rss_mib()
    phase[0] = "traced"
    tracemalloc.start(1)
    gate.reopen()
    at(trace_start + (args.duration - trace_start) / 4)
    at_rest()
    first = tracemalloc.take_snapshot()
    gate.reopen()
    at(args.duration - 1.0)
    at_rest()
    last = tracemalloc.take_snapshot()
    tracemalloc.stop()
    gate.reopen()
    stuck = join_all(threads, stop + 6 * args.refresh_timeout + 5.0)
    stuck += join_all(background_refreshes(), time.monotonic() + args.refresh_timeout + 5.0)
    ended = time.monotonic()
    gc.collect()
    rss_end = rss_mib()
    diff = last.compare_to(first, "lineno")
    traced_growth = sum(d.size_diff for d in diff)
    growth_lines = [str(d) for d in sorted(diff, key=lambda d: d.size_diff, reverse=True)[:5]]
    del first, last, diff
    adapter.close()
    server.stop()

    # -- the figures --
    def merged(phases: tuple[str, ...]) -> list[int]:
        return [sum(w.histograms[p][i] for w in workers for p in phases) for i in range(BUCKETS)]

    everything, measured = merged(PHASES), merged(("measured",))
    causes: collections.Counter[str] = sum((w.causes for w in workers), collections.Counter())
    problems: collections.Counter[str] = sum((w.problems for w in workers), collections.Counter())
    examples = [e for w in workers for e in w.examples][:5]
    calls = server.calls
    by_refresh_token: dict[str | None, list[Any]] = collections.defaultdict(list)
    for c in calls:
        by_refresh_token[c.refresh_token].append(c)
    refreshed = [cs for cs in by_refresh_token.values() if any(c.outcome == "200" for c in cs)]
    successes = [sum(c.outcome == "200" for c in cs) for cs in refreshed]
    attempts = [len(cs) for cs in refreshed]
    sent = sum(recorder.sends.values())
    violations = [*check_token_calls(server), *stuck, *recorder.problems]
    violations += [f"{count} requests: {kind}" for kind, count in problems.items()]
    if server.revoked:
        violations.append("the token family was revoked")
    if max(successes, default=0) > 1:
        violations.append(f"a refresh token was refreshed {max(successes)} times")
    if recorder.refreshes != len(successes):
        violations.append(f"the server refreshed {len(successes)} times, the adapter published {recorder.refreshes}")
    if server.api_calls != sent:
        violations.append(f"the server saw {server.api_calls} API calls, the adapter sent {sent}")
    rss_growth = rss_measured - rss_warm
    if rss_growth > args.max_rss_growth_mb:
        violations.append(f"RSS grew {rss_growth:.1f} MiB while measured (bound {args.max_rss_growth_mb} MiB)")
    if traced_growth / 1024 > args.max_traced_growth_kb:
        violations.append(f"traced memory grew {traced_growth / 1024:.0f} KiB (bound {args.max_traced_growth_kb} KiB)")

    summary: dict[str, Any] = {
        "settings": {
            "duration_s": args.duration,
            "threads": args.threads,
            "ttl_s": args.ttl,
            "fault_rate": args.fault_rate,
            "refresh_timeout_s": args.refresh_timeout,
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "requests_tokenrefresh": requests_tokenrefresh.__version__,
            "requests": requests.__version__,
            "urllib3": urllib3.__version__,
        },
        "requests": sum(everything),
        "requests_per_s_measured": round(sum(measured) / measured_for),
        "outcomes": dict(causes.most_common()),
        "api_401s": server.api_rejections,
        "refresh_calls": len(calls),
        "refresh_call_outcomes": dict(collections.Counter(c.outcome for c in calls).most_common()),
        "token_generations": len(server.issued),
        "refreshes": len(successes),
        "seconds_per_refresh": round((ended - start) / max(1, len(successes)), 2),
        "refreshes_per_expiry_max": max(successes, default=0),
        "refresh_calls_per_expiry_mean": round(sum(attempts) / max(1, len(attempts)), 3),
        "refresh_calls_per_expiry_max": max(attempts, default=0),
        "sends_chosen_before_a_replacement_sent_after": recorder.late,
        "responses_left_unread": sum(w.leaked for w in workers),
        "latency_ms_measured": {
            "p50": round(percentile(measured, 0.50) * 1000, 1),
            "p99": round(percentile(measured, 0.99) * 1000, 1),
            "p99.9": round(percentile(measured, 0.999) * 1000, 1),
        },
        "requests_traced": sum(merged(("traced",))),
        "latency_ms_max": {p: round(max(w.slowest[p] for w in workers) * 1000, 1) for p in PHASES},
        "memory": {
            "rss_start_mib": round(rss_start, 1),
            "rss_after_warmup_mib": round(rss_warm, 1),
            "rss_after_measured_mib": round(rss_measured, 1),
            "rss_end_mib": round(rss_end, 1),
            "rss_growth_measured_mib": round(rss_growth, 2),
            "traced_growth_kib": round(traced_growth / 1024, 1),
            "traced_top_growth": growth_lines,
            "rss_timeline_mib": rss_timeline,
        },
        "violations": violations,
        "violation_examples": examples,
        "ok": not violations,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    print("soak:", "OK" if not violations else f"FAILED ({len(violations)} violations)", file=sys.stderr)
    return 0 if not violations else 1


if __name__ == "__main__":
    sys.exit(main())
