"""The logins, discovery, revocation and logout, end to end against the loopback AuthServer.

The browser is played by a real HTTP client (requests): it fetches the URL the login printed or
"opened", submits the server's login form, and follows the redirect to the login's loopback
listener. The device flow's waits go through a fake ``sleep`` and ``clock``: no test waits 5 s.
"""

from __future__ import annotations

import _thread
import html
import io
import logging
import re
import socket
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from requests_tokenrefresh import (
    EndpointError,
    InsecureTransportError,
    KeyringStorage,
    LoginError,
    MemoryStorage,
    RefreshError,
    RevocationError,
    Token,
    TokenRefreshError,
)
from requests_tokenrefresh._discovery import _clear_cache, metadata_urls
from requests_tokenrefresh.login import (
    discover,
    login_browser,
    login_device,
    logout,
    refresh_token_expires_at,
    revoke_token,
    should_use_device_flow,
)
from requests_tokenrefresh.testing import AuthServer, Canned

URL_IN_TEXT = re.compile(r"http://\S+/authorize\?\S+")
HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    """A fresh loopback authorization server (public clients), its metadata cache forgotten."""
    _clear_cache()
    with AuthServer(ttl=3600) as srv:
        yield srv
    _clear_cache()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every DEBUG record of this package."""
    caplog.set_level(logging.DEBUG, logger="requests_tokenrefresh")
    return caplog


class Browser:
    """A browser made of requests: opens the login URL, submits the form, follows the redirect.

    Args:
        action: "approve" or "deny" (the form's buttons).
        before: extra requests to the listener before the real redirect: "favicon", "tampered".
        deliver: follow the redirect to the listener (False: stop after the server's redirect).
        rewrite: query parameters of the server's redirect replaced (a value) or taken off (None)
            before it is followed, as a server in a mix-up attack would send them.
    """

    def __init__(
        self,
        action: str = "approve",
        before: tuple[str, ...] = (),
        deliver: bool = True,
        rewrite: dict[str, str | None] | None = None,
    ) -> None:
        self.action = action
        self.before = before
        self.deliver = deliver
        self.rewrite = rewrite or {}
        self.urls: list[str] = []
        self.location = ""
        self.pages: list[requests.Response] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.stream = _Screen(self)

    def open(self, url: str, *args: Any, **kwargs: Any) -> bool:
        """Stands in for webbrowser.open: visit ``url`` in a thread, as a real browser would."""
        self.urls.append(url)
        thread = threading.Thread(target=self._visit, args=(url,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return True

    def _visit(self, url: str) -> None:
        try:
            with requests.Session() as s:
                s.trust_env = False
                form_page = s.get(url, timeout=10)
                assert form_page.status_code == 200, form_page.text
                fields = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(form_page.text)}
                fields[self.action] = "1"
                answer = s.post(
                    url.split("/authorize")[0] + "/authorize", data=fields, timeout=10, allow_redirects=False
                )
                assert answer.status_code == 302, answer.text
                self.location = answer.headers["Location"]
                if self.rewrite:
                    parts = urlsplit(self.location)
                    query = {k: v for k, v in parse_qsl(parts.query) if k not in self.rewrite}
                    query.update({k: v for k, v in self.rewrite.items() if v is not None})
                    self.location = urlunsplit(parts._replace(query=urlencode(query)))
                if not self.deliver:
                    return
                base = self.location.split("/callback")[0]
                for kind in self.before:
                    if kind == "favicon":
                        self.pages.append(s.get(base + "/favicon.ico", timeout=10))
                    elif kind == "tampered":
                        self.pages.append(s.get(re.sub(r"state=[^&]*", "state=forged", self.location), timeout=10))
                self.pages.append(s.get(self.location, timeout=30))
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "the browser thread is still running"
        if self.errors:
            raise self.errors[0]

    @property
    def last_page(self) -> requests.Response:
        return self.pages[-1]


class _Screen(io.StringIO):
    """The login's output stream: a URL printed on it is visited as a user would."""

    def __init__(self, browser: Browser, tty: bool = False) -> None:
        super().__init__()
        self.browser = browser
        self.tty = tty

    def write(self, text: str) -> int:
        for url in URL_IN_TEXT.findall(text):
            if url not in self.browser.urls:
                self.browser.open(url)
        return super().write(text)

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """A Browser that webbrowser.open starts; joined (and its errors raised) at the end."""
    b = Browser()
    monkeypatch.setattr(webbrowser, "open", b.open)
    yield b
    b.join()


def assert_no_secret(auth: AuthServer, texts: list[str], *extra: str | None) -> None:
    """No code, verifier, device code, token or client secret of ``auth``'s logins is in ``texts``."""
    found: list[str] = [s for s in extra if s]
    for entry in auth.login_log:
        found += [v for k, v in entry.items() if k in ("code", "verifier", "device_code") and v]
    for entry in auth.token_log:
        if entry.get("refresh_token"):
            found.append(entry["refresh_token"])
    found += list(auth._access) + list(auth._refresh)
    assert found, "no secret to look for"
    for text in texts:
        for secret in found:
            assert secret not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_port_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # fails if the login still listens
        s.listen()


def _browser_login(auth: AuthServer, **kwargs: Any) -> Token:
    kwargs.setdefault("client_id", "cli")
    kwargs.setdefault("timeout", 20)
    if "authorization_url" not in kwargs:
        kwargs.setdefault("issuer", auth.issuer)
    return login_browser(**kwargs)


# -- discovery --------------------------------------------------------------------------------------


def test_discover_reads_openid_configuration_once(auth: AuthServer) -> None:
    metadata = discover(auth.issuer)
    assert metadata.issuer == auth.issuer
    assert metadata.token_endpoint == auth.token_url
    assert metadata.authorization_endpoint == auth.url + "/authorize"
    assert metadata.device_authorization_endpoint == auth.url + "/device_authorization"
    assert metadata.revocation_endpoint == auth.url + "/revoke"
    assert metadata.code_challenge_methods_supported == ("S256",)
    auth.metadata_format = "none"  # the cache answers now
    assert discover(auth.issuer) is metadata


def test_discover_falls_back_to_rfc8414(auth: AuthServer) -> None:
    auth.metadata_format = "rfc8414"
    assert discover(auth.issuer + "/").token_endpoint == auth.token_url


def test_metadata_urls_place_the_issuer_path_as_each_spec_says() -> None:
    assert metadata_urls("https://id.example.com/realms/main/") == [
        "https://id.example.com/realms/main/.well-known/openid-configuration",
        "https://id.example.com/.well-known/oauth-authorization-server/realms/main",
    ]


def test_metadata_for_another_issuer_is_refused_and_not_cached(auth: AuthServer) -> None:
    auth.issuer_override = "https://evil.example.net"
    with pytest.raises(LoginError, match=r"names the issuer https://evil\.example\.net") as info:
        discover(auth.issuer)
    assert info.value.error == "invalid_metadata"
    with pytest.raises(LoginError, match="invalid_metadata"):
        login_browser(client_id="cli", issuer=auth.issuer, open_browser=False, stream=io.StringIO())
    auth.issuer_override = None
    assert discover(auth.issuer).issuer == auth.issuer


def test_no_metadata_is_a_clear_error(auth: AuthServer) -> None:
    auth.metadata_format = "none"
    with pytest.raises(LoginError, match=r"no authorization server metadata .* tried .*HTTP 404") as info:
        discover(auth.issuer)
    assert info.value.error == "metadata_not_found"
    assert isinstance(info.value, TokenRefreshError)


def test_discovery_over_plain_http_to_another_host_is_refused() -> None:
    with pytest.raises(InsecureTransportError, match="https"):
        discover("http://id.example.com")


def test_a_flow_names_the_endpoint_the_server_lacks(auth: AuthServer) -> None:
    auth.metadata_omit = {"device_authorization_endpoint"}
    with pytest.raises(LoginError, match=r"publishes no device_authorization_endpoint .* device login") as info:
        login_device(client_id="cli", issuer=auth.issuer, stream=io.StringIO())
    assert info.value.error == "missing_endpoint"


def test_a_server_without_s256_is_refused_before_listening(auth: AuthServer) -> None:
    auth.metadata_extra = {"code_challenge_methods_supported": ["plain"]}
    with pytest.raises(LoginError, match="without S256") as info:
        _browser_login(auth, open_browser=False, stream=io.StringIO())
    assert info.value.error == "unsupported_pkce"


def test_an_insecure_endpoint_in_the_metadata_is_refused(auth: AuthServer) -> None:
    auth.metadata_extra = {"token_endpoint": "http://id.example.com/token"}
    with pytest.raises(InsecureTransportError):
        _browser_login(auth, open_browser=False, stream=io.StringIO())


# -- browser login ----------------------------------------------------------------------------------


def test_browser_login_end_to_end(auth: AuthServer, browser: Browser, logs: pytest.LogCaptureFixture) -> None:
    browser.before = ("favicon",)
    storage = KeyringStorage("login-test", "alice")
    out = io.StringIO()
    token = _browser_login(auth, storage=storage, stream=out, scope="openid api")
    browser.join()
    assert storage.load() == token
    assert token.refresh_token
    assert token.scope == "openid api"
    assert "id_token" in token.extra
    # One authorization request, through webbrowser.open, to the printed URL.
    assert len(browser.urls) == 1
    assert browser.urls[0] in out.getvalue()
    query = dict(p.split("=", 1) for p in browser.urls[0].split("?", 1)[1].split("&"))
    assert query["code_challenge_method"] == "S256"
    assert "nonce" in query
    assert len(query["state"]) >= 43
    assert re.fullmatch(r"http%3A%2F%2F127\.0\.0\.1%3A\d+%2Fcallback", query["redirect_uri"])
    # The stray favicon got a 404; the redirect a page that says it worked.
    assert [p.status_code for p in browser.pages] == [404, 200]
    assert "The login worked" in browser.last_page.text
    assert "close this tab" in browser.last_page.text
    # The token works on the API.
    assert requests.get(auth.url + "/api", headers={"Authorization": token.authorization}, timeout=5).ok
    assert_no_secret(auth, [logs.text, out.getvalue(), repr(token), browser.last_page.text])


@pytest.mark.parametrize("scope", [["openid", "api"], ("openid", "api"), {"api", "openid"}])
def test_the_login_scope_may_be_a_list_or_a_set(auth: AuthServer, browser: Browser, scope: Any) -> None:
    token = _browser_login(auth, stream=io.StringIO(), scope=scope)
    browser.join()
    query = dict(p.split("=", 1) for p in browser.urls[0].split("?", 1)[1].split("&"))
    joined = "api openid" if isinstance(scope, set) else "openid api"  # in order; a set sorted
    assert query["scope"] == joined.replace(" ", "+")
    assert "nonce" in query  # openid in a list is seen as in a string
    assert token.scope == joined


def test_browser_login_from_the_printed_url_with_a_confidential_client(logs: pytest.LogCaptureFixture) -> None:
    """No browser opens: the user copies the printed URL. Explicit endpoints; the secret in the body."""
    browser = Browser()
    with AuthServer(client_id="app", client_secret="app-secret-123") as srv:
        token = login_browser(
            client_id="app",
            client_secret="app-secret-123",
            client_auth="post",
            authorization_url=srv.url + "/authorize",
            token_url=srv.token_url,
            open_browser=False,
            stream=browser.stream,
            timeout=20,
        )
        browser.join()
        assert token.access_token in srv._access
        assert "Log in with your browser" in browser.stream.getvalue()
        assert_no_secret(srv, [logs.text, browser.stream.getvalue()], "app-secret-123")


def test_a_browser_that_fails_to_open_is_not_fatal(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str) -> bool:
        raise webbrowser.Error("no runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    browser = Browser()
    token = _browser_login(auth, stream=browser.stream)
    browser.join()
    assert token.access_token in auth._access
    assert "No browser could be opened" in browser.stream.getvalue()


def test_a_tampered_state_is_ignored_and_the_real_redirect_still_counts(auth: AuthServer, browser: Browser) -> None:
    browser.before = ("tampered",)
    storage = MemoryStorage()
    _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert [p.status_code for p in browser.pages] == [400, 200]
    assert "wrong state" in browser.pages[0].text
    assert storage.load() is not None


def test_only_a_wrong_state_arrives_then_the_login_times_out(
    auth: AuthServer, browser: Browser, logs: pytest.LogCaptureFixture
) -> None:
    auth.authorize_mode = "wrong-state"
    storage = MemoryStorage()
    started = time.monotonic()
    with pytest.raises(LoginError, match=r"timeout: no login arrived within 3 seconds \(1 stray .*wrong state") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO(), timeout=3)
    assert time.monotonic() - started < 10
    browser.join()
    assert info.value.error == "timeout"
    assert storage.load() is None
    assert browser.last_page.status_code == 400
    code = re.search(r"code=([^&]+)", browser.location)
    assert code is not None
    assert code.group(1) not in logs.text + str(info.value)


def test_a_redirect_without_code_fails_at_once(auth: AuthServer, browser: Browser) -> None:
    auth.authorize_mode = "no-code"
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="neither a code nor an error") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert info.value.error == "invalid_callback"
    assert storage.load() is None
    assert browser.last_page.status_code == 400
    assert "The login failed (invalid_callback)" in browser.last_page.text


def test_an_error_redirect_is_a_clear_error(auth: AuthServer, browser: Browser) -> None:
    browser.action = "deny"
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="access_denied: The user denied the request") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert info.value.error == "access_denied"
    assert storage.load() is None
    assert "The login failed (access_denied)" in browser.last_page.text
    assert auth.refresh_calls == 0  # nothing was sent to the token endpoint


def test_the_token_endpoint_refusing_the_code(
    auth: AuthServer, browser: Browser, logs: pytest.LogCaptureFixture
) -> None:
    auth.canned.append(Canned(400, {"error": "invalid_grant", "error_description": "Code was already redeemed"}))
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="invalid_grant: Code was already redeemed") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert isinstance(info.value, EndpointError)
    assert not isinstance(info.value, RefreshError)  # a failed login is no failed refresh
    assert info.value.error == "invalid_grant"
    assert storage.load() is None
    assert browser.last_page.status_code == 400
    code = re.search(r"code=([^&]+)", browser.location)
    assert code is not None
    assert code.group(1) not in logs.text + str(info.value)


def test_an_id_token_for_another_nonce_is_refused(auth: AuthServer, browser: Browser) -> None:
    forged = "eyJhbGciOiJub25lIn0.eyJub25jZSI6Im90aGVyIn0."  # {"alg":"none"}.{"nonce":"other"}
    auth.canned.append(Canned(200, {"access_token": "at-x", "token_type": "Bearer", "id_token": forged}))
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="nonce") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO(), scope="openid")
    browser.join()
    assert info.value.error == "invalid_id_token"
    assert storage.load() is None


def test_a_redirect_without_iss_is_refused_when_the_server_promises_iss(auth: AuthServer, browser: Browser) -> None:
    """RFC 9207 §2.4: with authorization_response_iss_parameter_supported, a response without iss is refused."""
    auth.metadata_extra = {"authorization_response_iss_parameter_supported": True}
    browser.rewrite = {"iss": None}
    storage = MemoryStorage()
    with pytest.raises(LoginError, match=r"invalid_callback: the redirect carried no iss, .*RFC 9207") as info:
        _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert "code=" in browser.location
    assert "iss=" not in browser.location
    assert info.value.error == "invalid_callback"
    assert storage.load() is None
    assert auth.login_log == []  # the code (and the verifier) never went to the token endpoint
    assert "The login failed (invalid_callback)" in browser.last_page.text


def test_an_error_redirect_without_iss_is_refused_as_well(auth: AuthServer, browser: Browser) -> None:
    auth.metadata_extra = {"authorization_response_iss_parameter_supported": True}
    browser.action = "deny"
    browser.rewrite = {"iss": None}
    with pytest.raises(LoginError, match="carried no iss") as info:
        _browser_login(auth, stream=io.StringIO())
    browser.join()
    assert info.value.error == "invalid_callback"


@pytest.mark.parametrize("promised", [False, "true", None])
def test_a_redirect_without_iss_is_accepted_when_the_server_does_not_promise_iss(
    auth: AuthServer, browser: Browser, promised: object
) -> None:
    if promised is not None:
        auth.metadata_extra = {"authorization_response_iss_parameter_supported": promised}
    browser.rewrite = {"iss": None}
    storage = MemoryStorage()
    _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert "iss=" not in browser.location
    assert storage.load() is not None


@pytest.mark.parametrize("promised", [True, False])
def test_a_redirect_from_another_issuer_is_refused(auth: AuthServer, browser: Browser, promised: bool) -> None:
    auth.metadata_extra = {"authorization_response_iss_parameter_supported": promised}
    browser.rewrite = {"iss": "https://evil.example.net"}
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="invalid_callback: the redirect came from another issuer"):
        _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert storage.load() is None
    assert auth.login_log == []


def test_the_iss_of_the_redirect_may_differ_by_a_trailing_slash(auth: AuthServer, browser: Browser) -> None:
    auth.metadata_extra = {"authorization_response_iss_parameter_supported": True}
    browser.rewrite = {"iss": auth.issuer + "/"}
    storage = MemoryStorage()
    _browser_login(auth, storage=storage, stream=io.StringIO())
    browser.join()
    assert storage.load() is not None


@pytest.mark.parametrize(
    "name",
    ["response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "nonce"],
)
def test_extra_params_cannot_replace_what_the_browser_login_sets(auth: AuthServer, name: str) -> None:
    with pytest.raises(ValueError, match=rf"extra_params must not set {name}\b"):
        _browser_login(auth, stream=io.StringIO(), extra_params={"prompt": "consent", name: "x"})


def test_extra_params_cannot_carry_the_scope(auth: AuthServer) -> None:
    with pytest.raises(ValueError, match=r"extra_params must not set scope; pass scope="):
        _browser_login(auth, stream=io.StringIO(), extra_params={"scope": "admin"})
    with pytest.raises(ValueError, match=r"extra_params must not set scope"):
        login_device(client_id="cli", issuer=auth.issuer, stream=io.StringIO(), extra_params={"scope": "admin"})
    with pytest.raises(ValueError, match=r"extra_params must not set client_id"):
        login_device(client_id="cli", issuer=auth.issuer, stream=io.StringIO(), extra_params={"client_id": "other"})


def test_extra_params_reach_the_authorization_request(auth: AuthServer, browser: Browser) -> None:
    _browser_login(auth, stream=io.StringIO(), extra_params={"prompt": "consent", "audience": "api"})
    browser.join()
    assert "&prompt=consent&audience=api" in browser.urls[0]


def test_a_busy_fixed_port_fails_at_once(auth: AuthServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(LoginError, match=f"port_in_use: could not listen on 127.0.0.1 port {port}") as info:
            _browser_login(auth, port=port, stream=io.StringIO())
        assert time.monotonic() - started < 2
        assert info.value.error == "port_in_use"


def test_a_fixed_port_is_used_in_the_redirect_uri_and_released(auth: AuthServer, browser: Browser) -> None:
    port = _free_port()
    _browser_login(auth, port=port, redirect_path="/oauth/done", stream=io.StringIO())
    browser.join()
    assert browser.location.startswith(f"http://127.0.0.1:{port}/oauth/done?")
    assert_port_free(port)


def test_the_login_times_out_and_releases_the_port(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ports: list[int] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: bool(ports.append(int(re.findall(r"%3A(\d+)%2F", url)[0]))))
    storage = MemoryStorage()
    with pytest.raises(LoginError, match=r"timeout: no login arrived within 0\.5 seconds$"):
        _browser_login(auth, storage=storage, stream=io.StringIO(), timeout=0.5)
    assert storage.load() is None
    assert_port_free(ports[0])


def test_ctrl_c_stops_the_login_promptly_and_releases_the_port(
    auth: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports: list[int] = []

    def user_presses_ctrl_c(url: str) -> bool:
        ports.append(int(re.findall(r"%3A(\d+)%2F", url)[0]))
        threading.Timer(0.3, _thread.interrupt_main).start()
        return True

    monkeypatch.setattr(webbrowser, "open", user_presses_ctrl_c)
    storage = MemoryStorage()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _browser_login(auth, storage=storage, stream=io.StringIO(), timeout=30)
    assert time.monotonic() - started < 5
    assert storage.load() is None
    assert_port_free(ports[0])
    assert not [t for t in threading.enumerate() if t.name == "login-listener"]


def test_bad_arguments_are_value_errors(auth: AuthServer) -> None:
    with pytest.raises(ValueError, match="client_id"):
        login_browser(client_id="", issuer=auth.issuer)
    with pytest.raises(ValueError, match="pass issuer= or the token_url argument"):
        login_browser(client_id="cli", authorization_url=auth.url + "/authorize")
    with pytest.raises(ValueError, match="redirect_host"):
        _browser_login(auth, redirect_host="example.com", stream=io.StringIO())


# -- device login -----------------------------------------------------------------------------------


class FakeTime:
    """``sleep`` and ``clock`` for the device flow: sleeping moves the clock; hooks run at each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.hooks: dict[int, Callable[[], None]] = {}

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        hook = self.hooks.get(len(self.sleeps))
        if hook is not None:
            hook()


def _approve_on_the_page(auth: AuthServer, out: io.StringIO) -> Callable[[], None]:
    """The user opens the printed verification URL on a phone and presses Allow."""

    def approve() -> None:
        url = re.findall(r"http://\S+/device\?user_code=\S+", out.getvalue())[0]
        with requests.Session() as s:
            s.trust_env = False
            page = s.get(url, timeout=5)
            code = re.findall(r'name="user_code" value="([^"]+)"', page.text)[0]
            assert s.post(auth.url + "/device", data={"user_code": code, "approve": "1"}, timeout=5).ok

    return approve


def _device_login(auth: AuthServer, fake: FakeTime, **kwargs: Any) -> Token:
    kwargs.setdefault("client_id", "cli")
    kwargs.setdefault("stream", io.StringIO())
    return login_device(issuer=auth.issuer, sleep=fake.sleep, clock=fake.clock, **kwargs)


def test_device_login_end_to_end(auth: AuthServer, logs: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    out = io.StringIO()
    fake.hooks[2] = _approve_on_the_page(auth, out)
    storage = KeyringStorage("login-test", "device")
    token = _device_login(auth, fake, storage=storage, stream=out, scope="api")
    assert storage.load() == token
    assert fake.sleeps == [5, 5]
    assert "confirm the code" in out.getvalue()
    assert "\r" not in out.getvalue()
    assert auth.devices[auth.login_log[-1]["device_code"]]["polls"] == 2
    assert_no_secret(auth, [logs.text, out.getvalue()])


def test_device_login_without_interval_or_complete_uri(auth: AuthServer) -> None:
    auth.device_interval = None
    auth.device_complete = False
    fake = FakeTime()
    out = io.StringIO()
    fake.hooks[1] = lambda: auth.approve_device()
    _device_login(auth, fake, stream=out)
    assert fake.sleeps == [5.0]
    text = out.getvalue()
    assert f"{auth.url}/device\n" in text
    assert re.search(r"enter the code: [A-Z]{4}-[A-Z]{4}", text)


@pytest.mark.parametrize(
    "interval", [10**400, float("inf"), "1e400", 0, -3, "soon"], ids=["huge-int", "inf", "1e400", "0", "-3", "word"]
)
def test_device_login_with_an_unusable_interval_polls_every_5_seconds(auth: AuthServer, interval: Any) -> None:
    """An interval too large for a float (or not positive, or not a number) is as if none were sent."""
    auth.device_interval = interval
    fake = FakeTime()
    fake.hooks[1] = lambda: auth.approve_device()
    storage = MemoryStorage()
    _device_login(auth, fake, storage=storage)
    assert fake.sleeps == [5.0]
    assert storage.load() is not None


def test_device_login_slows_down_by_5_seconds(auth: AuthServer) -> None:
    auth.device_mode = "slow_down"
    auth.device_interval = 2
    fake = FakeTime()
    fake.hooks[2] = lambda: auth.approve_device()
    _device_login(auth, fake)
    assert fake.sleeps == [2, 7]


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("access_denied", "access_denied", "refused on the other device"),
        ("expired_token", "expired_token", "the code expired before the login was approved"),
    ],
)
def test_device_login_stops_on(auth: AuthServer, mode: str, error: str, message: str) -> None:
    auth.device_mode = mode
    fake = FakeTime()
    storage = MemoryStorage()
    with pytest.raises(LoginError, match=message) as info:
        _device_login(auth, fake, storage=storage)
    assert info.value.error == error
    assert fake.sleeps == [5]
    assert storage.load() is None
    assert info.value.__cause__ is None or "dc-" not in str(info.value.__cause__)


def test_device_login_denied_on_the_page(auth: AuthServer) -> None:
    fake = FakeTime()
    fake.hooks[1] = lambda: auth.approve_device(approve=False)
    with pytest.raises(LoginError, match="access_denied"):
        _device_login(auth, fake)


def test_device_login_gives_up_at_expires_in(auth: AuthServer) -> None:
    auth.device_expires_in = 30
    fake = FakeTime()
    storage = MemoryStorage()
    with pytest.raises(LoginError, match="not approved within 30 seconds") as info:
        _device_login(auth, fake, storage=storage)
    assert info.value.error == "expired_token"
    assert sum(fake.sleeps) <= 30
    assert len(fake.sleeps) == 5
    assert storage.load() is None


def test_device_login_shows_progress_on_a_terminal(auth: AuthServer) -> None:
    fake = FakeTime()
    screen = _Screen(Browser(), tty=True)
    fake.hooks[2] = lambda: auth.approve_device()
    _device_login(auth, fake, stream=screen, timeout=120)
    assert "\r  Waiting for the approval (120 s left)" in screen.getvalue()
    assert "\r  Waiting for the approval (115 s left)" in screen.getvalue()


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({"DISPLAY": ":0"}, "linux", False),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
        ({}, "linux", True),
        ({"DISPLAY": ":0", "SSH_CONNECTION": "10.0.0.1 5 10.0.0.2 22"}, "linux", True),
        ({"SSH_TTY": "/dev/pts/1"}, "darwin", True),
        ({}, "darwin", False),
        ({}, "win32", False),
    ],
)
def test_should_use_device_flow(
    environ: dict[str, str], platform: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("requests_tokenrefresh.login.device._CONTAINER_MARKERS", ("/nonexistent/.dockerenv",))
    assert should_use_device_flow(environ, platform=platform) is expected


def test_should_use_device_flow_in_a_container(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / ".dockerenv"
    marker.touch()
    monkeypatch.setattr("requests_tokenrefresh.login.device._CONTAINER_MARKERS", (str(marker),))
    assert should_use_device_flow({"DISPLAY": ":0"}, platform="linux") is True


# -- revocation and logout --------------------------------------------------------------------------


def _logged_in(auth: AuthServer) -> tuple[KeyringStorage, Token]:
    storage = KeyringStorage("login-test", "bob")
    token = Token.from_response(auth.issue())
    storage.save(token)
    return storage, token


def test_logout_revokes_refresh_then_access_token_then_deletes(
    auth: AuthServer, logs: pytest.LogCaptureFixture
) -> None:
    storage, token = _logged_in(auth)
    assert logout(storage, issuer=auth.issuer, client_id="cli") is True
    assert storage.load() is None
    assert [(e["hint"], e["token"]) for e in auth.revocation_log] == [
        ("refresh_token", token.refresh_token),
        ("access_token", token.access_token),
    ]
    api = requests.get(auth.url + "/api", headers={"Authorization": token.authorization}, timeout=5)
    assert api.status_code == 401
    refresh = requests.post(
        auth.token_url, data={"grant_type": "refresh_token", "refresh_token": token.refresh_token}, timeout=5
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert_no_secret(auth, [logs.text])


def test_a_failed_revocation_is_reported_and_the_record_still_deleted(
    auth: AuthServer, logs: pytest.LogCaptureFixture
) -> None:
    auth.revocation_mode = "fail"
    storage, _token = _logged_in(auth)
    with pytest.raises(RevocationError, match=r"refresh_token was not revoked: temporarily_unavailable") as info:
        logout(storage, revocation_url=auth.url + "/revoke", client_id="cli")
    assert info.value.deleted is True
    assert info.value.retryable is True
    assert "the local record was deleted" in str(info.value)
    assert storage.load() is None
    assert len(auth.revocation_log) == 2  # the access token was tried as well
    assert_no_secret(auth, [logs.text, str(info.value), str(info.value.__cause__)])


def test_revoke_token_with_a_confidential_client() -> None:
    with AuthServer(client_id="app", client_secret="s3cret-app") as srv:
        token = Token.from_response(srv.issue())
        revoke_token(token, revocation_url=srv.url + "/revoke", client_id="app", client_secret="s3cret-app")
        assert len(srv.revocation_log) == 2
        assert srv.revoked
        with pytest.raises(RevocationError, match="invalid_client") as info:
            revoke_token(token, revocation_url=srv.url + "/revoke", client_id="app", client_secret="wrong")
        assert "wrong" not in str(info.value)
        assert token.access_token not in str(info.value)


def test_logout_without_a_revocation_endpoint_just_deletes(auth: AuthServer) -> None:
    auth.metadata_omit = {"revocation_endpoint"}
    storage, _ = _logged_in(auth)
    assert logout(storage, issuer=auth.issuer) is False
    assert storage.load() is None
    assert logout(storage) is False  # nothing stored: nothing to do
    assert auth.revocation_log == []


def test_logout_when_the_server_is_unreachable_still_deletes(auth: AuthServer) -> None:
    storage, _ = _logged_in(auth)
    with pytest.raises(RevocationError, match="network_error") as info:
        logout(storage, revocation_url=f"http://127.0.0.1:{_free_port()}/revoke", timeout=2)
    assert info.value.deleted
    assert storage.load() is None


# -- refresh token lifetime -------------------------------------------------------------------------


def test_the_refresh_token_lifetime_is_kept_and_read(auth: AuthServer, browser: Browser) -> None:
    auth.refresh_expires_in = 86400
    token = _browser_login(auth, stream=io.StringIO())
    browser.join()
    assert token.extra["refresh_expires_in"] == 86400
    assert token.obtained_at is not None
    assert refresh_token_expires_at(token) == pytest.approx(token.obtained_at + 86400)
    record = Token.from_record(token.to_record())
    assert refresh_token_expires_at(record) == refresh_token_expires_at(token)
    assert refresh_token_expires_at(Token("at", extra={"refresh_token_expires_in": "60"}, obtained_at=10)) == 70
    assert refresh_token_expires_at(Token("at", obtained_at=10)) is None
    assert refresh_token_expires_at(Token("at", extra={"refresh_expires_in": 10**400}, obtained_at=10)) is None
    assert refresh_token_expires_at(Token("at", extra={"refresh_expires_in": -60}, obtained_at=10)) is None


def test_all_login_errors_share_the_package_root() -> None:
    assert issubclass(LoginError, EndpointError)
    assert issubclass(RevocationError, EndpointError)
    assert issubclass(RevocationError, TokenRefreshError)
    assert issubclass(LoginError, requests.RequestException)
