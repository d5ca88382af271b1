"""The testing kit's HTTP layer: the threaded server and the request handler of an AuthServer.

The handler turns each HTTP request into one call of
:class:`~requests_tokenrefresh.testing.AuthServer`'s router (``AuthServer._respond``) and its
answer into bytes; what to answer is the server's business, how to read and write HTTP is this
module's. It reads the body (``Content-Length`` or chunked), puts what the endpoints need besides
the body (a :class:`Request`: the method, the URLs it was sent to, its DPoP headers, the client's
certificate) in the server's slot for the handler's thread while the endpoint runs, and writes the
answer: a ``HEAD`` gets the headers without the body, a trickled answer goes out byte by byte.
Every method is served, not only ``GET`` and ``POST``: the protected API takes any.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._tls import TLSMixIn, peer_certificate

if TYPE_CHECKING:
    from .authserver import AuthServer

__all__ = ["Answer", "Request", "Server", "handler", "json_answer"]

#: An endpoint's answer: status, body and headers.
Answer = tuple[int, bytes, dict[str, str]]


@dataclasses.dataclass
class Request:
    """What the endpoints need of a request besides its body, and the headers they add to its answer."""

    method: str
    path: str
    urls: tuple[str, ...]  # the URLs it was sent to: the server's own and the Host header's, with the path
    dpop: list[str] = dataclasses.field(default_factory=list)  # its DPoP headers
    cert: bytes | None = None  # the client's certificate (DER), on a TLS connection
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class Server(TLSMixIn, ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default listen backlog of 5 makes a burst of clients wait seconds

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away is no error
            super().handle_error(request, client_address)


def json_answer(status: int, payload: dict[str, Any]) -> Answer:
    """A JSON answer that no cache keeps."""
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json", "Cache-Control": "no-store"}


def handler(server: AuthServer) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``server``."""

    # A class of small methods made per server (they close over it): its length is HTTP's, not
    # one function's logic.
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass  # quiet: tests and the demo print their own summaries

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes, headers: dict[str, str], trickle: float = 0.0) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "HEAD":  # the headers a GET gets, without the body (RFC 9110 §9.3.2)
                return
            if not trickle:
                self.wfile.write(body)
                return
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(trickle)

        def _request(self, path: str) -> Request:
            scheme = "https" if server._tls else "http"
            urls = (server.url + path, f"{scheme}://{self.headers.get('Host', '')}{path}")
            dpop = self.headers.get_all("DPoP") or []
            return Request(self.command, path, urls, dpop, peer_certificate(self.connection))

        def _dispatch(self) -> None:
            body = self._body()
            auth = self.headers.get("Authorization")
            parts = urlsplit(self.path)
            method = "GET" if self.command == "HEAD" else self.command
            server._serving.request = request = self._request(parts.path)
            try:
                self._send(*server._respond(request, method, parts.query, body, auth))
            finally:
                server._serving.request = None

        def __getattr__(self, name: str) -> Any:
            # http.server answers 501 to a method without a do_<METHOD>: here every method
            # (PATCH, HEAD, OPTIONS, WebDAV's ...) is one the API serves.
            if name.startswith("do_"):
                return self._dispatch
            raise AttributeError(name)

    return Handler
