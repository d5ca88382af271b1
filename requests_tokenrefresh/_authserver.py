"""A small OAuth 2.0 token endpoint and protected API on loopback, for the demo, tests and benchmarks.

It behaves like a strict production server: refresh tokens rotate, and presenting a refresh token
that was already used revokes the whole token family (RFC 9700 §4.14), so a client that refreshes
twice with one refresh token logs its user out. Every call is counted and logged so that tests can
check what the client did against what the server saw.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["AuthServer", "Canned"]

ROTATION_MODES = ("none", "rotate", "reuse-detection")


@dataclasses.dataclass
class Canned:
    """A response the token endpoint gives instead of a token, for fault tests."""

    status: int
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0  # seconds between two bytes of the body (a server that dribbles its answer)


@dataclasses.dataclass
class _Family:
    current_refresh: str
    revoked: bool = False


class AuthServer:
    """Token endpoint at ``/token``; any other path is an API that needs a valid bearer token.

    Args:
        ttl: access token lifetime in seconds (``expires_in``).
        rotation: ``"none"``, ``"rotate"``, or ``"reuse-detection"`` (rotation, and reuse of an
            old refresh token revokes the family).
        client_id, client_secret: if set, the token endpoint requires these (Basic or form body).
        jwt: issue access tokens as unsigned-looking JWTs with an ``exp`` claim instead of
            opaque strings (the client reads ``exp`` without verifying).
        host: the loopback address to listen on.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600,
        rotation: str = "reuse-detection",
        client_id: str | None = None,
        client_secret: str | None = None,
        jwt: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        if rotation not in ROTATION_MODES:
            raise ValueError(f"rotation must be one of {ROTATION_MODES}")
        self.ttl = ttl
        self.rotation = rotation
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwt = jwt
        self.lock = threading.Lock()
        self.refresh_calls = 0
        self.api_calls = 0
        self.api_rejections = 0
        self.token_log: list[dict[str, Any]] = []  # one entry per token endpoint call
        self.api_log: list[dict[str, Any]] = []  # one entry per API call: token, status, body digest
        self.canned: list[Canned] = []  # served in order by /token before any real answer
        self.denied_paths: set[str] = set()  # API paths that answer 401 whatever the token (2FA, entitlement)
        self.gate = threading.Event()  # /token waits on it while hold_refresh is set
        self.gate.set()
        self._drop_upto = 0  # token requests numbered up to this are dropped after the gate
        self._access: dict[str, tuple[float, int]] = {}  # access token -> (expires_at, family id)
        self._refresh: dict[str, int] = {}  # every refresh token ever issued -> family id
        self._families: dict[int, _Family] = {}
        self._server = _Server((host, 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="authserver", daemon=True)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> AuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    # -- test controls ----------------------------------------------------------------------

    def issue(self) -> dict[str, Any]:
        """Start a new token family (a login) and return its token response."""
        with self.lock:
            family = len(self._families) + 1
            refresh = self._new_refresh(family)
            self._families[family] = _Family(refresh)
            return self._response(family, refresh)

    def revoke_access_tokens(self) -> None:
        """Make every access token issued so far invalid (as a server does on a password change)."""
        with self.lock:
            self._access.clear()

    def revoke_families(self) -> None:
        """Revoke every refresh token: the next refresh gets ``invalid_grant``."""
        with self.lock:
            for family in self._families.values():
                family.revoked = True

    @property
    def revoked(self) -> bool:
        """Whether any token family was revoked (a client presented an old refresh token)."""
        with self.lock:
            return any(f.revoked for f in self._families.values())

    def hold_refresh(self) -> None:
        """Make the token endpoint wait until :meth:`release_refresh`."""
        self.gate.clear()

    def release_refresh(self, drop: bool = False) -> None:
        """Let held token requests go on; with ``drop``, answer those held so far 503, unprocessed.

        Dropping stands for a request whose client died before the server acted on it.
        """
        if drop:
            with self.lock:
                self._drop_upto = self.refresh_calls
        self.gate.set()

    # -- the endpoints ----------------------------------------------------------------------

    def _new_refresh(self, family: int) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self._refresh[token] = family
        return token

    def _new_access(self, family: int) -> tuple[str, float]:
        now = time.time()
        expires_at = now + self.ttl
        if self.jwt:
            claims = {
                "iat": int(now) if self.ttl >= 1 else now,
                "exp": int(expires_at) if self.ttl >= 1 else expires_at,
                "fam": family,
                "jti": secrets.token_hex(8),
            }
            token = ".".join(_b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, claims))
            token += "." + _b64(hashlib.sha256(token.encode()).digest())
        else:
            token = "at-" + secrets.token_urlsafe(24)
        self._access[token] = (expires_at, family)
        return token, expires_at

    def _response(self, family: int, refresh: str | None) -> dict[str, Any]:
        access, _ = self._new_access(family)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.ttl, "scope": "api"}
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    def token_endpoint(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any] | Canned]:
        with self.lock:
            self.refresh_calls += 1
            number = self.refresh_calls
            entry: dict[str, Any] = {"t": time.time(), "refresh_token": form.get("refresh_token"), "status": None}
            self.token_log.append(entry)
            canned = self.canned.pop(0) if self.canned else None
        if not self.gate.wait(timeout=60) or number <= self._drop_upto:  # held by hold_refresh()
            entry["status"] = 503
            return 503, Canned(503)
        if canned is not None:
            entry["status"] = canned.status
            return canned.status, canned
        status, body = self._grant(form, authorization)
        entry["status"] = status
        return status, body

    def _grant(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        if not self._client_ok(form, authorization):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        presented = form.get("refresh_token", "")
        with self.lock:
            family_id = self._refresh.get(presented)
            family = self._families.get(family_id) if family_id is not None else None
            if family is None or family.revoked:
                return 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
            if self.rotation == "none":
                return 200, self._response(family_id, None)  # type: ignore[arg-type]
            if presented != family.current_refresh:
                if self.rotation == "reuse-detection":
                    family.revoked = True
                    self._access = {k: v for k, v in self._access.items() if v[1] != family_id}
                return 400, {"error": "invalid_grant", "error_description": "Refresh token was already used"}
            family.current_refresh = self._new_refresh(family_id)  # type: ignore[arg-type]
            return 200, self._response(family_id, family.current_refresh)  # type: ignore[arg-type]

    def _client_ok(self, form: dict[str, str], authorization: str | None) -> bool:
        if self.client_id is None:
            return True
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            from urllib.parse import unquote_plus

            cid, _, secret = pair.partition(":")
            return (unquote_plus(cid), unquote_plus(secret)) == (self.client_id, self.client_secret)
        return (form.get("client_id"), form.get("client_secret")) == (self.client_id, self.client_secret)

    def api(self, authorization: str | None, body: bytes, path: str = "/") -> tuple[int, dict[str, Any]]:
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
        with self.lock:
            self.api_calls += 1
            expires_at, _ = self._access.get(token, (0.0, 0))
            ok = expires_at > time.time() and path not in self.denied_paths
            if not ok:
                self.api_rejections += 1
            self.api_log.append({"t": time.time(), "token": token, "status": 200 if ok else 401})
        if not ok:
            return 401, {"error": "invalid_token"}
        return 200, {"ok": True, "length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    def requests_with(self, token: str) -> Iterator[dict[str, Any]]:
        return (e for e in list(self.api_log) if e["token"] == token)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default listen backlog of 5 makes a burst of clients wait seconds

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away is no error
            super().handle_error(request, client_address)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handler(server: AuthServer) -> type[BaseHTTPRequestHandler]:
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
            if not trickle:
                self.wfile.write(body)
                return
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(trickle)

        def _dispatch(self) -> None:
            body = self._body()
            auth = self.headers.get("Authorization")
            if urlsplit(self.path).path == "/token" and self.command == "POST":
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                status, result = server.token_endpoint(form, auth)
                if isinstance(result, Canned):
                    time.sleep(result.delay)
                    raw = result.body
                    if isinstance(raw, dict):
                        raw = json.dumps(raw)
                    data = raw.encode() if isinstance(raw, str) else raw
                    headers = {"Content-Type": "application/json", **result.headers}
                    return self._send(status, data, headers, result.trickle)
                return self._send(
                    status,
                    json.dumps(result).encode(),
                    {"Content-Type": "application/json", "Cache-Control": "no-store"},
                )
            status, payload = server.api(auth, body, urlsplit(self.path).path)
            extra = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **extra})

        do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    return Handler
