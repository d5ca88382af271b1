"""A fleet as issue 19 describes it, in real processes: hosts sharing one Redis record, encrypted
at rest (EncryptedStorage), DPoP-bound with the key inside the ciphertext, the client
authenticated by private_key_jwt on every token request; the kit's server in DPoP mode with nonces
verifies every proof and every assertion. One refresh per expiry, no failed request, no byte of a
token or key readable in Redis.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from requests_tokenrefresh import EncryptedStorage, EncryptionKeys, PrivateKeyJWT, RedisStorage, login_device
from requests_tokenrefresh.testing import AuthServer

from ..redis_support import INSTALL_HELP, RedisServer, host_env, redis_server_path
from ..storm_support import refresh_tokens_presented

WORKER = Path(__file__).resolve().parents[1] / "fleet_worker.py"

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


def run_hosts(tmp_path: Path, keys_text: str, *args: str, hosts: int = 3, **env_extra: str) -> list[dict[str, Any]]:
    """Run ``hosts`` worker processes with ``args``, each with a home of its own; their results."""
    started = []
    for n in range(hosts):
        env = {**host_env(tmp_path / f"host-{n}"), "FLEET_KEYS": keys_text, **env_extra}
        started.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    results = []
    for host in started:
        try:
            out, err = host.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            host.kill()  # only the processes this test started
            host.communicate()
            raise
        assert host.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_hosts_with_encryption_dpop_and_private_key_jwt_refresh_once_per_expiry(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client_key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "client-key.pem"
    pem.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    keys_text = "k1:" + base64.b64encode(os.urandom(32)).decode()
    keys = EncryptionKeys.from_env("FLEET_KEYS", environ={"FLEET_KEYS": keys_text})
    with AuthServer(
        dpop=True, ttl=2, rotation="reuse-detection", client_id="fleet", client_public_key=client_key.public_key()
    ) as auth:
        auth.dpop_nonce = True
        auth.dpop_nonce_interval = 1.0
        storage = EncryptedStorage(RedisStorage(redis_server.url, key="fleet"), keys=keys)
        token = login_device(
            token_url=auth.token_url,
            device_authorization_url=auth.url + "/device_authorization",
            client_id="fleet",
            client_auth=PrivateKeyJWT(pem.read_bytes(), alg="ES256"),
            storage=storage,
            stream=io.StringIO(),
            sleep=lambda seconds: auth.approve_device(),
            dpop=True,
        )
        assert token.dpop_key is not None
        args = [redis_server.url, "fleet", auth.token_url, auth.url + "/items", "fleet", "4", "5"]
        results = run_hosts(tmp_path, keys_text, *args, "--private-key-jwt", str(pem))
        assert all(not r["errors"] for r in results), results
        assert all(r["ok"] > 20 for r in results), results
        presented = refresh_tokens_presented(auth)
        assert len(presented) >= 2  # 2-s tokens over 5 s: refreshed again and again
        assert len(presented) == len(set(presented))  # one refresh per expiry: no token presented twice
        assert not auth.revoked
        assert {entry["jkt"] for entry in auth.dpop_log} == {token.dpop_key.thumbprint}
        with auth.lock:
            granted = sum(1 for e in auth.token_log if e["status"] == 200)
            assertions = len([a for a in auth.assertion_log if a["endpoint"] == "/token"])
        assert assertions >= granted  # every token request carried a verified assertion
        assert not auth.assertion_rejections
        raw = redis_server.client().get("fleet")
        stored = storage.load()
        assert raw is not None
        assert stored is not None
        assert stored.dpop_key is not None
        for secret in (stored.access_token, stored.refresh_token, stored.dpop_key.to_jwk()["d"]):
            assert secret is not None
            assert secret.encode() not in raw
        storage.inner.close()  # type: ignore[attr-defined]


def test_hosts_with_mutual_tls_client_credentials_and_dpop(redis_server: RedisServer, tmp_path: Path) -> None:
    # Client credentials minted by whichever host comes first, by certificate (tls_client_auth),
    # DPoP-bound; the other hosts read the encrypted record, key included, and sign with it.
    keys_text = "k1:" + base64.b64encode(os.urandom(32)).decode()
    with AuthServer(tls=True, client_cert_auth=True, dpop=True, client_id="fleet", ttl=2) as auth:
        cert, key = auth.issue_client_cert()
        args = [redis_server.url, "fleet-mtls", auth.token_url, auth.url + "/items", "fleet", "4", "5"]
        options = ["--client-cert", cert, key, "--client-credentials"]
        results = run_hosts(tmp_path, keys_text, *args, *options, REQUESTS_CA_BUNDLE=str(auth.ca_path))
        assert all(not r["errors"] for r in results), results
        assert all(r["ok"] > 20 for r in results), results
        with auth.lock:
            minted = [e for e in auth.token_log if e["status"] == 200]
        # One grant per expiry of the 2-s tokens for the whole fleet, not one per host.
        assert 2 <= len(minted) <= 5, len(minted)
        assert len({entry["jkt"] for entry in auth.dpop_log}) == 1
        keys = EncryptionKeys.from_env("FLEET_KEYS", environ={"FLEET_KEYS": keys_text})
        storage = EncryptedStorage(RedisStorage(redis_server.url, key="fleet-mtls"), keys=keys)
        stored = storage.load()
        raw = redis_server.client().get("fleet-mtls")
        assert stored is not None
        assert stored.dpop_key is not None
        assert raw is not None
        for secret in (stored.access_token, stored.dpop_key.to_jwk()["d"]):
            assert secret.encode() not in raw
        storage.inner.close()  # type: ignore[attr-defined]
