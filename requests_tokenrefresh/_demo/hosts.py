"""``demo --hosts N``: the clients in N processes ("hosts") that share nothing but one Redis key.

:func:`run_hosts_demo` starts the hosts (each :func:`host_main`): each its own cache directory, no
keyring, a :class:`RedisStorage`; the token server stays in the demo process, which counts the
refresh calls of all of them. Without ``--redis`` the demo starts a redis-server of its own on
127.0.0.1 (no persistence) and stops it at the end (:mod:`.procs`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

import requests

from ..adapters import TokenRefreshAdapter
from ..exceptions import TokenStorageError
from ..storage import RedisStorage
from ..testing.authserver import AuthServer
from ..tokens import Token
from .clients import _percentile, _Run, _show_progress, _TimedAuthServer, _worker
from .keyring import _MARK
from .procs import _Host, _LocalRedis, _start_hosts, _stop_hosts, _wait_ready

__all__ = ["HOST_GRACE", "HOST_REPORT_INTERVAL", "host_main", "run_hosts_demo"]

#: Seconds a host may run past the end of the demo before it counts as stuck and is killed.
HOST_GRACE = 30.0
#: Seconds between two progress reports of a host to the demo process.
HOST_REPORT_INTERVAL = 0.25


def _forget(storage: RedisStorage) -> None:
    """Delete the demo's record and the lease's keys (the key is this run's own)."""
    with contextlib.suppress(Exception):
        storage._client.delete(storage.key, *storage._keys.values())


def run_hosts_demo(
    *,
    hosts: int,
    threads: int,
    duration: float,
    ttl: float,
    leeway: float,
    redis_url: str | None,
    keep: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run the demo's clients in ``hosts`` processes that share only Redis; return 0 if all went well, else 1.

    The token server runs in this process; every host mounts its own adapter over its own
    :class:`RedisStorage` on one key, in its own cache directory, with no keyring. Without
    ``redis_url``, a redis-server is started on 127.0.0.1 for the run (:data:`REDIS_INSTALL_HELP`
    if there is none).
    """
    # About 70 lines, read top to bottom as the demo's script (start Redis and the server, seed
    # the token, start the hosts, run, report); every resource goes on one ExitStack, so that
    # Ctrl-C at any line stops what was started, in reverse order. Split, the stack would travel.
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="requests-tokenrefresh-demo-hosts-"))
        if redis_url is None:
            redis_url = stack.enter_context(_LocalRedis(workdir)).url
            origin = "a redis-server the demo started (no persistence; stopped at the end)"
        else:
            origin = "the given server"
        mark = secrets.token_hex(8)
        storage = RedisStorage(redis_url, key=f"requests-tokenrefresh-demo:{mark}")  # a key of this run only
        stack.callback(storage.close)
        server = stack.enter_context(_TimedAuthServer(ttl=ttl, rotation="reuse-detection", host="127.0.0.1"))
        window = min(leeway, ttl / 2)
        print(
            f"server:   {server.url} (loopback): access tokens live {ttl:g} s, refresh tokens rotate, "
            "presenting one twice revokes the family",
            file=out,
        )
        server_login = server.issue()
        server.revoke_access_tokens()
        seed = Token.from_response({**server_login, _MARK: mark}, now=time.time() - ttl - 1)
        storage.save(seed)
        if not keep:
            stack.callback(_forget, storage)
        print(f"redis:    {storage.location}, {origin}; key {storage.key}", file=out)
        print(
            f"hosts:    {hosts} processes x {threads} threads for {duration:g} s, sharing nothing but that key "
            "(each its own cache directory, no keyring); the stored token has expired, so every host needs the "
            f"first refresh at once; later refreshes start {window:g} s before expiry (leeway {leeway:g} s, at "
            "most half the lifetime)",
            file=out,
            flush=True,
        )
        config = {
            "redis_url": redis_url,
            "key": storage.key,
            "token_url": server.token_url,
            "api": server.url + "/api/items",
            "threads": threads,
            "duration": duration,
            "leeway": leeway,
        }
        fleet: list[_Host] = []
        stack.callback(_stop_hosts, fleet)  # also on Ctrl-C: no host outlives the demo
        fleet += _start_hosts(hosts, config, workdir)
        _wait_ready(fleet)
        stop = threading.Event()
        current = [seed]

        def sample() -> tuple[float, int, int, int, Token]:
            with contextlib.suppress(TokenStorageError):  # Redis busy or gone: show the last one read
                current[0] = storage.load() or current[0]
            ok, failed = sum(h.ok for h in fleet), sum(h.failed for h in fleet)
            return started, ok, failed, server.refresh_calls, current[0]

        started = time.monotonic()
        for host in fleet:
            host.send("go")
        progress = threading.Thread(target=_show_progress, args=(stop, sample, err), daemon=True)
        progress.start()
        try:
            end = started + duration + HOST_GRACE + 15
            for host in fleet:
                host.done.wait(max(0.0, end - time.monotonic()))
        finally:
            stop.set()
            progress.join(5)
        _stop_hosts(fleet)
        return _hosts_summary(fleet, server, time.monotonic() - started, threads, keep, storage.key, out)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def _hosts_summary(
    fleet: list[_Host], server: AuthServer, elapsed: float, threads: int, keep: bool, key: str, out: TextIO
) -> int:
    with server.lock:
        log = list(server.token_log)
    presented = [entry["refresh_token"] for entry in log]
    issued = sum(1 for entry in log if entry["status"] == 200)
    reused = len(presented) - len(set(presented))
    revoked = server.revoked
    results = [host.result for host in fleet]
    failures: dict[str, int] = {}
    print(f"summary after {elapsed:.1f} s with {len(fleet)} hosts x {threads} threads:", file=out)
    for host, result in zip(fleet, results, strict=True):
        if result is None:
            print(f"  host {host.number:<14} {host.ok} ok, {host.failed} failed; {host.why_not()}", file=out)
            continue
        latency = f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
        print(
            f"  host {host.number:<14} {result['ok']} ok, {result['failed'] + result['stuck']} failed; refresh "
            f"calls made {result['refreshes']}; request latency {latency}",
            file=out,
        )
        for message, count in result["failures"]:
            failures[message] = failures.get(message, 0) + count
        if result["stuck"]:
            failures[f"threads still running {HOST_GRACE:g} s after the end"] = result["stuck"]
    ok = sum(r["ok"] for r in results if r is not None)
    failed = sum(r["failed"] + r["stuck"] for r in results if r is not None)
    failed += sum(host.failed for host, r in zip(fleet, results, strict=True) if r is None)
    print(f"  requests            {ok} ok, {failed} failed (all hosts)", file=out)
    print(
        f"  refresh calls       {server.refresh_calls} for {issued} expiries across all hosts (new access tokens "
        f"issued after the seed); refresh tokens presented twice: {reused}; token family revoked: "
        f"{'yes' if revoked else 'no'}",
        file=out,
    )
    for message, count in sorted(failures.items(), key=lambda item: -item[1])[:5]:
        print(f"  failure: {count} x {message}", file=out)
    for host, result in zip(fleet, results, strict=True):
        if result is None:
            print(f"  failure: {host.why_not()}", file=out)
    if keep:
        print(f"the demo's Redis key {key} has been kept (without --keep it is deleted)", file=out)
    good = (
        None not in results and not failed and not revoked and not reused and server.refresh_calls == issued and ok > 0
    )
    print(
        f"result: OK, one refresh call per expiry across {len(fleet)} hosts and every request succeeded"
        if good
        else "result: FAILED",
        file=out,
    )
    return 0 if good else 1


def host_main() -> None:
    """One host of ``demo --hosts``: read its settings on stdin, say ready, wait for ``go``, run, report.

    Its stdout carries one JSON object a line: ``{"ready": true}``, then ``{"ok": N, "failed": N}``
    every :data:`HOST_REPORT_INTERVAL` seconds, then ``{"result": {...}}``.
    """
    # About 60 lines: one host's life in the order its parent sees it (settings, ready, go,
    # reports, result); its few helpers are closures over the adapter and the counters.
    line = sys.stdin.readline()
    if not line:
        return  # the demo has gone
    config = json.loads(line)
    threads = int(config["threads"])

    def report(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    storage = RedisStorage(config["redis_url"], key=config["key"])
    seed = storage.load()  # what the adapter reads at start anyway
    if seed is None:
        raise SystemExit(f"host {config['number']}: the demo's Redis key {config['key']} holds no token")
    run = _Run(threads, seed)
    refreshes = [0]

    def on_refresh(token: Token) -> None:  # called on the host that refreshed only
        run.on_refresh(token)
        refreshes[0] += 1

    adapter = TokenRefreshAdapter(
        storage, token_url=config["token_url"], leeway=config["leeway"], on_refresh=on_refresh, pool_maxsize=threads
    )
    session = requests.Session()
    session.mount(config["api"].rsplit("/api/", 1)[0] + "/", adapter)
    workers = [
        threading.Thread(target=_worker, args=(run, session, config["api"], i), name=f"demo-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    report({"ready": True})
    if sys.stdin.readline().strip() != "go":
        run.stop.set()
        run.go.set()
        return
    run.started = time.monotonic()
    run.deadline = run.started + float(config["duration"])
    run.go.set()
    while any(worker.is_alive() for worker in workers) and time.monotonic() < run.deadline + HOST_GRACE:
        run.stop.wait(HOST_REPORT_INTERVAL)
        ok, failed = run.counts()
        report({"ok": ok, "failed": failed})
    run.stop.set()
    ok, failed = run.counts()
    messages = [message for entries in run.failed for *_, message in entries]
    latencies = [finished - started for entries in run.done for started, finished, *_ in entries]
    report(
        {
            "result": {
                "ok": ok,
                "failed": failed,
                "stuck": sum(worker.is_alive() for worker in workers),
                "refreshes": refreshes[0],
                "p50_ms": _percentile(latencies, 50) * 1000,
                "p99_ms": _percentile(latencies, 99) * 1000,
                "failures": [[m, messages.count(m)] for m in sorted(set(messages))[:5]],
            },
            "ok": ok,
            "failed": failed,
        }
    )
    session.close()
    storage.close()
