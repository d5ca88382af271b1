"""Client authentication with an assertion (private_key_jwt, RFC 7523; a workload identity token).

Every call the client makes to the authorization server carries a fresh assertion, which the
loopback AuthServer verifies against the registered public key (signature, iss/sub, aud = its
token URL, exp, jti never seen before): refresh, client credentials, the code exchange of the
browser login, the device authorization request and polls, and revocation.
"""

from __future__ import annotations

import html
import io
import logging
import pickle
import re
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from requests_tokenrefresh import (
    ClientAssertion,
    LoginError,
    MemoryStorage,
    PrivateKeyJWT,
    RefreshError,
    Token,
    TokenRefreshAdapter,
    login_browser,
    login_device,
)
from requests_tokenrefresh._client_auth import ASSERTION_LIFETIME, CLIENT_ASSERTION_TYPE
from requests_tokenrefresh._discovery import _clear_cache
from requests_tokenrefresh.login import revoke_token
from requests_tokenrefresh.testing import AuthServer, Canned

CLIENT_ID = "svc"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(params=["RS256", "ES256"])
def keypair(request: pytest.FixtureRequest, rsa_key: Any, ec_key: Any) -> tuple[str, Any]:
    """(alg, private key): an RSA and an EC P-256 key."""
    return request.param, rsa_key if request.param == "RS256" else ec_key


@pytest.fixture
def auth(keypair: tuple[str, Any]) -> Iterator[AuthServer]:
    """A server that accepts only assertions signed by ``keypair``'s key for client ``svc``."""
    _clear_cache()
    with AuthServer(client_id=CLIENT_ID, client_public_key=_public_pem(keypair[1])) as srv:
        yield srv
    _clear_cache()


@pytest.fixture
def client_auth(keypair: tuple[str, Any]) -> PrivateKeyJWT:
    alg, key = keypair
    return PrivateKeyJWT(_pem(key), kid="key-1", alg=alg)


_open: list[TokenRefreshAdapter] = []


@pytest.fixture(autouse=True)
def _close_adapters() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def _adapter(srv: AuthServer, storage: MemoryStorage, **options: Any) -> TokenRefreshAdapter:
    """An adapter on ``srv``'s token endpoint for client ``svc``, closed after the test."""
    options.setdefault("client_id", CLIENT_ID)
    adapter = TokenRefreshAdapter(storage, token_url=srv.token_url, **options)
    _open.append(adapter)
    return adapter


def _assert_verified(srv: AuthServer, endpoints: list[str]) -> None:
    """Each call went to ``endpoints`` with an assertion the server verified, each with its own jti."""
    assert [entry["endpoint"] for entry in srv.assertion_log] == endpoints
    assert srv.assertion_rejections == []
    assert len({entry["jti"] for entry in srv.assertion_log}) == len(endpoints)
    for claims in srv.assertion_log:
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert claims["aud"] == srv.token_url
        assert 0 < claims["exp"] - claims["iat"] <= 60


def _signed(key: Any, srv: AuthServer, **claims: Any) -> str:
    """An assertion issued by someone else (a workload identity's issuer), for ``srv``'s client."""
    now = int(time.time())
    body = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": srv.token_url, "iat": now, "exp": now + 120, **claims}
    body.setdefault("jti", f"jti-{time.monotonic_ns()}")
    return str(jwt.encode(body, key, algorithm="RS256"))


# --- each call site ----------------------------------------------------------------------------


def test_refresh_sends_a_verified_assertion(auth: AuthServer, client_auth: PrivateKeyJWT) -> None:
    adapter = _adapter(auth, MemoryStorage(Token.from_response(auth.issue())), client_auth=client_auth)
    adapter.refresh()
    adapter.refresh()
    _assert_verified(auth, ["/token", "/token"])
    assert [e["status"] for e in auth.token_log] == [200, 200]


def test_client_credentials_send_a_verified_assertion(auth: AuthServer, client_auth: PrivateKeyJWT) -> None:
    adapter = _adapter(auth, MemoryStorage(), grant_type="client_credentials", client_auth=client_auth)
    with requests.Session() as session:
        session.mount(auth.url + "/", adapter)
        assert session.get(auth.url + "/api").status_code == 200
    _assert_verified(auth, ["/token"])


def test_explicit_refresh_on_an_empty_client_credentials_store_mints_once(
    auth: AuthServer, client_auth: PrivateKeyJWT
) -> None:
    storage = MemoryStorage()
    adapter = _adapter(auth, storage, grant_type="client_credentials", client_auth=client_auth)
    token = adapter.refresh()
    assert auth.refresh_calls == 1
    assert storage.load() == token
    assert len(auth._access) == 1  # one access token issued


def _browse(url: str, errors: list[BaseException]) -> None:
    """The user's browser: fetch the login form, press Allow, follow the redirect to the loopback listener."""
    try:
        with requests.Session() as s:
            s.trust_env = False
            page = s.get(url, timeout=10)
            fields = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(page.text)}
            answer = s.post(url.split("?")[0], data={**fields, "approve": "1"}, timeout=10, allow_redirects=False)
            s.get(answer.headers["Location"], timeout=30)
    except BaseException as exc:
        errors.append(exc)


def test_code_exchange_of_the_browser_login_sends_a_verified_assertion(
    auth: AuthServer, client_auth: PrivateKeyJWT, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def open_url(url: str, *args: Any, **kwargs: Any) -> bool:
        threads.append(threading.Thread(target=_browse, args=(url, errors), daemon=True))
        threads[-1].start()
        return True

    monkeypatch.setattr(webbrowser, "open", open_url)
    token = login_browser(
        client_id=CLIENT_ID, issuer=auth.issuer, client_auth=client_auth, stream=io.StringIO(), timeout=30
    )
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert auth.login_log[-1]["grant"] == "authorization_code"
    assert token.access_token in auth._access
    _assert_verified(auth, ["/token"])


def test_device_login_sends_a_verified_assertion_with_every_request(
    auth: AuthServer, client_auth: PrivateKeyJWT
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            auth.approve_device()  # the user approves after the first poll

    token = login_device(
        client_id=CLIENT_ID,
        issuer=auth.issuer,
        client_auth=client_auth,
        stream=io.StringIO(),
        sleep=sleep,
        clock=lambda: 1000.0 + sum(sleeps),
    )
    assert token.access_token in auth._access
    _assert_verified(auth, ["/device_authorization", "/token", "/token"])


def test_logout_revokes_with_a_verified_assertion(auth: AuthServer, client_auth: PrivateKeyJWT) -> None:
    token = Token.from_response(auth.issue())
    adapter = _adapter(auth, MemoryStorage(token), revocation_url=auth.url + "/revoke", client_auth=client_auth)
    adapter.logout()
    _assert_verified(auth, ["/revoke", "/revoke"])
    assert auth.revoked


def test_revoke_token_finds_the_assertion_audience_in_the_issuer_metadata(
    auth: AuthServer, client_auth: PrivateKeyJWT
) -> None:
    revoke_token(Token.from_response(auth.issue()), issuer=auth.issuer, client_id=CLIENT_ID, client_auth=client_auth)
    _assert_verified(auth, ["/revoke", "/revoke"])
    assert auth.revoked


def test_revoke_token_without_an_audience_is_refused_before_any_request(
    auth: AuthServer, client_auth: PrivateKeyJWT
) -> None:
    with pytest.raises(ValueError, match="audience is the token endpoint"):
        revoke_token(
            Token.from_response(auth.issue()),
            revocation_url=auth.url + "/revoke",
            client_id=CLIENT_ID,
            client_auth=client_auth,
        )
    assert auth.revocation_log == []


# --- what the server refuses --------------------------------------------------------------------


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_a_replayed_assertion_is_refused(auth: AuthServer, rsa_key: Any) -> None:
    once = _signed(rsa_key, auth, jti="used-once")
    storage = MemoryStorage()
    adapter = _adapter(auth, storage, grant_type="client_credentials", client_auth=ClientAssertion(lambda: once))
    adapter.refresh()
    with pytest.raises(RefreshError) as info:
        adapter.refresh()
    assert info.value.error == "invalid_client"
    assert auth.assertion_rejections == ["replayed jti"]
    assert once not in str(info.value)


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_a_refresh_without_an_assertion_is_refused(auth: AuthServer) -> None:
    adapter = _adapter(auth, MemoryStorage(Token.from_response(auth.issue())), client_auth="post")
    with pytest.raises(RefreshError) as info:
        adapter.refresh()
    assert info.value.error == "invalid_client"
    assert auth.assertion_rejections == ["no client assertion"]


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "http://127.0.0.1:1/token"}, "InvalidAudienceError"),
        ({"iss": "intruder"}, "InvalidIssuerError"),
        ({"sub": "intruder"}, "sub or client_id is not the client"),
        ({"exp": int(time.time()) - 10}, "ExpiredSignatureError"),
        ({"exp": int(time.time()) + 3600}, "exp too far in the future"),
    ],
    ids=["aud", "iss", "sub", "expired", "too-long"],
)
def test_a_wrong_assertion_is_refused(auth: AuthServer, rsa_key: Any, claims: dict[str, Any], why: str) -> None:
    bad = _signed(rsa_key, auth, **claims)
    adapter = _adapter(auth, MemoryStorage(), grant_type="client_credentials", client_auth=ClientAssertion(lambda: bad))
    with pytest.raises(RefreshError, match="invalid_client"):
        adapter.refresh()
    assert auth.assertion_rejections[0].startswith(why)


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_an_assertion_signed_by_another_key_is_refused(auth: AuthServer, ec_key: Any) -> None:
    adapter = _adapter(
        auth, MemoryStorage(), grant_type="client_credentials", client_auth=PrivateKeyJWT(_pem(ec_key), alg="ES256")
    )
    with pytest.raises(RefreshError, match="invalid_client"):
        adapter.refresh()
    assert auth.assertion_log == []


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keypair", ["ES256"], indirect=True)
def test_threads_on_an_expired_token_share_one_refresh_with_one_assertion(
    auth: AuthServer, client_auth: PrivateKeyJWT
) -> None:
    record = auth.issue()
    old = Token.from_response(record, now=time.time() - 7200)  # expired an hour ago
    adapter = _adapter(auth, MemoryStorage(old), client_auth=client_auth)
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    auth.hold_refresh()

    def call() -> None:
        barrier.wait(timeout=10)
        with requests.Session() as session:
            session.mount(auth.url + "/", adapter)
            statuses.append(session.get(auth.url + "/api", timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while auth.refresh_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the other threads reach the coordinator and wait for the one refresh
    auth.release_refresh()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert statuses == [200] * 8
    assert auth.refresh_calls == 1
    _assert_verified(auth, ["/token"])


# --- ClientAssertion -------------------------------------------------------------------------


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_a_replaced_assertion_file_is_read_again_at_the_next_call(
    auth: AuthServer, rsa_key: Any, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(_signed(rsa_key, auth, jti="first") + "\n")
    adapter = _adapter(auth, MemoryStorage(), grant_type="client_credentials", client_auth=ClientAssertion(path=path))
    adapter.refresh()
    replacement = tmp_path / "token.new"  # as the kubelet does: write aside, then rename over
    replacement.write_text(_signed(rsa_key, auth, jti="second"))
    replacement.replace(path)
    adapter.refresh()
    assert [entry["jti"] for entry in auth.assertion_log] == ["first", "second"]
    assert auth.refresh_calls == 2


def test_an_unreadable_assertion_file_is_a_retryable_refresh_error(tmp_path: Path) -> None:
    with AuthServer(client_id=CLIENT_ID) as srv:
        adapter = _adapter(
            srv,
            MemoryStorage(),
            grant_type="client_credentials",
            client_auth=ClientAssertion(path=tmp_path / "missing"),
            refresh_timeout=0.2,
        )
        with pytest.raises(RefreshError) as info:
            adapter.refresh()
    assert info.value.error == "client_assertion_unavailable"
    assert info.value.retryable
    assert srv.refresh_calls == 0


def test_client_assertion_wants_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ClientAssertion()
    with pytest.raises(ValueError, match="exactly one"):
        ClientAssertion(lambda: "x", path=tmp_path / "t")
    assert repr(ClientAssertion(path="/var/run/secrets/token")) == "ClientAssertion(path='/var/run/secrets/token')"


# --- PrivateKeyJWT itself, and what never shows a key ----------------------------------------


@pytest.mark.parametrize("keypair", ["RS256", "ES256"], indirect=True)
def test_the_assertion_claims_and_header(keypair: tuple[str, Any], client_auth: PrivateKeyJWT) -> None:
    alg, key = keypair
    first = client_auth.assertion(CLIENT_ID, "https://id.example.com/token", 1_700_000_000.5)
    second = client_auth.assertion(CLIENT_ID, "https://id.example.com/token", 1_700_000_000.5)
    header = jwt.get_unverified_header(first)
    claims = jwt.decode(
        first,
        key.public_key(),
        algorithms=[alg],
        audience="https://id.example.com/token",
        options={"verify_exp": False},
    )
    assert header["alg"] == alg
    assert header["kid"] == "key-1"
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_000 + ASSERTION_LIFETIME
    assert claims["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]


def test_the_audience_option_replaces_the_token_endpoint(rsa_key: Any) -> None:
    auth = PrivateKeyJWT(_pem(rsa_key), audience="https://id.example.com")
    claims = jwt.decode(
        auth.assertion(CLIENT_ID, "https://id.example.com/token", time.time()), options={"verify_signature": False}
    )
    assert claims["aud"] == "https://id.example.com"


def test_ps256_signs_with_an_rsa_key(rsa_key: Any) -> None:
    auth = PrivateKeyJWT(_pem(rsa_key).decode(), alg="PS256")
    token = auth.assertion(CLIENT_ID, "https://a.example/token", time.time())
    assert jwt.decode(token, rsa_key.public_key(), algorithms=["PS256"], audience="https://a.example/token")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda rsa_key, ec_key: PrivateKeyJWT(
                b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
            ),
            "not a PEM private key",
        ),
        (lambda rsa_key, ec_key: PrivateKeyJWT(_pem(rsa_key), alg="HS256"), "alg must be one of"),
        (lambda rsa_key, ec_key: PrivateKeyJWT(_pem(rsa_key), alg="none"), "alg must be one of"),
        (lambda rsa_key, ec_key: PrivateKeyJWT(_pem(ec_key), alg="RS256"), "needs an RSA private key"),
        (lambda rsa_key, ec_key: PrivateKeyJWT(_pem(rsa_key), alg="ES256"), "needs an EC private key on P-256"),
        (
            lambda rsa_key, ec_key: PrivateKeyJWT(_pem(ec.generate_private_key(ec.SECP384R1())), alg="ES256"),
            "on secp384r1",
        ),
        (lambda rsa_key, ec_key: PrivateKeyJWT(_pem(rsa_key), password=b"wrong"), "password"),
    ],
    ids=["garbage", "hmac", "none", "ec-for-rs", "rsa-for-es", "p384", "password"],
)
def test_a_bad_key_or_alg_is_a_value_error_without_key_bytes(
    rsa_key: Any, ec_key: Any, make: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make(rsa_key, ec_key)
    text = str(info.value)
    assert "BEGIN" not in text
    assert "c2VjcmV0" not in text
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_a_missing_cryptography_is_an_import_error_naming_the_extra(
    rsa_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.serialization", None)
    with pytest.raises(ImportError, match=r"requests-tokenrefresh\[crypto\]"):
        PrivateKeyJWT(_pem(rsa_key))


@pytest.mark.parametrize("value", [PrivateKeyJWT, ClientAssertion])
def test_a_client_secret_beside_an_assertion_is_a_value_error(rsa_key: Any, value: type) -> None:
    client_auth = PrivateKeyJWT(_pem(rsa_key)) if value is PrivateKeyJWT else ClientAssertion(lambda: "a.b.c")
    with pytest.raises(ValueError, match="client_secret cannot be used"):
        TokenRefreshAdapter(
            MemoryStorage(),
            token_url="https://a.example/token",
            client_id="c",
            client_secret="s",
            client_auth=client_auth,
        )
    with pytest.raises(ValueError, match="client_secret cannot be used"):
        login_device(client_id="c", token_url="https://a.example/token", client_secret="s", client_auth=client_auth)


def test_private_key_jwt_needs_a_client_id(rsa_key: Any) -> None:
    with pytest.raises(ValueError, match="needs client_id"):
        TokenRefreshAdapter(
            MemoryStorage(), token_url="https://a.example/token", client_auth=PrivateKeyJWT(_pem(rsa_key))
        )


def test_an_unknown_client_auth_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="a PrivateKeyJWT or a ClientAssertion"):
        TokenRefreshAdapter(MemoryStorage(), token_url="https://a.example/token", client_auth="private_key_jwt")


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_no_key_or_assertion_in_reprs_logs_or_errors(
    auth: AuthServer,
    client_auth: PrivateKeyJWT,
    rsa_key: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="requests_tokenrefresh")
    key_lines = [line for line in _pem(rsa_key).decode().splitlines() if "-----" not in line]
    sent: list[str] = []
    make = client_auth.assertion
    monkeypatch.setattr(client_auth, "assertion", lambda *args: sent.append(make(*args)) or sent[-1])
    adapter = _adapter(auth, MemoryStorage(Token.from_response(auth.issue())), client_auth=client_auth)
    adapter.refresh()
    auth.canned.append(Canned(401, {"error": "invalid_client"}))
    with pytest.raises(RefreshError) as info:
        adapter.refresh()
    assert len(sent) == 2
    texts = [repr(client_auth), repr(adapter), caplog.text, str(info.value)]
    assert repr(client_auth) == "PrivateKeyJWT(kid='key-1', alg='RS256')"
    assert "PrivateKeyJWT(kid='key-1', alg='RS256')" in repr(adapter)
    for text in texts:
        for secret in key_lines + [part for assertion in sent for part in assertion.split(".")]:
            assert secret not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(client_auth)


@pytest.mark.parametrize("keypair", ["RS256"], indirect=True)
def test_an_echoed_assertion_is_scrubbed_from_the_error(auth: AuthServer, rsa_key: Any) -> None:
    sent = _signed(rsa_key, auth)
    auth.canned.append(Canned(401, {"error": "invalid_client", "error_description": f"bad assertion {sent}"}))
    adapter = _adapter(
        auth, MemoryStorage(), grant_type="client_credentials", client_auth=ClientAssertion(lambda: sent)
    )
    with pytest.raises(RefreshError) as info:
        adapter.refresh()
    assert info.value.error == "invalid_client"
    assert sent not in str(info.value)


def test_login_errors_scrub_an_echoed_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    with AuthServer() as srv:
        sent = "header.payload-of-a-workload-token.signature"
        srv.canned.append(Canned(400, {"error": "invalid_client", "error_description": f"no: {sent}"}))
        srv.device_interval = 0
        with pytest.raises(LoginError) as info:
            login_device(
                client_id=CLIENT_ID,
                issuer=srv.issuer,
                client_auth=ClientAssertion(lambda: sent),
                stream=io.StringIO(),
                sleep=lambda s: None,
                clock=time.monotonic,
            )
    assert info.value.error == "invalid_client"
    assert sent not in str(info.value)
    assert CLIENT_ASSERTION_TYPE  # the constant tests and servers use


# -- the method, chosen from the issuer's metadata ----------------------------------------------


def _issuer_with_methods(mock: Any, host: str, methods: list[str], **extra: Any) -> str:
    """Mock an issuer at ``host`` whose metadata lists ``methods``; return its URL."""
    issuer = f"https://{host}"
    document = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "token_endpoint_auth_methods_supported": methods,
        **extra,
    }
    mock.get(f"{issuer}/.well-known/openid-configuration", json=document)
    mock.post(f"{issuer}/token", json={"access_token": "at-2", "expires_in": 60})
    mock.post(f"{issuer}/mtls/token", json={"access_token": "at-3", "expires_in": 60})
    return issuer


def _token_calls(mock: Any) -> list[Any]:
    return [c.request for c in mock.calls if c.request.method == "POST"]


@pytest.mark.parametrize(
    ("methods", "where"),
    [
        (["client_secret_post", "private_key_jwt"], "body"),
        (["client_secret_basic", "client_secret_post"], "header"),
        ([], "header"),  # the server does not say: basic
    ],
)
def test_a_method_not_given_is_chosen_from_the_metadata(methods: list[str], where: str) -> None:
    import responses

    _clear_cache()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        issuer = _issuer_with_methods(mock, "choose.example", methods)
        adapter = TokenRefreshAdapter(
            MemoryStorage(Token("at-1", "rt-1")), issuer=issuer, client_id="cli", client_secret="s3cret"
        )
        adapter.refresh()
        (sent,) = _token_calls(mock)
    in_body = "client_secret=s3cret" in (sent.body or "")
    assert in_body == (where == "body")
    assert ("Authorization" in sent.headers) == (where == "header")


def test_a_method_the_server_does_not_list_is_refused_before_any_secret_is_sent() -> None:
    import responses

    _clear_cache()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        issuer = _issuer_with_methods(mock, "refuse.example", ["private_key_jwt", "tls_client_auth"])
        adapter = TokenRefreshAdapter(
            MemoryStorage(Token("at-1", "rt-1")),
            issuer=issuer,
            client_id="cli",
            client_secret="s3cret",
            client_auth="post",
        )
        with pytest.raises(RefreshError, match=r"unsupported_client_auth.*client_secret_post") as caught:
            adapter.refresh()
        assert not _token_calls(mock)
    assert not caught.value.retryable
    assert "s3cret" not in str(caught.value)


def test_a_client_certificate_uses_the_mtls_alias_and_needs_no_secret(tmp_path: Path) -> None:
    import responses

    _clear_cache()
    cert = tmp_path / "client.pem"
    cert.write_text("unused by the mock")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        issuer = _issuer_with_methods(
            mock,
            "mtls.example",
            ["self_signed_tls_client_auth"],
            mtls_endpoint_aliases={"token_endpoint": "https://mtls.example/mtls/token"},
        )
        adapter = TokenRefreshAdapter(
            MemoryStorage(Token("at-1", "rt-1")), issuer=issuer, client_id="cli", client_cert=str(cert)
        )
        assert adapter.refresh().access_token == "at-3"
        (sent,) = _token_calls(mock)
    assert sent.url == "https://mtls.example/mtls/token"
    assert "client_id=cli" in (sent.body or "")
    assert "Authorization" not in sent.headers


def test_a_bad_client_cert_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="client_cert must be"):
        TokenRefreshAdapter(MemoryStorage(), token_url="https://a.example/token", client_cert=("only-one",))  # type: ignore[arg-type]


def _encrypted_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a password"),
        )
    )


def test_a_certificate_file_that_names_encrypted_in_its_text_is_not_taken_for_a_password(tmp_path: Path) -> None:
    # As `openssl pkcs12 -nodes` writes a certificate with its key: attribute lines before each block.
    import trustme

    issued = trustme.CA().issue_cert("client.invalid", common_name="backup-ENCRYPTED-volumes")
    path = tmp_path / "client.pem"
    attributes = b"Bag Attributes\n    friendlyName: backup-ENCRYPTED-volumes\n"
    path.write_bytes(attributes + issued.cert_chain_pems[0].bytes() + attributes + issued.private_key_pem.bytes())
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url="https://a.example/token", client_cert=str(path))
    assert adapter._settings.client_cert == str(path)


@pytest.mark.parametrize("problem", ["no certificate file", "no key file", "a key with a password"])
def test_a_client_cert_requests_cannot_use_is_refused_at_construction(problem: str, tmp_path: Path) -> None:
    # Before: a missing file was an OSError from deep inside the first request, and a key with a
    # password a RefreshError (SSLError) after a second of retries.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    if problem == "no certificate file":
        cert.unlink()
        key.write_text("-----BEGIN PRIVATE KEY-----\n")
        match = "no file at"
    elif problem == "no key file":
        match = "no file at"
    else:
        _encrypted_key(key)
        match = "the key in .* has a password"
    pair = (str(cert), str(key))
    with pytest.raises(ValueError, match=f"client_cert: {match}"):
        TokenRefreshAdapter(MemoryStorage(), token_url="https://a.example/token", client_cert=pair)
    with pytest.raises(ValueError, match=f"client_cert: {match}"):
        login_device(
            storage=MemoryStorage(), device_authorization_url="https://a.example/device",
            token_url="https://a.example/token", client_id="cli", client_cert=pair,
        )  # fmt: skip
