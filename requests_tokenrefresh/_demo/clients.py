"""The demo's clients and server: the timed token server, the client threads, the progress line.

Shared by the demo in one process (:mod:`requests_tokenrefresh._demo`) and each host of
``demo --hosts`` (:mod:`.hosts`).
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import requests

from .._redact import fingerprint
from ..exceptions import SessionExpiredError
from ..testing.authserver import AuthServer, Canned
from ..tokens import Token

__all__ = ["_Run", "_TimedAuthServer", "_ms", "_percentile", "_progress", "_show_progress", "_worker"]


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
