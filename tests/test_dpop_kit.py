"""DPoP end to end against the testing kit's DPoP mode: a login, threads, processes, nonces, expiries.

The kit verifies every proof (signature, htm, htu, iat, jti, ath, nonce), binds tokens and refresh
token families to the key's thumbprint and revokes a family whose refresh token comes twice; the
invariants asserted here are the product's: no request fails, every token request and API request
is signed with the one key of the record, and no refresh token is presented twice.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_tokenrefresh import FileStorage, MemoryStorage, Token, TokenRefreshAdapter, login_device
from requests_tokenrefresh.testing import AuthServer

from .storm_support import refresh_tokens_presented, storm

WORKER = Path(__file__).parent / "file_worker.py"


@pytest.fixture
def server() -> Iterator[AuthServer]:
    with AuthServer(dpop=True, ttl=2, rotation="reuse-detection") as srv:
        srv.dpop_nonce = True
        srv.dpop_nonce_interval = 1.0  # a new nonce every second: met again and again within a test
        yield srv


def device_login(server: AuthServer, storage: Any, **options: Any) -> Token:
    """A device login with DPoP, approved at the first poll."""

    def sleep(seconds: float) -> None:
        server.approve_device()

    return login_device(
        token_url=server.token_url,
        device_authorization_url=server.url + "/device_authorization",
        client_id="cli",
        storage=storage,
        stream=io.StringIO(),
        sleep=sleep,
        dpop=True,
        **options,
    )


def test_a_device_login_with_dpop_stores_a_bound_token_and_its_key(server: AuthServer, tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "token.json")
    token = device_login(server, storage)
    assert token.token_type == "DPoP"
    assert token.dpop_key is not None
    stored = storage.load()
    assert stored is not None
    assert stored.dpop_key == token.dpop_key
    record = json.loads((tmp_path / "token.json").read_text())
    assert record["dpop_key"]["d"]  # the private key travels with the record (FileStorage is 0600)
    assert {entry["jkt"] for entry in server.dpop_log} == {token.dpop_key.thumbprint}


def test_threads_across_expiries_and_nonce_rotations_never_fail(server: AuthServer) -> None:
    storage = MemoryStorage()
    token = device_login(server, storage)
    adapter = TokenRefreshAdapter(storage, token_url=server.token_url, pool_maxsize=8)
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    try:
        outcomes = storm([session], server.url + "/items", threads=8, seconds=3)
    finally:
        adapter.close()
        session.close()
    assert outcomes["ok"] > 100
    assert set(outcomes) == {"ok"}, outcomes
    presented = refresh_tokens_presented(server)
    assert len(presented) >= 2  # the 2-s tokens were refreshed across the run
    assert len(presented) == len(set(presented))  # no refresh token presented twice
    assert not server.revoked
    assert {entry["jkt"] for entry in server.dpop_log} == {token.dpop_key.thumbprint}  # type: ignore[union-attr]
    # Nonces rotated during the run and were met: each cost one extra round trip, never a failure.
    assert server.dpop_nonce_errors.get("api", 0) + server.dpop_nonce_errors.get("token", 0) >= 2


def test_processes_sharing_a_file_sign_with_the_record_key(server: AuthServer, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    token = device_login(server, FileStorage(path))
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "adapter", str(path), server.token_url, server.url + "/items", "4", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for process in workers:
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        assert process.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["failed"] == 0 for r in results), results
    assert sum(r["ok"] for r in results) > 100
    presented = refresh_tokens_presented(server)
    assert len(presented) >= 2
    assert len(presented) == len(set(presented))  # one refresh per expiry: never the same token twice
    assert not server.revoked
    assert {entry["jkt"] for entry in server.dpop_log} == {token.dpop_key.thumbprint}  # type: ignore[union-attr]


def test_client_credentials_with_dpop_mint_once_and_refresh_per_expiry(server: AuthServer) -> None:
    server.client_id, server.client_secret = "svc", "s3cret"
    adapter = TokenRefreshAdapter(
        MemoryStorage(),
        token_url=server.token_url,
        grant_type="client_credentials",
        client_id="svc",
        client_secret="s3cret",
        dpop=True,
        pool_maxsize=8,
    )
    session = requests.Session()
    session.mount(server.url + "/", adapter)
    try:
        outcomes = storm([session], server.url + "/items", threads=8, seconds=3)
    finally:
        adapter.close()
        session.close()
    assert set(outcomes) == {"ok"}, outcomes
    with server.lock:
        grants = [e for e in server.token_log if e["status"] == 200]
    # 2-s tokens refreshed in the last second of their life: about one grant a second, never a burst.
    assert 2 <= len(grants) <= 8
    assert len({entry["jkt"] for entry in server.dpop_log}) == 1


def test_a_refresh_signed_by_another_key_is_refused_by_the_kit(server: AuthServer) -> None:
    from requests_tokenrefresh import DPoPKey, SessionExpiredError

    storage = MemoryStorage()
    token = device_login(server, storage)
    # The record's refresh token with another key: the server refuses it, and the adapter says so.
    stolen = MemoryStorage(Token(token.access_token, token.refresh_token, token_type="DPoP"))
    thief = TokenRefreshAdapter(stolen, token_url=server.token_url, dpop=DPoPKey.generate())
    with pytest.raises(SessionExpiredError):
        thief.refresh()
    thief.close()
    assert not server.revoked  # a proof from another key is refused, not taken for a reuse


def test_a_fake_clock_moves_expiries_but_proofs_are_dated_by_the_wall_clock() -> None:
    # The documented pattern: a FakeClock advanced past the expiry makes the adapter refresh. The
    # kit checks a proof's iat against its own (the wall) clock, as any server does.
    from requests_tokenrefresh import DPoPKey
    from requests_tokenrefresh.testing import FakeClock

    clock = FakeClock()
    key = DPoPKey.generate()
    with AuthServer(dpop=True) as server, requests.Session() as session:
        token = Token.from_response(server.issue(cnf={"jkt": key.thumbprint}), now=clock())
        adapter = TokenRefreshAdapter(MemoryStorage(token), token_url=server.token_url, clock=clock, dpop=key)
        session.mount(server.url + "/", adapter)
        assert session.get(server.url + "/items", timeout=10).status_code == 200
        clock.advance(3600)
        assert session.get(server.url + "/items", timeout=10).status_code == 200
        assert server.refresh_calls == 1
        assert server.dpop_rejections == []


def test_client_credentials_replace_a_token_minted_with_another_key() -> None:
    # Two workers share a record, each with a key it holds (a rolling change of key, say): a
    # token the other minted is not signed with the wrong key, nor refused; a new one is minted.
    from requests_tokenrefresh import DPoPKey

    storage = MemoryStorage()
    with AuthServer(dpop=True, ttl=3600) as server:
        server.client_id, server.client_secret = "svc", "s3cret"
        statuses = []
        for key in (DPoPKey.generate(), DPoPKey.generate()):
            adapter = TokenRefreshAdapter(
                storage, token_url=server.token_url, grant_type="client_credentials", client_id="svc",
                client_secret="s3cret", dpop=key,
            )  # fmt: skip
            with requests.Session() as session:
                session.mount(server.url + "/", adapter)
                statuses += [session.get(server.url + "/items", timeout=10).status_code for _ in range(2)]
        assert statuses == [200, 200, 200, 200]
        assert server.refresh_calls == 2  # one mint per key
        assert server.dpop_rejections == []


def test_a_nonce_retry_carries_the_challenges_nonce_whatever_another_thread_learned() -> None:
    # Between a use_dpop_nonce challenge and its retry, another thread's late answer may put the
    # previous nonce in the adapter's cache: the retry is signed with the challenge's own.
    with AuthServer(dpop=True, ttl=3600) as server, requests.Session() as session:
        server.dpop_nonce = True
        server.client_id, server.client_secret = "svc", "s3cret"
        adapter = TokenRefreshAdapter(
            MemoryStorage(), token_url=server.token_url, grant_type="client_credentials", client_id="svc",
            client_secret="s3cret", dpop=True,
        )  # fmt: skip
        session.mount(server.url + "/", adapter)
        assert session.get(server.url + "/items", timeout=10).status_code == 200
        calls = server.refresh_calls  # the mint, and its nonce's retry
        previous = server.current_dpop_nonce("api")
        server.rotate_dpop_nonce()
        nonces = adapter._nonces
        learn = nonces.learn

        def late_answer_after_the_challenge(url: str, response: requests.Response) -> None:
            learn(url, response)
            if response.status_code == 401:
                stale = requests.Response()
                stale.headers["DPoP-Nonce"] = str(previous)
                learn(url, stale)  # another thread's answer, sent before the rotation

        nonces.learn = late_answer_after_the_challenge  # type: ignore[method-assign]
        response = session.get(server.url + "/items", timeout=10)
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert server.refresh_calls == calls  # no token request for an API's nonce
