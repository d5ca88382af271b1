"""One host of tests/e2e/test_fleet.py (never imported by pytest): a fleet's whole configuration.

``python tests/fleet_worker.py REDIS_URL KEY TOKEN_URL API CLIENT_ID CLIENT_KEY_PEM THREADS SECONDS``

The token record is in Redis, encrypted (EncryptedStorage, keys from ``FLEET_KEYS``) with the DPoP
key inside it; the client authenticates with ``private_key_jwt`` (PrivateKeyJWT, its key read from
CLIENT_KEY_PEM). THREADS threads send for SECONDS seconds; one JSON line says how it went.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests

from requests_tokenrefresh import EncryptedStorage, EncryptionKeys, PrivateKeyJWT, RedisStorage, TokenRefreshAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.storm_support import storm


def main(argv: list[str]) -> int:
    redis_url, key, token_url, api, client_id, pem, threads, seconds = argv
    storage = EncryptedStorage(RedisStorage(redis_url, key=key), keys=EncryptionKeys.from_env("FLEET_KEYS"))
    adapter = TokenRefreshAdapter(
        storage,
        token_url=token_url,
        client_id=client_id,
        client_auth=PrivateKeyJWT(Path(pem).read_bytes(), alg="ES256"),
        pool_maxsize=int(threads),
    )
    session = requests.Session()
    session.mount(api.rsplit("/", 1)[0] + "/", adapter)
    outcomes = storm([session], api, int(threads), float(seconds))
    adapter.close()
    session.close()
    print(json.dumps({"ok": outcomes.pop("ok", 0), "errors": dict(outcomes)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
