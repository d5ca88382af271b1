"""Faults of the token endpoint and the keyring: one table, each row run against a real loopback token endpoint.

Every row starts from an *expired* token (or, where the row says so, one inside the refresh
window) stored in a :class:`KeyringStorage`, so the first request must refresh. The row injects
one fault (a canned token endpoint answer, a dead or silent socket, a failing keyring ...) and
says what the caller sees, what the keyring holds afterwards and whether ``on_session_expired``
fired. For every row the test also checks that no error message or log line holds a secret, that
the request took less than 3 s, and (where the fault goes away) that the next request works, so
a fault never leads to a sign-out later on.

``docs/faults.rst`` is this table in prose; keep the two in step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import keyring.backends.fail
import pytest
import requests

from requests_tokenrefresh import (
    KeyringStorage,
    RefreshError,
    SessionExpiredError,
    Token,
    TokenRefreshAdapter,
    TokenStorage,
    TokenStorageError,
)
from requests_tokenrefresh import _coordinator as coordinator
from requests_tokenrefresh.testing import AuthServer, Canned, MemoryKeyring

from .jwt_support import make_jwt

SERVICE, USER = "fault-api", "alice"
CLIENT_ID, CLIENT_SECRET = "fault-app", "cs-Sup3rS3cretClientValue"
REFRESH_TIMEOUT = 1.0
HTML = "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1></body></html>"
HTML_HEADERS = {"Content-Type": "text/html; charset=utf-8"}
DROP = object()  # in rotated(): remove this field from the token response


# --- test doubles ------------------------------------------------------------------------------


class RawServer:
    """A one-trick HTTP server on a raw socket: ``truncate``, ``silent`` or ``close`` every request."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/token"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timeout, or the socket closed
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            if self.mode == "truncate":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
                    b'{"access_token": "at-truncated-secret", "token_type": "Bearer", "refr'
                )
            elif self.mode == "silent":
                self.stop.wait(5)
            # "close": nothing at all; the connection closes without a response

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


# --- the environment a row injects its fault into ----------------------------------------------


@dataclasses.dataclass
class Env:
    srv: AuthServer
    old: Token
    keyring: MemoryKeyring
    storage: TokenStorage
    token_url: str
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack
    secrets: list[str]
    adapter: TokenRefreshAdapter | None = None

    def raw(self) -> str | None:
        return self.keyring.entries.get((SERVICE, USER))

    def stored(self) -> Token | None:
        raw = self.raw()
        return None if raw is None else Token.from_record(json.loads(raw))


Inject = Callable[[Env], None]


def canned(*answers: Canned) -> Inject:
    """The token endpoint gives these answers first, then real ones."""

    def inject(env: Env) -> None:
        env.srv.canned = list(answers)

    return inject


def always(answer: Canned) -> Inject:
    """The token endpoint gives this answer to every refresh of the row (until the follow-up)."""
    return canned(*[answer] * 20)


def rotated(**changes: Any) -> Inject:
    """The server really rotates the refresh token, but its answer is changed by ``changes``.

    This is what a server that returns a bad field in an otherwise good token response does: the
    old refresh token is spent whatever the client makes of the answer.
    """

    def inject(env: Env) -> None:
        response = requests.post(
            env.srv.token_url, data={"grant_type": "refresh_token", "refresh_token": env.old.refresh_token}, timeout=5
        )
        body = response.json()
        response.close()
        env.secrets += [body["access_token"], body["refresh_token"]]
        family = env.srv._access[body["access_token"]][1]
        for name, value in changes.items():
            if value is DROP:
                body.pop(name, None)
            else:
                body[name] = value
        if body["access_token"] not in env.srv._access:  # a made-up access token: let the API accept it
            env.srv._access[body["access_token"]] = (time.time() + 3600, family)
            env.secrets.append(body["access_token"])
        raw = json.dumps(body).replace('"__INF__"', "1e999")  # a JSON number beyond float range
        env.srv.canned = [Canned(200, raw)]

    return inject


def token_url(make: Callable[[Env], str]) -> Inject:
    def inject(env: Env) -> None:
        env.token_url = make(env)

    return inject


def raw_server(mode: str) -> Inject:
    def inject(env: Env) -> None:
        server = RawServer(mode)
        env.stack.callback(server.close)
        env.token_url = server.url

    return inject


def closed_port(env: Env) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/token"


def keyring_fails(op: str, times: int = 1, after: int = 0, error: Exception | None = None) -> Inject:
    """Of the keyring's calls of ``op`` after the seed is saved, the ``times`` after the first ``after`` fail."""

    def inject(env: Env) -> None:
        env.keyring.fail(op, times=times, after=after, error=error)

    return inject


def stored_raw(raw: str) -> Inject:
    def inject(env: Env) -> None:
        env.keyring.entries[(SERVICE, USER)] = raw

    return inject


def no_keyring(env: Env) -> None:
    env.keyring = MemoryKeyring()  # empty: nothing can be stored anywhere
    env.storage = KeyringStorage(SERVICE, USER, backend=keyring.backends.fail.Keyring())


def both(*injects: Inject) -> Inject:
    def inject(env: Env) -> None:
        for one in injects:
            one(env)

    return inject


# --- row-specific checks (run after the follow-up request) -------------------------------------


def expiry_unknown(env: Env) -> None:
    stored = env.stored()
    assert stored is not None
    assert stored.expires_at is None


def expiry_near(seconds: float) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        stored = env.stored()
        assert stored is not None
        assert stored.expires_at is not None
        assert abs(stored.expires_at - (time.time() + seconds)) < 30

    return check


def sent_as_mac_then_replayed(env: Env) -> None:
    assert env.srv.api_log[0]["status"] == 401  # "mac <token>" is not a bearer token to this API
    stored = env.stored()
    assert stored is not None
    assert stored.token_type == "Bearer"  # the replay's refresh got a bearer token


def bearer_normalised(env: Env) -> None:
    stored = env.stored()
    assert stored is not None
    assert stored.token_type == "Bearer"
    assert env.srv.api_log[0]["status"] == 200


def kept_in_memory_unsaved(env: Env) -> None:
    assert env.adapter is not None
    current = env.adapter._coordinator._token
    assert current is not None
    assert current.refresh_token != env.old.refresh_token  # the rotated token lives on in memory
    assert env.adapter._coordinator._unsaved


def saved_later(env: Env) -> None:
    stored = env.stored()
    assert stored is not None
    assert stored.refresh_token != env.old.refresh_token
    assert env.keyring.writes == 3  # the seed, the failed save, the save on the next request


def one_save_in_the_lease(env: Env) -> None:
    """No second save inside the lease (it is retried every SAVE_RETRY_INTERVAL within refresh_timeout)."""
    env.monkeypatch.setattr(coordinator, "SAVE_RETRY_INTERVAL", 10 * REFRESH_TIMEOUT)


def saved_in_lease(env: Env) -> None:
    assert env.adapter is not None
    assert not env.adapter._coordinator._unsaved
    assert env.keyring.writes == 3  # the seed, the failed save, the retry before the lease ended


def no_retry_wait(env: Env) -> None:
    assert env.srv.refresh_calls == 2  # one 429 (Retry-After: 120 > refresh_timeout), then the follow-up


# --- the table ---------------------------------------------------------------------------------

OK = "ok"
TERMINAL = (SessionExpiredError, False)
PERMANENT = (RefreshError, False)
TRANSIENT = (RefreshError, True)
STORAGE = (TokenStorageError, None)


@dataclasses.dataclass(frozen=True)
class Fault:
    id: str
    inject: Inject
    sees: str | tuple[type[Exception], bool | None]  # "ok", or (exception class, retryable)
    stored: str  # "old" (the keyring record is untouched), "new" (a refreshed token) or "none"
    fired: bool = False  # on_session_expired was called (once)
    followup: str | None = "ok"  # the next request, fault gone: "ok", "expired" (no token), None: not tried
    seed: str = "expired"  # "expired", or "stale": valid but inside the refresh window
    jwt_server: bool = False
    check: Callable[[Env], None] | None = None
    error: str | None = None  # the exception's .error
    bug: str | None = None


FAULTS = [
    # token endpoint: 200 that is not a token response
    Fault("200-html", always(Canned(200, HTML, HTML_HEADERS)), PERMANENT, "old", error="invalid_token_response"),
    Fault("200-not-json", always(Canned(200, "access_token=x&y", {"Content-Type": "text/plain"})), PERMANENT, "old"),
    Fault("200-empty-body", always(Canned(200, b"")), PERMANENT, "old", error="invalid_token_response"),
    Fault("200-json-array", always(Canned(200, "[1, 2]")), PERMANENT, "old", error="invalid_token_response"),
    Fault(
        "200-no-access_token",
        always(Canned(200, {"token_type": "Bearer", "expires_in": 3600})),
        PERMANENT,
        "old",
        error="invalid_token_response",
    ),
    Fault(
        "200-deeply-nested-json",
        always(Canned(200, "[" * 100_000 + "]" * 100_000)),
        PERMANENT,
        "old",
        error="invalid_token_response",
    ),
    # token endpoint: 200 with odd fields
    Fault("200-expires_in-string", rotated(expires_in="3600"), OK, "new", check=expiry_near(3600)),
    Fault("200-expires_in-zero", rotated(expires_in=0), OK, "new", check=expiry_unknown),
    Fault("200-expires_in-negative", rotated(expires_in=-300), OK, "new", check=expiry_unknown),
    Fault("200-expires_in-zero-jwt-exp", rotated(expires_in=0), OK, "new", jwt_server=True, check=expiry_near(3600)),
    Fault("200-expires_in-1e12", rotated(expires_in=1e12), OK, "new", check=expiry_unknown),
    Fault(
        "200-expires_in-garbage-rotated",
        rotated(expires_in="soon"),
        OK,
        "new",
        check=expiry_unknown,
    ),
    Fault(
        "200-expires_in-overflow-rotated",
        rotated(expires_in="__INF__"),
        OK,
        "new",
        check=expiry_unknown,
    ),
    Fault(
        "200-expires_at-iso-rotated",
        rotated(expires_in=DROP, expires_at="2030-01-01T00:00:00Z"),
        OK,
        "new",
        check=expiry_unknown,
    ),
    Fault("200-token_type-mac", rotated(token_type="mac"), OK, "new", check=sent_as_mac_then_replayed),
    Fault("200-token_type-lowercase-bearer", rotated(token_type="bearer"), OK, "new", check=bearer_normalised),
    Fault(
        "200-malformed-jwt",
        rotated(access_token="eyJhbGciOi.not-a-jwt!.sig", expires_in=DROP),
        OK,
        "new",
        check=expiry_unknown,
    ),
    Fault(
        "200-jwt-without-exp",
        rotated(access_token=make_jwt(sub="alice", jti="x1"), expires_in=DROP),
        OK,
        "new",
        check=expiry_unknown,
    ),
    # token endpoint: the refresh token is rejected (the only terminal faults)
    Fault(
        "400-invalid_grant",
        canned(Canned(400, {"error": "invalid_grant"})),
        TERMINAL,
        "none",
        fired=True,
        followup="expired",
    ),
    Fault(
        "400-invalid_grant-echoes-refresh-token",
        lambda env: canned(
            Canned(400, {"error": "invalid_grant", "error_description": f"token {env.old.refresh_token} revoked"})
        )(env),
        TERMINAL,
        "none",
        fired=True,
        followup="expired",
    ),
    Fault(
        "invalid_grant-family-revoked",
        lambda env: env.srv.revoke_families(),
        TERMINAL,
        "none",
        fired=True,
        followup="expired",
    ),
    Fault(
        "invalid_grant-in-refresh-window",
        canned(Canned(400, {"error": "invalid_grant"})),
        OK,  # sent with the still-valid token; the background refresh then ends the session
        "none",
        fired=True,
        followup="expired",
        seed="stale",
    ),
    Fault(
        "invalid_grant-keyring-delete-fails",
        both(canned(Canned(400, {"error": "invalid_grant"})), keyring_fails("delete")),
        TERMINAL,
        "old",
        fired=True,
        followup=None,
    ),
    # token endpoint: other 4xx (permanent, tokens kept)
    Fault("400-invalid_request", always(Canned(400, {"error": "invalid_request"})), PERMANENT, "old"),
    Fault(
        "400-invalid_request-echoes-secret",
        always(Canned(400, {"error": "invalid_request", "error_description": f"bad secret {CLIENT_SECRET}"})),
        PERMANENT,
        "old",
        error="invalid_request",
    ),
    Fault(
        "400-error-field-echoes-refresh-token",
        lambda env: always(Canned(400, {"error": f"unknown refresh_token {env.old.refresh_token}"}))(env),
        PERMANENT,
        "old",
    ),
    Fault("400-unsupported_grant_type", always(Canned(400, {"error": "unsupported_grant_type"})), PERMANENT, "old"),
    Fault("400-temporarily_unavailable", canned(Canned(400, {"error": "temporarily_unavailable"})), OK, "new"),
    Fault("401-invalid_client", always(Canned(401, {"error": "invalid_client"})), PERMANENT, "old"),
    Fault("403-html", always(Canned(403, HTML, HTML_HEADERS)), PERMANENT, "old", error="http_403"),
    Fault("404-html", always(Canned(404, HTML, HTML_HEADERS)), PERMANENT, "old", error="http_404"),
    Fault("302-redirect", always(Canned(302, headers={"Location": "/elsewhere"})), PERMANENT, "old"),
    Fault("307-redirect", always(Canned(307, headers={"Location": "https://evil.example/t"})), PERMANENT, "old"),
    # token endpoint: transient answers (retried inside refresh_timeout)
    Fault("429-no-retry-after", canned(Canned(429, {"error": "slow_down"})), OK, "new"),
    Fault("429-retry-after-0", canned(Canned(429, "", {"Retry-After": "0"})), OK, "new"),
    Fault(
        "429-retry-after-120",
        always(Canned(429, "", {"Retry-After": "120"})),
        TRANSIENT,
        "old",
        check=no_retry_wait,
        error="http_429",
    ),
    Fault("500-html", canned(Canned(500, HTML, HTML_HEADERS)), OK, "new"),
    Fault("502-html", canned(Canned(502, HTML, HTML_HEADERS)), OK, "new"),
    Fault("503-html", canned(Canned(503, HTML, HTML_HEADERS)), OK, "new"),
    Fault("504-html", canned(Canned(504, HTML, HTML_HEADERS)), OK, "new"),
    Fault("503-persistent", always(Canned(503, HTML, HTML_HEADERS)), TRANSIENT, "old", error="http_503"),
    Fault("503-persistent-in-refresh-window", always(Canned(503, HTML, HTML_HEADERS)), OK, "old", seed="stale"),
    # the network
    Fault("connection-refused", token_url(closed_port), TRANSIENT, "old", followup=None, error="connection_error"),
    Fault(
        "dns-failure",
        token_url(lambda env: "https://nonexistent.invalid/token"),
        TRANSIENT,
        "old",
        followup=None,
        error="connection_error",
    ),
    Fault("read-timeout-no-answer", raw_server("silent"), TRANSIENT, "old", followup=None, error="timeout"),
    Fault(
        "answer-slower-than-refresh_timeout",
        canned(Canned(200, {"access_token": "at-late"}, delay=REFRESH_TIMEOUT + 0.5)),
        TRANSIENT,
        "old",
        error="timeout",
    ),
    Fault("closed-without-answer", raw_server("close"), TRANSIENT, "old", followup=None, error="connection_error"),
    Fault("truncated-body", raw_server("truncate"), TRANSIENT, "old", followup=None, error="connection_error"),
    # the keyring
    Fault("keyring-load-fails", keyring_fails("get", times=2), STORAGE, "old"),  # read twice: again in the lease
    Fault("keyring-load-fails-once", keyring_fails("get"), OK, "new"),
    Fault(
        "keyring-load-fails-in-refresh", keyring_fails("get", after=1, error=OSError(5, "I/O error")), STORAGE, "old"
    ),
    Fault(
        "keyring-save-fails-after-rotation",
        both(keyring_fails("set"), one_save_in_the_lease),
        OK,
        "old",
        check=kept_in_memory_unsaved,
    ),
    Fault(
        "keyring-save-fails-then-saved-later",
        both(
            keyring_fails("set"),
            one_save_in_the_lease,
            lambda env: env.monkeypatch.setattr(coordinator, "SAVE_RETRY_DELAY", 0.0),
        ),
        OK,
        "old",
        check=saved_later,
    ),
    Fault("keyring-save-fails-once-retried-in-the-lease", keyring_fails("set"), OK, "new", check=saved_in_lease),
    Fault("stored-record-not-json", stored_raw('{"version": 1, "access_tok'), STORAGE, "old", followup=None),
    Fault("stored-record-other-version", stored_raw('{"version": 99}'), STORAGE, "old", followup=None),
    Fault(
        "stored-record-no-access_token",
        stored_raw('{"version": 1, "refresh_token": "rt-x", "expires_at": "soon"}'),
        STORAGE,
        "old",
        followup=None,
    ),
    Fault("no-keyring-backend", no_keyring, STORAGE, "none", followup=None),
]


def _param(row: Fault) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {row.bug}")] if row.bug else []
    return pytest.param(row, id=row.id, marks=marks)


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="requests_tokenrefresh"):
        yield caplog


@pytest.mark.parametrize("row", [_param(r) for r in FAULTS])
def test_fault(row: Fault, monkeypatch: pytest.MonkeyPatch, log_text: pytest.LogCaptureFixture) -> None:
    with AuthServer(jwt=row.jwt_server) as srv, contextlib.ExitStack() as stack:
        response = srv.issue()
        now = time.time()
        first = Token.from_response(response)
        if row.seed == "expired":
            old = Token(first.access_token, first.refresh_token, expires_at=now - 1, obtained_at=now - 3601)
        else:  # valid for 30 s more: inside the default 60 s refresh window
            old = Token(first.access_token, first.refresh_token, expires_at=now + 30, obtained_at=now - 3570)
        backend = MemoryKeyring()
        env = Env(
            srv=srv,
            old=old,
            keyring=backend,
            storage=KeyringStorage(SERVICE, USER, backend=backend),
            token_url=srv.token_url,
            monkeypatch=monkeypatch,
            stack=stack,
            secrets=[old.access_token, old.refresh_token or "", CLIENT_SECRET],
        )
        env.storage.save(old)
        row.inject(env)
        raw_before = env.raw()
        expirations: list[SessionExpiredError] = []
        adapter = env.adapter = TokenRefreshAdapter(
            env.storage,
            token_url=env.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_timeout=REFRESH_TIMEOUT,
            on_session_expired=expirations.append,
        )
        session = requests.Session()
        stack.callback(session.close)
        session.mount(srv.url + "/", adapter)

        started = time.monotonic()
        error: BaseException | None = None
        try:
            result = session.get(f"{srv.url}/api", timeout=5)
        except BaseException as exc:
            error = exc
        elapsed = time.monotonic() - started
        assert elapsed < 3, f"{row.id} took {elapsed:.1f}s"
        # In the refresh window the refresh runs in the background: let it end before checking.
        deadline = time.monotonic() + 10
        while adapter._coordinator._flight is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert adapter._coordinator._flight is None

        # what the caller sees
        if row.sees == OK:
            assert error is None, f"{type(error).__name__}: {error}"
            assert result.status_code == 200
        else:
            assert not isinstance(row.sees, str)
            cls, retryable = row.sees
            assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}"
            if retryable is not None:
                assert isinstance(error, RefreshError)
                assert error.retryable is retryable
            if row.error is not None:
                assert isinstance(error, RefreshError)
                assert error.error == row.error
            message = f"{error} {error!r}"
            for secret in env.secrets:
                assert secret not in message, "a secret in the error message"

        # what is stored afterwards: tokens are never lost
        raw_after = env.raw()
        if row.stored == "old":
            assert raw_after == raw_before
        elif row.stored == "none":
            assert raw_after is None
        else:
            assert row.stored == "new"
            stored = env.stored()
            assert stored is not None
            assert stored.refresh_token not in (None, old.refresh_token)
            assert stored.access_token != old.access_token

        # whether on_session_expired fired
        assert len(expirations) == (1 if row.fired else 0)

        # no spurious sign-out later: with the fault gone, the next request works
        srv.canned = []
        env.keyring.failures.clear()
        if row.followup == "ok":
            assert session.get(f"{srv.url}/api", timeout=5).status_code == 200
            assert not srv.revoked
        elif row.followup == "expired":
            with pytest.raises(SessionExpiredError):
                session.get(f"{srv.url}/api", timeout=5)
            assert len(expirations) == 1  # once per expiry, not once per request
        if row.check is not None:
            row.check(env)

        for record in log_text.records:
            text = record.getMessage()
            for secret in env.secrets:
                assert secret not in text, f"a secret in the log line {record.msg!r}"


def test_the_matrix_is_big_enough() -> None:
    assert len(FAULTS) >= 32
    assert len({r.id for r in FAULTS}) == len(FAULTS)
    terminal = {r.id for r in FAULTS if r.sees == TERMINAL}
    fired = {r.id for r in FAULTS if r.fired}
    # Only invalid_grant-class rows sign out; in the refresh window the caller's request still succeeds.
    assert fired - terminal == {"invalid_grant-in-refresh-window"}
    assert terminal <= fired
    assert all("invalid_grant" in r for r in fired)
