"""Many threads sending through adapters for a while, every outcome counted: the storms of the
DPoP, mutual TLS and fleet tests (tests/file_worker.py and tests/redis_support.py do the same in
processes of their own)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence

import requests

from requests_tokenrefresh.testing import AuthServer


def storm(sessions: Sequence[requests.Session], url: str, threads: int, seconds: float) -> collections.Counter[str]:
    """``threads`` threads per session GET ``url`` for ``seconds``: ``ok``, ``http_<status>`` or an exception's name."""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def work(session: requests.Session) -> None:
        while time.monotonic() < deadline:
            try:
                status = session.get(url, timeout=30).status_code
                outcome = "ok" if status == 200 else f"http_{status}"
            except Exception as exc:  # counted, not raised: the tests assert every outcome
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1
            time.sleep(0.005)

    workers = [threading.Thread(target=work, args=(s,)) for s in sessions for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + 60)
    assert not any(t.is_alive() for t in workers), "a storm thread is stuck"
    return outcomes


def refresh_tokens_presented(server: AuthServer) -> list[str]:
    """The refresh tokens of the kit's successful refresh grants, in order: each once, or one was spent twice."""
    with server.lock:
        return [e["refresh_token"] for e in server.token_log if e.get("refresh_token") and e["status"] == 200]
