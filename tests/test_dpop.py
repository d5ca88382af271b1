"""DPoP on the client (RFC 9449): the key, its proofs, the record, nonces, and the downgrade refusal.

The end-to-end behaviour (threads, processes, hosts against the testing kit's DPoP mode) is in
tests/test_dpop_kit.py; these tests pin each rule with a mocked token endpoint and API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from requests_tokenrefresh import DPoPKey, FileStorage, MemoryStorage, RefreshError, Token, TokenRefreshAdapter
from requests_tokenrefresh._dpop import htu, thumbprint

TOKEN_URL = "https://auth.example.com/token"
API = "https://api.example.com/"


def claims_of(proof: str, key: DPoPKey) -> dict[str, Any]:
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == key.alg
    assert header["jwk"] == key.public_jwk
    assert "d" not in header["jwk"]
    return dict(jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=[key.alg]))


def test_the_rfc_7638_thumbprint_of_its_example_key() -> None:
    # RFC 7638 §3.1's example, and the thumbprint it gives.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
        "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqb"
        "w0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_proof_names_the_method_and_url_and_hashes_the_access_token() -> None:
    key = DPoPKey.generate()
    proof = key.proof("get", "https://API.example.com:443/items/1?page=2#top", nonce="n-1", access_token="at-1")
    claims = claims_of(proof, key)
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.example.com/items/1"  # no query, fragment or default port
    assert claims["nonce"] == "n-1"
    assert claims["ath"] == base64.urlsafe_b64encode(hashlib.sha256(b"at-1").digest()).rstrip(b"=").decode()
    other = claims_of(key.proof("GET", "https://api.example.com/items/1"), key)
    assert other["jti"] != claims["jti"]
    assert "nonce" not in other
    assert "ath" not in other


def test_htu_keeps_a_port_that_is_not_the_default_and_drops_user_info() -> None:
    assert htu("http://user:pw@127.0.0.1:8080/a?b") == "http://127.0.0.1:8080/a"
    assert htu("https://[::1]:8443") == "https://[::1]:8443/"


def test_a_key_round_trips_through_its_record_jwk_and_pem() -> None:
    key = DPoPKey.generate()
    assert DPoPKey.from_jwk(key.to_jwk()) == key
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert DPoPKey.from_pem(pem).thumbprint == DPoPKey.from_pem(pem.decode()).thumbprint
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    rsa_key = DPoPKey.from_pem(rsa_pem, alg="PS256")
    assert claims_of(rsa_key.proof("POST", TOKEN_URL), rsa_key)["htm"] == "POST"
    assert DPoPKey.from_jwk(rsa_key.to_jwk()) == rsa_key


EC_PUBLIC = {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DPoPKey.from_pem(b"not a pem"), "not a PEM private key"),
        (lambda: DPoPKey.from_jwk({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}), "private JWK"),
        (lambda: DPoPKey.from_jwk({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}), "not a valid ES256"),
        (lambda: DPoPKey.from_signer({"kty": "EC"}, lambda b: b), "missing"),
        (lambda: DPoPKey.from_signer({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}, bytes), "private"),
        (lambda: DPoPKey.generate().proof and DPoPKey.from_pem(b"", alg="HS256"), "alg must be one of"),
        # A key its alg cannot sign with: refused here, not by the server at the first request.
        (lambda: DPoPKey.from_signer(EC_PUBLIC, bytes, alg="RS256"), "RS256 signs with RSA"),
        (lambda: DPoPKey.from_signer({"kty": "OKP", "crv": "Ed25519", "x": "a"}, bytes), "OKP/Ed25519 key: ES256"),
        (lambda: DPoPKey.from_signer({**EC_PUBLIC, "crv": "P-384"}, bytes), "EC/P-384 key"),
        (lambda: DPoPKey.from_jwk({**EC_PUBLIC, "crv": "P-384", "d": "c"}), "EC/P-384 key"),
        (lambda: DPoPKey.from_jwk({"kty": "RSA", "n": "a", "e": "AQAB", "d": "c"}), "RSA key: ES256"),
    ],
)
def test_bad_keys_are_clear_errors(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_signer_key_signs_through_its_callable_and_is_not_storable() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = DPoPKey.generate().__class__(private).public_jwk  # the JWK of private's public half
    calls = []

    def sign(data: bytes) -> bytes:
        calls.append(data)
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    key = DPoPKey.from_signer(public, sign)
    proof = key.proof("GET", API, access_token="at")
    assert claims_of(proof, key)["htu"] == API
    assert len(calls) == 1
    assert not key.storable
    with pytest.raises(TypeError):
        key.to_jwk()
    token = Token("at", token_type="DPoP", dpop_key=key)
    assert "dpop_key" not in token.to_record()  # a key held elsewhere is not stored


def test_no_byte_of_the_private_key_in_repr_and_no_pickle() -> None:
    key = DPoPKey.generate()
    token = Token("at", "rt", token_type="DPoP", dpop_key=key)
    d = key.to_jwk()["d"]
    for text in (repr(key), repr(token), str(key)):
        assert d not in text
    assert key.thumbprint in repr(token)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


def test_the_record_keeps_the_key_and_the_scheme() -> None:
    key = DPoPKey.generate()
    token = Token.from_response({"access_token": "at", "token_type": "dpop", "refresh_token": "rt"})
    assert token.token_type == "DPoP"
    assert token.authorization == "DPoP at"
    record = json.loads(json.dumps(Token("at", "rt", token_type="DPoP", dpop_key=key).to_record()))
    again = Token.from_record(record)
    assert again.dpop_key == key
    assert again.token_type == "DPoP"
    assert "dpop_key" not in Token("at").to_record()


# -- the token endpoint --------------------------------------------------------------------------


def proof_of(call: Any) -> dict[str, Any]:
    proof = call.request.headers["DPoP"]
    return dict(jwt.decode(proof, jwt.PyJWK(jwt.get_unverified_header(proof)["jwk"]).key, algorithms=["ES256"]))


def answer(access: str, refresh: str = "rt-2", token_type: str = "DPoP") -> dict[str, Any]:  # noqa: S107
    return {"access_token": access, "refresh_token": refresh, "token_type": token_type, "expires_in": 3600}


@responses.activate
def test_use_dpop_nonce_is_answered_once_inside_the_same_refresh() -> None:
    responses.post(TOKEN_URL, json={"error": "use_dpop_nonce"}, status=400, headers={"DPoP-Nonce": "n-1"})
    responses.post(TOKEN_URL, json=answer("at-2"), headers={"DPoP-Nonce": "n-2"})
    storage = MemoryStorage(Token("at-1", "rt-1", expires_at=1.0))
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL, client_id="cli", dpop=True)
    token = adapter.refresh()
    first, second = responses.calls[0], responses.calls[1]
    assert "nonce" not in proof_of(first)
    assert proof_of(second)["nonce"] == "n-1"
    assert proof_of(first)["jti"] != proof_of(second)["jti"]
    # The same refresh token both times: a nonce answer spends nothing.
    assert "refresh_token=rt-1" in first.request.body
    assert "refresh_token=rt-1" in second.request.body
    assert token.token_type == "DPoP"
    assert token.dpop_key is not None
    stored = storage.load()
    assert stored is not None
    assert stored.dpop_key == token.dpop_key


@responses.activate
def test_a_second_nonce_answer_is_not_chased() -> None:
    for n in range(3):
        responses.post(TOKEN_URL, json={"error": "use_dpop_nonce"}, status=400, headers={"DPoP-Nonce": f"n-{n}"})
    adapter = TokenRefreshAdapter(
        MemoryStorage(Token("at-1", "rt-1")), token_url=TOKEN_URL, dpop=True, refresh_timeout=0.5
    )
    with pytest.raises(RefreshError, match="use_dpop_nonce"):
        adapter.refresh()
    assert len(responses.calls) == 2


@responses.activate
def test_the_key_in_the_record_signs_the_next_refresh() -> None:
    key = DPoPKey.generate()
    responses.post(TOKEN_URL, json=answer("at-2"))
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", dpop_key=key))
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL)  # not told: the record says
    assert adapter.refresh().dpop_key == key
    assert jwt.get_unverified_header(responses.calls[0].request.headers["DPoP"])["jwk"] == key.public_jwk


@responses.activate
def test_a_key_the_user_holds_signs_and_is_never_stored() -> None:
    key = DPoPKey.generate()
    responses.post(TOKEN_URL, json=answer("at-2"))
    storage = MemoryStorage(Token("at-1", "rt-1"))
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=key)
    token = adapter.refresh()
    assert token.dpop_key == key  # bound to it, in this process ...
    assert "dpop_key" not in storage.load().to_record()  # ... never written with the record
    assert jwt.get_unverified_header(responses.calls[0].request.headers["DPoP"])["jwk"] == key.public_jwk


@responses.activate
def test_a_bearer_answer_to_a_proof_is_kept_but_not_sent_unless_allowed(tmp_path: Path) -> None:
    # The server rotated: its answer holds the only valid refresh token. Dropping it would sign
    # the user out; it is saved, and refused for requests until the user says otherwise.
    responses.post(TOKEN_URL, json=answer("at-2", refresh="rt-2", token_type="Bearer"))
    responses.get(API + "a", json={})
    storage = FileStorage(tmp_path / "token.json")
    storage.save(Token("at-1", "rt-1"))
    session = requests.Session()
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=True))
    session.adapters[API].refresh()  # type: ignore[attr-defined]
    with pytest.raises(RefreshError, match="dpop_downgrade") as caught:
        session.get(API + "a")
    assert not caught.value.retryable
    assert [c.request.url for c in responses.calls] == [TOKEN_URL]  # the bearer token never went out
    stored = storage.load()
    assert stored is not None
    assert stored.refresh_token == "rt-2"  # the login is kept
    allowing = requests.Session()
    allowing.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=True, allow_dpop_downgrade=True))
    assert allowing.get(API + "a").status_code == 200
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer at-2"
    assert "DPoP" not in responses.calls[-1].request.headers


@responses.activate
def test_client_credentials_mint_a_bound_token_with_one_call() -> None:
    responses.post(TOKEN_URL, json={"access_token": "at-1", "token_type": "DPoP", "expires_in": 60})
    responses.get(API + "items", json={})
    session = requests.Session()
    adapter = TokenRefreshAdapter(
        MemoryStorage(), token_url=TOKEN_URL, grant_type="client_credentials", client_id="svc", client_secret="s",
        dpop=True,
    )  # fmt: skip
    session.mount(API, adapter)
    session.get(API + "items")
    assert [c.request.url for c in responses.calls] == [TOKEN_URL, API + "items"]
    token_key = jwt.get_unverified_header(responses.calls[0].request.headers["DPoP"])["jwk"]
    api_key = jwt.get_unverified_header(responses.calls[1].request.headers["DPoP"])["jwk"]
    assert token_key == api_key


# -- the API ---------------------------------------------------------------------------------------


@responses.activate
def test_api_requests_carry_the_scheme_and_a_fresh_proof_each() -> None:
    key = DPoPKey.generate()
    responses.get(API + "a", json={})
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", dpop_key=key))
    session = requests.Session()
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL))
    session.get(API + "a?x=1")
    session.get(API + "a?x=1")
    first, second = (c.request for c in responses.calls)
    assert first.headers["Authorization"] == "DPoP at-1"
    a, b = claims_of(first.headers["DPoP"], key), claims_of(second.headers["DPoP"], key)
    assert a["htu"] == API + "a"
    assert a["htm"] == "GET"
    assert a["jti"] != b["jti"]


@responses.activate
def test_an_api_nonce_challenge_is_answered_without_a_refresh() -> None:
    key = DPoPKey.generate()
    challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "api-n"}
    responses.get(API + "a", status=401, headers=challenge)
    responses.get(API + "a", json={"ok": True}, headers={"DPoP-Nonce": "api-n"})
    responses.get(API + "b", json={"ok": True})
    responses.post(TOKEN_URL, json=answer("at-2"))  # must not be called
    session = requests.Session()
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", dpop_key=key))
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL))
    response = session.get(API + "a")
    assert response.json() == {"ok": True}
    assert len(response.history) == 1
    assert "DPoP" not in response.history[0].request.headers  # the rejected copy holds no proof
    session.get(API + "b")
    urls = [c.request.url for c in responses.calls]
    assert TOKEN_URL not in urls
    nonces = [claims_of(c.request.headers["DPoP"], key).get("nonce") for c in responses.calls]
    assert nonces == [None, "api-n", "api-n"]  # learned once, used from then on


@responses.activate
def test_nonces_are_kept_per_origin() -> None:
    key = DPoPKey.generate()
    other = "https://other.example.com/"
    responses.get(API + "a", json={}, headers={"DPoP-Nonce": "api-n"})
    responses.get(other + "a", json={})
    session = requests.Session()
    adapter = TokenRefreshAdapter(MemoryStorage(Token("at-1", token_type="DPoP", dpop_key=key)), token_url=TOKEN_URL)
    session.mount("https://", adapter)
    session.get(API + "a")
    session.get(other + "a")
    assert "nonce" not in claims_of(responses.calls[1].request.headers["DPoP"], key)


@responses.activate
def test_a_bound_token_without_its_key_is_a_clear_error() -> None:
    session = requests.Session()
    session.mount(API, TokenRefreshAdapter(MemoryStorage(Token("at-1", token_type="DPoP")), token_url=TOKEN_URL))
    with pytest.raises(RefreshError, match="dpop_key_missing"):
        session.get(API + "a")
    assert len(responses.calls) == 0


@responses.activate
def test_a_401_refreshes_and_the_replay_is_signed_with_the_new_token() -> None:
    key = DPoPKey.generate()
    responses.get(API + "a", status=401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'})
    responses.get(API + "a", json={})
    responses.post(TOKEN_URL, json=answer("at-2"))
    session = requests.Session()
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", dpop_key=key))
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL))
    assert session.get(API + "a").status_code == 200
    replay = responses.calls[2].request
    assert replay.headers["Authorization"] == "DPoP at-2"
    assert claims_of(replay.headers["DPoP"], key)["ath"] == (
        base64.urlsafe_b64encode(hashlib.sha256(b"at-2").digest()).rstrip(b"=").decode()
    )


def test_dpop_with_a_refresher_is_refused() -> None:
    with pytest.raises(ValueError, match="dpop needs token_url"):
        TokenRefreshAdapter(MemoryStorage(), refresher=lambda t: t, dpop=True)
    with pytest.raises(ValueError, match="dpop must be True, False or a DPoPKey"):
        TokenRefreshAdapter(MemoryStorage(), token_url=TOKEN_URL, dpop="yes")  # type: ignore[arg-type]


def test_an_adapter_with_generated_keys_pickles_and_one_with_a_held_key_says_why_not() -> None:
    adapter = TokenRefreshAdapter(MemoryStorage(), token_url=TOKEN_URL, dpop=True)
    copy = pickle.loads(pickle.dumps(adapter))  # noqa: S301 - our own bytes
    assert copy._settings.dpop is not None
    assert copy._settings.dpop.key is None
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(TokenRefreshAdapter(MemoryStorage(), token_url=TOKEN_URL, dpop=DPoPKey.generate()))


@responses.activate
def test_each_hop_of_a_redirect_gets_a_proof_of_its_own() -> None:
    key = DPoPKey.generate()
    seen: list[dict[str, str]] = []  # the headers as sent (the adapter strips the proof afterwards)

    def old(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(dict(request.headers))
        return 302, {"Location": API + "new?page=2"}, ""

    def new(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(dict(request.headers))
        return 200, {}, "{}"

    responses.add_callback(responses.GET, API + "old", callback=old)
    responses.add_callback(responses.GET, API + "new", callback=new)
    session = requests.Session()
    storage = MemoryStorage(Token("at-1", token_type="DPoP", dpop_key=key))
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL))
    response = session.get(API + "old")
    assert response.status_code == 200
    assert claims_of(seen[0]["DPoP"], key)["htu"] == API + "old"
    assert claims_of(seen[1]["DPoP"], key)["htu"] == API + "new"
    assert seen[1]["Authorization"] == "DPoP at-1"
    assert "DPoP" not in response.history[0].request.headers  # the hop kept in history holds no proof


def test_every_generated_key_has_full_length_coordinates() -> None:
    # PyJWT before 2.10 wrote an EC coordinate with a leading zero byte as 31 bytes (about one key
    # in 64), and verifiers refuse such a jwk in a proof: the dependency floor is 2.10.
    for _ in range(1000):
        jwk = DPoPKey.generate().public_jwk
        for member in ("x", "y"):
            assert len(base64.urlsafe_b64decode(jwk[member] + "==")) == 32


# -- a key that is not here ------------------------------------------------------------------------


@pytest.mark.parametrize("dpop", [True, False], ids=["dpop=True", "dpop=False"])
@responses.activate
def test_an_expired_token_bound_to_a_key_held_elsewhere_is_not_refreshed_and_stays(dpop: bool, tmp_path: Path) -> None:
    # The record of a token bound to a key its user holds names the key (dpop_jkt) but holds none.
    # A process without that key must not refresh: a proof of a new key (or none) gets invalid_grant
    # for a public client, and the record would be deleted for every process that has the key.
    held = DPoPKey.generate()
    storage = FileStorage(tmp_path / "token.json")
    storage.save(Token("at-1", "rt-1", token_type="DPoP", expires_at=1.0, dpop_key=held._as_held()))
    record = json.loads((tmp_path / "token.json").read_text())
    assert record["dpop_jkt"] == held.thumbprint
    assert "dpop_key" not in record
    responses.post(TOKEN_URL, json={"error": "invalid_grant"}, status=400)  # must not be called
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=dpop)
    with pytest.raises(RefreshError, match="dpop_key_missing") as caught:
        adapter.refresh()
    assert caught.value.error == "dpop_key_missing"
    assert not caught.value.retryable
    assert held.thumbprint in str(caught.value)
    assert len(responses.calls) == 0
    assert json.loads((tmp_path / "token.json").read_text()) == record  # kept as it was


@responses.activate
def test_a_refresh_with_another_key_than_the_tokens_is_refused() -> None:
    bound, other = DPoPKey.generate(), DPoPKey.generate()
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", expires_at=1.0, dpop_key=bound._as_held()))
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=other)
    with pytest.raises(RefreshError, match=f"dpop_key_missing.*{bound.thumbprint}.*another \\({other.thumbprint}\\)"):
        adapter.refresh()
    assert len(responses.calls) == 0


@responses.activate
def test_a_key_given_as_dpop_is_left_as_it_was(tmp_path: Path) -> None:
    # A login's token holds a generated key, stored with the record; giving that key to an adapter
    # as dpop= must not make the token (or the caller's key object) stop storing it.
    responses.post(TOKEN_URL, json=answer("at-2"))
    key = DPoPKey.generate()
    token = Token("at-1", "rt-1", token_type="DPoP", expires_at=1.0, dpop_key=key)
    storage = FileStorage(tmp_path / "token.json")
    storage.save(token)
    TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=key).refresh()
    assert key.storable
    assert "dpop_key" in token.to_record()
    # The adapter's refresh binds to the key as the user's (not stored), and names it.
    record = json.loads((tmp_path / "token.json").read_text())
    assert record["dpop_jkt"] == key.thumbprint
    assert "dpop_key" not in record


@responses.activate
def test_a_downgrade_with_a_held_key_is_refused_after_a_restart_too(tmp_path: Path) -> None:
    responses.post(TOKEN_URL, json=answer("at-2", token_type="Bearer"))
    responses.get(API + "a", json={})
    key = DPoPKey.generate()
    storage = FileStorage(tmp_path / "token.json")
    storage.save(Token("at-1", "rt-1", expires_at=1.0))
    TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=key).refresh()
    stored = storage.load()
    assert stored is not None
    assert stored.token_type == "Bearer"
    assert stored.dpop_jkt == key.thumbprint  # the mark survives the record
    restarted = requests.Session()
    restarted.mount(API, TokenRefreshAdapter(FileStorage(tmp_path / "token.json"), token_url=TOKEN_URL, dpop=key))
    with pytest.raises(RefreshError, match="dpop_downgrade"):
        restarted.get(API + "a")
    assert [c.request.url for c in responses.calls] == [TOKEN_URL]  # the bearer token never went out


@responses.activate
def test_a_nonce_challenge_that_persists_after_its_retry_is_returned_without_a_refresh() -> None:
    key = DPoPKey.generate()
    for n in range(2):
        challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": f"api-{n}"}
        responses.get(API + "a", status=401, headers=challenge)
    responses.post(TOKEN_URL, json=answer("at-2"))  # must not be called
    session = requests.Session()
    storage = MemoryStorage(Token("at-1", "rt-1", token_type="DPoP", dpop_key=key))
    session.mount(API, TokenRefreshAdapter(storage, token_url=TOKEN_URL))
    response = session.get(API + "a")
    assert response.status_code == 401
    assert [c.request.url for c in responses.calls] == [API + "a", API + "a"]  # one retry, no refresh
    stored = storage.load()
    assert stored is not None
    assert stored.refresh_token == "rt-1"


@responses.activate
def test_the_nonce_of_the_answer_to_a_nonce_retry_is_kept() -> None:
    responses.post(TOKEN_URL, json={"error": "use_dpop_nonce"}, status=400, headers={"DPoP-Nonce": "n-1"})
    responses.post(TOKEN_URL, json=answer("at-2", refresh="rt-2"), headers={"DPoP-Nonce": "n-2"})
    responses.post(TOKEN_URL, json=answer("at-3", refresh="rt-3"))
    adapter = TokenRefreshAdapter(MemoryStorage(Token("at-1", "rt-1")), token_url=TOKEN_URL, dpop=True)
    adapter.refresh()
    adapter.refresh()
    assert len(responses.calls) == 3  # the second refresh needed no nonce round
    assert proof_of(responses.calls[2])["nonce"] == "n-2"


def test_a_token_says_which_key_it_is_bound_to_and_refuses_a_wrong_thumbprint() -> None:
    key = DPoPKey.generate()
    assert Token("at", token_type="DPoP", dpop_key=key).dpop_jkt == key.thumbprint
    assert Token.from_record(Token("at", token_type="DPoP", dpop_key=key).to_record()).dpop_jkt == key.thumbprint
    with pytest.raises(ValueError, match="dpop_jkt is not the thumbprint"):
        Token("at", dpop_key=key, dpop_jkt=DPoPKey.generate().thumbprint)
    with pytest.raises(ValueError, match="dpop_jkt must be"):
        Token("at", dpop_jkt="not a thumbprint")
    assert key.thumbprint in repr(Token("at", dpop_jkt=key.thumbprint))


@pytest.mark.parametrize("dpop", [True, False], ids=["dpop=True", "dpop=False"])
@responses.activate
def test_a_downgrades_refresh_token_is_refreshed_without_its_key(dpop: bool) -> None:
    # A Bearer answer to a proof: the server ignored the proof, so its refresh token is not bound
    # to the key. A process without the key may refresh it (its mark only stops sending it).
    held = DPoPKey.generate()
    responses.post(TOKEN_URL, json=answer("at-2", token_type="Bearer"))
    # As read from its record: the mark, and no key.
    storage = MemoryStorage(Token("at-1", "rt-1", expires_at=1.0, dpop_jkt=held.thumbprint))
    adapter = TokenRefreshAdapter(storage, token_url=TOKEN_URL, dpop=dpop, allow_dpop_downgrade=True)
    token = adapter.refresh()
    assert token.access_token == "at-2"
    assert len(responses.calls) == 1


def test_an_rsa_key_under_2048_bits_is_refused_however_it_comes() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small))
    public = {k: jwk[k] for k in ("kty", "n", "e")}
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for make in (
        lambda: DPoPKey.from_pem(pem, alg="PS256"),
        lambda: DPoPKey.from_jwk({**jwk, "alg": "PS256"}),
        lambda: DPoPKey.from_signer(public, bytes, alg="PS256"),
    ):
        with pytest.raises(ValueError, match="2048 bits or more"):
            make()
