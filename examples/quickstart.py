"""Quick start against a local OAuth 2.0 server: 32 threads, an expired token, one refresh.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import logging
import threading
import time

import requests

from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter
from requests_tokenrefresh.testing import AuthServer


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # A token endpoint that rotates refresh tokens and revokes the family if one is used twice.
    with AuthServer(ttl=3600, rotation="reuse-detection") as server:
        login = Token.from_response(server.issue())  # what the app's login would have saved
        expired = Token(login.access_token, login.refresh_token, expires_at=time.time() - 1)
        storage = MemoryStorage(expired)
        session = requests.Session()
        session.mount(server.url + "/", TokenRefreshAdapter(storage, token_url=server.token_url, pool_maxsize=32))

        statuses: list[int] = []
        barrier = threading.Barrier(32)

        def worker() -> None:
            barrier.wait()
            statuses.append(session.get(f"{server.url}/api/me", timeout=10).status_code)

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        print(
            f"requests ok: {statuses.count(200)}/32, refresh calls: {server.refresh_calls}, "
            f"token family revoked: {server.revoked}"
        )
        return 0 if statuses.count(200) == 32 and server.refresh_calls == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
