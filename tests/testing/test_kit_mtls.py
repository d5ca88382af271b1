"""The kit's AuthServer over TLS, and with mutual TLS (RFC 8705): client certificates and bound tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from requests_tokenrefresh.testing import AuthServer

CLIENT_ID = "svc"


def thumbprint(cert_path: str) -> str:
    """RFC 8705 §3.1's x5t#S256 of the certificate in a PEM file, computed here rather than by the kit."""
    der = x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


@pytest.fixture
def server() -> Iterator[AuthServer]:
    with AuthServer(tls=True, client_cert_auth=True, client_id=CLIENT_ID, jwt=True) as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    # Each call passes verify=server.ca_path: a Session's own verify is overridden by
    # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE when either is set (requests issue 3829).
    with requests.Session() as s:
        yield s


def client_credentials(
    server: AuthServer, session: requests.Session, cert: tuple[str, str] | None, **form: str
) -> requests.Response:
    body = {"grant_type": "client_credentials", "client_id": CLIENT_ID, **form}
    return session.post(server.token_url, data=body, cert=cert, verify=server.ca_path, timeout=10)


# --- TLS ---------------------------------------------------------------------------------------


def test_https_is_served_with_a_certificate_of_the_kits_ca() -> None:
    with AuthServer(tls=True) as server, requests.Session() as session:
        ca_path = server.ca_path
        assert ca_path is not None
        trusted = session.get(server.url + "/.well-known/openid-configuration", verify=ca_path, timeout=10)
        with pytest.raises(requests.exceptions.SSLError):
            session.get(server.url + "/.well-known/openid-configuration", verify=True, timeout=10)
        assert os.path.exists(ca_path)

    assert server.url.startswith("https://127.0.0.1:")
    assert isinstance(server.ca, trustme.CA)
    assert trusted.status_code == 200
    assert trusted.json()["token_endpoint"] == server.url + "/token"
    assert not os.path.exists(ca_path)  # removed at stop


def test_a_plain_server_has_no_ca_and_issues_no_client_certificate() -> None:
    server = AuthServer()
    try:
        assert (server.ca, server.ca_path) == (None, None)
        assert server.url.startswith("http://")
        with pytest.raises(RuntimeError, match="tls=True"):
            server.issue_client_cert()
    finally:
        server.stop()


def test_client_cert_auth_needs_tls() -> None:
    with pytest.raises(ValueError, match="client_cert_auth needs tls=True"):
        AuthServer(client_cert_auth=True)


def test_without_trustme_tls_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme now raises ImportError

    with pytest.raises(ImportError, match="pip install trustme"):
        AuthServer(tls=True)


def test_a_client_that_never_shakes_hands_holds_up_no_other() -> None:
    with AuthServer(tls=True) as server, requests.Session() as session:
        host, port = server.url.removeprefix("https://").split(":")
        with socket.create_connection((host, int(port)), timeout=10):  # connects, says nothing
            started = time.monotonic()
            answer = session.get(server.url + "/.well-known/openid-configuration", verify=server.ca_path, timeout=10)
            took = time.monotonic() - started

    assert answer.status_code == 200
    assert took < 5  # the silent client's handshake waits in its own thread


def test_a_tls_server_stops_at_once_with_a_connection_open() -> None:
    with AuthServer(tls=True) as server, requests.Session() as session:
        assert session.get(server.url + "/x", verify=server.ca_path, timeout=10).status_code == 401  # kept alive
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started

    assert took < 1


# --- mutual TLS at the token endpoint ----------------------------------------------------------


def test_a_client_certificate_authenticates_the_client_and_binds_its_token(
    server: AuthServer, session: requests.Session
) -> None:
    cert = server.issue_client_cert()

    granted = client_credentials(server, session, cert)

    assert granted.status_code == 200, granted.text
    assert granted.json()["token_type"] == "Bearer"  # RFC 8705 §3: the type stays Bearer
    assert claims_of(granted.json()["access_token"])["cnf"] == {"x5t#S256": thumbprint(cert[0])}


REFUSED = ["no certificate", "another client's certificate", "no client_id", "another client_id", "a Basic header too"]


@pytest.mark.parametrize("case", REFUSED)
def test_a_token_request_without_the_clients_certificate_is_refused(
    case: str, server: AuthServer, session: requests.Session
) -> None:
    cert = server.issue_client_cert()
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    headers: dict[str, str] = {}
    sent_cert: tuple[str, str] | None = cert
    if case == "no certificate":
        sent_cert = None
    elif case == "another client's certificate":
        sent_cert = server.issue_client_cert("other")  # of the same CA, for CN=other
    elif case == "no client_id":
        del form["client_id"]
    elif case == "another client_id":
        form["client_id"] = "other"
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(b"svc:").decode()

    refused = session.post(
        server.token_url, data=form, cert=sent_cert, headers=headers, verify=server.ca_path, timeout=10
    )
    granted = client_credentials(server, session, cert)

    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert granted.status_code == 200


def test_a_refresh_over_mutual_tls_binds_the_new_access_token() -> None:
    with AuthServer(tls=True, client_cert_auth=True, jwt=True) as server, requests.Session() as session:
        cert = server.issue_client_cert("public-client")
        login = server.issue()
        form = {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
        answer = session.post(server.token_url, data=form, cert=cert, verify=server.ca_path, timeout=10)
        expected = thumbprint(cert[0])  # before stop() removes the file

    assert "cnf" not in claims_of(login["access_token"])
    assert answer.status_code == 200, answer.text
    assert claims_of(answer.json()["access_token"])["cnf"] == {"x5t#S256": expected}


def test_a_certificate_of_another_ca_is_refused(server: AuthServer, session: requests.Session, tmp_path: Path) -> None:
    stranger = trustme.CA().issue_cert("client")
    cert_path, key_path = str(tmp_path / "c.pem"), str(tmp_path / "c.key")
    stranger.cert_chain_pems[0].write_to_path(cert_path)
    stranger.private_key_pem.write_to_path(key_path)

    with pytest.raises(requests.exceptions.ConnectionError):  # the TLS layer refuses it (SSLError is one)
        client_credentials(server, session, (cert_path, key_path))
    assert server.refresh_calls == 0


def test_the_metadata_advertises_mutual_tls_and_its_alias(server: AuthServer, session: requests.Session) -> None:
    cert = server.issue_client_cert()
    metadata_url = server.url + "/.well-known/oauth-authorization-server"
    without = session.get(metadata_url, verify=server.ca_path, timeout=10).json()
    server.mtls_aliases = True
    document = session.get(metadata_url, verify=server.ca_path, timeout=10).json()
    alias = document["mtls_endpoint_aliases"]["token_endpoint"]
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    granted = session.post(alias, data=form, cert=cert, verify=server.ca_path, timeout=10)

    assert "mtls_endpoint_aliases" not in without
    assert document["tls_client_certificate_bound_access_tokens"] is True
    assert "tls_client_auth" in document["token_endpoint_auth_methods_supported"]
    assert alias == server.url + "/mtls/token"
    assert granted.status_code == 200, granted.text
    assert claims_of(granted.json()["access_token"])["cnf"] == {"x5t#S256": thumbprint(cert[0])}


# --- the protected API -------------------------------------------------------------------------


@pytest.mark.parametrize("presented", ["no certificate", "another certificate"])
def test_the_api_wants_a_bound_token_on_a_connection_with_its_certificate(
    presented: str, server: AuthServer, session: requests.Session
) -> None:
    cert, other = server.issue_client_cert(), server.issue_client_cert("other")
    token = client_credentials(server, session, cert).json()["access_token"]
    bearer = {"Authorization": "Bearer " + token}

    # A session per certificate: a connection is kept alive with the certificate it was opened with.
    with requests.Session() as elsewhere:
        refused = elsewhere.get(
            server.url + "/items",
            headers=bearer,
            cert=other if presented == "another certificate" else None,
            verify=server.ca_path,
            timeout=10,
        )
    accepted = session.get(server.url + "/items", headers=bearer, cert=cert, verify=server.ca_path, timeout=10)

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert accepted.status_code == 200
    assert (server.api_calls, server.api_rejections) == (2, 1)


def test_an_unbound_token_needs_no_certificate(server: AuthServer, session: requests.Session) -> None:
    token = server.issue()["access_token"]

    answer = session.get(
        server.url + "/items", headers={"Authorization": "Bearer " + token}, verify=server.ca_path, timeout=10
    )

    assert answer.status_code == 200


def test_dpop_over_tls_checks_the_https_url() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))

    def proof(url: str) -> str:
        claims = {"htm": "POST", "htu": url, "iat": int(time.time()), "jti": os.urandom(8).hex()}
        return str(jwt.encode(claims, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk}))

    with AuthServer(tls=True, dpop=True) as server, requests.Session() as session:
        form = {"grant_type": "refresh_token", "refresh_token": server.issue()["refresh_token"]}

        def post(url: str) -> requests.Response:
            return session.post(
                server.token_url, data=form, headers={"DPoP": proof(url)}, verify=server.ca_path, timeout=10
            )

        plain = post(server.token_url.replace("https://", "http://"))
        secure = post(server.token_url)

    assert (plain.status_code, plain.json()["error"]) == (400, "invalid_dpop_proof")
    assert secure.status_code == 200
    assert secure.json()["token_type"] == "DPoP"
