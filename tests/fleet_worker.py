"""One host of tests/e2e/test_fleet.py (never imported by pytest): a fleet's whole configuration.

``python tests/fleet_worker.py REDIS_URL KEY TOKEN_URL API CLIENT_ID THREADS SECONDS [--private-key-jwt PEM]
[--client-cert CERT KEY] [--client-credentials]``

The token record is in Redis, encrypted (EncryptedStorage, keys from ``FLEET_KEYS``), a DPoP key
inside it when the record has one; the client authenticates with ``private_key_jwt`` (its key read
from PEM) or a client certificate (mutual TLS; the server's CA from ``REQUESTS_CA_BUNDLE``).
THREADS threads send for SECONDS seconds; one JSON line says how it went.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import requests

from requests_tokenrefresh import EncryptedStorage, EncryptionKeys, PrivateKeyJWT, RedisStorage, TokenRefreshAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.storm_support import storm


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("redis_url", "key", "token_url", "api", "client_id", "threads", "seconds"):
        parser.add_argument(name)
    parser.add_argument("--private-key-jwt", metavar="PEM")
    parser.add_argument("--client-cert", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--client-credentials", action="store_true")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.private_key_jwt:
        options["client_auth"] = PrivateKeyJWT(Path(args.private_key_jwt).read_bytes(), alg="ES256")
    if args.client_cert:
        options["client_cert"] = tuple(args.client_cert)
    if args.client_credentials:
        options.update(grant_type="client_credentials", dpop=True)
    storage = EncryptedStorage(RedisStorage(args.redis_url, key=args.key), keys=EncryptionKeys.from_env("FLEET_KEYS"))
    adapter = TokenRefreshAdapter(
        storage, token_url=args.token_url, client_id=args.client_id, pool_maxsize=int(args.threads), **options
    )
    session = requests.Session()
    session.mount(args.api.rsplit("/", 1)[0] + "/", adapter)
    outcomes = storm([session], args.api, int(args.threads), float(args.seconds))
    adapter.close()
    session.close()
    print(json.dumps({"ok": outcomes.pop("ok", 0), "errors": dict(outcomes)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
