"""The loopback redirect listener of the browser login (RFC 8252 §7.3).

Rules:

1. It listens on loopback only: 127.0.0.1, and ::1 on the same port where it can (a browser
   may resolve ``localhost`` to either). The port is the OS's choice unless one is given; a
   given port that is busy fails at once (the caller turns the OSError into a clear error).
2. Only a request for the redirect path whose ``state`` matches is the login's answer, and only
   the first one. Anything else (a favicon, a stale tab, a forged redirect) is answered, counted
   and otherwise ignored: the login keeps waiting.
3. The browser gets its page only once the caller knows whether the login worked
   (:meth:`Callback.answer`), so the page can say so.
4. :meth:`LoopbackListener.close` releases the port and answers any browser still waiting; it
   runs on every way out (success, error, timeout, Ctrl-C) through the context manager.

The waiting happens in the caller's thread, in short slices, so Ctrl-C interrupts it promptly.
Nothing here logs a query string: it holds the authorization code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hmac
import html
import logging
import os
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Callback", "LoopbackListener"]

log: logging.Logger = logging.getLogger(__name__)

# Seconds an idle browser connection (a speculative preconnect) may hold a handler thread.
_IDLE = 10.0
# Seconds the browser's request waits for the caller to say whether the login worked.
_ANSWER_WAIT = 120.0
# How often the waiting caller wakes up (Ctrl-C on Windows is only seen between waits).
_SLICE = 0.2


@dataclasses.dataclass
class Callback:
    """The redirect that carried the login's answer; ``params`` holds the code: never log it."""

    params: dict[str, str]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""

    def answer(self, ok: bool, message: str) -> None:
        """Tell the waiting browser whether the login worked (the first answer wins)."""
        if not self.done.is_set():
            self.ok, self.message = ok, message
            self.done.set()

    def __repr__(self) -> str:
        return f"Callback(keys={sorted(self.params)!r}, ok={self.ok!r})"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR lets a fixed port be used again while old connections sit in TIME_WAIT; on
    # Linux and macOS it never lets two listeners share a port. On Windows it would: there, no.
    allow_reuse_address = os.name != "nt"
    listener: LoopbackListener

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("the loopback listener dropped a browser connection (%s)", type(sys.exc_info()[1]).__name__)


class _Server6(_Server):
    address_family = socket.AF_INET6


class LoopbackListener:
    """Waits for the authorization server's redirect to ``http://HOST:PORT/PATH``.

    Args:
        state: the ``state`` the redirect must carry.
        port: the port, or 0 for one the OS picks.
        path: the redirect path, such as ``"/callback"``.
        redirect_host: the host of the redirect URI: ``"127.0.0.1"``, ``"localhost"`` or ``"::1"``.

    Raises:
        OSError: the port could not be bound (``errno.EADDRINUSE`` for a busy port).
    """

    def __init__(self, *, state: str, port: int = 0, path: str = "/callback", redirect_host: str = "127.0.0.1") -> None:
        if redirect_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("redirect_host must be '127.0.0.1', 'localhost' or '::1'")
        if not path.startswith("/"):
            raise ValueError("the redirect path must start with '/'")
        self.state = state
        self.path = path
        self.redirect_host = redirect_host
        self.ignored: list[str] = []  # why each stray request was ignored (no secret in it)
        self._queue: queue.Queue[Callback] = queue.Queue()
        self._lock = threading.Lock()
        self._taken = False
        self._callbacks: list[Callback] = []
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        first, second = ("::1", "127.0.0.1") if redirect_host == "::1" else ("127.0.0.1", "::1")
        try:
            self._bind(first, port)
            self.port: int = int(self._servers[0].server_address[1])
            try:
                self._bind(second, self.port)  # where available; the redirect URI names the first
            except OSError as exc:
                log.debug("not listening on %s port %d as well (%s)", second, self.port, exc.strerror)
        except BaseException:
            self.close()
            raise
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="login-listener", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _bind(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if family == socket.AF_INET6 and not socket.has_ipv6:
            raise OSError(errno.EAFNOSUPPORT, "no IPv6")
        server = (_Server6 if family == socket.AF_INET6 else _Server)((host, port), _Handler)
        server.listener = self
        self._servers.append(server)

    @property
    def redirect_uri(self) -> str:
        """The exact redirect URI to send in the authorization request and the code exchange."""
        host = "[::1]" if self.redirect_host == "::1" else self.redirect_host
        return f"http://{host}:{self.port}{self.path}"

    def wait(self, timeout: float) -> Callback | None:
        """Return the redirect that carries the matching ``state``, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                return self._queue.get(timeout=min(_SLICE, remaining))
            except queue.Empty:
                continue

    def close(self) -> None:
        """Stop listening, release the port and answer any browser still waiting."""
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback.answer(False, "The program that started this login stopped waiting for it.")
        for server in self._servers:
            if any(t.is_alive() for t in self._threads):
                server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> LoopbackListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- called by the handler threads -------------------------------------------------------

    def _take(self, params: dict[str, str]) -> tuple[Callback | None, str]:
        """Decide what a request for the redirect path is; return its callback, or why it is ignored."""
        state = params.get("state")
        if state is None or not hmac.compare_digest(state.encode(), self.state.encode()):
            reason = "a redirect with no state" if state is None else "a redirect with a wrong state"
            self.ignored.append(reason)
            return None, reason
        with self._lock:
            if self._taken:
                self.ignored.append("a second redirect for the same login")
                return None, "a second redirect for the same login"
            self._taken = True
            callback = Callback(params)
            self._callbacks.append(callback)
        self._queue.put(callback)
        return callback, ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _IDLE  # an idle preconnect must not hold a thread for ever
    server_version = "requests-tokenrefresh"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # the request line holds the code; the decisions are logged below without it

    def do_GET(self) -> None:
        listener = self.server.listener
        parts = urlsplit(self.path)
        if parts.path != listener.path:
            log.debug("ignoring a request for another path on the login listener")
            self._page(404, "Not found", "This address only receives the login's redirect.")
            return
        params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        callback, reason = listener._take(params)
        if callback is None:
            log.info("ignoring %s on the login listener; still waiting", reason)
            self._page(400, "Not this login", f"This page was {reason}; the program is still waiting for its own.")
            return
        if not callback.done.wait(_ANSWER_WAIT):
            callback.answer(False, "The program did not finish the login in time.")
        if callback.ok:
            self._page(200, "Logged in", callback.message)
        else:
            self._page(400, "Login failed", callback.message)

    def _page(self, status: int, title: str, message: str) -> None:
        body = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(message)}</p><p>You can close this tab.</p></body></html>"
        ).encode()
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "default-src 'none'")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
