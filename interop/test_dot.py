"""Interop: the adapter against django-oauth-toolkit (DOT), a real OAuth 2.0 server we did not write.

The server (``interop/dotserver``) runs in a subprocess on 127.0.0.1 under Django's threaded
``runserver``, with a 3 s access-token lifetime (TTL), refresh-token rotation and
REFRESH_TOKEN_REUSE_PROTECTION on. DOT deletes the previous access token when it rotates, so a
request still carrying it gets a 401. The server counts every refresh_token grant it receives
(``/stats``); the tests compare those counts with what the adapter did.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from interop_support import FormBrowser, Forms, stop

pytest.importorskip("django", reason="Django is not installed (pip install -r interop/requirements.txt)")
pytest.importorskip(
    "oauth2_provider", reason="django-oauth-toolkit is not installed (pip install -r interop/requirements.txt)"
)

from requests_tokenrefresh import MemoryStorage, SessionExpiredError, Token, TokenRefreshAdapter
from requests_tokenrefresh.login import LoginError, login_browser, login_device, logout

HERE = Path(__file__).resolve().parent
TTL = 3  # ACCESS_TOKEN_EXPIRE_SECONDS of the server
# Pause of each thread between two requests. Django's runserver answers ~150 requests/s here; 32
# threads with no pause queue requests for seconds, longer than a token lives: a replay is then
# sent with a token that a later rotation revokes while the replay waits (a 401 on the replay).
THINK = 0.25
START_TIMEOUT = 30.0


@dataclass
class Server:
    url: str
    client_id: str
    client_secret: str
    username: str
    password: str
    public_client_id: str = ""
    service_client_id: str = ""
    service_client_secret: str = ""
    device_client_id: str = ""

    @property
    def token_url(self) -> str:
        return self.url + "/o/token/"

    @property
    def api(self) -> str:
        return self.url + "/api/me"

    def stats(self, reset: bool = False) -> dict[str, int]:
        r = requests.get(self.url + "/stats", params={"reset": "1"} if reset else None, timeout=5)
        r.raise_for_status()
        return r.json()

    def login(self) -> tuple[Token, dict[str, Any]]:
        """A first token set, non-interactively: the password grant (RFC 6749 §4.3)."""
        sent_at = time.time()
        r = requests.post(
            self.token_url,
            data={"grant_type": "password", "username": self.username, "password": self.password},
            auth=(self.client_id, self.client_secret),
            timeout=10,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return Token.from_response(body, now=sent_at), body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Migrate a fresh sqlite DB, create a user and a confidential client, run DOT on loopback."""
    tmp = tmp_path_factory.mktemp("dot")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "dotserver.settings",
        "DOT_INTEROP_DB": str(tmp / "db.sqlite3"),
        "DOT_INTEROP_TTL": str(TTL),
        "PYTHONUNBUFFERED": "1",
    }
    boot = subprocess.run(
        [sys.executable, "-m", "dotserver.bootstrap"], env=env, cwd=tmp, capture_output=True, text=True, timeout=120
    )
    assert boot.returncode == 0, boot.stderr
    client = json.loads(boot.stdout)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env["DOT_INTEROP_URL"] = url  # the origin of the device flow's verification URIs (settings.py)
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the DOT server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if requests.get(url + "/stats", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the DOT server did not answer within {START_TIMEOUT}s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Server(url=url, **client)
    finally:
        stop(proc)


def _session(dot: Server, token: Token | None, **options: Any) -> tuple[requests.Session, TokenRefreshAdapter]:
    options.setdefault("pool_maxsize", 64)
    adapter = TokenRefreshAdapter(
        MemoryStorage(token),
        token_url=dot.token_url,
        client_id=dot.client_id,
        client_secret=dot.client_secret,
        **options,
    )
    session = requests.Session()
    session.mount(dot.url + "/api/", adapter)
    return session, adapter


def _join(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{alive} threads still running after {timeout}s"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("leeway", "client_auth", "expected"),
    [
        # Refresh only at expiry: generations at ~3, 6, 9 s of a 10.5 s run. DOT's dev server
        # has a p99 of 2-3 s here: a replay that would carry a token within its last tenth of a
        # lifetime refreshes it first (never a replay with a dying token), which moves the later
        # expiries earlier: at most one more generation in the run, never two refreshes of one.
        (0, "basic", {3, 4}),
        # Default leeway, capped at half the lifetime: a proactive refresh every ~1.5 s.
        (60, "post", {5, 6, 7}),
    ],
    ids=["at-expiry", "proactive"],
)
def test_many_threads_across_expiries(dot: Server, leeway: float, client_auth: str, expected: set[int]) -> None:
    """32 threads for 3.5 lifetimes: one refresh call per expiry, no reuse; only replay-401 failures (see below)."""
    token, _ = dot.login()
    dot.stats(reset=True)
    refreshed: list[Token] = []
    session, adapter = _session(dot, token, leeway=leeway, client_auth=client_auth, on_refresh=refreshed.append)
    assert token.obtained_at is not None
    stop_at = token.obtained_at + 3.5 * TTL
    results: list[int | str] = []
    details: list[Any] = []
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def worker() -> None:
        barrier.wait(timeout=10)
        while time.time() < stop_at:
            try:
                t0 = time.monotonic()
                # Django's dev server answers in 2-3 s at p99 here, and took over 10 s once when CI ran
                # two tox environments beside it: a slow answer is no failure of the adapter's.
                r = session.get(dot.api, timeout=30)
                with lock:
                    latencies.append(time.monotonic() - t0)
                status: int | str = r.status_code
                if status != 200:
                    gens = {t.authorization: i + 1 for i, t in enumerate(refreshed)}
                    gens[token.authorization] = 0
                    sent = r.request.headers["Authorization"]
                    hist = [h.status_code for h in r.history]  # history holds no token (the adapter strips it)
                    details.append((round(time.time() - token.obtained_at, 3), gens.get(sent), hist, len(refreshed)))
            except Exception as exc:  # counted as a failure below
                status = repr(exc)
            with lock:
                results.append(status)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(32)]
    for t in threads:
        t.start()
    _join(threads, 60)
    session.close()

    stats = dot.stats()
    failures = [r for r in results if r != 200]
    print(f"\n[{client_auth}, leeway={leeway}] requests={len(results)} stats={stats} on_refresh={len(refreshed)}")
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[len(latencies) * 99 // 100]
    print(f"latency p50={p50:.3f}s p99={p99:.3f}s max={latencies[-1]:.3f}s")
    # Every failure seen is the documented "a 401 on the replay is returned, never looped": the
    # replay carried generation k+1 and a later rotation revoked it while the replay waited in
    # the server's queue (tail latency > rotation interval). Anything else is a bug.
    # (The rotation may still be on its way back to the client when the replay's 401 arrives.)
    odd = [d for d in details if not (d[2] and d[2][0] == 401 and d[1] is not None and d[1] < len(refreshed))]
    assert len(failures) == len(details), f"{len(failures)} failed requests: {details}"
    assert not odd, f"{len(failures)} failed requests: {details}"
    print(f"401 on replay (token rotated again while the replay was in flight): {len(details)}")
    assert stats["refresh_failed"] == 0, stats  # no rejected (reused) refresh token, the family is alive
    assert stats["refresh_calls"] == len(refreshed)  # one token-endpoint call per adapter refresh
    assert stats["refresh_calls"] in expected, stats  # ... and one per expiry
    assert stats["distinct_tokens"] == stats["refresh_calls"] + 1  # every generation was used
    # The 401s were for tokens DOT revoked while the request was in flight; each was replayed.
    assert stats["api_401"] == stats["api_calls"] - len(results) + len(details), stats
    # The last rotated refresh token is still the live one.
    assert adapter.storage.load() == refreshed[-1]


@pytest.mark.timeout(60)
def test_proactive_refresh_with_old_token_in_flight(dot: Server) -> None:
    """Requests sent with the old token are held until the refresh revokes it: 401, replayed, one refresh."""
    token, _ = dot.login()
    dot.stats(reset=True)
    refreshed: list[Token] = []
    session, _adapter = _session(dot, token, leeway=60, on_refresh=refreshed.append)  # window: last TTL/2 s
    assert token.obtained_at is not None
    n = 16
    responses: list[requests.Response] = []
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            # Held on the server until it has answered one refresh call; the token is checked after.
            responses.append(session.get(dot.api, params={"until_refreshes": "1"}, timeout=20))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while dot.stats()["waiting"] < n:
        assert time.monotonic() < deadline, "the slow requests did not reach the server"
        time.sleep(0.02)
    # All n are in flight with the old token, which the client still considers fresh.
    assert time.time() < token.obtained_at + TTL / 2, "too slow to start the in-flight requests in time"
    time.sleep(max(0.0, token.obtained_at + TTL / 2 + 0.1 - time.time()))  # now in the refresh window
    first = session.get(dot.api, timeout=10)  # this request's thread refreshes proactively
    _join(threads, 30)
    session.close()

    stats = dot.stats()
    print(f"\nstats={stats} on_refresh={len(refreshed)} replayed={sum(bool(r.history) for r in responses)}")
    assert not errors, errors
    assert first.status_code == 200
    assert [r.status_code for r in responses] == [200] * n
    # DOT revoked the old access token on refresh: each in-flight request got a 401 and was
    # replayed with the new token ...
    assert all([h.status_code for h in r.history] == [401] for r in responses)
    # (``first`` starts the refresh in the background and is sent with the old token, still
    # valid: when DOT has rotated before it arrives, as on a loaded machine, it is a 401 too,
    # replayed. 17 and 18 401s were seen at load 9-12 when this counted the 16 only.)
    assert all(h.status_code == 401 for h in first.history)
    assert stats["api_401"] == n + len(first.history), (stats, [h.status_code for h in first.history])
    assert {r.request.headers["Authorization"] for r in responses} == {refreshed[0].authorization}
    # ... without refreshing again.
    assert stats["refresh_calls"] == 1 == len(refreshed), stats
    assert stats["refresh_failed"] == 0, stats


def _revoke_refresh_token(dot: Server, refresh_token: str) -> None:
    r = requests.post(
        dot.url + "/o/revoke_token/",
        data={"token": refresh_token, "token_type_hint": "refresh_token"},
        auth=(dot.client_id, dot.client_secret),
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _expect_session_expired(dot: Server, session: requests.Session, n: int) -> list[BaseException | int]:
    outcomes: list[BaseException | int] = []
    barrier = threading.Barrier(n)

    def call() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(session.get(dot.api, timeout=10).status_code)
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    _join(threads, 40)
    return outcomes


@pytest.mark.timeout(60)
def test_revoked_refresh_token_ends_the_session_once(dot: Server) -> None:
    """RFC 7009 revocation → 401 → one refresh → invalid_grant → SessionExpiredError, callback once."""
    token, _ = dot.login()
    expired_calls: list[SessionExpiredError] = []
    session, adapter = _session(dot, token, on_session_expired=expired_calls.append)
    assert session.get(dot.api, timeout=10).status_code == 200
    assert token.refresh_token is not None
    _revoke_refresh_token(dot, token.refresh_token)  # DOT deletes the access token with it
    dot.stats(reset=True)

    outcomes = _expect_session_expired(dot, session, 8)
    stats = dot.stats()
    print(f"\nstats={stats} outcomes={[type(o).__name__ for o in outcomes]}")
    assert len(outcomes) == 8
    assert all(isinstance(o, SessionExpiredError) for o in outcomes), outcomes
    # invalid_grant for the threads that waited on the refresh; no_token for a 401 that came back
    # after the session had ended and the store was cleared.
    errors = [o.error for o in outcomes if isinstance(o, SessionExpiredError)]
    assert "invalid_grant" in errors, errors
    assert set(errors) <= {"invalid_grant", "no_token"}, errors
    assert len(expired_calls) == 1
    assert adapter.storage.load() is None
    assert stats["refresh_calls"] == 1, stats  # one refresh attempt for all 8 threads
    with pytest.raises(SessionExpiredError):  # nothing stored any more
        session.get(dot.api, timeout=10)
    assert len(expired_calls) == 1
    session.close()


@pytest.mark.timeout(60)
def test_stolen_refresh_token_reuse_ends_the_session(dot: Server) -> None:
    """Someone else rotates our refresh token first: our refresh is a reuse → invalid_grant, family revoked."""
    token, _ = dot.login()
    expired_calls: list[SessionExpiredError] = []
    session, adapter = _session(dot, token, on_session_expired=expired_calls.append)
    assert token.refresh_token is not None
    stolen = requests.post(
        dot.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token.refresh_token},
        auth=(dot.client_id, dot.client_secret),
        timeout=10,
    )
    assert stolen.status_code == 200, stolen.text
    dot.stats(reset=True)

    outcomes = _expect_session_expired(dot, session, 8)  # our access token was revoked by that rotation
    stats = dot.stats()
    assert all(isinstance(o, SessionExpiredError) for o in outcomes), outcomes
    assert len(expired_calls) == 1
    assert adapter.storage.load() is None
    assert stats["refresh_calls"] == 1, stats
    assert stats["refresh_failed"] == 1, stats
    # Reuse protection revoked the whole family: the thief's tokens are dead too.
    thief = stolen.json()
    assert (
        requests.get(dot.api, headers={"Authorization": f"Bearer {thief['access_token']}"}, timeout=10).status_code
        == 401
    )
    again = requests.post(
        dot.token_url,
        data={"grant_type": "refresh_token", "refresh_token": thief["refresh_token"]},
        auth=(dot.client_id, dot.client_secret),
        timeout=10,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    session.close()


# -- logins through DOT's own pages -------------------------------------------------------------------


class DotBrowser(FormBrowser):
    """:class:`FormBrowser` on DOT's pages.

    On a login form it types the user's name and password; on DOT's consent form it presses
    "Authorize" (or "Cancel" with ``allow=False``). It stops at the login's loopback listener.
    """

    def __init__(self, dot: Server, allow: bool = True) -> None:
        super().__init__(dot.url)
        self.dot = dot
        self.allow = allow

    def _submit(self, s: requests.Session, page: requests.Response) -> requests.Response:
        parser = Forms()
        parser.feed(page.text)
        assert parser.forms, f"no form on {page.url}: {page.text[:300]}"
        form = parser.forms[0]
        data: dict[str, str] = {}
        for field in form["inputs"]:
            name, kind = field.get("name"), field.get("type", "text")
            if not name or kind == "submit":
                continue
            data[name] = field.get("value", "")
        if "username" in data or "password" in data:
            data.update(username=self.dot.username, password=self.dot.password)
        elif self.allow:
            data["allow"] = "Authorize"
        action = urljoin(page.url, form["action"] or page.url)
        return s.post(action, data=data, allow_redirects=False, timeout=10, headers={"Referer": page.url})


@pytest.mark.timeout(60)
def test_browser_login_with_pkce_through_dot_pages_then_logout(
    dot: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Discovery (RFC 8414), DOT's login and consent pages, PKCE S256, the stored token used and refreshed, revoked."""
    caplog.set_level(logging.DEBUG, logger="requests_tokenrefresh")
    browser = DotBrowser(dot)
    monkeypatch.setattr(webbrowser, "open", browser.open)
    storage = MemoryStorage()
    out = io.StringIO()
    token = login_browser(
        client_id=dot.public_client_id, issuer=dot.url, scope="read", storage=storage, stream=out, timeout=40
    )
    browser.join()
    assert browser.trail[1] == dot.url + "/accounts/login/"  # DOT sent the browser to log in first
    assert browser.final is not None
    assert browser.final.status_code == 200
    assert "The login worked" in browser.final.text
    assert storage.load() == token
    assert token.refresh_token
    assert token.scope == "read"

    # The adapter uses the stored token, and refreshes it with the public client id.
    adapter = TokenRefreshAdapter(storage, token_url=dot.token_url, client_id=dot.public_client_id)
    with requests.Session() as session:
        session.mount(dot.url + "/api/", adapter)
        assert session.get(dot.api, timeout=10).json() == {"user": dot.username}
        time.sleep(TTL + 0.5)  # expired: the next request refreshes first
        assert session.get(dot.api, timeout=10).status_code == 200
    current = storage.load()
    assert current is not None
    assert current.refresh_token != token.refresh_token

    # Logout revokes at DOT's revocation endpoint (from its metadata) and deletes the record.
    assert logout(storage, issuer=dot.url, client_id=dot.public_client_id) is True
    assert storage.load() is None
    assert requests.get(dot.api, headers={"Authorization": current.authorization}, timeout=10).status_code == 401
    again = requests.post(
        dot.token_url,
        data={"grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": dot.public_client_id},
        timeout=10,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    for secret in (token.access_token, token.refresh_token, current.access_token, current.refresh_token):
        assert secret
        assert secret not in caplog.text
        assert secret not in out.getvalue()


@pytest.mark.timeout(60)
def test_browser_login_cancelled_on_dot_consent_page(dot: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    browser = DotBrowser(dot, allow=False)
    monkeypatch.setattr(webbrowser, "open", browser.open)
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="access_denied") as info:
        login_browser(client_id=dot.public_client_id, issuer=dot.url, storage=storage, stream=io.StringIO(), timeout=40)
    browser.join()
    assert info.value.error == "access_denied"
    assert storage.load() is None
    assert browser.final is not None
    assert "The login failed (access_denied)" in browser.final.text


def test_client_credentials_service_account_through_dot(dot: Server) -> None:
    """A service account: the adapter fetches its first token itself, and a new one after a 401."""
    storage = MemoryStorage()  # nothing stored: client credentials need no login
    adapter = TokenRefreshAdapter(
        storage,
        token_url=dot.token_url,
        grant_type="client_credentials",
        client_id=dot.service_client_id,
        client_secret=dot.service_client_secret,
    )
    session = requests.Session()
    session.mount(dot.url + "/api/", adapter)
    with session:
        assert session.get(dot.api, timeout=10).status_code == 200
        first = storage.load()
        assert first is not None
        assert first.refresh_token is None  # RFC 6749 §4.4.3: none for this grant
        revoked = requests.post(
            dot.url + "/o/revoke_token/",
            data={"token": first.access_token},
            auth=(dot.service_client_id, dot.service_client_secret),
            timeout=10,
        )
        assert revoked.status_code == 200
        response = session.get(dot.api, timeout=10)  # 401, a new token, the replay
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        second = storage.load()
        assert second is not None
        assert second.access_token != first.access_token


# -- the device login (RFC 8628) through DOT's device pages --------------------------------------------


class _Screen(io.StringIO):
    """The device's screen (``login_device``'s stream): the test waits on it for what the login shows."""

    def __init__(self) -> None:
        super().__init__()
        self._written = threading.Condition()

    def write(self, text: str) -> int:
        with self._written:
            n = super().write(text)
            self._written.notify_all()
            return n

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._written:
            while (match := re.search(pattern, self.getvalue())) is None:
                left = deadline - time.monotonic()
                assert left > 0, f"{pattern!r} not shown within {timeout}s: {self.getvalue()!r}"
                self._written.wait(left)
        return match


class _FormsAndButtons(Forms):
    """:class:`Forms`, plus each form's buttons (DOT's device confirmation page has Accept and Deny buttons)."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        if tag == "button" and self.forms:
            self.forms[-1].setdefault("buttons", []).append({k: v or "" for k, v in attrs})


class DeviceUser:
    """The user, on another device: a browser made of requests that answers a device login on DOT's pages.

    It opens the address the device shows, logs in with its password on the way (DOT's device
    pages need a logged-in user), submits the code the device shows, and presses Accept or Deny.
    """

    def __init__(self, dot: Server) -> None:
        self.dot = dot
        self.session = requests.Session()
        self.session.trust_env = False
        self.trail: list[str] = []  # the paths of the pages seen, in order

    def close(self) -> None:
        self.session.close()

    def _get(self, url: str) -> requests.Response:
        """GET ``url``, following redirects one by one, on the DOT server only."""
        response = self.session.get(url, allow_redirects=False, timeout=10)
        for _ in range(5):
            self.trail.append(response.url.removeprefix(self.dot.url).split("?")[0])
            if not response.is_redirect:
                assert response.status_code == 200, response.text[:500]
                return response
            target = urljoin(response.url, response.headers["Location"])
            assert target.startswith(self.dot.url + "/"), target
            response = self.session.get(target, allow_redirects=False, timeout=10)
        raise AssertionError(f"too many redirects: {self.trail}")

    def _post(self, page: requests.Response, fields: dict[str, str]) -> requests.Response:
        """Submit the page's form: its hidden inputs (CSRF token, next), with ``fields`` filled in."""
        parser = _FormsAndButtons()
        parser.feed(page.text)
        assert len(parser.forms) == 1, f"not one form on {page.url}: {page.text[:300]}"
        form = parser.forms[0]
        data = {f["name"]: f.get("value", "") for f in form["inputs"] if f.get("name") and f.get("type") == "hidden"}
        names = {f.get("name") for f in form["inputs"]} | {b.get("name") for b in form.get("buttons", [])}
        assert set(fields) <= names, f"the form on {page.url} has no {set(fields) - names}"
        data.update(fields)
        action = urljoin(page.url, form["action"] or page.url)
        headers = {"Referer": page.url}
        response = self.session.post(action, data=data, allow_redirects=False, timeout=10, headers=headers)
        assert response.is_redirect, f"{page.url}: HTTP {response.status_code}: {response.text[:500]}"
        return self._get(urljoin(response.url, response.headers["Location"]))

    def enter_code(self, address: str, user_code: str) -> requests.Response:
        """Open ``address``, log in, submit ``user_code``; return DOT's confirmation page."""
        page = self._get(address)
        if "password" in page.text:  # sent to the login form first
            page = self._post(page, {"username": self.dot.username, "password": self.dot.password})
        parser = Forms()
        parser.feed(page.text)
        shown = [f.get("value") for form in parser.forms for f in form["inputs"] if f.get("name") == "user_code"]
        assert shown == [user_code], f"the code form is not filled in with the device's code: {shown}"
        return self._post(page, {"user_code": user_code})

    def decide(self, confirm_page: requests.Response, action: str) -> requests.Response:
        """Press ``accept`` or ``deny`` on the confirmation page; return DOT's status page."""
        return self._post(confirm_page, {"action": action})


def _start_device_login(dot: Server, storage: MemoryStorage, screen: _Screen) -> tuple[threading.Thread, list[Any]]:
    """Run login_device in a thread: DOT's device authorization endpoint given, the token endpoint discovered."""
    outcome: list[Any] = []  # the Token, or the exception

    def run() -> None:
        try:
            # DOT's RFC 8414 metadata names no device_authorization_endpoint: given here.
            outcome.append(
                login_device(
                    client_id=dot.device_client_id,
                    issuer=dot.url,
                    device_authorization_url=dot.url + "/o/device-authorization/",
                    scope="read",
                    storage=storage,
                    stream=screen,
                    timeout=40,
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _outcome(thread: threading.Thread, outcome: list[Any], after: str) -> Any:
    """What login_device returned or raised, once its thread has ended (bounded) after the user's ``after``."""
    thread.join(timeout=20)
    assert not thread.is_alive(), f"login_device did not return after the {after}"
    assert len(outcome) == 1, outcome
    return outcome[0]


def _wait_for_stats(dot: Server, key: str, at_least: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while (stats := dot.stats())[key] < at_least:
        assert time.monotonic() < deadline, f"{key} < {at_least} after {timeout}s: {stats}"
        time.sleep(0.05)
    return stats


# What login_device shows when the server sends verification_uri_complete: the code, then the address.
_INSTRUCTIONS = r"confirm the code (\S+):\s+(http://\S+)"


@pytest.mark.timeout(60)
def test_device_login_through_dot_pages_then_refresh(dot: Server, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8628 with DOT: pending polls until the user accepts on DOT's pages; the stored token works, and refreshes."""
    caplog.set_level(logging.DEBUG, logger="requests_tokenrefresh")
    dot.stats(reset=True)
    storage = MemoryStorage()
    screen = _Screen()
    thread, outcome = _start_device_login(dot, storage, screen)
    user_code, address = screen.wait_for(_INSTRUCTIONS, timeout=15).groups()
    # DOT's verification_uri_complete: its user-code page, with the code filled in.
    assert address == f"{dot.url}/o/device/?user_code={user_code}"
    user = DeviceUser(dot)
    try:
        confirm = user.enter_code(address, user_code)
        assert user.trail[:3] == ["/o/device/", "/accounts/login/", "/o/device/"]  # logged in on the way
        assert user.trail[-1] == f"/o/device-confirm/{dot.device_client_id}/{user_code}"
        assert "Reading scope" in confirm.text  # the scope asked for, shown for consent
        # Entering the code does not approve: the device is still told to wait. (Accepting only
        # once DOT has answered a poll with authorization_pending makes that poll certain.)
        pending = _wait_for_stats(dot, "device_pending", 1, timeout=15)
        assert pending["device_ok"] == 0, pending
        status = user.decide(confirm, "accept")
        assert "Device Authorized" in status.text
    finally:
        user.close()
    token = _outcome(thread, outcome, "approval")
    assert isinstance(token, Token), token

    stats = dot.stats()
    # Every poll before the approval was answered authorization_pending (no slow_down, no
    # error), and the first one after it brought the token.
    assert stats["device_ok"] == 1, stats
    assert stats["device_pending"] >= 1, stats
    assert stats["device_polls"] == stats["device_pending"] + 1, stats
    assert storage.load() == token
    assert token.scope == "read"
    assert token.refresh_token  # DOT issues one for the device grant
    assert token.expires_at is not None
    assert requests.get(dot.api, headers={"Authorization": token.authorization}, timeout=10).json() == {
        "user": dot.username
    }

    # The adapter refreshes the stored token once it has expired, as the public device client.
    refreshed: list[Token] = []
    adapter = TokenRefreshAdapter(
        storage, token_url=dot.token_url, client_id=dot.device_client_id, leeway=0, on_refresh=refreshed.append
    )
    dot.stats(reset=True)
    with requests.Session() as session:
        session.mount(dot.url + "/api/", adapter)
        time.sleep(max(0.0, token.expires_at - time.time() + 0.2))  # the token's lifetime, not a synchronisation
        response = session.get(dot.api, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"user": dot.username}
    assert not response.history  # refreshed before sending (it had expired), no 401 first
    stats = dot.stats()
    assert stats["refresh_calls"] == 1 == stats["refresh_ok"], stats
    assert len(refreshed) == 1
    assert storage.load() == refreshed[0]
    assert refreshed[0].refresh_token not in (None, token.refresh_token)  # rotated
    assert response.request.headers["Authorization"] == refreshed[0].authorization

    for secret in (token.access_token, token.refresh_token, refreshed[0].access_token, refreshed[0].refresh_token):
        assert secret
        assert secret not in caplog.text
        assert secret not in screen.getvalue()


@pytest.mark.timeout(60)
def test_device_login_denied_on_dot_pages(dot: Server) -> None:
    """The user presses Deny on DOT's confirmation page: DOT answers access_denied, login_device raises it."""
    dot.stats(reset=True)
    storage = MemoryStorage()
    screen = _Screen()
    thread, outcome = _start_device_login(dot, storage, screen)
    user_code, address = screen.wait_for(_INSTRUCTIONS, timeout=15).groups()
    user = DeviceUser(dot)
    try:
        status = user.decide(user.enter_code(address, user_code), "deny")
        assert "Device Denied" in status.text
    finally:
        user.close()
    error = _outcome(thread, outcome, "refusal")
    assert isinstance(error, LoginError), error
    assert error.error == "access_denied"
    assert storage.load() is None
    stats = dot.stats()
    assert stats["device_denied"] == 1, stats
    assert stats["device_ok"] == 0, stats
    assert stats["device_polls"] == stats["device_pending"] + 1, stats
