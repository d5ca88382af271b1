"""The fleet recipe of docs/beyond-bearer.rst, proven: Redis + EncryptedStorage + DPoP on several hosts.

Each "host" is an adapter of its own (its own Redis connection, coordinator and lease owner), as
separate machines would have; they share one record, encrypted, whose DPoP key signs every
request of every host. (tests/e2e/test_redis_hosts.py runs hosts as processes, with bearer tokens.)
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from requests_tokenrefresh import (
    EncryptedStorage,
    EncryptionKeys,
    RedisStorage,
    TokenRefreshAdapter,
    login_device,
)
from requests_tokenrefresh.testing import AuthServer

from ..redis_support import RedisServer
from ..storm_support import refresh_tokens_presented, storm

KEYS = EncryptionKeys({"k1": os.urandom(32)})


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


def test_hosts_share_one_encrypted_dpop_record_with_one_refresh_per_expiry(redis_server: RedisServer) -> None:
    with AuthServer(dpop=True, ttl=2, rotation="reuse-detection") as auth:
        auth.dpop_nonce = True
        first = EncryptedStorage(RedisStorage(redis_server.url, key="fleet"), keys=KEYS)
        token = login_device(
            token_url=auth.token_url,
            device_authorization_url=auth.url + "/device_authorization",
            client_id="fleet",
            storage=first,
            stream=io.StringIO(),
            sleep=lambda seconds: auth.approve_device(),
            dpop=True,
        )
        assert token.dpop_key is not None
        hosts = [
            TokenRefreshAdapter(
                EncryptedStorage(RedisStorage(redis_server.url, key="fleet"), keys=KEYS),
                token_url=auth.token_url,
                pool_maxsize=4,
            )
            for _ in range(3)
        ]
        sessions = []
        for adapter in hosts:
            session = requests.Session()
            session.mount(auth.url + "/", adapter)
            sessions.append(session)
        outcomes = storm(sessions, auth.url + "/items", threads=4, seconds=3)
        for adapter, session in zip(hosts, sessions, strict=True):
            adapter.close()
            session.close()
        assert set(outcomes) == {"ok"}, outcomes
        assert outcomes["ok"] > 50
        presented = refresh_tokens_presented(auth)
        assert 2 <= len(presented) == len(set(presented))  # refreshed across expiries, never the same token twice
        assert not auth.revoked
        assert {entry["jkt"] for entry in auth.dpop_log} == {token.dpop_key.thumbprint}
        # What Redis holds shows no byte of a token or of the key.
        raw = redis_server.client().get("fleet")
        assert raw is not None
        stored = first.load()
        assert stored is not None
        secrets = [stored.access_token, stored.refresh_token, stored.dpop_key.to_jwk()["d"]]  # type: ignore[union-attr]
        for secret in secrets:
            assert secret is not None
            assert secret.encode() not in raw
            assert base64.urlsafe_b64encode(secret.encode()) not in raw
        first.inner.close()  # type: ignore[attr-defined]
