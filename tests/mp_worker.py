"""One process of the multi-process tests: T threads send requests through one adapter for D seconds.

Run by tests/e2e/test_processes.py as a subprocess (never imported by pytest). The keyring backend and
the cache directory (for the refresh lock) come from the environment the test sets. Prints one
JSON line: requests ok, failed, and failures by exception type.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time

import requests

from requests_tokenrefresh import KeyringStorage, TokenRefreshAdapter


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0, help="per thread, instead of --duration")
    args = parser.parse_args()

    adapter = TokenRefreshAdapter(
        KeyringStorage(args.service, args.username), token_url=args.token_url, pool_maxsize=args.threads
    )
    session = requests.Session()
    session.mount(args.api.rsplit("/", 1)[0] + "/", adapter)
    results: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + args.duration

    def work() -> None:
        done = 0
        while (done < args.requests) if args.requests else (time.monotonic() < deadline):
            done += 1
            try:
                status = session.get(args.api, timeout=30).status_code
                outcome = "ok" if status == 200 else f"http_{status}"
            except Exception as exc:  # reported, not raised: the test counts every outcome
                outcome = type(exc).__name__
            with lock:
                results[outcome] += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 120)
    session.close()
    ok = results.pop("ok", 0)
    print(json.dumps({"ok": ok, "failed": sum(results.values()), "errors": dict(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
