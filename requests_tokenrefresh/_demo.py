"""The ``demo`` command: many threads, short-lived tokens and a strict token endpoint, all on loopback.

An :class:`~requests_tokenrefresh._authserver.AuthServer` on 127.0.0.1 issues access tokens that
live a few seconds, rotates refresh tokens and revokes the whole token family when a refresh token
is presented twice. The demo stores an expired token through :class:`KeyringStorage`, mounts the
real :class:`TokenRefreshAdapter` and lets many threads send requests through several expiries,
then compares what the clients saw with what the server counted. With ``--timeline FILE`` it also
writes every request and token endpoint call as a JSON list of events (:func:`timeline_events`), the
input of the storm picture in the docs (``docs/timeline.py``).

Where keyring has no usable backend, the demo says so and stores the token in
:class:`DemoFileKeyring`, a plaintext file in a new temporary directory, never a default backend.
The demo never touches a keyring entry that holds anything but a demo token: its tokens carry the
extra field ``requests_tokenrefresh_demo``, and at the end it deletes the entry only if it still
holds the token of this run.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import keyring
import keyring.backend
import keyring.errors
import requests
from keyring.backends import chainer, fail

from ._authserver import AuthServer, Canned
from ._redact import fingerprint
from .adapters import TokenRefreshAdapter
from .exceptions import SessionExpiredError, TokenStorageError
from .storage import KeyringStorage
from .tokens import Token

__all__ = ["DEMO_KEYRING_ENV", "DemoFileKeyring", "keyring_problem", "run_demo", "timeline_events"]

#: The environment variable that names :class:`DemoFileKeyring`'s file.
DEMO_KEYRING_ENV = "REQUESTS_TOKENREFRESH_DEMO_KEYRING"
_BACKEND_PATH = "requests_tokenrefresh._demo.DemoFileKeyring"
# The extra field that marks a token as the demo's; its value names the run that made it.
_MARK = "requests_tokenrefresh_demo"


class _EntryInUseError(ValueError):
    """The keyring entry holds something the demo did not put there."""


class _ClassProperty:
    """keyring reads ``priority`` on the class; a plain property would not work there."""

    def __init__(self, fget: Callable[[Any], float]) -> None:
        self.fget = fget

    def __get__(self, obj: object, owner: type[Any]) -> float:
        return self.fget(owner)


class DemoFileKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps passwords in a plaintext JSON file, for the demo only.

    keyring never picks it on its own: it is viable only while ``REQUESTS_TOKENREFRESH_DEMO_KEYRING``
    names its file, and it registers no entry point. Select it explicitly::

        PYTHON_KEYRING_BACKEND=requests_tokenrefresh._demo.DemoFileKeyring \\
        REQUESTS_TOKENREFRESH_DEMO_KEYRING=/tmp/demo/keyring.json keyring get SERVICE USERNAME

    Args:
        path: the file; by default the one the environment variable names.
    """

    _lock = threading.Lock()  # one process; other processes only read it in the demo

    def __init__(self, path: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # reads KEYRING_PROPERTY_* like every backend
        self.path = path or os.environ.get(DEMO_KEYRING_ENV, "")

    @_ClassProperty
    def priority(cls) -> float:
        if not os.environ.get(DEMO_KEYRING_ENV):
            raise RuntimeError(f"set {DEMO_KEYRING_ENV} to the keyring file to use this demo backend")
        return 0.1

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path:
            raise keyring.errors.KeyringError(f"set {DEMO_KEYRING_ENV} to the demo keyring file")
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        temporary = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(temporary, self.path)  # readers never see half a file

    def get_password(self, service: str, username: str) -> str | None:
        with self._lock:
            return self._read().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        with self._lock:
            data = self._read()
            data.setdefault(service, {})[username] = password
            self._write(data)

    def delete_password(self, service: str, username: str) -> None:
        with self._lock:
            data = self._read()
            if username not in data.get(service, {}):
                raise keyring.errors.PasswordDeleteError("no such entry")
            del data[service][username]
            self._write(data)

    def __str__(self) -> str:
        return f"{_BACKEND_PATH} ({self.path})"


def keyring_problem() -> str | None:
    """Return why keyring's selected backend cannot store tokens, or None if it looks usable."""
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a bad PYTHON_KEYRING_BACKEND or keyringrc.cfg raises anything
        return f"keyring could not load its backend ({type(exc).__name__}: {exc})"
    if isinstance(backend, fail.Keyring):
        return "keyring found no backend"
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return "keyring found no backend to chain"
    return None


def _backend_name(backend: object) -> str:
    return (
        str(backend) if isinstance(backend, DemoFileKeyring) else f"{type(backend).__module__}.{type(backend).__name__}"
    )


def _claim(storage: KeyringStorage) -> None:
    """Refuse an entry that holds anything but a demo token (one an earlier ``--keep`` run left).

    Raises:
        _EntryInUseError: it holds a token the demo did not make, or a value that is not a token.
        TokenStorageError: the keyring failed.
    """
    try:
        stored = storage.load()
    except TokenStorageError as exc:
        if not isinstance(exc.__cause__, (ValueError, RecursionError)):
            raise
        stored = None
        foreign = True
    else:
        foreign = stored is not None and _MARK not in stored.extra
    if foreign:
        what = "a token the demo did not create" if stored is not None else "a value that is not a demo token"
        raise _EntryInUseError(
            f"keyring entry {storage.service!r}/{storage.username!r} already holds {what}; the demo leaves it "
            "alone: name an entry of its own with --service and --username"
        )


def _release(storage: KeyringStorage, mark: str) -> bool:
    """Delete the entry if it still holds this run's token; return whether it was deleted."""
    try:
        stored = storage.load()
        if stored is None or stored.extra.get(_MARK) != mark:
            return False  # someone else wrote the entry meanwhile: it is theirs now
        storage.delete()
    except TokenStorageError:
        return False
    return True


def _open_storage(service: str, username: str, seed: Token, out: TextIO) -> tuple[KeyringStorage, bool]:
    """Store ``seed`` in the selected keyring, else in a new temporary file keyring; return (storage, is_system)."""
    problem = keyring_problem()
    if problem is None:
        storage = KeyringStorage(service, username)
        try:
            _claim(storage)
            storage.save(seed)
        except TokenStorageError as exc:
            problem = str(exc)
        else:
            print(f"keyring:  {_backend_name(keyring.get_keyring())}, entry {service}/{username}", file=out)
            print(f"          inspect it with: keyring get {shlex.quote(service)} {shlex.quote(username)}", file=out)
            return storage, True
    path = os.path.join(tempfile.mkdtemp(prefix="requests-tokenrefresh-demo-"), "keyring.json")
    storage = KeyringStorage(service, username, backend=DemoFileKeyring(path))
    storage.save(seed)
    print(f"keyring:  no usable keyring backend ({problem})", file=out)
    print(f"          using a temporary plaintext file keyring for this demo: {path}", file=out)
    print("          inspect the stored record with:", file=out)
    print(
        f"  PYTHON_KEYRING_BACKEND={_BACKEND_PATH} {DEMO_KEYRING_ENV}={shlex.quote(path)} "
        f"keyring get {shlex.quote(service)} {shlex.quote(username)}",
        file=out,
    )
    return storage, False


class _TimedAuthServer(AuthServer):
    """The demo's server; it also notes when each token endpoint call ended (``token_log`` has its start)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # serve_forever notices a shutdown only between polls (0.5 s by default): poll often, so
        # that Ctrl-C ends the demo at once.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="authserver", daemon=True
        )

    def token_endpoint(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any] | Canned]:
        result = super().token_endpoint(form, authorization)
        ended = time.time()
        with self.lock:
            for entry in reversed(self.token_log):  # this call's entry: the latest open one for its refresh token
                if "ended" not in entry and entry["refresh_token"] == form.get("refresh_token"):
                    entry["ended"] = ended
                    break
        return result


class _Run:
    """What the client threads saw; each thread appends to its own lists (no lock on the hot path)."""

    def __init__(self, threads: int, seed: Token) -> None:
        # (started, finished, Authorization sent, Authorization rejected by a 401 or None) per successful request
        self.done: list[list[tuple[float, float, str | bytes, str | bytes | None]]] = [[] for _ in range(threads)]
        self.failed: list[list[tuple[float, float, str]]] = [[] for _ in range(threads)]  # (started, finished, why)
        self.lock = threading.Lock()
        self.published: dict[str | bytes, float] = {seed.authorization: -math.inf}  # Authorization -> monotonic time
        self.current = seed
        self.go = threading.Event()  # releases every thread at once: the expired seed is the hard case
        self.stop = threading.Event()
        self.started = self.deadline = 0.0
        self.wall_offset = 0.0  # time.time() - time.monotonic(), to put the server's times on our clock

    def on_refresh(self, token: Token) -> None:
        with self.lock:
            self.published[token.authorization] = time.monotonic()
            self.current = token

    def counts(self) -> tuple[int, int]:
        return sum(map(len, self.done)), sum(map(len, self.failed))


def _worker(run: _Run, session: requests.Session, url: str, index: int) -> None:
    done, failed = run.done[index], run.failed[index]
    run.go.wait(30)
    while not run.stop.is_set() and time.monotonic() < run.deadline:
        started = time.monotonic()
        try:
            response = session.get(url, timeout=10)
        except SessionExpiredError as exc:
            failed.append((started, time.monotonic(), f"{type(exc).__name__}: {exc}"))
            return  # the session is over: nothing more this thread can do
        except requests.RequestException as exc:
            failed.append((started, time.monotonic(), f"{type(exc).__name__}: {exc}"))
            time.sleep(0.05)
            continue
        finished = time.monotonic()
        if response.status_code != 200:
            failed.append((started, finished, f"HTTP {response.status_code}"))
            continue
        rejected = response.history[0].request.headers.get("Authorization") if response.history else None
        done.append((started, finished, response.request.headers.get("Authorization", ""), rejected))


def _progress_line(elapsed: float, ok: int, failed: int, calls: int, token: Token, width: int | None) -> str:
    """The progress line; with a ``width``, a shorter form that fits it (a terminal's columns less one)."""
    left = "unknown" if token.expires_at is None else f"{token.expires_at - time.time():4.1f}s"
    tag = fingerprint(token.access_token)
    line = f"{elapsed:5.1f}s  requests {ok} ok, {failed} failed  refresh calls {calls}  token {tag} expires in {left}"
    if width is None or len(line) <= width:
        return line
    parts = [f"{elapsed:.1f}s", f"{ok} ok", f"{failed} failed", f"{calls} refreshes", f"token {tag} {left.strip()}"]
    while len(parts) > 1 and len("  ".join(parts)) > width:
        parts.pop()  # the least telling last
    return "  ".join(parts)[:width]


def _progress(run: _Run, server: AuthServer, err: TextIO) -> None:
    """A line on ``err``: rewritten in place on a terminal (fitted to its width), else once a second."""
    tty = err.isatty()
    while not run.stop.wait(0.2 if tty else 1.0):
        ok, failed = run.counts()
        width = max(shutil.get_terminal_size().columns - 1, 1) if tty else None  # the last column wraps
        line = _progress_line(time.monotonic() - run.started, ok, failed, server.refresh_calls, run.current, width)
        print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", file=err, flush=True)
    if tty:
        print(file=err)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else 0.0


def _ms(values: list[float]) -> str:
    return f"p50 {_percentile(values, 50) * 1000:.1f} ms, p99 {_percentile(values, 99) * 1000:.1f} ms"


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
