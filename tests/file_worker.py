"""One process of tests/storage/test_file.py, sharing a FileStorage with others (never imported by pytest).

Modes (the first argument), each printing one JSON line:

``adapter PATH TOKEN_URL API THREADS SECONDS``
    T threads send requests through one adapter on ``FileStorage(PATH)`` for D seconds:
    requests ok, failed, and failures by exception type.
``write PATH ROUNDS READY DONE``
    Once the file READY exists, saves ROUNDS tokens of alternating sizes, then creates DONE.
``read PATH READY DONE``
    Creates READY, then loads the file until DONE exists: loads, failures by exception type.
``hold PATH``
    Takes the refresh lease, prints ``held``, and keeps it until its standard input closes.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time

from requests_tokenrefresh import FileStorage, Token

#: Seconds any loop here runs at most, so that a broken test cannot leave a process behind.
BOUND = 60.0


def token(round_: int) -> Token:
    # Records of very different sizes: a torn write would show as a truncated or mixed record.
    padding = "x" * (64 if round_ % 2 else 64 * 1024)
    return Token(f"at-{round_}", refresh_token=f"rt-{round_}", expires_at=2e9, extra={"padding": padding})


def wait_for(path: str) -> None:
    deadline = time.monotonic() + BOUND
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def adapter(path: str, token_url: str, api: str, threads: int, seconds: float) -> dict[str, object]:
    import requests

    from requests_tokenrefresh import TokenRefreshAdapter

    mounted = TokenRefreshAdapter(FileStorage(path), token_url=token_url, pool_maxsize=threads)
    session = requests.Session()
    session.mount(api.rsplit("/", 1)[0] + "/", mounted)
    results: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < deadline:
            try:
                status = session.get(api, timeout=30).status_code
                outcome = "ok" if status == 200 else f"http_{status}"
            except Exception as exc:  # reported, not raised: the test counts every outcome
                outcome = type(exc).__name__
            with lock:
                results[outcome] += 1
            time.sleep(0.005)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + BOUND)
    session.close()
    ok = results.pop("ok", 0)
    return {"ok": ok, "failed": sum(results.values()), "errors": dict(results)}


def write(path: str, rounds: int, ready: str, done: str) -> dict[str, object]:
    storage = FileStorage(path)
    wait_for(ready)
    for round_ in range(rounds):
        storage.save(token(round_))
    with open(done, "w"):
        pass
    return {"saved": rounds}


def read(path: str, ready: str, done: str) -> dict[str, object]:
    storage = FileStorage(path)
    loads, seen = 0, set()
    errors: collections.Counter[str] = collections.Counter()
    with open(ready, "w"):
        pass
    deadline = time.monotonic() + BOUND
    while not os.path.exists(done) and time.monotonic() < deadline:
        loads += 1
        try:
            loaded = storage.load()
            assert loaded is not None
            round_ = int(loaded.access_token.removeprefix("at-"))
            assert loaded == token(round_), "a record that was never saved"
            seen.add(round_)
        except Exception as exc:  # reported, not raised: the test counts every outcome
            errors[type(exc).__name__] += 1
    return {"loads": loads, "distinct": len(seen), "errors": dict(errors)}


def hold(path: str) -> dict[str, object]:
    with FileStorage(path).refresh_lease(timeout=BOUND):
        print("held", flush=True)
        sys.stdin.read()
    return {"released": True}


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "adapter":
        result = adapter(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif mode == "write":
        result = write(args[0], int(args[1]), args[2], args[3])
    elif mode == "read":
        result = read(args[0], args[1], args[2])
    elif mode == "hold":
        result = hold(args[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
