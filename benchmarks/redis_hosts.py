"""Scenario: H hosts x T threads sharing one token through one Redis record, over several expiries.

Each host is a process that shares nothing with the others but Redis (tests/redis_support.py,
``host`` mode), against the loopback token server (rotation, family revoked on reuse). Runs with
RedisStorage and with what users write today (the record in Redis, a plain ``SET NX PX`` lock
released by DEL, no fencing, no check), once with a prompt token endpoint and once with one that
answers more slowly than the naive lock's 1-s expiry. Prints one table:

- refresh calls per token generation (1.00 = one refresh per expiry), and refresh tokens presented
  more than once; whether the server revoked the family;
- failed requests;
- Redis commands per request with a long-lived token (each host's first load only: steady state
  costs no Redis round trip);
- time from the first refresh of a generation to every host holding its token, median and max,
  against one token-endpoint round trip (the floor).

Needs redis-server on PATH (Debian: ``apt-get install redis-server``). ``--smoke``: fewer hosts,
shorter runs (about a minute on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from requests_tokenrefresh import RedisStorage, Token  # noqa: E402
from requests_tokenrefresh._redact import fingerprint  # noqa: E402
from requests_tokenrefresh.testing import AuthServer  # noqa: E402
from tests.redis_support import RedisServer, host_env, wait_for  # noqa: E402

SUPPORT = ROOT / "tests" / "redis_support.py"
NAIVE_LOCK_TTL = 1.0


class SlowAuthServer(AuthServer):
    """A token endpoint that takes ``delay`` seconds to answer (a slow or overloaded provider)."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def token_endpoint(self, form: dict[str, str], authorization: str | None) -> Any:
        time.sleep(self.delay)
        return super().token_endpoint(form, authorization)


def run(
    redis: RedisServer, hosts: int, threads: int, duration: float, ttl: float, naive: bool, delay: float
) -> dict[str, Any]:
    key = f"bench:{uuid.uuid4().hex[:8]}"
    with SlowAuthServer(delay, ttl=ttl, rotation="reuse-detection") as srv, tempfile.TemporaryDirectory() as tmp:
        storage = RedisStorage(redis.url, key=key)
        storage.save(Token.from_response(srv.issue()))
        storage.close()
        client = redis.client()
        before = _commands(client)
        start = Path(tmp) / "start"
        processes = []
        for i in range(hosts):
            directory = Path(tmp) / f"host{i}"
            directory.mkdir()
            command = [sys.executable, str(SUPPORT), "host", "--redis-url", redis.url, "--key", key]
            command += ["--token-url", srv.token_url, "--api", f"{srv.url}/api/data", "--threads", str(threads)]
            command += ["--duration", str(duration), "--pause", "0.25", "--refresh-timeout", "5"]
            command += ["--start-file", str(start), "--watch"]
            if naive:
                command += ["--naive-lock-ttl", str(NAIVE_LOCK_TTL)]
            processes.append(
                subprocess.Popen(command, env=host_env(directory), stdout=subprocess.PIPE, text=True)  # noqa: S603
            )
        wait_for(lambda: len(list(Path(tmp).glob("start.ready.*"))) == hosts, 180, "the hosts")
        start.touch()
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=duration + 240)
            results.append(json.loads(out.strip().splitlines()[-1]))
        commands = _commands(client) - before - 1  # less the INFO call itself
        client.close()
        floor = _round_trip(srv)
        return _figures(srv, results, commands, floor)


def _round_trip(srv: AuthServer) -> float:
    """Seconds one refresh takes on its own (a separate token family)."""
    refresh = srv.issue()["refresh_token"]
    started = time.perf_counter()
    requests.post(srv.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh}, timeout=30)
    return time.perf_counter() - started


def _figures(srv: AuthServer, results: list[dict[str, Any]], commands: int, floor: float) -> dict[str, Any]:
    log = list(srv.token_log[:-1])  # the last call is the floor measurement
    presented = [e["refresh_token"] for e in log]
    requests_ok = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    # When each refreshed token reached every host, from the first refresh call of its generation.
    issued: dict[str, float] = {}
    for entry, fp in zip(log, _issued_tokens(srv, log), strict=True):
        if fp is not None:
            issued.setdefault(fp, entry["t"])
    spread = []
    for fp, t in issued.items():
        arrivals = [r["seen"][fp] for r in results if fp in r["seen"]]
        if len(arrivals) == len(results):
            spread.append(max(arrivals) - t)
    return {
        "calls": len(log),
        "generations": len(set(presented)),
        "duplicates": len(presented) - len(set(presented)),
        "revoked": srv.revoked,
        "ok": requests_ok,
        "failed": failed,
        "commands_per_request": commands / max(1, requests_ok + failed),
        "commands_per_host": commands / max(1, len(results)),
        "spread_median": statistics.median(spread) if spread else float("nan"),
        "spread_max": max(spread) if spread else float("nan"),
        "floor": floor,
    }


def _issued_tokens(srv: AuthServer, log: list[dict[str, Any]]) -> list[str | None]:
    """The fingerprint of the access token each successful refresh call issued (by issue time)."""
    with srv.lock:
        access = sorted(srv._access.items(), key=lambda kv: kv[1][0])
    by_time = [(expires - srv.ttl, fingerprint(token)) for token, (expires, _) in access]
    out: list[str | None] = []
    for entry in log:
        if entry["status"] != 200:
            out.append(None)
            continue
        later = [fp for t, fp in by_time if t >= entry["t"]]
        out.append(later[0] if later else None)
    return out


def _commands(client: Any) -> int:
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="4 hosts x 4 threads, short runs")
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    hosts, threads, duration = (4, 4, 6.0) if args.smoke else (args.hosts, args.threads, args.duration)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        for label, naive, delay, ttl in (
            ("RedisStorage", False, 0.0, 2.0),
            ("naive lock", True, 0.0, 2.0),
            ("RedisStorage, slow endpoint", False, 1.5, 4.0),
            ("naive lock, slow endpoint", True, 1.5, 4.0),
        ):
            figures = run(redis, hosts, threads, duration, ttl, naive, delay)
            steady = run(redis, hosts, threads, 2.0, 3600.0, naive, 0.0) if delay == 0.0 else None
            rows.append((label, figures, steady))
    print(f"\n{hosts} hosts x {threads} threads, {duration:.0f} s per run, rotation with reuse detection")
    print(
        f"{'storage':30} {'calls/gen':>9} {'dup RT':>6} {'revoked':>7} {'failed':>7} {'ok':>6} "
        f"{'cmds':>8} {'spread med':>10} {'max':>6} {'floor':>6}"
    )
    for label, f, steady in rows:
        per_request = f"{steady['commands_per_host']:.0f}/host" if steady else "-"
        print(
            f"{label:30} {f['calls'] / max(1, f['generations']):9.2f} {f['duplicates']:6d} {f['revoked']!s:>7} "
            f"{f['failed']:7d} {f['ok']:6d} {per_request:>8} {f['spread_median'] * 1000:8.0f}ms "
            f"{f['spread_max'] * 1000:4.0f}ms {f['floor'] * 1000:4.0f}ms"
        )
    print(
        f"(naive lock: SET NX PX {NAIVE_LOCK_TTL * 1000:.0f}, DEL, no fencing; slow endpoint: 1.5 s per refresh; "
        "cmds: Redis commands per host over a whole run with a long-lived token: its start-up load only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
