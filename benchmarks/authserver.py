"""The token endpoint + API for the benchmarks, in a process of its own.

Runs :class:`requests_tokenrefresh.testing.AuthServer` on 127.0.0.1 and takes commands as JSON
lines on stdin, answering each with one JSON line on stdout, so that the client process measures
only the client. Started by ``benchmarks/_control.py``; not meant to be run by hand.

Commands (``{"cmd": NAME, ...}``):
    start   ttl, rotation, client_id, client_secret, refresh_delay: (re)start a fresh server
            -> {"url": ..., "token_url": ...}
    issue   a new token family (a login) -> the token response, plus "issued_at"
    stats   the counters -> refresh_calls, refresh_ok, refresh_statuses, api_calls,
            api_rejections, revoked, refresh_inflight, last_refresh_done
    quit    stop the server and exit
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from requests_tokenrefresh.testing import AuthServer


class BenchAuthServer(AuthServer):
    """AuthServer whose token endpoint can answer after a delay, and which times its refreshes."""

    def __init__(self, *, refresh_delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # TCP_NODELAY, as production servers set it: the handler writes the headers and the body
        # in two sends, and with Nagle's algorithm on, each sequential request stalls ~40 ms on the
        # client's delayed ACK.
        handler = self._server.RequestHandlerClass
        self._server.RequestHandlerClass = type(handler.__name__, (handler,), {"disable_nagle_algorithm": True})
        self.refresh_delay = refresh_delay
        self.refresh_inflight = 0
        self.last_refresh_done = 0.0

    def token_endpoint(self, form: dict[str, str], authorization: str | None) -> tuple[int, Any]:
        with self.lock:
            self.refresh_inflight += 1
        try:
            if self.refresh_delay:
                time.sleep(self.refresh_delay)  # a slow authorization server; blocks only this request
            return super().token_endpoint(form, authorization)
        finally:
            with self.lock:
                self.refresh_inflight -= 1
                self.last_refresh_done = time.time()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            statuses = [entry["status"] for entry in self.token_log]
            stats = {
                "refresh_calls": self.refresh_calls,
                "refresh_ok": sum(1 for s in statuses if s == 200),
                "refresh_statuses": statuses,
                "api_calls": self.api_calls,
                "api_rejections": self.api_rejections,
                "refresh_inflight": self.refresh_inflight,
                "last_refresh_done": self.last_refresh_done,
            }
        stats["revoked"] = self.revoked
        return stats


def main() -> None:
    server: BenchAuthServer | None = None
    out = sys.stdout
    for line in sys.stdin:
        command = json.loads(line)
        name = command.pop("cmd")
        reply: Any
        if name == "start":
            if server is not None:
                server.stop()
            server = BenchAuthServer(host="127.0.0.1", **command).start()
            reply = {"url": server.url, "token_url": server.token_url}
        elif name == "issue":
            assert server is not None
            reply = {**server.issue(), "issued_at": time.time()}
        elif name == "stats":
            assert server is not None
            reply = server.stats()
        elif name == "quit":
            out.write("{}\n")
            out.flush()
            break
        else:
            reply = {"error": f"unknown command {name!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if server is not None:
        server.stop()


if __name__ == "__main__":
    threading.current_thread().name = "bench-authserver"
    main()
