"""Edge cases of the adapter: proxies and loopback, logout and account switch mid-refresh, odd tokens and
clocks, endpoints that always say 401, answers that trickle, a fork or a script ending mid-refresh."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring
from urllib3.util.retry import Retry

from requests_tokenrefresh import (
    InsecureTransportError,
    KeyringStorage,
    MemoryStorage,
    RefreshError,
    SessionExpiredError,
    Token,
    TokenRefreshAdapter,
)
from requests_tokenrefresh._urls import is_loopback, is_secure
from requests_tokenrefresh.testing import AuthServer, Canned

from .jwt_support import make_jwt

# -- data loss -------------------------------------------------------------------------------

EXITING_CLIENT = """
import sys, requests
from requests_tokenrefresh import KeyringStorage, TokenRefreshAdapter
adapter = TokenRefreshAdapter(KeyringStorage("exit-api", "dan"), token_url=sys.argv[1], leeway=3000)
session = requests.Session()
session.mount(sys.argv[2] + "/", adapter)
print(session.get(sys.argv[2] + "/api").status_code, flush=True)  # starts a refresh in the background
if sys.argv[3] == "close":
    session.close()
# ...and the script ends here, while the refresh is still at the token endpoint
"""


@pytest.mark.parametrize("ending", ["close", "exit"])
def test_a_script_that_ends_during_a_background_refresh_keeps_the_rotated_token(
    ending: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    monkeypatch.setenv("XDG_DATA_HOME", env["XDG_DATA_HOME"])
    keyring.set_keyring(PlaintextKeyring())  # the autouse fixture restores the previous backend
    with AuthServer(ttl=60, rotation="reuse-detection") as srv:
        issued = Token.from_response(srv.issue())
        now = time.time()  # inside the refresh window: 20 s left of 60
        stale = Token(issued.access_token, issued.refresh_token, expires_at=now + 20, obtained_at=now - 40)
        storage = KeyringStorage("exit-api", "dan")
        storage.save(stale)
        srv.hold_refresh()  # the token endpoint answers only after the script has ended
        process = subprocess.Popen(
            [sys.executable, "-c", EXITING_CLIENT, srv.token_url, srv.url, ending],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while srv.refresh_calls == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        time.sleep(1.0)  # the script's main thread has printed and reached interpreter exit by now
        srv.release_refresh()
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
        assert out.strip() == "200"
        assert srv.refresh_calls == 1, err[-2000:]  # the script's log says why not
        saved = storage.load()
        assert saved is not None
        assert saved.refresh_token != issued.refresh_token  # the rotated one, not the spent one
        assert srv.token_log[0]["status"] == 200
        assert not srv.revoked


# -- security --------------------------------------------------------------------------------


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_plain_http_to_loopback_through_a_remote_proxy_is_refused(
    server: AuthServer, session_for: Any, no_proxy_env: pytest.MonkeyPatch
) -> None:
    session, _ = session_for(server, Token.from_response(server.issue()))
    with pytest.raises(InsecureTransportError, match="proxy"):
        session.get(f"{server.url}/api", proxies={"http": "http://proxy.invalid:3128"})
    no_proxy_env.setenv("HTTP_PROXY", "http://proxy.invalid:3128")  # requests merges it in (trust_env)
    with pytest.raises(InsecureTransportError, match="proxy"):
        session.get(f"{server.url}/api")
    assert server.api_calls == 0
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")  # excluded: the bytes stay on this machine
    assert session.get(f"{server.url}/api").status_code == 200


def test_the_refresh_request_is_not_sent_in_clear_through_a_remote_proxy(
    server: AuthServer, session_for: Any, expired: Any, no_proxy_env: pytest.MonkeyPatch
) -> None:
    _session, adapter = session_for(server, expired(server.issue()))
    no_proxy_env.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    with pytest.raises(InsecureTransportError, match="refresh token over plain http") as caught:
        adapter.refresh()
    assert "proxy.invalid" in str(caught.value)
    assert server.refresh_calls == 0


def test_a_loopback_proxy_keeps_plain_http_on_this_machine() -> None:
    assert is_secure("http://127.0.0.1:9/api", {"http": "http://127.0.0.1:3128"})
    assert not is_secure("http://127.0.0.1:9/api", {"http": "http://proxy.invalid:3128"})
    assert not is_secure("http://127.0.0.1:9/api", {"all": "socks5://10.0.0.1:1080"})


@pytest.mark.parametrize("host", ["x.localhost", "localhost.", "ip6-localhost.invalid", "api.test"])
def test_names_count_as_loopback_only_if_they_resolve_to_loopback(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="https"):
        TokenRefreshAdapter(MemoryStorage(), token_url=f"http://{host}/token")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "localhost"])
def test_literal_loopback_and_localhost_are_loopback(host: str) -> None:
    assert is_loopback(host)


def test_logout_takes_effect_at_once(server: AuthServer, session_for: Any) -> None:
    storage = MemoryStorage(Token.from_response(server.issue()))
    session, adapter = session_for(server, None, storage=storage)
    assert session.get(f"{server.url}/api").status_code == 200
    adapter.logout()
    assert storage.load() is None
    with pytest.raises(SessionExpiredError) as caught:
        session.get(f"{server.url}/api")
    assert caught.value.error == "no_token"
    assert server.api_calls == 1  # the old token was never sent again


def test_save_token_switches_the_account_at_once(server: AuthServer, session_for: Any) -> None:
    alice, bob = Token.from_response(server.issue()), Token.from_response(server.issue())
    storage = MemoryStorage(alice)
    session, adapter = session_for(server, None, storage=storage)
    assert session.get(f"{server.url}/api").status_code == 200
    adapter.save_token(bob)
    assert storage.load() == bob
    assert session.get(f"{server.url}/api").status_code == 200
    assert [e["token"] for e in server.api_log] == [alice.access_token, bob.access_token]


def test_a_refresh_under_way_is_not_saved_over_a_logout(server: AuthServer, session_for: Any, expired: Any) -> None:
    storage = MemoryStorage(expired(server.issue()))
    session, adapter = session_for(server, None, storage=storage)
    server.hold_refresh()
    outcome: list[Any] = []

    def request() -> None:
        try:
            outcome.append(session.get(f"{server.url}/api").status_code)
        except Exception as exc:
            outcome.append(exc)

    leader = threading.Thread(target=request)
    leader.start()
    deadline = time.monotonic() + 10
    while server.refresh_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    adapter.logout()  # while the refresh is at the token endpoint
    server.release_refresh()
    leader.join(30)
    assert not leader.is_alive()
    assert storage.load() is None  # the refreshed token was dropped, not saved over the logout
    assert isinstance(outcome[0], SessionExpiredError)
    assert server.api_calls == 0


@pytest.mark.parametrize("bad", ["at-123\n", " at-123", "at 123", "at-\r\n123", "at-é"])
def test_a_token_that_cannot_go_in_a_header_is_refused_without_quoting_it(bad: str) -> None:
    with pytest.raises(ValueError, match="HTTP header") as caught:
        Token(bad)
    assert "123" not in str(caught.value)
    with pytest.raises(ValueError, match="HTTP header"):
        Token.from_response({"access_token": bad})


def test_a_refresh_token_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="white space") as caught:
        Token("at", "rt-secret\n")
    assert "secret" not in str(caught.value)
    assert Token("at", "a refresh token with spaces").refresh_token  # VSCHAR allows spaces


# -- wrong results ----------------------------------------------------------------------------


def test_a_clock_six_minutes_ahead_costs_no_refresh_loop(session_for: Any) -> None:
    def ahead() -> float:
        return time.time() + 360

    with AuthServer(ttl=300, rotation="reuse-detection", jwt=True) as srv:
        response = srv.issue()
        del response["expires_in"]  # expiry only in the JWT's exp (and iat)
        token = Token.from_response(response, now=ahead())
        session, _ = session_for(srv, token, clock=ahead)
        for _ in range(20):
            assert session.get(f"{srv.url}/api").status_code == 200
        assert srv.refresh_calls == 0
        assert token.expires_at is not None
        assert token.expires_at == pytest.approx(ahead() + 300, abs=5)


def test_a_jwt_already_past_its_exp_by_our_clock_has_an_unknown_expiry() -> None:
    exp = int(time.time()) + 300
    access = make_jwt(exp=exp)  # no iat: nothing to measure from
    token = Token.from_response({"access_token": access}, now=exp + 60)
    assert token.expires_at is None  # relies on 401 instead of refreshing at once, forever


def test_an_endpoint_that_always_says_401_does_not_rotate_on_every_call(session_for: Any, expired: Any) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        srv.denied_paths.add("/api/needs-2fa")
        session, _ = session_for(srv, expired(srv.issue()))
        statuses = []
        for _ in range(10):
            statuses.append(session.get(f"{srv.url}/api/needs-2fa").status_code)
            statuses.append(session.get(f"{srv.url}/api/healthy").status_code)
        assert statuses == [401, 200] * 10
        # The expiry's refresh, and one for the first 401: its new token was rejected too, so
        # the endpoint, not the token, is refusing; no more refreshes for it.
        assert srv.refresh_calls == 2
        assert not srv.revoked


def test_an_endpoint_that_always_says_401_with_nothing_succeeding_rotates_once_per_call(
    session_for: Any, expired: Any
) -> None:
    """What docs/how-it-works.rst says: with no success to prove the token good, a 401 is believed."""
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        srv.denied_paths.add("/api/needs-2fa")
        session, _ = session_for(srv, expired(srv.issue()))
        statuses = [session.get(f"{srv.url}/api/needs-2fa").status_code for _ in range(10)]
        assert statuses == [401] * 10
        assert srv.refresh_calls == 1 + 10  # the expiry's, then one per call
        assert not srv.revoked


def test_a_retry_forcelist_with_401_does_not_hide_it_from_the_adapter(server: AuthServer, session_for: Any) -> None:
    retry = Retry(total=3, backoff_factor=0, status_forcelist=[401, 429, 500, 502, 503, 504])
    session, adapter = session_for(server, Token.from_response(server.issue()), max_retries=retry)
    assert adapter.max_retries.status_forcelist == [429, 500, 502, 503, 504]
    server.revoke_access_tokens()
    response = session.get(f"{server.url}/api")
    assert response.status_code == 200
    assert server.refresh_calls == 1


# -- hangs ------------------------------------------------------------------------------------


def test_refresh_timeout_bounds_a_token_endpoint_that_trickles_its_answer(
    server: AuthServer, session_for: Any, expired: Any
) -> None:
    body = json.dumps({"access_token": "at-" + "x" * 60, "expires_in": 3600, "token_type": "Bearer"})
    server.canned.extend([Canned(200, body, trickle=0.05)] * 4)  # ~4 s an answer
    _session, adapter = session_for(server, expired(server.issue()), refresh_timeout=1)
    started = time.monotonic()
    with pytest.raises(RefreshError) as caught:
        adapter.refresh()
    assert time.monotonic() - started < 2.5
    assert caught.value.retryable
    assert caught.value.error == "timeout"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_during_a_refresh_starts_with_a_clean_coordinator(session_for: Any, expired: Any) -> None:
    with AuthServer(ttl=3600, rotation="none") as srv:
        session, _ = session_for(srv, expired(srv.issue()), refresh_timeout=5)
        srv.hold_refresh()
        leader = threading.Thread(target=lambda: session.get(f"{srv.url}/api"))
        leader.start()
        deadline = time.monotonic() + 10
        while srv.refresh_calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
            pid = os.fork()
        if pid == 0:  # the child: its own refresh, not a wait for the parent's thread
            code = 1
            try:
                code = 0 if session.get(f"{srv.url}/api", timeout=10).status_code == 200 else 2
            finally:
                os._exit(code)
        threading.Timer(0.5, srv.release_refresh).start()
        deadline = time.monotonic() + 20
        exit_code = None
        while exit_code is None and time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_code = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
        if exit_code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        leader.join(20)
        assert exit_code is not None, "the child still waited after 20 s"
        assert exit_code == 0, "the child did not get a token"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"refresh_timeout": float("inf")}, "refresh_timeout"),
        ({"refresh_timeout": float("nan")}, "refresh_timeout"),
        ({"leeway": float("nan")}, "leeway"),
        ({"client_id": 12345}, "client_id"),
        ({"client_secret": b"bytes"}, "client_secret"),
        ({"clock": 5}, "clock"),
        ({"scope": ["a", 1]}, "scope"),
        ({"refresh_status_codes": 401}, "refresh_status_codes"),
        ({"refresh_status_codes": [True]}, "refresh_status_codes"),
        ({"allow_insecure_http": "yes"}, "allow_insecure_http"),
    ],
)
def test_every_argument_is_checked_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenRefreshAdapter(MemoryStorage(), token_url="https://auth.example.com/token", **options)


def test_a_list_of_scopes_is_joined() -> None:
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url="https://auth.example.com/token", scope=["read", "write"])
    assert adapter._settings.scope == "read write"


@pytest.mark.parametrize("value", [1.7e12, -5, 1e300])
def test_an_expires_at_past_year_9999_is_refused_or_unknown(value: float) -> None:
    with pytest.raises(ValueError, match="year 9999"):
        Token("at", expires_at=value)
    assert Token.from_response({"access_token": "at", "expires_at": value}).expires_at is None
    record = {**Token("at").to_record(), "expires_at": value}
    assert Token.from_record(record).expires_at is None  # an old record stays readable


# -- also seen ---------------------------------------------------------------------------------


def test_the_rejected_request_in_history_holds_no_token(server: AuthServer, session_for: Any) -> None:
    old = Token.from_response(server.issue())
    session, _ = session_for(server, old)
    server.revoke_access_tokens()
    response = session.get(f"{server.url}/api")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert "Authorization" not in response.history[0].request.headers


def test_user_info_in_token_url_is_kept_out_of_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with AuthServer(ttl=3600, client_id="app", client_secret="pw") as srv:
        url = srv.token_url.replace("http://", "http://app:hunter2@")
        adapter = TokenRefreshAdapter(MemoryStorage(Token("at-userinfo-test", "rt-userinfo-test")), token_url=url)
        assert "hunter2" not in repr(adapter)
        with caplog.at_level(logging.DEBUG, logger="requests_tokenrefresh"), pytest.raises(RefreshError):
            adapter.refresh()
        adapter.close()
    assert "hunter2" not in caplog.text


def test_a_new_token_revoked_right_after_its_issue_is_refreshed_not_doubted(session_for: Any, expired: Any) -> None:
    # Found by the schedule test over hosts: a replay rejected because the server revoked the
    # brand-new token must not make every later 401 for it go unanswered.
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        session, _ = session_for(srv, expired(srv.issue()))
        srv.denied_paths.add("/api/once")  # the replay of the first request is refused ...
        assert session.get(f"{srv.url}/api/once").status_code == 401
        assert srv.refresh_calls == 2  # the expiry's refresh, and one for the 401: its token is doubted
        srv.denied_paths.clear()
        srv.revoke_access_tokens()  # ... and the new token is revoked before it ever worked
        assert session.get(f"{srv.url}/api/other").status_code == 200  # refreshed, replayed
        assert srv.refresh_calls == 3
