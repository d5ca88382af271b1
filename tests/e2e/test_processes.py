"""Several real processes share one keyring entry: one refresh per expiry, crash-safe lock.

The keyring is the one ``RTR_TEST_KEYRING`` names (see conftest). By default it is keyrings.alt's
file backend in the test's temporary directory; with ``secretservice`` (tox -e secretservice) it
is the Secret Service of ``.ci/secret-service``'s private D-Bus session, which the subprocesses
reach over the session address they inherit. Either way PYTHON_KEYRING_BACKEND selects it for
the subprocesses and the real ``keyring`` command line, and it is installed directly in this
process. Each test uses its own service name and deletes its entry afterwards. The refresh lock
files go to a temporary cache directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring
import keyring.core
import keyring.errors
import pytest
import requests

from requests_tokenrefresh import KeyringStorage, SessionExpiredError, Token, TokenRefreshAdapter
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring

WORKER = Path(__file__).resolve().parents[1] / "mp_worker.py"
USER = "carol"
#: keyring backends for the subprocesses, by RTR_TEST_KEYRING.
SUBPROCESS_BACKENDS = {
    "memory": "keyrings.alt.file.PlaintextKeyring",
    "secretservice": "keyring.backends.SecretService.Keyring",
}

pytestmark = pytest.mark.slow  # real processes sharing one keyring entry


@dataclass
class SharedKeyring:
    """The keyring entry this process shares with its subprocesses, and the subprocesses started."""

    env: dict[str, str]
    service: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)


@pytest.fixture
def shared_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring, keyring_under_test: str
) -> Iterator[SharedKeyring]:
    """A keyring shared by this process and its subprocesses, under a service name of this test only.

    Afterwards the subprocesses still running are killed (so that none writes after the clean-up)
    and the entry is deleted.
    """
    cache = str(tmp_path / "cache")
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": SUBPROCESS_BACKENDS[keyring_under_test], "XDG_CACHE_HOME": cache}
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    if keyring_under_test == "memory":
        env["XDG_DATA_HOME"] = str(tmp_path / "data")
        monkeypatch.setenv("XDG_DATA_HOME", env["XDG_DATA_HOME"])
        # The autouse fixture restores the previous backend.
        keyring.set_keyring(keyring.core.load_keyring(env["PYTHON_KEYRING_BACKEND"]))
    # Otherwise memory_keyring is the Secret Service, installed here already. The service name is
    # this test's own, so that tests and runs sharing the daemon stay apart.
    shared = SharedKeyring(env, f"rtr-test-mp-{uuid.uuid4().hex[:12]}")
    try:
        yield shared
    finally:
        for process in shared.processes:
            process.kill()  # nothing happens to one that has exited
            process.communicate(timeout=30)
        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            keyring.get_keyring().delete_password(shared.service, USER)


def worker(shared: SharedKeyring, srv: AuthServer, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, str(WORKER), "--token-url", srv.token_url, "--api", f"{srv.url}/api/data"]
    command += ["--service", shared.service, "--username", USER, *options]
    process = subprocess.Popen(command, env=shared.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shared.processes.append(process)
    return process


def summary(process: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-2000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_four_processes_make_one_refresh_per_expiry(shared_keyring: SharedKeyring) -> None:
    # 2 s tokens: the refresh window is 1 s (half the lifetime), so a new expiry every ~second.
    with AuthServer(ttl=2, rotation="reuse-detection") as srv:
        KeyringStorage(shared_keyring.service, USER).save(Token.from_response(srv.issue()))
        processes = [worker(shared_keyring, srv, "--threads", "16", "--duration", "6") for _ in range(4)]
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


def test_a_process_killed_inside_the_refresh_does_not_block_the_others(
    shared_keyring: SharedKeyring, expired: Any
) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        KeyringStorage(shared_keyring.service, USER).save(expired(srv.issue()))
        srv.hold_refresh()  # the token endpoint answers nobody until released
        victim = worker(shared_keyring, srv, "--threads", "4", "--requests", "1")
        deadline = time.monotonic() + 30
        while srv.refresh_calls == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.refresh_calls == 1, "the first process should be inside its refresh, holding the lock"
        survivor = worker(shared_keyring, srv, "--threads", "4", "--requests", "1")
        time.sleep(1.0)
        assert srv.refresh_calls == 1  # the second process waits for the lock, it does not refresh
        victim.kill()  # SIGKILL while holding the lock: the OS releases the flock
        victim.communicate(timeout=10)
        srv.release_refresh(drop=True)  # the dead process's request is never acted on
        result = summary(survivor, timeout=60)
    assert result == {"ok": 4, "failed": 0, "errors": {}}
    assert not srv.revoked


def test_invalid_grant_with_a_newer_token_in_the_store_is_not_a_sign_out(
    shared_keyring: SharedKeyring, expired: Any
) -> None:
    expirations: list[SessionExpiredError] = []
    with AuthServer(ttl=3600, rotation="rotate") as srv:
        storage = KeyringStorage(shared_keyring.service, USER)
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
        # (Past the gate that holds /token: the kit's grant itself, as if a request had come.)
        form = {"grant_type": "refresh_token", "refresh_token": first.refresh_token}
        status, body = srv._grant(form, None, srv._current_request("POST", "/token"))
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


def test_keyring_command_line_shows_the_record_after_every_refresh(shared_keyring: SharedKeyring) -> None:
    keyring_cli = [sys.executable, "-m", "keyring", "get", shared_keyring.service, USER]
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = KeyringStorage(shared_keyring.service, USER)
        storage.save(Token.from_response({**srv.issue(), "display_name": "Carol"}))
        adapter = TokenRefreshAdapter(storage, token_url=srv.token_url)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        seen = set()
        for _ in range(2):
            srv.revoke_access_tokens()  # the next request gets a 401 and refreshes
            assert session.get(f"{srv.url}/api").status_code == 200
            shown = subprocess.run(
                keyring_cli, env=shared_keyring.env, capture_output=True, text=True, timeout=60, check=True
            )
            record = json.loads(shown.stdout)
            stored = storage.load()
            assert stored is not None
            assert record == stored.to_record()
            assert record["extra"] == {"display_name": "Carol"}
            seen.add(record["refresh_token"])
        session.close()
    assert len(seen) == 2  # a new record after each refresh
