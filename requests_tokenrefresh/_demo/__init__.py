"""The ``demo`` command: many threads, short-lived tokens and a strict token endpoint, all on loopback.

An :class:`~requests_tokenrefresh.testing.AuthServer` on 127.0.0.1 issues access tokens that
live a few seconds, rotates refresh tokens and revokes the whole token family when a refresh token
is presented twice. The demo stores an expired token through :class:`KeyringStorage`, mounts the
real :class:`TokenRefreshAdapter` and lets many threads send requests through several expiries,
then compares what the clients saw with what the server counted. With ``--timeline FILE`` it also
writes every request and token endpoint call as a JSON list of events (:func:`timeline_events`), the
input of the storm picture in the docs (``docs/timeline.py``).

Where keyring has no usable backend, the demo says so and stores the token in
:class:`DemoFileKeyring`, a plaintext file in a new temporary directory, never a default backend;
it only ever uses and deletes a keyring entry that holds its own token (:mod:`.keyring`).
The client threads, the timed server and the progress line are in :mod:`.clients`.

``demo --hosts N`` (:func:`run_hosts_demo`, :mod:`.hosts`) runs the clients in N processes
that share nothing but one Redis key; :mod:`.procs` starts and ends those processes and the
redis-server the demo may start. This module keeps the names the command line, the tests and
``PYTHON_KEYRING_BACKEND=requests_tokenrefresh._demo.DemoFileKeyring`` use.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from typing import Any, TextIO

import requests

from .._redact import fingerprint
from ..adapters import TokenRefreshAdapter
from ..storage import KeyringStorage
from ..testing.authserver import AuthServer
from ..tokens import Token
from .clients import _ms, _progress, _Run, _TimedAuthServer, _worker
from .hosts import host_main, run_hosts_demo
from .keyring import _MARK, DEMO_KEYRING_ENV, DemoFileKeyring, _open_storage, _release, keyring_problem
from .procs import REDIS_INSTALL_HELP

__all__ = [
    "DEMO_KEYRING_ENV",
    "REDIS_INSTALL_HELP",
    "DemoFileKeyring",
    "host_main",
    "keyring_problem",
    "run_demo",
    "run_hosts_demo",
    "timeline_events",
]


def run_demo(
    *,
    threads: int,
    duration: float,
    ttl: float,
    leeway: float,
    service: str,
    username: str,
    keep: bool = False,
    timeline: str | None = None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run the demo; return 0 if every request succeeded with one refresh call per expiry, else 1.

    With ``timeline``, also write :func:`timeline_events` to that file as JSON.
    """
    if timeline is not None:
        open(timeline, "w", encoding="utf-8").close()  # an unwritable path fails now, not after the run
    with _TimedAuthServer(ttl=ttl, rotation="reuse-detection", host="127.0.0.1") as server:
        window = min(leeway, ttl / 2)
        print(
            f"server:   {server.url} (loopback): access tokens live {ttl:g} s, refresh tokens rotate, "
            "presenting one twice revokes the family",
            file=out,
        )
        server_login = server.issue()
        server.revoke_access_tokens()  # the seed's access token is over on the server too
        mark = secrets.token_hex(8)  # this run's tokens carry it, so the end deletes only what the run made
        seed = Token.from_response({**server_login, _MARK: mark}, now=time.time() - ttl - 1)  # a login one lifetime ago
        deleted = False
        try:
            storage, system = _open_storage(service, username, seed, out)
            print(
                f"clients:  {threads} threads for {duration:g} s; the stored token has expired, so all of them "
                f"need the first refresh at once; later refreshes start {window:g} s before expiry (leeway "
                f"{leeway:g} s, at most half the lifetime)",
                file=out,
                flush=True,
            )
            run, workers = _drive(storage, server, seed, threads=threads, duration=duration, leeway=leeway, err=err)
        finally:
            if not keep:  # also after Ctrl-C, wherever it came; only this run's token is deleted
                deleted = _release(KeyringStorage(service, username), mark)
        stuck = sum(worker.is_alive() for worker in workers)
        elapsed = time.monotonic() - run.started
        status = _summary(run, server, stuck, elapsed, threads, deleted and system, out)
        if timeline is not None:
            settings = {"threads": threads, "duration": duration, "ttl": ttl, "leeway": leeway, "window": window}
            events = timeline_events(run, server, settings)
            with open(timeline, "w", encoding="utf-8") as f:
                json.dump(events, f, indent=1)
                f.write("\n")
            print(f"timeline: {len(events)} events written to {timeline}", file=out)
        return status


def _drive(
    storage: KeyringStorage,
    server: AuthServer,
    seed: Token,
    *,
    threads: int,
    duration: float,
    leeway: float,
    err: TextIO,
) -> tuple[_Run, list[threading.Thread]]:
    """Run the client threads through one session for ``duration`` seconds; return what they saw and them."""
    run = _Run(threads, seed)
    adapter = TokenRefreshAdapter(
        storage, token_url=server.token_url, leeway=leeway, on_refresh=run.on_refresh, pool_maxsize=threads
    )
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    url = server.url + "/api/items"
    workers = [
        threading.Thread(target=_worker, args=(run, session, url, i), name=f"demo-{i}", daemon=True)
        for i in range(threads)
    ]
    progress = threading.Thread(target=_progress, args=(run, server, err), daemon=True)
    try:
        for worker in workers:
            worker.start()
        run.started = time.monotonic()
        run.wall_offset = time.time() - run.started
        run.deadline = run.started + duration
        run.go.set()
        progress.start()
        for worker in workers:
            worker.join(max(0.0, run.deadline + 30 - time.monotonic()))
    finally:
        run.stop.set()
        run.go.set()
        if progress.is_alive():  # not started if Ctrl-C came first
            progress.join(5)
        session.close()
    return run, workers


def timeline_events(run: _Run, server: AuthServer, settings: dict[str, float]) -> list[dict[str, Any]]:
    """The run as a list of events, times in seconds since the threads were released; no secrets.

    ``{"type": "run", ...}`` (the settings) comes first; then one ``token`` event per access token
    (``generation`` 0 is the expired seed; ``published``, when the adapter handed it out); one
    ``refresh`` event per token endpoint call (``start``, ``end``, ``status``, the fingerprint of the
    refresh token presented); one ``request`` event per request (``thread``, ``start``, ``end``, the
    fingerprint and ``generation`` of the token it was sent with, ``waited``: it started before that
    token existed, ``replayed``: its first answer was a 401, ``ok``, and ``error`` if it failed).
    """

    def at(monotonic: float) -> float:
        return round(monotonic - run.started, 6)

    def tag(authorization: str | bytes) -> str:
        text = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
        return fingerprint(text.partition(" ")[2])

    with run.lock:
        published = sorted(run.published.items(), key=lambda item: item[1])
    generations = {authorization: number for number, (authorization, _) in enumerate(published)}
    events: list[dict[str, Any]] = [{"type": "run", **settings}]
    events += [
        {"type": "token", "generation": n, "token": tag(auth), "published": at(t) if math.isfinite(t) else None}
        for n, (auth, t) in enumerate(published)
    ]
    with server.lock:
        log = [dict(entry) for entry in server.token_log]
    events += [
        {
            "type": "refresh",
            "start": at(entry["t"] - run.wall_offset),
            "end": at(entry["ended"] - run.wall_offset) if "ended" in entry else None,
            "status": entry["status"],
            "refresh_token": fingerprint(entry["refresh_token"]),
        }
        for entry in log
    ]
    for index, (done, failed) in enumerate(zip(run.done, run.failed, strict=True)):
        thread = f"demo-{index}"
        for started, finished, auth, rejected in done:
            waited = run.published.get(auth, -math.inf) > started
            sent = {"token": tag(auth), "generation": generations.get(auth), "waited": waited}
            span = {"type": "request", "thread": thread, "start": at(started), "end": at(finished)}
            events.append({**span, **sent, "replayed": rejected is not None, "ok": True})
        for started, finished, message in failed:
            span = {"type": "request", "thread": thread, "start": at(started), "end": at(finished)}
            events.append({**span, "ok": False, "error": message})
    return events


def _summary(
    run: _Run, server: AuthServer, stuck: int, elapsed: float, threads: int, deleted: bool, out: TextIO
) -> int:
    done = [entry for entries in run.done for entry in entries]
    failures = [message for entries in run.failed for *_, message in entries]
    with server.lock:
        log = list(server.token_log)
    presented = [entry["refresh_token"] for entry in log]
    issued = sum(1 for entry in log if entry["status"] == 200)
    reused = len(presented) - len(set(presented))
    waits = [
        run.published[auth] - started
        for started, _, auth, _ in done
        if run.published.get(auth, -math.inf) > started  # sent with a token that did not exist when it started
    ]
    replays = sum(1 for *_, rejected in done if rejected is not None)
    revoked = server.revoked
    print(f"summary after {elapsed:.1f} s with {threads} threads:", file=out)
    print(f"  requests            {len(done)} ok, {len(failures) + stuck} failed", file=out)
    print(
        f"  refresh calls       {server.refresh_calls} for {issued} expiries (new access tokens issued after the "
        f"seed); refresh tokens presented twice: {reused}; token family revoked: {'yes' if revoked else 'no'}",
        file=out,
    )
    print(
        f"  waited for refresh  {len(waits)} requests (started before the token they were sent with existed): "
        f"{_ms(waits)}",
        file=out,
    )
    print(f"  request latency     {_ms([finished - started for started, finished, *_ in done])}", file=out)
    print(f"  stale-401 replays   {replays} (first answer 401, replayed once with the current token)", file=out)
    for message in sorted(set(failures))[:5]:
        print(f"  failure: {failures.count(message)} x {message}", file=out)
    if stuck:
        print(f"  failure: {stuck} threads still running 30 s after the end", file=out)
    if deleted:
        print("the demo's keyring entry has been deleted (--keep keeps it)", file=out)
    ok = not failures and not stuck and not revoked and server.refresh_calls == issued and bool(done)
    print("result: OK, one refresh call per expiry and every request succeeded" if ok else "result: FAILED", file=out)
    return 0 if ok else 1
