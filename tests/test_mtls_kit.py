"""Mutual TLS (RFC 8705) end to end against the testing kit's TLS mode: client authentication by
certificate at the token endpoint, and certificate-bound access tokens sent on connections that
present the same certificate, across expiries, from many threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter, logout
from requests_tokenrefresh.testing import AuthServer

from .storm_support import storm


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthServer]:
    with AuthServer(tls=True, client_cert_auth=True, client_id="svc", ttl=2) as srv:
        # The token requests go out on the adapter's private session: it trusts what requests
        # trusts, here the kit's CA.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.ca_path))
        yield srv


def adapter_for(server: AuthServer, cert: Any, **options: Any) -> TokenRefreshAdapter:
    return TokenRefreshAdapter(
        MemoryStorage(),
        token_url=server.token_url,
        grant_type="client_credentials",
        client_id="svc",
        client_cert=cert,
        pool_maxsize=8,
        **options,
    )


def test_client_credentials_by_certificate_and_bound_tokens_across_expiries(server: AuthServer) -> None:
    cert = server.issue_client_cert()
    adapter = adapter_for(server, cert)
    session = requests.Session()
    session.verify = str(server.ca_path)
    session.mount(server.url + "/", adapter)
    try:
        outcomes = storm([session], server.url + "/items", threads=6, seconds=3)
    finally:
        adapter.close()
        session.close()
    assert outcomes["ok"] > 50
    assert set(outcomes) == {"ok"}, outcomes  # every bound token went out with its certificate
    with server.lock:
        grants = [e for e in server.token_log if e["status"] == 200]
    assert 2 <= len(grants) <= 6  # about one per expiry of the 2-s tokens, never one per thread


def test_a_bound_token_is_refused_on_a_connection_without_its_certificate(server: AuthServer) -> None:
    cert = server.issue_client_cert()
    adapter = adapter_for(server, cert)
    token = adapter.refresh()
    adapter.close()
    plain = requests.get(
        server.url + "/items",
        headers={"Authorization": f"Bearer {token.access_token}"},
        verify=server.ca_path,
        timeout=10,
    )
    assert plain.status_code == 401  # the kit checks the binding: the adapter's 200s above are not luck


def test_a_token_request_without_a_certificate_is_refused(server: AuthServer) -> None:
    adapter = adapter_for(server, None)
    from requests_tokenrefresh import RefreshError

    with pytest.raises(RefreshError, match="invalid_client"):
        adapter.refresh()
    adapter.close()


def test_the_issuer_metadata_sends_token_requests_to_the_mtls_alias(server: AuthServer) -> None:
    server.mtls_aliases = True
    cert = server.issue_client_cert()
    adapter = TokenRefreshAdapter(
        MemoryStorage(), issuer=server.issuer, grant_type="client_credentials", client_id="svc", client_cert=cert
    )
    adapter.refresh()
    adapter.close()
    assert adapter._grant.token_url == server.url + "/mtls/token"  # type: ignore[union-attr]
    assert server.metadata()["mtls_endpoint_aliases"]["token_endpoint"] == adapter._grant.token_url  # type: ignore[union-attr]


def test_logout_revokes_with_the_certificate(server: AuthServer) -> None:
    cert = server.issue_client_cert()
    token = Token.from_response(server.issue())
    assert logout(MemoryStorage(token), issuer=server.issuer, client_id="svc", client_cert=cert)
    assert [e["token"] for e in server.revocation_log][:1] == [token.refresh_token or token.access_token]


def test_private_key_jwt_over_the_mtls_alias_names_the_token_endpoint_as_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With mtls_endpoint_aliases the token requests go to the alias; the assertion's aud is the
    # metadata's token_endpoint, as revocation's and the logins' are.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from requests_tokenrefresh import PrivateKeyJWT
    from requests_tokenrefresh.login import revoke_token

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with AuthServer(tls=True, client_cert_auth=True, client_id="svc", client_public_key=public) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
        server.mtls_aliases = True
        cert = server.issue_client_cert()
        adapter = TokenRefreshAdapter(
            MemoryStorage(), issuer=server.issuer, grant_type="client_credentials", client_id="svc",
            client_auth=PrivateKeyJWT(pem, alg="ES256"), client_cert=cert,
        )  # fmt: skip
        try:
            token = adapter.refresh()
            adapter.logout()  # revokes with an assertion of its own
        finally:
            adapter.close()
        client_auth = PrivateKeyJWT(pem, alg="ES256")
        revoke_token(token, issuer=server.issuer, client_id="svc", client_auth=client_auth, client_cert=cert)
        with server.lock:
            audiences = {(entry["endpoint"], entry["aud"]) for entry in server.assertion_log}
            revocations = [entry for entry in server.assertion_log if entry["endpoint"] == "/revoke"]
            rejections = list(server.assertion_rejections)
    assert rejections == []
    # (The kit logs the alias's requests as /token's: it serves both alike.)
    assert audiences == {("/token", server.token_url), ("/revoke", server.token_url)}
    assert len(revocations) >= 2  # adapter.logout()'s and revoke_token's
