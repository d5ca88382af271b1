"""Several real processes share one keyring entry: one refresh per expiry, crash-safe lock.

The keyring is keyrings.alt's file backend in the test's temporary directory, selected through
PYTHON_KEYRING_BACKEND for the subprocesses and the real ``keyring`` command line, and installed
directly in this process. The refresh lock files go to a temporary cache directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keyring
import pytest
import requests
from keyrings.alt.file import PlaintextKeyring

from requests_tokenrefresh import KeyringStorage, SessionExpiredError, Token, TokenRefreshAdapter
from requests_tokenrefresh.testing import AuthServer

WORKER = Path(__file__).with_name("mp_worker.py")
SERVICE, USER = "mp-api", "carol"


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A file-based keyring shared by this process and its subprocesses; yields their environment."""
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    monkeypatch.setenv("XDG_DATA_HOME", env["XDG_DATA_HOME"])
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    keyring.set_keyring(PlaintextKeyring())  # the autouse fixture restores the previous backend
    return env


def worker(env: dict[str, str], srv: AuthServer, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, str(WORKER), "--token-url", srv.token_url, "--api", f"{srv.url}/api/data"]
    command += ["--service", SERVICE, "--username", USER, *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(process: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-2000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_four_processes_make_one_refresh_per_expiry(file_keyring: dict[str, str]) -> None:
    # 2 s tokens: the refresh window is 1 s (half the lifetime), so a new expiry every ~second.
    with AuthServer(ttl=2, rotation="reuse-detection") as srv:
        KeyringStorage(SERVICE, USER).save(Token.from_response(srv.issue()))
        processes = [worker(file_keyring, srv, "--threads", "16", "--duration", "6") for _ in range(4)]
        results = [summary(p) for p in processes]
        presented = [entry["refresh_token"] for entry in srv.token_log]
        ok = sum(r["ok"] for r in results)
        print(f"\n4 processes x 16 threads: {ok} requests ok, refresh calls {srv.refresh_calls}")
    assert [r["failed"] for r in results] == [0, 0, 0, 0], results
    assert all(r["ok"] > 0 for r in results)
    assert not srv.revoked
    assert srv.refresh_calls >= 3  # several expiries happened during the run
    # One refresh per expiry: every refresh token was presented once, and every refresh succeeded.
    assert len(presented) == len(set(presented)) == srv.refresh_calls
    assert {entry["status"] for entry in srv.token_log} == {200}


@pytest.mark.slow
def test_a_process_killed_inside_the_refresh_does_not_block_the_others(
    file_keyring: dict[str, str], expired: Any
) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        KeyringStorage(SERVICE, USER).save(expired(srv.issue()))
        srv.hold_refresh()  # the token endpoint answers nobody until released
        victim = worker(file_keyring, srv, "--threads", "4", "--requests", "1")
        deadline = time.monotonic() + 30
        while srv.refresh_calls == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.refresh_calls == 1, "the first process should be inside its refresh, holding the lock"
        survivor = worker(file_keyring, srv, "--threads", "4", "--requests", "1")
        time.sleep(1.0)
        assert srv.refresh_calls == 1  # the second process waits for the lock, it does not refresh
        victim.kill()  # SIGKILL while holding the lock: the OS releases the flock
        victim.communicate(timeout=10)
        srv.release_refresh(drop=True)  # the dead process's request is never acted on
        result = summary(survivor, timeout=60)
    assert result == {"ok": 4, "failed": 0, "errors": {}}
    assert not srv.revoked


def test_invalid_grant_with_a_newer_token_in_the_store_is_not_a_sign_out(
    file_keyring: dict[str, str], expired: Any
) -> None:
    expirations: list[SessionExpiredError] = []
    with AuthServer(ttl=3600, rotation="rotate") as srv:
        storage = KeyringStorage(SERVICE, USER)
        first = expired(srv.issue())
        storage.save(first)
        adapter = TokenRefreshAdapter(storage, token_url=srv.token_url, on_session_expired=expirations.append)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        srv.hold_refresh()
        statuses: list[int] = []
        thread = threading.Thread(target=lambda: statuses.append(session.get(f"{srv.url}/api").status_code))
        thread.start()
        while srv.refresh_calls == 0:
            time.sleep(0.01)
        # Meanwhile a sibling that does not share our lock (an older version of the app, say)
        # rotates the same refresh token and saves the result.
        status, body = srv._grant({"grant_type": "refresh_token", "refresh_token": first.refresh_token}, None)
        assert status == 200
        sibling = Token.from_response(body)
        storage.save(sibling)
        srv.release_refresh()  # our request now presents a used refresh token: invalid_grant
        thread.join(30)
        assert not thread.is_alive()
        session.close()
    assert statuses == [200]
    assert expirations == []
    stored = storage.load()
    assert stored is not None
    assert stored.refresh_token == sibling.refresh_token


def test_keyring_command_line_shows_the_record_after_every_refresh(file_keyring: dict[str, str]) -> None:
    keyring_cli = [sys.executable, "-m", "keyring", "get", SERVICE, USER]
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = KeyringStorage(SERVICE, USER)
        storage.save(Token.from_response({**srv.issue(), "display_name": "Carol"}))
        adapter = TokenRefreshAdapter(storage, token_url=srv.token_url)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        seen = set()
        for _ in range(2):
            srv.revoke_access_tokens()  # the next request gets a 401 and refreshes
            assert session.get(f"{srv.url}/api").status_code == 200
            shown = subprocess.run(
                keyring_cli, env=file_keyring, capture_output=True, text=True, timeout=60, check=True
            )
            record = json.loads(shown.stdout)
            stored = storage.load()
            assert stored is not None
            assert record == stored.to_record()
            assert record["extra"] == {"display_name": "Carol"}
            seen.add(record["refresh_token"])
        session.close()
    assert len(seen) == 2  # a new record after each refresh
