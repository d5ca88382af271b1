"""The kit's AuthServer in DPoP mode (RFC 9449): what it accepts, what it refuses, and how it binds.

The proofs here are made by the tests themselves (PyJWT and cryptography, :class:`Prover`), not by
the package's client, so that the server is checked against the RFC rather than against the
client it is meant to test.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from requests_tokenrefresh.testing import AuthServer
from requests_tokenrefresh.testing._dpop import jwk_thumbprint


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Prover:
    """A client's DPoP key: makes proofs (RFC 9449 §4.2) and knows its thumbprint (RFC 7638)."""

    def __init__(self, alg: str = "ES256", key: Any = None) -> None:
        self.alg = alg
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
        self.key = key
        algorithm = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
        self.jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
        self.jwk.pop("alg", None)  # some PyJWT versions add it; the thumbprint does not use it
        members = ("crv", "kty", "x", "y") if self.jwk["kty"] == "EC" else ("e", "kty", "n")
        canonical = json.dumps({m: self.jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
        self.jkt = b64(hashlib.sha256(canonical.encode()).digest())

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        token: str | None = None,
        header: dict[str, Any] | None = None,
        signer: Any = None,
        **claims: Any,
    ) -> str:
        """A proof for ``method`` ``url``; ``token`` adds its ``ath``; ``claims`` add or replace claims."""
        body: dict[str, Any] = {"htm": method, "htu": url, "iat": int(time.time()), "jti": str(uuid.uuid4())}
        if nonce is not None:
            body["nonce"] = nonce
        if token is not None:
            body["ath"] = b64(hashlib.sha256(token.encode()).digest())
        body.update(claims)
        headers = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return str(jwt.encode(body, signer or self.key, algorithm=self.alg, headers=headers))


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def prover() -> Prover:
    return Prover()


@pytest.fixture(scope="module")
def other() -> Prover:
    return Prover()


@pytest.fixture
def server() -> Iterator[AuthServer]:
    with AuthServer(dpop=True, jwt=True) as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def refresh(
    server: AuthServer, session: requests.Session, refresh_token: str, proof: str | None, **headers: str
) -> requests.Response:
    if proof is not None:
        headers["DPoP"] = proof
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return session.post(server.token_url, data=form, headers=headers, timeout=10)


def call_api(
    session: requests.Session, url: str, token: str, proof: str | None, scheme: str = "DPoP"
) -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return session.get(url, headers=headers, timeout=10)


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


# --- the token endpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_a_valid_proof_gets_a_dpop_token_bound_to_its_key(
    alg: str, rsa_key: Any, server: AuthServer, session: requests.Session
) -> None:
    client = Prover(alg, None if alg == "ES256" else rsa_key)
    rt = server.issue()["refresh_token"]

    answer = refresh(server, session, rt, client.proof("POST", server.token_url))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": client.jkt}
    assert server.dpop_log == [
        {
            "kind": "token",
            "endpoint": "/token",
            "jkt": client.jkt,
            "htm": "POST",
            "htu": server.token_url,
            "nonce": False,
        }
    ]
    assert server.dpop_rejections == []
    assert "DPoP-Nonce" not in answer.headers  # nonces are off by default


def test_the_opaque_token_is_bound_server_side(prover: Prover, session: requests.Session) -> None:
    with AuthServer(dpop=True) as server:
        rt = server.issue()["refresh_token"]
        body = refresh(server, session, rt, prover.proof("POST", server.token_url)).json()
        token, url = body["access_token"], server.url + "/items"

        bearer = call_api(session, url, token, None, scheme="Bearer")
        bound = call_api(session, url, token, prover.proof("GET", url, token=token))

    assert not token.count(".")  # opaque: the binding is only in the server's table
    assert (bearer.status_code, bound.status_code) == (401, 200)


def test_a_token_request_without_a_proof_is_refused_and_spends_nothing(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    rt = server.issue()["refresh_token"]

    refused = refresh(server, session, rt, None)
    granted = refresh(server, session, rt, prover.proof("POST", server.token_url))

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_dpop_proof"
    assert server.dpop_rejections == ["no DPoP proof"]
    assert granted.status_code == 200  # the refused request did not spend the refresh token
    assert not server.revoked


def test_dpop_not_required_grants_bearer_tokens_to_requests_without_a_proof(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    server.dpop_required = False
    bearer = refresh(server, session, server.issue()["refresh_token"], None)
    dpop = refresh(server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url))
    refused = refresh(server, session, server.issue()["refresh_token"], "not.a.proof")

    assert bearer.status_code == dpop.status_code == 200
    assert (bearer.json()["token_type"], dpop.json()["token_type"]) == ("Bearer", "DPoP")
    assert "cnf" not in claims_of(bearer.json()["access_token"])
    assert refused.json()["error"] == "invalid_dpop_proof"  # a proof sent is still checked


def _flawed(prover: Prover, other: Prover, url: str, flaw: str) -> list[str]:
    """The DPoP header(s) of a token request to ``url`` with one flaw."""
    private = {**prover.jwk, "d": b64(b"x" * 32)}
    return {
        "wrong htm": [prover.proof("GET", url)],
        "wrong htu": [prover.proof("POST", url.replace("/token", "/other"))],
        "other port": [prover.proof("POST", url.replace(f":{urlsplit(url).port}/", ":1/"))],
        "htu with query": [prover.proof("POST", url + "?a=1")],
        "stale iat": [prover.proof("POST", url, iat=int(time.time()) - 120)],
        "future iat": [prover.proof("POST", url, iat=int(time.time()) + 120)],
        "no jti": [prover.proof("POST", url, jti="")],
        "bad signature": [prover.proof("POST", url, signer=other.key)],
        "private key in jwk": [prover.proof("POST", url, header={"jwk": private})],
        "typ JWT": [prover.proof("POST", url, header={"typ": "JWT"})],
        "no jwk": [
            jwt.encode(
                {"htm": "POST", "htu": url, "iat": int(time.time()), "jti": "x"},
                prover.key,
                algorithm="ES256",
                headers={"typ": "dpop+jwt"},
            )
        ],
        "HS256": [
            jwt.encode(
                {"htm": "POST", "htu": url, "iat": int(time.time()), "jti": "y"},
                "k" * 32,
                algorithm="HS256",
                headers={"typ": "dpop+jwt", "jwk": prover.jwk},
            )
        ],
        "two proofs": [prover.proof("POST", url), prover.proof("POST", url)],
        "not a JWT": ["garbage"],
    }[flaw]


# Each flaw, and the start of the reason the server gives for refusing it.
FLAWS = {
    "wrong htm": "htm is not the request's method",
    "wrong htu": "htu is not the request's URL",
    "other port": "htu is not the request's URL",
    "htu with query": "htu is not a URL without query and fragment",
    "stale iat": "iat outside the accepted window",
    "future iat": "iat outside the accepted window",
    "no jti": "no jti",
    "bad signature": "InvalidSignatureError",
    "private key in jwk": "jwk holds a private key",
    "typ JWT": "typ is not dpop+jwt",
    "no jwk": "jwk missing",
    "HS256": "alg not supported",
    "two proofs": "expected exactly one DPoP header",
    "not a JWT": "malformed proof",
}


@pytest.mark.parametrize(("flaw", "reason"), FLAWS.items(), ids=list(FLAWS))
def test_a_flawed_proof_is_refused_and_the_same_request_with_a_sound_one_is_granted(
    flaw: str, reason: str, prover: Prover, other: Prover, server: AuthServer
) -> None:
    rt = server.issue()["refresh_token"]

    refused = _post_token(
        server, f"grant_type=refresh_token&refresh_token={rt}", _flawed(prover, other, server.token_url, flaw)
    )
    with requests.Session() as session:
        granted = refresh(server, session, rt, prover.proof("POST", server.token_url))

    assert refused[0] == 400, refused
    assert refused[1]["error"] == "invalid_dpop_proof"
    assert len(server.dpop_rejections) == 1
    assert server.dpop_rejections[0].startswith(reason), server.dpop_rejections
    assert granted.status_code == 200
    assert [entry["status"] for entry in server.token_log] == [400, 200]


def _post_token(server: AuthServer, form: str, proofs: list[str]) -> tuple[int, Any]:
    """POST ``form`` to the token endpoint with one ``DPoP`` header per proof (requests would merge them)."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.putrequest("POST", "/token")
        connection.putheader("Content-Type", "application/x-www-form-urlencoded")
        connection.putheader("Content-Length", str(len(form)))
        for proof in proofs:
            connection.putheader("DPoP", proof)
        connection.endheaders(form.encode())
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_replayed_proof_is_refused(prover: Prover, server: AuthServer, session: requests.Session) -> None:
    proof = prover.proof("POST", server.token_url)
    first = refresh(server, session, server.issue()["refresh_token"], proof)
    again = refresh(server, session, server.issue()["refresh_token"], proof)

    assert first.status_code == 200
    assert (again.status_code, again.json()["error"]) == (400, "invalid_dpop_proof")
    assert server.dpop_rejections == ["replayed jti"]


def test_the_htu_compares_scheme_and_host_case_insensitively(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    shouting = server.token_url.replace("http://", "HTTP://")
    answer = refresh(server, session, server.issue()["refresh_token"], prover.proof("POST", shouting))

    assert answer.status_code == 200, answer.text


def test_a_refresh_with_another_key_is_refused_without_revoking_the_family(
    prover: Prover, other: Prover, server: AuthServer, session: requests.Session
) -> None:
    rt = refresh(server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url)).json()[
        "refresh_token"
    ]

    stolen = refresh(server, session, rt, other.proof("POST", server.token_url))
    owner = refresh(server, session, rt, prover.proof("POST", server.token_url))

    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert not server.revoked
    assert owner.status_code == 200
    assert claims_of(owner.json()["access_token"])["cnf"] == {"jkt": prover.jkt}


def test_a_family_issued_with_a_key_wants_that_key_from_the_first_refresh(
    prover: Prover, other: Prover, server: AuthServer, session: requests.Session
) -> None:
    login = server.issue(cnf={"jkt": prover.jkt})
    rt = login["refresh_token"]

    stolen = refresh(server, session, rt, other.proof("POST", server.token_url))
    owner = refresh(server, session, rt, prover.proof("POST", server.token_url))

    assert login["token_type"] == "DPoP"
    assert claims_of(login["access_token"])["cnf"] == {"jkt": prover.jkt}
    assert (stolen.status_code, owner.status_code) == (400, 200)


def test_a_bound_family_refused_a_bearer_refresh(prover: Prover, server: AuthServer, session: requests.Session) -> None:
    server.dpop_required = False
    rt = server.issue(cnf={"jkt": prover.jkt})["refresh_token"]

    answer = refresh(server, session, rt, None)

    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def _code(server: AuthServer, session: requests.Session, verifier: str, **params: str) -> str:
    form = {
        "response_type": "code",
        "redirect_uri": "http://127.0.0.1:9/callback",
        "code_challenge": b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
        "state": "s",
        "approve": "1",
        **params,
    }
    answer = session.post(server.url + "/authorize", data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def test_a_code_requested_with_dpop_jkt_is_redeemed_only_with_that_key(
    prover: Prover, other: Prover, server: AuthServer, session: requests.Session
) -> None:
    verifier = "v" * 43

    def exchange(code: str, client: Prover) -> requests.Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/callback"}
        headers = {"DPoP": client.proof("POST", server.token_url)}
        return session.post(server.token_url, data={**form, "code_verifier": verifier}, headers=headers, timeout=10)

    wrong = exchange(_code(server, session, verifier, dpop_jkt=prover.jkt), other)
    right = exchange(_code(server, session, verifier, dpop_jkt=prover.jkt), prover)
    unpinned = exchange(_code(server, session, verifier), other)

    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    assert right.status_code == 200
    assert claims_of(right.json()["access_token"])["cnf"] == {"jkt": prover.jkt}
    assert claims_of(unpinned.json()["access_token"])["cnf"] == {"jkt": other.jkt}


@pytest.mark.parametrize("grant", ["client_credentials", "device_code"])
def test_every_grant_needs_a_proof_and_binds_its_tokens(grant: str, prover: Prover, session: requests.Session) -> None:
    with AuthServer(dpop=True, jwt=True, client_id="app", client_secret="s3cret") as server:
        if grant == "client_credentials":
            form = {"grant_type": "client_credentials"}
        else:
            form = {"client_id": "app", "client_secret": "s3cret"}
            device = session.post(server.url + "/device_authorization", data=form, timeout=10).json()
            server.approve_device()
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device["device_code"]}

        def grant_with(headers: dict[str, str]) -> requests.Response:
            return session.post(server.token_url, data=form, auth=("app", "s3cret"), headers=headers, timeout=10)

        refused = grant_with({})
        granted = grant_with({"DPoP": prover.proof("POST", server.token_url)})

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_dpop_proof")
    assert granted.status_code == 200, granted.text
    assert granted.json()["token_type"] == "DPoP"
    assert claims_of(granted.json()["access_token"])["cnf"] == {"jkt": prover.jkt}


def test_the_metadata_advertises_the_proof_algorithms(session: requests.Session) -> None:
    with AuthServer(dpop=True) as dpop, AuthServer() as plain:
        advertised = session.get(dpop.url + "/.well-known/oauth-authorization-server", timeout=10).json()
        absent = session.get(plain.url + "/.well-known/oauth-authorization-server", timeout=10).json()

    assert advertised["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256"]
    assert "dpop_signing_alg_values_supported" not in absent


# --- the protected API -------------------------------------------------------------------------


@pytest.fixture
def bound(prover: Prover, server: AuthServer, session: requests.Session) -> str:
    """An access token bound to ``prover``'s key."""
    answer = refresh(server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url))
    token: str = answer.json()["access_token"]
    return token


def test_the_api_accepts_a_bound_token_with_its_proof(
    prover: Prover, server: AuthServer, session: requests.Session, bound: str
) -> None:
    url = server.url + "/items/1?page=2"
    answer = call_api(session, url, bound, prover.proof("GET", server.url + "/items/1", token=bound))

    assert answer.status_code == 200, answer.text
    assert server.dpop_log[-1] == {
        "kind": "api",
        "endpoint": "/items/1",
        "jkt": prover.jkt,
        "htm": "GET",
        "htu": server.url + "/items/1",
        "nonce": False,
    }


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("sent as Bearer", "invalid_token"),
        ("no proof", "invalid_dpop_proof"),
        ("no ath", "invalid_dpop_proof"),
        ("wrong ath", "invalid_dpop_proof"),
        ("wrong htm", "invalid_dpop_proof"),
        ("wrong htu", "invalid_dpop_proof"),
        ("another key", "invalid_token"),
    ],
)
def test_the_api_refuses_a_bound_token_without_its_proof(
    case: str, error: str, prover: Prover, other: Prover, server: AuthServer, session: requests.Session, bound: str
) -> None:
    url = server.url + "/items"
    scheme, proof = {
        "sent as Bearer": ("Bearer", prover.proof("GET", url, token=bound)),
        "no proof": ("DPoP", None),
        "no ath": ("DPoP", prover.proof("GET", url)),
        "wrong ath": ("DPoP", prover.proof("GET", url, token=bound + "x")),
        "wrong htm": ("DPoP", prover.proof("POST", url, token=bound)),
        "wrong htu": ("DPoP", prover.proof("GET", url + "/2", token=bound)),
        "another key": ("DPoP", other.proof("GET", url, token=bound)),
    }[case]

    refused = call_api(session, url, bound, proof, scheme)
    accepted = call_api(session, url, bound, prover.proof("GET", url, token=bound))

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == f'DPoP error="{error}"'
    assert refused.json() == {"error": error}
    assert accepted.status_code == 200
    assert (server.api_calls, server.api_rejections) == (2, 1)


def test_the_api_refuses_an_unbound_token_sent_as_dpop(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    token, url = server.issue()["access_token"], server.url + "/items"

    refused = call_api(session, url, token, prover.proof("GET", url, token=token))
    bearer = call_api(session, url, token, None, scheme="Bearer")

    assert (refused.status_code, refused.headers["WWW-Authenticate"]) == (401, 'DPoP error="invalid_token"')
    assert bearer.status_code == 200


# --- nonces ------------------------------------------------------------------------------------


def test_the_token_endpoint_asks_for_its_nonce_and_then_grants(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    server.dpop_nonce = True
    rt = server.issue()["refresh_token"]

    asked = refresh(server, session, rt, prover.proof("POST", server.token_url))
    nonce = asked.headers["DPoP-Nonce"]
    granted = refresh(server, session, rt, prover.proof("POST", server.token_url, nonce=nonce))

    assert (asked.status_code, asked.json()["error"]) == (400, "use_dpop_nonce")
    assert granted.status_code == 200, granted.text
    assert granted.headers["DPoP-Nonce"] == nonce == server.current_dpop_nonce("token")
    assert server.dpop_nonce_errors == {"token": 1, "api": 0}
    assert server.dpop_log[-1]["nonce"] is True
    assert not server.revoked  # the asked request spent nothing


def test_a_wrong_nonce_is_answered_use_dpop_nonce(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    server.dpop_nonce = True
    answer = refresh(
        server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url, nonce="x")
    )

    assert (answer.status_code, answer.json()["error"]) == (400, "use_dpop_nonce")
    assert answer.headers["DPoP-Nonce"] != "x"


def test_the_api_asks_for_its_own_nonce(
    prover: Prover, server: AuthServer, session: requests.Session, bound: str
) -> None:
    server.dpop_nonce = True
    token_nonce = server.current_dpop_nonce("token")
    url = server.url + "/items"

    asked = call_api(session, url, bound, prover.proof("GET", url, token=bound, nonce=token_nonce))
    api_nonce = asked.headers["DPoP-Nonce"]
    accepted = call_api(session, url, bound, prover.proof("GET", url, token=bound, nonce=api_nonce))

    assert asked.status_code == 401
    assert asked.headers["WWW-Authenticate"] == 'DPoP error="use_dpop_nonce"'
    assert api_nonce != token_nonce  # the resource server's nonce is not the authorization server's
    assert accepted.status_code == 200
    assert accepted.headers["DPoP-Nonce"] == api_nonce
    assert server.dpop_nonce_errors == {"token": 0, "api": 1}


def test_a_shared_nonce_serves_both_endpoints(prover: Prover, server: AuthServer, session: requests.Session) -> None:
    server.dpop_nonce = server.dpop_nonce_shared = True
    nonce = server.current_dpop_nonce("token")
    body = refresh(
        server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url, nonce=nonce)
    )
    token, url = body.json()["access_token"], server.url + "/items"

    answer = call_api(session, url, token, prover.proof("GET", url, token=token, nonce=nonce))

    assert body.status_code == answer.status_code == 200
    assert server.current_dpop_nonce("api") == nonce


def test_a_rotated_nonce_is_refused_and_the_new_one_sent(
    prover: Prover, server: AuthServer, session: requests.Session
) -> None:
    server.dpop_nonce = True
    old = server.current_dpop_nonce()
    assert old is not None
    server.rotate_dpop_nonce()

    refused = refresh(
        server, session, server.issue()["refresh_token"], prover.proof("POST", server.token_url, nonce=old)
    )

    assert (refused.status_code, refused.json()["error"]) == (400, "use_dpop_nonce")
    assert refused.headers["DPoP-Nonce"] not in ("", old)


def test_the_nonce_rotates_after_its_interval(server: AuthServer) -> None:
    server.dpop_nonce, server.dpop_nonce_interval = True, 0.05
    first = server.current_dpop_nonce()
    same = server.current_dpop_nonce()
    deadline = time.monotonic() + 5
    later = first
    while later == first and time.monotonic() < deadline:
        time.sleep(0.02)
        later = server.current_dpop_nonce()

    assert first == same
    assert later != first


def test_no_nonce_without_nonce_mode(server: AuthServer) -> None:
    assert server.current_dpop_nonce() is None


# --- the thumbprint ----------------------------------------------------------------------------


def test_the_thumbprint_is_rfc_7638s() -> None:
    # RFC 7638 §3.1's example key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
            "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
            "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
            "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }

    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_thumbprint_refuses_a_key_it_cannot_hash() -> None:
    with pytest.raises(ValueError, match="not a public"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "abc"})
