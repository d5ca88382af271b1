"""The adapter against a real loopback token endpoint and API (requests' full stack, real sockets)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.exceptions import UnrewindableBodyError

from requests_tokenrefresh import (
    KeyringStorage,
    MemoryStorage,
    RefreshError,
    SessionExpiredError,
    Token,
    TokenRefreshAdapter,
)
from requests_tokenrefresh.testing import AuthServer, Canned, FakeClock

Session = tuple[requests.Session, TokenRefreshAdapter]


@pytest.mark.parametrize("rotation", ["none", "rotate", "reuse-detection"])
def test_64_threads_on_an_expired_token_make_one_refresh(
    rotation: str, expired: Any, run_threads: Any, session_for: Any
) -> None:
    with AuthServer(rotation=rotation) as srv:
        storage = MemoryStorage(expired(srv.issue()))
        session, _ = session_for(srv, None, storage=storage)
        statuses: list[int] = []
        run_threads(64, lambda i: statuses.append(session.get(f"{srv.url}/api/items/{i}").status_code))
        assert statuses == [200] * 64
        assert srv.refresh_calls == 1
        assert not srv.revoked
        stored = storage.load()
        assert stored is not None
        assert stored.state(time.time(), 60).value == "fresh"


def test_several_expiries_one_refresh_each_and_rotation_kept(run_threads: Any, session_for: Any) -> None:
    clock = FakeClock()
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        first = Token.from_response(srv.issue(), now=clock())
        storage = MemoryStorage(first)
        session, _ = session_for(srv, None, storage=storage, clock=clock)
        statuses: list[int] = []
        refresh_tokens = {first.refresh_token}
        for expiry in range(1, 4):
            clock.advance(3600)  # the adapter now sees the token as expired
            run_threads(64, lambda i: statuses.append(session.get(f"{srv.url}/api").status_code))
            assert srv.refresh_calls == expiry
            stored = storage.load()
            assert stored is not None
            refresh_tokens.add(stored.refresh_token)
        assert statuses == [200] * 192
        assert len(refresh_tokens) == 4  # rotated every time, never reused
        assert not srv.revoked


def test_stale_401_after_early_revocation_makes_one_refresh(
    server: AuthServer, run_threads: Any, session_for: Any
) -> None:
    session, _ = session_for(server, Token.from_response(server.issue()))
    assert session.get(f"{server.url}/api").status_code == 200
    server.revoke_access_tokens()  # every thread's token is now rejected although not expired
    responses: list[requests.Response] = []
    run_threads(64, lambda i: responses.append(session.get(f"{server.url}/api")))
    assert [r.status_code for r in responses] == [200] * 64
    assert server.refresh_calls == 1
    replayed = [r for r in responses if r.history]
    assert replayed, "some requests must have gone out with the revoked token"
    assert all([h.status_code for h in r.history] == [401] for r in replayed)


def test_401_for_an_already_replaced_token_replays_without_refreshing(server: AuthServer, session_for: Any) -> None:
    session, adapter = session_for(server, Token.from_response(server.issue()))
    session.get(f"{server.url}/api")
    old = adapter._coordinator.token_for_request()
    server.revoke_access_tokens()
    first = session.get(f"{server.url}/api")  # 401 -> refresh -> replay
    assert first.status_code == 200
    assert server.refresh_calls == 1
    # A request that carried the old token is answered late with 401: no second refresh.
    replacement = adapter._coordinator.token_after_rejection(old)
    assert replacement.access_token != old.access_token
    assert server.refresh_calls == 1


def test_a_401_on_the_replay_is_returned_not_looped(server: AuthServer) -> None:
    calls = []

    def refresher(token: Token) -> dict[str, Any]:
        calls.append(token)
        return {"access_token": f"unknown-{len(calls)}"}

    adapter = TokenRefreshAdapter(MemoryStorage(Token("unknown-0", "r")), refresher=refresher)
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    response = session.get(f"{server.url}/api")
    assert response.status_code == 401
    assert [r.status_code for r in response.history] == [401]
    assert len(calls) == 1
    assert response.request.headers["Authorization"] == "Bearer unknown-1"


def test_file_body_is_replayed_byte_for_byte(server: AuthServer, session_for: Any, tmp_path: Path) -> None:
    payload = os.urandom(1024 * 1024 + 7)
    path = tmp_path / "upload.bin"
    path.write_bytes(payload)
    session, _ = session_for(server, Token.from_response(server.issue()))
    server.revoke_access_tokens()
    with path.open("rb") as body:
        response = session.post(f"{server.url}/api/upload", data=body)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert response.json() == {"ok": True, "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_file_body_read_from_the_middle_is_rewound_to_where_it_started(server: AuthServer, session_for: Any) -> None:
    stream = io.BytesIO(b"HEADER" + b"body-bytes")
    stream.read(6)
    session, _ = session_for(server, Token.from_response(server.issue()))
    server.revoke_access_tokens()
    response = session.post(f"{server.url}/api", data=stream)
    assert response.json()["sha256"] == hashlib.sha256(b"body-bytes").hexdigest()


def test_generator_body_is_never_replayed_empty(server: AuthServer, session_for: Any) -> None:
    session, _ = session_for(server, Token.from_response(server.issue()))
    server.revoke_access_tokens()

    def chunks() -> Iterator[bytes]:
        yield b"one"
        yield b"two"

    with pytest.raises(UnrewindableBodyError) as caught:
        session.post(f"{server.url}/api", data=chunks())
    assert caught.value.response is not None
    assert caught.value.response.status_code == 401
    assert caught.value.request is not None
    assert "Authorization" not in caught.value.request.headers  # the error carries no token
    assert server.refresh_calls == 1  # refreshed first, so that sending again works
    again = session.post(f"{server.url}/api", data=chunks())
    assert again.status_code == 200
    assert again.json()["length"] == 6
    assert server.refresh_calls == 1


def test_invalid_grant_ends_the_session_once(expired: Any, run_threads: Any, session_for: Any) -> None:
    expirations: list[SessionExpiredError] = []
    with AuthServer() as srv:
        storage = MemoryStorage(expired(srv.issue()))
        session, _ = session_for(srv, None, storage=storage, on_session_expired=expirations.append)
        srv.revoke_families()
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                session.get(f"{srv.url}/api")
            except SessionExpiredError as exc:
                errors.append(exc)

        run_threads(16, call)
        assert len(errors) == 16
        # Threads that shared the refresh get its invalid_grant; one that arrives after the
        # session ended (a loaded machine) finds no token: "no_token". Both mean "log in again".
        assert all(e.error in ("invalid_grant", "no_token") and not e.retryable for e in errors)
        assert any(e.error == "invalid_grant" for e in errors)
        assert len(expirations) == 1
        assert srv.refresh_calls == 1
        assert storage.load() is None  # tokens deleted: the user must log in again
        with pytest.raises(SessionExpiredError, match="no token is stored"):
            session.get(f"{srv.url}/api")
        assert len(expirations) == 1
        # The app logs in again and saves the new token: the next request picks it up.
        storage.save(Token.from_response(srv.issue()))
        assert session.get(f"{srv.url}/api").status_code == 200


def test_no_stored_token_is_a_clear_session_expired_error(server: AuthServer, session_for: Any) -> None:
    session, _ = session_for(server, None)
    with pytest.raises(SessionExpiredError, match="log in and save a token"):
        session.get(f"{server.url}/api")
    assert server.api_calls == 0


def test_hung_token_endpoint_does_not_block_threads_forever(expired: Any, run_threads: Any, session_for: Any) -> None:
    with AuthServer() as srv:
        old = expired(srv.issue())
        storage = MemoryStorage(old)
        session, _ = session_for(srv, None, storage=storage, refresh_timeout=0.5)
        srv.hold_refresh()
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                session.get(f"{srv.url}/api")
            except RefreshError as exc:
                errors.append(exc)

        started = time.monotonic()
        run_threads(8, call, timeout=20)
        srv.release_refresh()
        assert len(errors) == 8
        assert all(e.retryable for e in errors)
        assert time.monotonic() - started < 15
        assert storage.load() == old


def test_advisory_window_refresh_blocks_no_request(server: AuthServer, session_for: Any) -> None:
    clock = FakeClock()
    first = Token.from_response(server.issue(), now=clock())
    storage = MemoryStorage(first)
    session, _ = session_for(server, None, storage=storage, clock=clock, leeway=60)
    clock.advance(3600 - 30)  # 30 s left: inside the 60 s window, still valid
    server.hold_refresh()
    # The request that notices the window starts the refresh in the background and goes on.
    triggering = session.get(f"{server.url}/api")
    assert triggering.status_code == 200
    assert triggering.request.headers["Authorization"] == first.authorization
    deadline = time.monotonic() + 10
    while server.refresh_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.refresh_calls == 1  # the refresh is under way, held by the server
    others = [session.get(f"{server.url}/api").status_code for _ in range(5)]
    assert others == [200] * 5  # sent with the still-valid token while the refresh is held
    server.release_refresh()
    while storage.load() == first and time.monotonic() < deadline:
        time.sleep(0.01)
    later = session.get(f"{server.url}/api")
    assert later.request.headers["Authorization"] != first.authorization  # the new token, once published
    assert server.refresh_calls == 1


def test_failed_advisory_refresh_keeps_the_valid_token(
    server: AuthServer, session_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    token = Token.from_response(server.issue(), now=clock())
    storage = MemoryStorage(token)
    session, _ = session_for(server, None, storage=storage, clock=clock, refresh_timeout=0.5)
    clock.advance(3600 - 30)
    server.canned = [Canned(500, "oops")] * 20
    with caplog.at_level(logging.WARNING, logger="requests_tokenrefresh"):
        assert session.get(f"{server.url}/api").status_code == 200
        deadline = time.monotonic() + 10  # the refresh (and its retries) runs in the background
        while "using the current token until it expires" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "using the current token until it expires" in caplog.text
    calls = server.refresh_calls
    assert session.get(f"{server.url}/api").status_code == 200
    assert server.refresh_calls == calls  # no new attempt on every request
    assert storage.load() == token


def test_keyring_storage_holds_the_rotated_record(server: AuthServer, session_for: Any) -> None:
    import json

    import keyring

    storage = KeyringStorage("example-api", "alice")
    first = Token.from_response({**server.issue(), "first_name": "Alice"})
    storage.save(first)
    session, _ = session_for(server, None, storage=storage)
    server.revoke_access_tokens()
    assert session.get(f"{server.url}/api").status_code == 200
    record = json.loads(keyring.get_password("example-api", "alice"))
    assert record["refresh_token"] != first.refresh_token
    assert record["extra"] == {"first_name": "Alice"}  # user data survives the refresh
    assert record["version"] == 1
    assert record["expires_at"] > time.time()


def test_session_with_the_adapter_pickles_without_tokens(server: AuthServer, session_for: Any) -> None:
    storage = KeyringStorage("example-api", "bob")
    token = Token.from_response(server.issue())
    storage.save(token)
    session, _ = session_for(server, None, storage=storage)
    assert session.get(f"{server.url}/api").status_code == 200
    data = pickle.dumps(session)
    assert token.access_token.encode() not in data
    assert token.refresh_token.encode() not in data
    copy = pickle.loads(data)  # noqa: S301 - our own bytes
    try:
        assert copy.get(f"{server.url}/api").status_code == 200  # loads the token from the keyring
    finally:
        copy.close()


def test_close_closes_the_private_refresh_session(server: AuthServer) -> None:
    closed: list[bool] = []
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url=server.token_url)
    assert adapter._grant is not None
    original = adapter._grant.session.close
    adapter._grant.session.close = lambda: (closed.append(True), original())[1]  # type: ignore[method-assign]
    adapter.close()
    assert closed == [True]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of token_url"),
        ({"token_url": "https://a/t", "refresher": lambda t: t}, "exactly one of token_url"),
        ({"token_url": "http://auth.example.com/token"}, "must use https"),
        ({"token_url": "auth.example.com/token"}, "absolute http"),
        ({"token_url": "https://a/t", "client_auth": "jwt"}, "client_auth"),
        ({"token_url": "https://a/t", "leeway": -1}, "leeway"),
        ({"token_url": "https://a/t", "refresh_status_codes": (200,)}, "refresh_status_codes"),
        ({"token_url": "https://a/t", "on_refresh": "no"}, "on_refresh"),
    ],
)
def test_bad_configuration_is_a_clear_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenRefreshAdapter(MemoryStorage(), **options)


def test_storage_must_be_a_token_storage() -> None:
    with pytest.raises(ValueError, match="TokenStorage"):
        TokenRefreshAdapter("keyring", token_url="https://a/t")  # type: ignore[arg-type]


def test_other_arguments_go_to_httpadapter() -> None:
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url="https://a/t", pool_maxsize=7, max_retries=3)
    assert adapter._pool_maxsize == 7
    assert adapter.max_retries.total == 3


def test_on_refresh_is_called_with_the_new_token(server: AuthServer, expired: Any, session_for: Any) -> None:
    seen: list[Token] = []
    storage = MemoryStorage(expired(server.issue()))
    session, _ = session_for(server, None, storage=storage, on_refresh=seen.append)
    session.get(f"{server.url}/api")
    assert seen == [storage.load()]


def test_a_rotated_refresh_token_is_not_warned_about_with_its_predecessors_expiry(
    server: AuthServer, session_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    server.refresh_expires_in = 8000  # said at the login, for the first refresh token only
    first = Token.from_response(server.issue(), now=clock())
    server.refresh_expires_in = None
    warned: list[Token] = []
    session, _ = session_for(server, first, clock=clock, on_refresh_token_expiring=warned.append)
    with caplog.at_level(logging.WARNING, logger="requests_tokenrefresh"):
        assert session.get(f"{server.url}/api").status_code == 200  # 8000 s left: nothing to say
        clock.advance(9000)  # the access token has expired, and the first refresh token by its word
        assert session.get(f"{server.url}/api").status_code == 200

    assert server.refresh_calls == 1
    assert warned == []
    assert "log in again" not in caplog.text


def test_callback_errors_do_not_break_the_request(server: AuthServer, expired: Any, session_for: Any) -> None:
    def broken(token: Token) -> None:
        raise RuntimeError("callback bug")

    session, _ = session_for(server, expired(server.issue()), on_refresh=broken)
    assert session.get(f"{server.url}/api").status_code == 200


def _flutterflow_style(srv: AuthServer) -> Callable[[Token], dict[str, Any]]:
    """A non-OAuth backend: POST {"refresh": ...}, answers {"access": ..., "refresh": ...}."""

    def refresher(token: Token) -> dict[str, Any]:
        # Our loopback server speaks OAuth; translate to and from the custom shape as a user would.
        answer = requests.post(
            srv.token_url, data={"grant_type": "refresh_token", "refresh_token": token.refresh_token}, timeout=5
        )
        if answer.status_code == 400:
            raise SessionExpiredError("refresh token rejected")
        answer.raise_for_status()
        custom = {"access": answer.json()["access_token"], "refresh": answer.json()["refresh_token"]}
        return {"access_token": custom["access"], "refresh_token": custom["refresh"]}

    return refresher


def test_refresher_with_a_custom_json_shape_keeps_user_fields(server: AuthServer, expired: Any) -> None:
    start = expired(server.issue())
    start = Token(
        start.access_token,
        start.refresh_token,
        expires_at=start.expires_at,
        extra={"first_name": "Ada", "roles": ["admin"]},
    )
    storage = MemoryStorage(start)
    adapter = TokenRefreshAdapter(storage, refresher=_flutterflow_style(server))
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    assert session.get(f"{server.url}/api").status_code == 200
    stored = storage.load()
    assert stored is not None
    assert dict(stored.extra) == {"first_name": "Ada", "roles": ["admin"]}
    assert stored.refresh_token != start.refresh_token


def test_serverpod_style_refresher_returns_a_token_and_signals_expiry(server: AuthServer, expired: Any) -> None:
    expirations: list[SessionExpiredError] = []

    def refresher(token: Token) -> Token:
        answer = requests.post(
            server.token_url, data={"grant_type": "refresh_token", "refresh_token": token.refresh_token}, timeout=5
        )
        if answer.status_code in (400, 401):
            raise SessionExpiredError("Session expired. Please log in again.")
        body = answer.json()
        return Token(body["access_token"], refresh_token=body.get("refresh_token"), expires_at=time.time() + 3600)

    storage = MemoryStorage(expired(server.issue()))
    adapter = TokenRefreshAdapter(storage, refresher=refresher, on_session_expired=expirations.append)
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    assert session.get(f"{server.url}/api").status_code == 200
    server.revoke_families()
    server.revoke_access_tokens()
    with pytest.raises(SessionExpiredError, match="log in again"):
        session.get(f"{server.url}/api")
    assert len(expirations) == 1
    assert storage.load() is None


def test_a_refresher_bug_is_a_refresh_error_not_a_sign_out(server: AuthServer, expired: Any) -> None:
    def refresher(token: Token) -> dict[str, Any]:
        raise KeyError("access")

    storage = MemoryStorage(expired(server.issue()))
    adapter = TokenRefreshAdapter(storage, refresher=refresher)
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    with pytest.raises(RefreshError, match="refresher raised KeyError") as caught:
        session.get(f"{server.url}/api")
    assert not isinstance(caught.value, SessionExpiredError)
    assert storage.load() is not None


def test_refresh_forces_one_refresh_now(server: AuthServer, session_for: Any) -> None:
    storage = MemoryStorage(Token.from_response(server.issue()))
    _, adapter = session_for(server, None, storage=storage)
    first = storage.load()
    new = adapter.refresh()
    assert server.refresh_calls == 1
    assert first is not None
    assert new.refresh_token != first.refresh_token
    assert storage.load() == new
    assert adapter.refresh().access_token != new.access_token
    assert server.refresh_calls == 2


def test_refresh_with_nothing_stored_is_a_session_expired_error(server: AuthServer, session_for: Any) -> None:
    _, adapter = session_for(server, None)
    with pytest.raises(SessionExpiredError, match="no token is stored"):
        adapter.refresh()
    assert server.refresh_calls == 0


def test_client_credentials_fetches_the_first_token_and_each_new_one(run_threads: Any, session_for: Any) -> None:
    clock = FakeClock()
    with AuthServer(ttl=3600, client_id="svc", client_secret="s3cret") as srv:
        storage = MemoryStorage()  # nothing stored: the grant makes the first token
        session, _ = session_for(
            srv,
            None,
            storage=storage,
            grant_type="client_credentials",
            client_id="svc",
            client_secret="s3cret",
            clock=clock,
        )
        statuses: list[int] = []
        run_threads(32, lambda i: statuses.append(session.get(f"{srv.url}/api").status_code))
        assert srv.refresh_calls == 1  # one token for 32 threads
        clock.advance(3600)  # expired: one new token, fetched the same way
        run_threads(32, lambda i: statuses.append(session.get(f"{srv.url}/api").status_code))
        assert srv.refresh_calls == 2
        srv.revoke_access_tokens()  # a 401: one new token and a replay
        assert session.get(f"{srv.url}/api").status_code == 200
        assert statuses == [200] * 64
        assert srv.refresh_calls == 3
        assert {e["refresh_token"] for e in srv.token_log} == {None}  # never a refresh token
        stored = storage.load()
        assert stored is not None
        assert stored.refresh_token is None


def test_client_credentials_needs_a_token_url_and_a_client_id() -> None:
    with pytest.raises(ValueError, match="client_id"):
        TokenRefreshAdapter(
            MemoryStorage(), token_url="https://auth.example.com/token", grant_type="client_credentials"
        )
    with pytest.raises(ValueError, match="grant_type"):
        TokenRefreshAdapter(MemoryStorage(), token_url="https://auth.example.com/token", grant_type="password")


def test_client_credentials_refused_by_the_server_is_a_clear_error(session_for: Any) -> None:
    with AuthServer(ttl=3600, client_id="svc", client_secret="s3cret") as srv:
        session, _ = session_for(
            srv, None, grant_type="client_credentials", client_id="svc", client_secret="wrong-secret"
        )
        with pytest.raises(RefreshError) as caught:
            session.get(f"{srv.url}/api")
        assert caught.value.error == "invalid_client"
        assert not caught.value.retryable
        assert "wrong-secret" not in str(caught.value)
        assert not isinstance(caught.value, SessionExpiredError)  # nothing to log in again to


def test_the_transport_is_looked_up_at_each_send_so_a_later_patch_is_seen() -> None:
    # send() calls the next class in the MRO directly instead of super(): a mock of
    # HTTPAdapter.send installed after the adapter was built (responses, mock.patch) still
    # answers, and a transport mixed in after TokenRefreshAdapter still sends.
    import responses

    token = Token("at-1", "rt-1", expires_at=time.time() + 3600)
    adapter = TokenRefreshAdapter(MemoryStorage(token), token_url="https://auth.example.com/token")
    session = requests.Session()
    session.mount("https://api.example.com/", adapter)
    with responses.RequestsMock() as mocked:
        mocked.get("https://api.example.com/v1/me", json={"ok": True})
        response = session.get("https://api.example.com/v1/me")
        assert response.json() == {"ok": True}
        assert mocked.calls[0].request.headers["Authorization"] == "Bearer at-1"

    seen: list[str | None] = []

    class Recording(requests.adapters.HTTPAdapter):
        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            seen.append(request.headers.get("Authorization"))
            answer = requests.Response()
            answer.status_code, answer.request = 204, request
            return answer

    class Mixed(TokenRefreshAdapter, Recording):
        pass

    mixed = Mixed(MemoryStorage(token), token_url="https://auth.example.com/token")
    assert mixed.send(requests.Request("GET", "https://api.example.com/v1/me").prepare()).status_code == 204
    assert seen == ["Bearer at-1"]
