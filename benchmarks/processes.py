"""Scenario 4: P processes x T threads sharing one keyring entry; refresh calls per expiry.

Every process mounts its own TokenRefreshAdapter over the same KeyringStorage entry (a file-based
keyring that all of them open: the demo's DemoFileKeyring, the testing kit's FileKeyring, whose
writes are atomic renames under a file lock) and sends requests for a fixed time against one token
server that rotates refresh tokens and revokes the family when a spent one comes back. Tokens live
``ttl`` seconds, so each run holds several expiries. The token server runs in this process: the
scenario counts calls, it does not time CPU.

An expiry is a token generation: every successful refresh call starts one. The target is one
refresh call per expiry: no refresh token presented twice, no failed refresh, no failed request.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import keyring
import requests

from requests_tokenrefresh import KeyringStorage, Token, TokenRefreshAdapter
from requests_tokenrefresh._demo import DEMO_KEYRING_ENV, DemoFileKeyring
from requests_tokenrefresh.testing import AuthServer

SERVICE, USERNAME = "bench-processes", "bench"


@dataclasses.dataclass
class ProcessesResult:
    processes: int
    threads: int
    seconds: float
    ok: int
    failed: int
    refresh_calls: int
    expiries: int  # successful refresh calls: each starts a token generation
    presented_twice: int  # refresh calls that presented a refresh token already presented
    revoked: bool

    @property
    def per_expiry(self) -> float:
        return self.refresh_calls / self.expiries if self.expiries else float("nan")

    @property
    def met(self) -> bool:
        return self.failed == 0 and not self.revoked and self.presented_twice == 0 and self.per_expiry == 1

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "per_expiry": self.per_expiry, "met": self.met}


def run_processes(configs: list[tuple[int, int]], seconds: float, ttl: float = 2.0) -> list[ProcessesResult]:
    return [_one(processes, threads, seconds, ttl) for processes, threads in configs]


def _one(processes: int, threads: int, seconds: float, ttl: float) -> ProcessesResult:
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp:
        env = {
            **os.environ,
            DEMO_KEYRING_ENV: os.path.join(tmp, "keyring.json"),
            "XDG_CACHE_HOME": os.path.join(tmp, "cache"),  # the refresh lock files
        }
        previous = keyring.get_keyring()
        keyring.set_keyring(DemoFileKeyring(env[DEMO_KEYRING_ENV]))
        try:
            with AuthServer(ttl=ttl, rotation="reuse-detection") as server:
                KeyringStorage(SERVICE, USERNAME, lock_dir=tmp).save(Token.from_response(server.issue()))
                command = [sys.executable, __file__, "--worker", "--api", f"{server.url}/api/data"]
                command += ["--token-url", server.token_url, "--threads", str(threads), "--seconds", str(seconds)]
                command += ["--lock-dir", tmp]
                workers = [
                    subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
                    for _ in range(processes)
                ]
                outcomes: collections.Counter[str] = collections.Counter()
                for worker in workers:
                    out, err = worker.communicate(timeout=seconds + 120)
                    if worker.returncode != 0:
                        raise RuntimeError(f"a worker process failed: {err[-1000:]}")
                    outcomes.update(json.loads(out.strip().splitlines()[-1]))
                presented = [entry["refresh_token"] for entry in server.token_log]
                return ProcessesResult(
                    processes=processes,
                    threads=threads,
                    seconds=seconds,
                    ok=outcomes.pop("ok", 0),
                    failed=sum(outcomes.values()),
                    refresh_calls=server.refresh_calls,
                    expiries=sum(1 for entry in server.token_log if entry["status"] == 200),
                    presented_twice=len(presented) - len(set(presented)),
                    revoked=server.revoked,
                )
        finally:
            keyring.set_keyring(previous)


def _worker(args: argparse.Namespace) -> int:
    """One process: T threads send requests through one adapter for the given time."""
    keyring.set_keyring(DemoFileKeyring())
    storage = KeyringStorage(SERVICE, USERNAME, lock_dir=args.lock_dir)
    adapter = TokenRefreshAdapter(storage, token_url=args.token_url, pool_maxsize=args.threads)
    session = requests.Session()
    session.mount(args.api.rsplit("/", 2)[0] + "/", adapter)
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def work() -> None:
        while time.monotonic() < deadline:
            try:
                status = session.get(args.api, timeout=30).status_code
                outcome = "ok" if status == 200 else f"http_{status}"
            except Exception as exc:  # counted: every outcome is a result
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1
            time.sleep(0.01)

    pool = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(args.seconds + 60)
    session.close()
    print(json.dumps(dict(outcomes)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--token-url", help=argparse.SUPPRESS)
    parser.add_argument("--lock-dir", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    result = _one(args.processes, args.threads, args.seconds, ttl=2.0)
    print(json.dumps(result.as_dict()))
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
