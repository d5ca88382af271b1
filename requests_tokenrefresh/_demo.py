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

``demo --hosts N`` (:func:`run_hosts_demo`) runs the clients in N processes ("hosts", each
:func:`host_main`) that share nothing but one Redis key: each its own cache directory, no keyring,
a :class:`RedisStorage`; the token server stays in the demo process, which counts the refresh
calls of all of them. Without ``--redis`` the demo starts a redis-server of its own on 127.0.0.1
(no persistence) and stops it at the end; the hosts and that server run in sessions of their own,
so Ctrl-C reaches the demo, which ends them by PID.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
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
from ._redis import RedisStorage
from .adapters import TokenRefreshAdapter
from .exceptions import SessionExpiredError, TokenStorageError
from .storage import KeyringStorage
from .tokens import Token

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
    _show_progress(run.stop, lambda: (run.started, *run.counts(), server.refresh_calls, run.current), err)


def _show_progress(
    stop: threading.Event, sample: Callable[[], tuple[float, int, int, int, Token]], err: TextIO
) -> None:
    """Print ``sample()`` (started, ok, failed, refresh calls, current token) as the progress line until ``stop``."""
    tty = err.isatty()
    while not stop.wait(0.2 if tty else 1.0):
        started, ok, failed, calls, current = sample()
        width = max(shutil.get_terminal_size().columns - 1, 1) if tty else None  # the last column wraps
        line = _progress_line(time.monotonic() - started, ok, failed, calls, current, width)
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


# -- demo --hosts: the clients in processes that share only Redis --------------------------------

#: Seconds a host process gets to start (Python, requests, redis-py) and a redis-server to answer.
HOST_START_TIMEOUT = 60.0
#: Seconds a host may run past the end of the demo before it counts as stuck and is killed.
HOST_GRACE = 30.0
#: Seconds between two progress reports of a host to the demo process.
HOST_REPORT_INTERVAL = 0.25
REDIS_INSTALL_HELP = (
    "demo --hosts needs Redis: give --redis URL, or install redis-server (Debian/Ubuntu: `apt-get install "
    "redis-server`; macOS: `brew install redis`) so that the demo can start one on 127.0.0.1"
)
# Runs one host; sys.path as the demo process has it, so the host runs the same package.
_HOST_CODE = "from requests_tokenrefresh._demo import host_main; host_main()"


class _HostsError(ValueError):
    """``demo --hosts`` cannot run: no redis-server, or a host process that did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """End ``process`` (one the demo started), by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class _LocalRedis:
    """A redis-server on 127.0.0.1 on a free port, without persistence, for one demo run."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _LocalRedis:
        executable = shutil.which("redis-server")
        if executable is None:
            raise _HostsError(REDIS_INSTALL_HELP)
        logfile = os.path.join(self.directory, "redis.log")
        for _ in range(3):  # another program may take the free port before the server binds it
            port = _free_port()
            command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            command += ["--save", "", "--appendonly", "no", "--dir", self.directory, "--logfile", logfile]
            self.process = subprocess.Popen(  # noqa: S603 - redis-server from PATH, fixed arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the server in order
            )
            if self._ready(port):
                self.url = f"redis://127.0.0.1:{port}/0"
                return self
            _stop_process(self.process)
        raise _HostsError(f"the redis-server the demo started did not answer: {_last_line(logfile) or 'no log'}")

    def _ready(self, port: int) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + HOST_START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            _stop_process(self.process)


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


class _Host:
    """One host process and what it reported (its stdout is one JSON object a line)."""

    def __init__(self, number: int, process: subprocess.Popen[str], stderr_path: str) -> None:
        self.number = number
        self.process = process
        self.stderr_path = stderr_path
        self.ok = self.failed = 0
        self.result: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()  # its stdout ended
        self.reader = threading.Thread(target=self._read, name=f"demo-host-{number}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("ready"):
                    self.ready.set()
                if "result" in message:
                    self.result = message["result"]
                self.ok, self.failed = int(message.get("ok", self.ok)), int(message.get("failed", self.failed))
        except (OSError, ValueError):  # the pipe was closed by stop()
            pass
        finally:
            self.done.set()

    def send(self, line: str) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except OSError:  # it has exited: its missing report says so
            pass

    def why_not(self) -> str:
        """Why it gave no result, in a few words."""
        status = self.process.poll()
        state = "is still running" if status is None else f"exited with status {status}"
        last = _last_line(self.stderr_path)
        return f"host {self.number} {state} without a report" + (f" ({last})" if last else "")


def _start_hosts(count: int, config: dict[str, Any], workdir: str) -> list[_Host]:
    """Start ``count`` host processes, each with its own cache, data and config directories and no keyring."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hosts = []
    for number in range(1, count + 1):
        directory = os.path.join(workdir, f"host-{number}")
        os.makedirs(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKENREFRESH"))}
        env.update(
            XDG_CACHE_HOME=os.path.join(directory, "cache"),  # the lock directory: none shared
            XDG_DATA_HOME=os.path.join(directory, "data"),
            XDG_CONFIG_HOME=os.path.join(directory, "config"),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # a keyring use would fail loudly
            PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        )
        stderr_path = os.path.join(directory, "stderr.txt")
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
                [sys.executable, "-c", _HOST_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=directory,
                env=env,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the demo, which ends the hosts by PID
            )
        host = _Host(number, process, stderr_path)
        hosts.append(host)
        host.send(json.dumps({**config, "number": number}))  # on stdin: a Redis password stays out of argv
    return hosts


def _stop_hosts(hosts: list[_Host]) -> None:
    """End every host process still running, by PID: SIGTERM to all, then SIGKILL to any left."""
    for host in hosts:
        if host.process.poll() is None:
            host.process.terminate()
    deadline = time.monotonic() + 5
    for host in hosts:
        try:
            host.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait(5)
    for host in hosts:
        host.reader.join(5)
        for stream in (host.process.stdin, host.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _wait_ready(hosts: list[_Host]) -> None:
    deadline = time.monotonic() + HOST_START_TIMEOUT
    for host in hosts:
        while not host.ready.is_set():
            if host.done.is_set() or time.monotonic() > deadline:
                raise _HostsError(f"a host process did not start: {host.why_not()}")
            host.ready.wait(0.1)


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
