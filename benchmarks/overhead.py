"""Scenario 2, overhead: client CPU time per request with a valid token, as a ratio to plain requests.

The baseline is a plain ``requests.Session`` with a static ``Authorization`` header in
``session.headers``. Each client is measured in pairs with the baseline: a batch of ``batch``
sequential GETs by one, then a batch by the other, the order flipped every pair, and the ratio
of the two batches' CPU time (``time.process_time()``: this process only; the server runs in
another) is one sample. Whole-run medians drift 10-15 % on a shared machine; neighbouring batches
drift together. The clients take turns in a shuffled order in every round of pairs. A *repeat* is
``pairs`` pairs per client; the result is the median over repeats of each repeat's median ratio,
with the range over repeats, which shows how well the number repeats on this machine.

Below what that can resolve, :func:`adapter_cost` measures the adapter's own work per request in
microseconds: ``adapter.send()`` with the network replaced by a canned response (a base class under
the adapter in the MRO, so no global patching), ours against the bare adapter.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import time
import timeit
from typing import Any

import requests
from _control import ServerProcess
from clients import BASELINE, OVERHEAD_CLIENTS, BareAdapter, Seed, make_overhead_client
from requests.adapters import HTTPAdapter

__all__ = ["AdapterCost", "OverheadResult", "adapter_cost", "run_overhead"]


@dataclasses.dataclass
class OverheadResult:
    client: str
    ratios: list[list[float]]  # per repeat, the per-pair ratios
    baseline_us: list[float]  # CPU microseconds per request of the baseline batches in the pairs
    client_us: list[float]

    @property
    def repeat_medians(self) -> list[float]:
        return [statistics.median(r) for r in self.ratios]

    @property
    def median(self) -> float:
        """The median over repeats of the per-repeat median ratio."""
        return statistics.median(self.repeat_medians)

    @property
    def spread(self) -> tuple[float, float]:
        """The lowest and highest per-repeat median."""
        return min(self.repeat_medians), max(self.repeat_medians)

    @property
    def quartiles(self) -> tuple[float, float]:
        pooled = [x for r in self.ratios for x in r]
        q = statistics.quantiles(pooled, n=4, method="inclusive")
        return q[0], q[2]

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "median": self.median,
            "repeat_medians": self.repeat_medians,
            "quartiles": self.quartiles,
        }


def _batch(session: requests.Session, url: str, n: int) -> float:
    """CPU seconds this process spends sending ``n`` GETs through ``session``."""
    gc.collect()
    bad = 0
    started = time.process_time()
    for _ in range(n):
        if session.get(url, timeout=10).status_code != 200:
            bad += 1
    spent = time.process_time() - started
    if bad:
        raise RuntimeError(f"{bad} of {n} overhead requests failed; the numbers would be meaningless")
    return spent


def run_overhead(
    server: ServerProcess,
    *,
    clients: tuple[str, ...] = OVERHEAD_CLIENTS,
    repeats: int = 3,
    pairs: int = 30,
    batch: int = 100,
    warmup: int = 50,
    progress: Any = print,
) -> list[OverheadResult]:
    server.start(ttl=3600, rotation="reuse-detection")
    seed = Seed.from_response(server.issue())  # valid for an hour: no refresh during the run
    url = server.url + "/api/overhead"
    baseline = make_overhead_client(BASELINE, server, seed)
    sessions = {name: make_overhead_client(name, server, seed) for name in clients}
    for session in (baseline, *sessions.values()):
        _batch(session, url, warmup)
    results = {name: OverheadResult(name, [], [], []) for name in clients}
    order = list(sessions)
    shuffle = random.Random(1).shuffle  # noqa: S311 - an order, not a secret
    for repeat in range(repeats):
        for result in results.values():
            result.ratios.append([])
        for i in range(pairs):
            shuffle(order)
            for name in order:
                session = sessions[name]
                if i % 2 == 0:
                    mine = _batch(session, url, batch)
                    base = _batch(baseline, url, batch)
                else:
                    base = _batch(baseline, url, batch)
                    mine = _batch(session, url, batch)
                result = results[name]
                result.ratios[repeat].append(mine / base)
                result.baseline_us.append(base / batch * 1e6)
                result.client_us.append(mine / batch * 1e6)
    stats = server.stats()
    if stats["refresh_calls"]:
        raise RuntimeError("a client refreshed during the overhead run; the token was supposed to stay valid")
    for session in (baseline, *sessions.values()):
        session.close()
    for result in results.values():
        low, high = result.spread
        progress(f"  overhead {result.client:<45} median ratio {result.median:.3f} (repeats {low:.3f}-{high:.3f})")
    return list(results.values())


# -- the adapter's own work, without the network -------------------------------------------------


class _CannedWire(HTTPAdapter):
    """Stands where HTTPAdapter.send would go on the network: answers at once."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.request = request
        return response


@dataclasses.dataclass
class AdapterCost:
    url: str
    bare_us: float
    ours_us: float

    @property
    def extra_us(self) -> float:
        return self.ours_us - self.bare_us


def adapter_cost(rounds: int = 15, number: int = 5000) -> list[AdapterCost]:
    """Microseconds per ``adapter.send()`` for ours and the bare adapter, network replaced."""
    from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter

    class Ours(TokenRefreshAdapter, _CannedWire):
        pass

    class Bare(BareAdapter, _CannedWire):
        pass

    costs = []
    now = time.time()
    for base in ("https://api.example.com", "http://127.0.0.1:8080"):
        prepared = requests.Request("GET", base + "/v1/items").prepare()
        token = Token("at-" + "x" * 32, refresh_token="rt-" + "y" * 32, expires_at=now + 3600, obtained_at=now)
        ours = Ours(MemoryStorage(token), token_url=base + "/token")
        bare = Bare("Bearer at-" + "x" * 32)
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for i in range(rounds):
            pair = (("bare", bare), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("bare", bare))
            for name, adapter in pair:
                times[name].append(timeit.timeit(lambda a=adapter, p=prepared: a.send(p), number=number) / number * 1e6)
        costs.append(AdapterCost(base + "/", statistics.median(times["bare"]), statistics.median(times["ours"])))
    return costs
