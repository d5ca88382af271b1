"""Discovery is bounded by its timeout as a whole: a metadata endpoint that trickles its answer.

requests' read timeout bounds each wait for a byte, not the answer: a server that sends a byte
every half second never trips it. Discovery (for the logins, and for an adapter given
``issuer=``, at its first refresh) must give up when its timeout has passed, with the error an
unreachable metadata endpoint gets. The server here is a real loopback one that trickles either
its whole answer (status line and headers included) or only its body.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from requests_tokenrefresh import LoginError, MemoryStorage, RefreshError, Token, TokenRefreshAdapter
from requests_tokenrefresh._discovery import _clear_cache
from requests_tokenrefresh.login import discover

# Seconds between two bytes; the server gives up after TRICKLE_FOR seconds (the old code read on
# until then, so a test of it ends in a bounded time too).
TRICKLE_EVERY = 0.5
TRICKLE_FOR = 30.0


class TrickleServer(ThreadingHTTPServer):
    """Answers every GET with a metadata document, one byte every TRICKLE_EVERY seconds.

    ``part`` is what is trickled: ``"all"`` (from the status line on) or ``"body"`` (headers at once).
    """

    daemon_threads = True
    part = "all"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.stopping = threading.Event()
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up mid-trickle is what the tests expect


class _TrickleHandler(BaseHTTPRequestHandler):
    server: TrickleServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        document = {"issuer": self.server.url, "token_endpoint": self.server.url + "/token"}
        body = json.dumps(document).encode() + b" " * 200  # padding: longer to trickle than any test waits
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        if self.server.part == "body":
            self.wfile.write(head)
            self.wfile.flush()
            data = body
        else:
            data = head + body
        deadline = time.monotonic() + TRICKLE_FOR
        for i in range(len(data)):
            if self.server.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            except OSError:
                return  # the client gave up
            self.server.stopping.wait(TRICKLE_EVERY)


@pytest.fixture(params=["all", "body"], ids=["trickled-headers", "trickled-body"])
def trickle(request: pytest.FixtureRequest) -> Iterator[TrickleServer]:
    _clear_cache()
    server = TrickleServer()
    server.part = request.param
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()
        _clear_cache()


def test_discover_gives_up_on_a_trickling_metadata_endpoint_at_its_timeout(trickle: TrickleServer) -> None:
    started = time.monotonic()
    with pytest.raises(LoginError, match=r"network_error: .*metadata of http://127\.0\.0\.1:\d+") as info:
        discover(trickle.url, timeout=2)
    took = time.monotonic() - started
    assert took >= 1.5  # it did wait for the answer
    assert took < 10  # and not for the trickle (30 s), nor 2 s per read
    assert info.value.error == "network_error"
    assert info.value.retryable
    assert trickle.requests == ["/.well-known/openid-configuration"]  # the fallback gets no time of its own


def test_the_first_request_of_an_adapter_with_an_issuer_is_bounded_by_refresh_timeout(
    trickle: TrickleServer,
) -> None:
    storage = MemoryStorage(Token("old-access", refresh_token="rt", expires_at=time.time() - 60))
    with requests.Session() as session:
        session.trust_env = False
        adapter = TokenRefreshAdapter(storage, issuer=trickle.url, refresh_timeout=2)
        session.mount(trickle.url + "/api/", adapter)
        started = time.monotonic()
        with pytest.raises(RefreshError, match=r"discovery of http://127\.0\.0\.1:\d+ failed: network_error") as info:
            session.get(trickle.url + "/api/data", timeout=5)
        took = time.monotonic() - started
        with contextlib.suppress(Exception):
            adapter.close()
    assert took < 10
    assert info.value.retryable
    assert info.value.error == "network_error"
    assert storage.load() is not None  # a failed discovery is no sign-out
