"""The refresh_token grant (RFC 6749 §6): what goes on the wire and how every answer is mapped."""

from __future__ import annotations

import base64
import email.utils
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import pytest
import requests
import responses

from requests_tokenrefresh import RefreshError, SessionExpiredError, Token
from requests_tokenrefresh._grant import OAuthRefreshGrant, parse_retry_after
from requests_tokenrefresh.testing import AuthServer, FakeClock

TOKEN_URL = "https://auth.example.test/oauth/token"
ELSEWHERE = "https://elsewhere.example.test/collect"
ACCESS = "at-old-access-2f9c1e7d"
REFRESH = "rt-old/refresh+token=8d41"
CLIENT_ID = "my app:v2"
CLIENT_SECRET = "s3cr3t value:with/colon+plus"
SECRETS = (ACCESS, REFRESH, CLIENT_SECRET)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def make_grant(clock: FakeClock) -> Iterator[Callable[..., OAuthRefreshGrant]]:
    """``make_grant(**options)``: a grant on TOKEN_URL with the fake clock, closed after the test."""
    grants: list[OAuthRefreshGrant] = []

    def make(token_url: str = TOKEN_URL, **options: Any) -> OAuthRefreshGrant:
        options.setdefault("clock", clock)
        grant = OAuthRefreshGrant(token_url, **options)
        grants.append(grant)
        return grant

    yield make
    for grant in grants:
        grant.close()


@pytest.fixture
def previous() -> Token:
    return Token(ACCESS, REFRESH, expires_at=999_000.0, scope="read", extra={"user": "alice"})


def form_of(request: requests.PreparedRequest) -> dict[str, list[str]]:
    body = request.body
    assert body is not None
    text = body.decode() if isinstance(body, bytes) else str(body)
    return parse_qs(text, keep_blank_values=True, strict_parsing=True)


def assert_no_secrets(exc: BaseException, *extra: str) -> None:
    """No secret in the message, repr or chained exceptions; no response or request attached."""
    seen: BaseException | None = exc
    while seen is not None:
        for secret in (*SECRETS, *extra):
            assert secret not in str(seen)
            assert secret not in repr(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, requests.RequestException):
        assert exc.response is None
        assert exc.request is None


# -- the request --------------------------------------------------------------------------------


def test_request_is_a_form_post_with_the_refresh_token(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new", "expires_in": 60})

    make_grant()(previous, 30.0)

    assert len(mock.calls) == 1
    request = mock.calls[0].request
    assert request.method == "POST"
    assert request.url == TOKEN_URL
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert form_of(request) == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}
    assert "Authorization" not in request.headers


@pytest.mark.parametrize(("scope", "sent"), [("read write", ["read write"]), (None, None)])
def test_scope_is_sent_only_when_configured(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    scope: str | None,
    sent: list[str] | None,
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    make_grant(scope=scope)(previous, 30.0)

    assert form_of(mock.calls[0].request).get("scope") == sent


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [(CLIENT_ID, CLIENT_SECRET), ("plain-id", "plain-secret"), ("ïd €", "pä%ss 20")],
)
def test_basic_client_auth_form_encodes_id_and_secret(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    client_id: str,
    client_secret: str,
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    make_grant(client_id=client_id, client_secret=client_secret, client_auth="basic")(previous, 30.0)

    request = mock.calls[0].request
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    pair = base64.b64decode(encoded, validate=True).decode("ascii")
    # RFC 6749 §2.3.1: each part is form-encoded, so the only colon is the separator.
    assert pair.count(":") == 1
    assert " " not in pair
    user, _, password = pair.partition(":")
    assert (unquote_plus(user), unquote_plus(password)) == (client_id, client_secret)
    form = form_of(request)
    assert "client_secret" not in form
    assert client_secret not in str(request.body)


def test_post_client_auth_puts_credentials_in_the_body(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, client_auth="post")(previous, 30.0)

    request = mock.calls[0].request
    assert "Authorization" not in request.headers
    assert form_of(request) == {
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }


@pytest.mark.parametrize("client_auth", ["basic", "post"])
def test_client_id_without_secret_goes_in_the_body(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    client_auth: str,
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    make_grant(client_id=CLIENT_ID, client_auth=client_auth)(previous, 30.0)

    request = mock.calls[0].request
    assert "Authorization" not in request.headers
    form = form_of(request)
    assert form["client_id"] == [CLIENT_ID]
    assert "client_secret" not in form


@pytest.mark.parametrize(
    "options", [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "client_auth": "post"}, {}]
)
def test_netrc_credentials_are_not_added_to_the_refresh_request(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, str],
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine auth.example.test login netrc-user password netrc-password\n")
    monkeypatch.setenv("NETRC", str(netrc))
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    make_grant(**options)(previous, 30.0)

    assert "Authorization" not in mock.calls[0].request.headers


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token, status: int
) -> None:
    mock.post(TOKEN_URL, status=status, headers={"Location": ELSEWHERE})
    elsewhere_post = mock.post(ELSEWHERE, json={"access_token": "at-stolen"})
    elsewhere_get = mock.get(ELSEWHERE, json={"access_token": "at-stolen"})

    with pytest.raises(RefreshError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)(previous, 30.0)

    assert type(info.value) is RefreshError
    assert info.value.error == "unexpected_redirect"
    assert info.value.retryable is False
    assert str(status) in str(info.value)
    assert [call.request.url for call in mock.calls] == [TOKEN_URL]
    assert elsewhere_post.call_count == 0
    assert elsewhere_get.call_count == 0
    assert_no_secrets(info.value, ELSEWHERE)


def test_no_refresh_token_means_session_expired_without_a_request(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant]
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new"})

    with pytest.raises(SessionExpiredError) as info:
        make_grant()(Token(ACCESS), 30.0)

    assert info.value.retryable is False
    assert info.value.error == "no_refresh_token"
    assert len(mock.calls) == 0
    assert_no_secrets(info.value)


# -- a successful answer ------------------------------------------------------------------------


def test_expiry_counts_from_when_the_request_was_sent(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token, clock: FakeClock
) -> None:
    sent_at = clock.now

    def slow_server(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        clock.now += 50.0  # the answer arrives 50 s after the request left
        return 200, {"Content-Type": "application/json"}, '{"access_token": "at-new", "expires_in": 3600}'

    mock.add_callback(responses.POST, TOKEN_URL, callback=slow_server)

    token = make_grant()(previous, 30.0)

    assert token.access_token == "at-new"
    assert token.expires_at == sent_at + 3600
    assert token.obtained_at == sent_at


def test_rotated_refresh_token_replaces_the_old_one(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new", "refresh_token": "rt-new", "expires_in": 60})

    token = make_grant()(previous, 30.0)

    assert token.refresh_token == "rt-new"


def test_refresh_token_is_kept_when_the_answer_has_none(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, json={"access_token": "at-new", "expires_in": 60})

    token = make_grant()(previous, 30.0)

    assert token.access_token == "at-new"
    assert token.refresh_token == REFRESH


def test_extra_fields_are_kept(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(
        TOKEN_URL,
        json={"access_token": "at-new", "token_type": "bearer", "id_token": "id.tok.en", "tenant": {"id": 7}},
    )

    token = make_grant()(previous, 30.0)

    assert token.token_type == "Bearer"
    assert token.extra["id_token"] == "id.tok.en"
    assert token.extra["tenant"] == {"id": 7}
    assert token.extra["user"] == "alice"  # from the previous token
    assert token.scope == "read"


# -- answers that are not token responses --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        ("<html><body>Sign in</body></html>", "text/html", "text/html"),
        ("access_token=at-new&expires_in=60", "application/x-www-form-urlencoded", "not a JSON object"),
        ('[{"access_token": "at-new"}]', "application/json", "not a JSON object"),
        ("", "application/json", "not a JSON object"),
        ('{"token_type": "Bearer", "expires_in": 60}', "application/json", "access_token"),
        ('{"access_token": "at-new", "refresh_token": 12345}', "application/json", "refresh_token"),
    ],
    ids=["html", "form", "json-array", "empty", "no-access-token", "refresh-token-number"],
)
def test_invalid_token_response(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    body: str,
    content_type: str,
    says: str,
) -> None:
    mock.post(TOKEN_URL, body=body, content_type=content_type)

    with pytest.raises(RefreshError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)(previous, 30.0)

    exc = info.value
    assert type(exc) is RefreshError
    assert exc.error == "invalid_token_response"
    assert exc.retryable is False
    assert str(exc).startswith("invalid_token_response: ")
    assert says in str(exc)
    assert_no_secrets(exc)


# -- error answers ------------------------------------------------------------------------------


def test_invalid_grant_means_session_expired(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": "Refresh token expired"},
        headers={"Retry-After": "5"},
    )

    with pytest.raises(SessionExpiredError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)(previous, 30.0)

    exc = info.value
    assert exc.error == "invalid_grant"
    assert exc.error_description == "Refresh token expired"
    assert str(exc) == "invalid_grant: Refresh token expired"
    assert exc.retryable is False
    assert exc.retry_after is None
    assert_no_secrets(exc)


def test_invalid_grant_without_description(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})

    with pytest.raises(SessionExpiredError) as info:
        make_grant()(previous, 30.0)

    assert info.value.error == "invalid_grant"
    assert info.value.error_description is None
    assert str(info.value).startswith("invalid_grant")
    assert "400" in str(info.value)


@pytest.mark.parametrize(
    ("status", "payload", "error"),
    [
        (401, {"error": "invalid_client", "error_description": "Client authentication failed"}, "invalid_client"),
        (400, {"error": "invalid_request", "error_description": "Missing parameter"}, "invalid_request"),
        (400, {"error": "unsupported_grant_type"}, "unsupported_grant_type"),
        (400, {"error": "invalid_scope"}, "invalid_scope"),
        (403, "<html><body>Forbidden</body></html>", "http_403"),
        (404, "", "http_404"),
    ],
    ids=["401-invalid_client", "400-invalid_request", "400-unsupported_grant_type", "400-invalid_scope", "403", "404"],
)
def test_permanent_errors(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    status: int,
    payload: dict[str, str] | str,
    error: str,
) -> None:
    if isinstance(payload, dict):
        mock.post(TOKEN_URL, status=status, json=payload)
    else:
        mock.post(TOKEN_URL, status=status, body=payload, content_type="text/html")

    with pytest.raises(RefreshError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)(previous, 30.0)

    exc = info.value
    assert type(exc) is RefreshError
    assert exc.error == error
    assert exc.retryable is False
    assert exc.retry_after is None
    assert str(exc).startswith(error)
    description = payload.get("error_description") if isinstance(payload, dict) else None
    assert exc.error_description == description
    if description:
        assert str(exc) == f"{error}: {description}"
    else:
        assert str(status) in str(exc)
    assert_no_secrets(exc)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "30"}, 30.0),
        (429, {}, None),
        (500, {}, None),
        (502, {}, None),
        (503, {"Retry-After": "7"}, 7.0),
        (504, {}, None),
    ],
)
def test_transient_errors_with_html_bodies(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    mock.post(
        TOKEN_URL, status=status, body="<html><h1>Bad Gateway</h1></html>", content_type="text/html", headers=headers
    )

    with pytest.raises(RefreshError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)(previous, 30.0)

    exc = info.value
    assert type(exc) is RefreshError
    assert exc.retryable is True
    assert exc.error == f"http_{status}"
    assert exc.retry_after == retry_after
    assert str(status) in str(exc)
    assert_no_secrets(exc)


def test_429_with_an_http_date_retry_after(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    mock.post(TOKEN_URL, status=429, json={"error": "slow_down"}, headers={"Retry-After": when})

    with pytest.raises(RefreshError) as info:
        make_grant()(previous, 30.0)

    exc = info.value
    assert exc.retryable is True
    assert exc.error == "slow_down"
    assert exc.retry_after is not None
    assert 100.0 < exc.retry_after <= 120.0


@pytest.mark.parametrize("error", ["temporarily_unavailable", "server_error", "slow_down"])
def test_transient_oauth_error_codes_are_retryable(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token, error: str
) -> None:
    mock.post(TOKEN_URL, status=400, json={"error": error}, headers={"Retry-After": "3"})

    with pytest.raises(RefreshError) as info:
        make_grant()(previous, 30.0)

    assert info.value.error == error
    assert info.value.retryable is True
    assert info.value.retry_after == 3.0


# -- secrets never reach an exception -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "exc_type"),
    [
        (400, "invalid_request", RefreshError),
        (400, "invalid_grant", SessionExpiredError),
        (503, "server_error", RefreshError),
    ],
)
@pytest.mark.parametrize("echoed", [REFRESH, ACCESS], ids=["refresh-token", "access-token"])
def test_error_description_echoing_a_token_is_redacted(
    mock: responses.RequestsMock,
    make_grant: Callable[..., OAuthRefreshGrant],
    previous: Token,
    status: int,
    error: str,
    exc_type: type[RefreshError],
    echoed: str,
) -> None:
    description = f"token {echoed} is not valid here"
    mock.post(TOKEN_URL, status=status, json={"error": error, "error_description": description})

    with pytest.raises(RefreshError) as info:
        make_grant()(previous, 30.0)

    exc = info.value
    assert type(exc) is exc_type
    assert exc.error == error
    assert str(exc).startswith(f"{error}: token ")
    assert str(exc).endswith(" is not valid here")
    assert exc.error_description is not None
    assert echoed not in exc.error_description
    assert_no_secrets(exc)


def test_error_description_echoing_the_client_secret_is_redacted(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(
        TOKEN_URL,
        status=401,
        json={"error": "invalid_client", "error_description": f"client secret '{CLIENT_SECRET}' does not match"},
    )

    with pytest.raises(RefreshError) as info:
        make_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, client_auth="post")(previous, 30.0)

    assert info.value.error == "invalid_client"
    assert_no_secrets(info.value)


def test_long_error_description_is_trimmed(
    mock: responses.RequestsMock, make_grant: Callable[..., OAuthRefreshGrant], previous: Token
) -> None:
    mock.post(TOKEN_URL, status=400, json={"error": "invalid_request", "error_description": "x" * 5000})

    with pytest.raises(RefreshError) as info:
        make_grant()(previous, 30.0)

    assert info.value.error_description is not None
    assert 0 < len(info.value.error_description) <= 300
    assert len(str(info.value)) < 400


# -- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_counts_from_now() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


# -- against a real loopback token endpoint -------------------------------------------------------

LOOPBACK_ID = "app"
LOOPBACK_SECRET = "s e:cret"


@pytest.mark.parametrize("client_auth", ["basic", "post"])
def test_loopback_client_auth_and_rotation(client_auth: str) -> None:
    with AuthServer(client_id=LOOPBACK_ID, client_secret=LOOPBACK_SECRET) as srv:
        first = Token.from_response(srv.issue())
        grant = OAuthRefreshGrant(
            srv.token_url, client_id=LOOPBACK_ID, client_secret=LOOPBACK_SECRET, client_auth=client_auth
        )
        try:
            second = grant(first, 10.0)
            third = grant(second, 10.0)
        finally:
            grant.close()

        assert [entry["status"] for entry in srv.token_log] == [200, 200]
        assert [entry["refresh_token"] for entry in srv.token_log] == [first.refresh_token, second.refresh_token]
        assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
        assert third.access_token != second.access_token
        assert third.expires_at is not None
        assert not srv.revoked


@pytest.mark.parametrize("client_auth", ["basic", "post"])
def test_loopback_wrong_client_secret_is_invalid_client(client_auth: str) -> None:
    with AuthServer(client_id=LOOPBACK_ID, client_secret=LOOPBACK_SECRET) as srv:
        first = Token.from_response(srv.issue())
        grant = OAuthRefreshGrant(srv.token_url, client_id=LOOPBACK_ID, client_secret="wrong", client_auth=client_auth)
        try:
            with pytest.raises(RefreshError) as info:
                grant(first, 10.0)
        finally:
            grant.close()

    assert info.value.error == "invalid_client"
    assert info.value.retryable is False
    assert first.refresh_token is not None
    assert first.refresh_token not in str(info.value)


def test_loopback_reused_refresh_token_is_session_expired() -> None:
    with AuthServer(client_id=LOOPBACK_ID, client_secret=LOOPBACK_SECRET) as srv:
        first = Token.from_response(srv.issue())
        grant = OAuthRefreshGrant(srv.token_url, client_id=LOOPBACK_ID, client_secret=LOOPBACK_SECRET)
        try:
            grant(first, 10.0)
            with pytest.raises(SessionExpiredError) as info:
                grant(first, 10.0)
        finally:
            grant.close()

        assert srv.revoked
    assert info.value.error == "invalid_grant"
    assert info.value.error_description == "Refresh token was already used"


def test_connection_refused_raises_connection_error(previous: Token) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    grant = OAuthRefreshGrant(f"http://127.0.0.1:{port}/token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    try:
        with pytest.raises(requests.ConnectionError) as info:
            grant(previous, 5.0)
    finally:
        grant.close()

    assert not isinstance(info.value, RefreshError)
    assert REFRESH not in str(info.value)


def test_the_test_server_accepts_the_replaced_refresh_token_within_its_reuse_grace() -> None:
    # What docs/hosts.rst says a provider's grace window adds: a late duplicate is not a reuse.
    with AuthServer(rotation="reuse-detection", reuse_grace=60) as srv:
        first = srv.issue()["refresh_token"]
        rotated = requests.post(srv.token_url, data={"grant_type": "refresh_token", "refresh_token": first}, timeout=5)
        again = requests.post(srv.token_url, data={"grant_type": "refresh_token", "refresh_token": first}, timeout=5)
        assert rotated.status_code == again.status_code == 200
        assert again.json()["refresh_token"] == rotated.json()["refresh_token"]  # the current one
        assert not srv.revoked
    with AuthServer(rotation="reuse-detection") as srv:  # no grace: the same duplicate revokes the family
        first = srv.issue()["refresh_token"]
        requests.post(srv.token_url, data={"grant_type": "refresh_token", "refresh_token": first}, timeout=5)
        again = requests.post(srv.token_url, data={"grant_type": "refresh_token", "refresh_token": first}, timeout=5)
        assert again.status_code == 400
        assert srv.revoked


def test_discovery_and_the_token_request_share_one_timeout() -> None:
    # An issuer whose metadata and token endpoint each take 0.6 s: with a 1-s timeout the whole
    # call must end by then, not give each its own second.
    import http.server
    import json
    import threading

    from requests_tokenrefresh._discovery import _clear_cache

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: dict[str, Any]) -> None:
            time.sleep(0.6)
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer({"issuer": issuer, "token_endpoint": issuer + "/token"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer({"access_token": "at-2", "expires_in": 60})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    _clear_cache()
    grant = OAuthRefreshGrant(None, issuer=issuer)
    try:
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            grant(Token("at-1", "rt-1"), 1.0)
        assert time.monotonic() - started < 1.4
        assert grant(Token("at-1", "rt-1"), 2.0).access_token == "at-2"  # metadata cached: one 0.6-s wait
    finally:
        grant.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
        _clear_cache()
