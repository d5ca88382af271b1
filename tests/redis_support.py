"""A real redis-server for the tests and benchmarks, and the "host" processes that share it.

Imported by tests/test_redis*.py and benchmarks/redis_hosts.py; run as a script it is one host::

    python tests/redis_support.py host --redis-url URL --key KEY --token-url URL --api URL ...
    python tests/redis_support.py hold --redis-url URL --key KEY --token-url URL --state-dir DIR ...

``host``: T threads send requests through one TokenRefreshAdapter over a RedisStorage (no
keyring, no lock file: the host shares nothing with the others but Redis); prints one JSON line.
``hold``: one refresh done by hand with the lease protocol, parking at named points (files in
``--state-dir``) so a test can stop, kill or resume it at a known step; prints one JSON line.

Servers listen on 127.0.0.1 on a free port and are stopped by PID.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from requests_tokenrefresh._demo.procs import redis_answers, stop_process

INSTALL_HELP = (
    "redis-server is not installed: the Redis tests need a real server "
    "(Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), "
    "or set REDIS_SERVER to its path"
)
#: Seconds a server gets to answer PING after it is started, and to exit after SIGTERM.
START_TIMEOUT = 15.0


def redis_server_path() -> str | None:
    """The redis-server executable, or None if there is none."""
    configured = os.environ.get("REDIS_SERVER")
    if configured:
        return configured if os.path.exists(configured) else None
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1, without persistence unless ``appendonly``."""

    def __init__(self, directory: str | os.PathLike[str], *, appendonly: bool = False) -> None:
        self.directory = Path(directory)
        self.appendonly = appendonly
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        executable = redis_server_path()
        if executable is None:
            raise RuntimeError(INSTALL_HELP)
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another program may take the free port before the server binds it
            self.port = self.port or free_port()
            command = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            command += ["--dir", str(self.directory), "--save", "", "--daemonize", "no"]
            command += ["--logfile", str(self.directory / "redis.log")]
            if self.appendonly:
                command += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                command += ["--appendonly", "no"]
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self._stop_process()
            self.port = 0
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        return redis_answers(self.process, self.port, START_TIMEOUT)  # the demo's own wait

    def restart(self) -> None:
        """Stop the server and start it again on the same port (and, with AOF, the same data)."""
        self._stop_process()
        self.start()

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, START_TIMEOUT)  # by PID: only the server this object started

    def stop(self) -> None:
        self._stop_process()

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **options)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def host_env(directory: str | os.PathLike[str]) -> dict[str, str]:
    """The environment of one host: its own cache directory, no usable keyring."""
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = os.path.join(os.fspath(directory), "cache")
    env["XDG_DATA_HOME"] = os.path.join(os.fspath(directory), "data")
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # any keyring use would fail loudly
    return env


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition()`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def lease_left(client: Any, key: str) -> float | None:
    """Seconds left on the refresh lease of ``key`` by the server's clock; None if nobody holds it.

    The lease is ``"<owner> <expiry ms>"`` with no key TTL (requests_tokenrefresh.storage.redis).
    """
    value = client.get(f"{key}:lease")
    if value is None:
        return None
    expiry = int(value.split()[1])
    seconds, micros = client.time()
    left = (expiry - (seconds * 1000 + micros // 1000)) / 1000
    return left if left > 0 else None


def lease_owner(client: Any, key: str) -> str | None:
    """The owner token of the lease of ``key`` if it is held, else None."""
    value = client.get(f"{key}:lease")
    return value.split()[0].decode() if value is not None and lease_left(client, key) is not None else None


# -- the host processes ------------------------------------------------------------------------


def naive_storage(url: str, key: str, lock_ttl: float) -> Any:
    """What users write today: the record in Redis and a plain ``SET NX PX`` lock, no fencing.

    The lock is released with a plain DEL (whoever holds it), nothing is checked before the
    refresh and the save is unconditional. For the benchmark's comparison only.
    """
    import json as json_

    import redis

    from requests_tokenrefresh import RefreshLease, Token, TokenStorage, TokenStorageError

    client = redis.Redis.from_url(url, socket_timeout=5)

    class NaiveLock(RefreshLease):
        def __init__(self, storage: TokenStorage, timeout: float) -> None:
            super().__init__(storage)
            self.timeout = timeout

        def __enter__(self) -> RefreshLease:
            deadline = time.monotonic() + self.timeout
            while not client.set(f"{key}:naive-lock", "1", nx=True, px=int(lock_ttl * 1000)):
                if time.monotonic() > deadline:
                    raise TokenStorageError("timed out waiting for the naive lock")
                time.sleep(0.02)
            return self

        def __exit__(self, *exc: object) -> None:
            client.delete(f"{key}:naive-lock")

    class NaiveRedisStorage(TokenStorage):
        def load(self) -> Token | None:
            raw = client.get(key)
            return None if raw is None else Token.from_record(json_.loads(raw))

        def save(self, token: Token) -> None:
            client.set(key, json_.dumps(token.to_record(), separators=(",", ":"), sort_keys=True))

        def delete(self) -> None:
            client.delete(key)

        def refresh_lease(self, timeout: float) -> RefreshLease:
            return NaiveLock(self, timeout)

        def close(self) -> None:
            client.close()

    return NaiveRedisStorage()


def _host(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    from requests_tokenrefresh import RedisStorage, TokenRefreshAdapter
    from requests_tokenrefresh._redact import fingerprint

    if args.naive_lock_ttl:
        storage = naive_storage(args.redis_url, args.key, args.naive_lock_ttl)
    else:
        storage = RedisStorage(args.redis_url, key=args.key)
    adapter = TokenRefreshAdapter(
        storage, token_url=args.token_url, pool_maxsize=args.threads, refresh_timeout=args.refresh_timeout
    )
    session = requests.Session()
    session.mount(args.api.rsplit("/", 1)[0] + "/", adapter)
    results: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    start = Path(args.start_file) if args.start_file else None
    if start is not None:  # every host starts sending at once
        Path(f"{start}.ready.{os.getpid()}").touch()
        wait_for(start.exists, 120, "the start file")
    deadline = time.monotonic() + args.duration
    seen: dict[str, float] = {}  # access token fingerprint -> when this host first had it

    def watch() -> None:  # --watch: when each new token reached this host
        while time.monotonic() < deadline:
            current = adapter._coordinator.current()
            if current is not None:
                seen.setdefault(fingerprint(current.access_token), time.time())
            time.sleep(0.002)

    if args.watch:
        threading.Thread(target=watch, daemon=True).start()

    def work() -> None:
        done = 0
        while (done < args.requests) if args.requests else (time.monotonic() < deadline):
            done += 1
            try:
                status = session.get(args.api, timeout=60).status_code
                outcome = "ok" if status == 200 else f"http_{status}"
            except Exception as exc:  # counted, not raised: the test checks every outcome
                outcome = f"{type(exc).__name__}: {exc}"[:200]
            with lock:
                results[outcome] += 1
            time.sleep(args.pause)

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 180)
    session.close()
    storage.close()
    ok = results.pop("ok", 0)
    alive = sum(t.is_alive() for t in threads)
    return {"ok": ok, "failed": sum(results.values()), "errors": dict(results), "alive": alive, "seen": seen}


def _hold(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    from requests_tokenrefresh import LeaseLostError, RedisStorage, Token

    state = Path(args.state_dir)
    parks = set(args.park or ())

    def mark(name: str) -> None:
        (state / name).write_text(str(os.getpid()))
        if name in parks:  # wait here until the test writes NAME.go
            wait_for((state / f"{name}.go").exists, 120, f"{name}.go")

    storage = RedisStorage(args.redis_url, key=args.key, lease_margin=args.margin)
    result: dict[str, Any] = {"pid": os.getpid()}
    with storage.refresh_lease(args.lease) as lease:
        mark("entered")
        stored = lease.load()
        assert stored is not None
        assert stored.refresh_token
        result["interrupted"] = lease.interrupted
        mark("loaded")
        try:
            lease.check(args.need)
        except LeaseLostError as exc:
            result.update(outcome="not-sent", reason=str(exc))
            return result
        mark("checked")
        form = {"grant_type": "refresh_token", "refresh_token": stored.refresh_token}
        response = requests.post(args.token_url, data=form, timeout=30)
        result["status"] = response.status_code
        mark("answered")
        if response.status_code != 200:
            result["outcome"] = "rejected"
            return result
        try:
            lease.save(Token.from_response(response.json(), stored))
        except LeaseLostError as exc:
            result.update(outcome="save-rejected", reason=str(exc))
            return result
        result["outcome"] = "saved"
    storage.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["host", "hold"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--api", default="")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0, help="per thread, instead of --duration")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between two requests of a thread")
    parser.add_argument("--refresh-timeout", type=float, default=5.0)
    parser.add_argument("--start-file", default="")
    parser.add_argument("--watch", action="store_true", help="host: record when each new token arrives")
    parser.add_argument("--naive-lock-ttl", type=float, default=0.0, help="host: a naive Redis lock instead")
    parser.add_argument("--state-dir", default=".")
    parser.add_argument("--park", action="append", help="hold: a step to wait at (entered, loaded, checked)")
    parser.add_argument("--lease", type=float, default=2.0, help="hold: lease seconds")
    parser.add_argument("--need", type=float, default=0.5, help="hold: seconds check() asks for")
    parser.add_argument("--margin", type=float, default=0.1, help="hold: the storage's lease_margin")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # only the result line goes to stdout
        result = _host(args) if args.mode == "host" else _hold(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
