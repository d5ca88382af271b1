"""Shutdown paths: close(), interpreter exit and interrupts never drop a rotated refresh token.

A refresh whose request has been sent holds the only refresh token the server still accepts once
it answers. Whatever ends the program meanwhile (close(), the end of a script, Ctrl-C, a SIGTERM
handler raising SystemExit), that answer is stored before the program goes on ending.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from requests_tokenrefresh import FileStorage, KeyringStorage
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring

from .redis_support import wait_for

#: Seconds a script gets to start, refresh and end.
PROCESS_TIMEOUT = 60.0


def _stored_refresh_token(path: Path) -> str:
    return str(json.loads(path.read_text())["refresh_token"])


def test_close_saves_a_token_whose_save_failed(
    server: AuthServer, memory_keyring: MemoryKeyring, session_for: Any, expired: Any
) -> None:
    storage = KeyringStorage("shutdown-api", "alice")
    storage.save(expired(server.issue()))
    memory_keyring.fail("set", times=1000)  # the keyring is locked during the refresh
    session, adapter = session_for(server, None, storage=storage, refresh_timeout=1)
    assert session.get(server.url + "/api/data", timeout=30).status_code == 200
    assert storage.load().refresh_token != server._families[1].current_refresh  # type: ignore[union-attr]
    memory_keyring.failures.clear()  # ... and unlocked before the program ends
    adapter.close()
    assert storage.load().refresh_token == server._families[1].current_refresh  # type: ignore[union-attr]
    assert not server.revoked


_EXIT_SCRIPT = """
import os, sys
import requests
from requests_tokenrefresh import FileStorage, TokenRefreshAdapter, TokenStorageError

path, blocked, base = sys.argv[1:4]

class Flaky(FileStorage):
    def save(self, token):
        if os.path.exists(blocked):  # the disk is full while the refresh runs
            raise TokenStorageError("no space left on device")
        super().save(token)

session = requests.Session()
session.mount(base + "/", TokenRefreshAdapter(Flaky(path), token_url=base + "/token", refresh_timeout=1))
print(session.get(base + "/api/data", timeout=30).status_code, flush=True)
os.remove(blocked)  # space again; the script ends without close()
"""


def test_interpreter_exit_saves_a_token_whose_save_failed(server: AuthServer, tmp_path: Path, expired: Any) -> None:
    path, blocked = tmp_path / "token.json", tmp_path / "disk-full"
    FileStorage(path).save(expired(server.issue()))
    blocked.touch()
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(path), str(blocked), server.url],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["200"]
    assert _stored_refresh_token(path) == server._families[1].current_refresh
    assert not server.revoked


_INTERRUPT_SCRIPT = """
import signal, sys
import requests
from requests_tokenrefresh import FileStorage, TokenRefreshAdapter

path, base, how = sys.argv[1:4]
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever disposition we inherited

def stop(signum, frame):
    raise SystemExit(143)

signal.signal(signal.SIGTERM, stop)
session = requests.Session()
session.mount(base + "/", TokenRefreshAdapter(FileStorage(path), token_url=base + "/token", refresh_timeout=20))
try:
    session.get(base + "/api/data", timeout=30)
except BaseException as exc:
    print("raised", type(exc).__name__, flush=True)
    raise
print("not interrupted", flush=True)
"""


@pytest.mark.parametrize(
    ("how", "signum", "raised"),
    [("ctrl-c", signal.SIGINT, "KeyboardInterrupt"), ("sigterm", signal.SIGTERM, "SystemExit")],
)
def test_an_interrupt_during_a_refresh_lets_it_store_the_answer(
    how: str, signum: int, raised: str, server: AuthServer, tmp_path: Path, expired: Any
) -> None:
    """The interrupt lands while the token endpoint holds the refresh; it is raised after the save."""
    path = tmp_path / "token.json"
    FileStorage(path).save(expired(server.issue()))
    server.hold_refresh()
    process = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_SCRIPT, str(path), server.url, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: server.refresh_calls == 1 or process.poll() is not None, PROCESS_TIMEOUT, "the refresh")
        assert process.poll() is None, process.communicate()[1][-3000:]
        os.kill(process.pid, signum)
        time.sleep(0.5)  # the interrupt is delivered while the answer is still held
        server.release_refresh()
        out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=PROCESS_TIMEOUT)
    assert out.split() == ["raised", raised], err[-3000:]
    assert process.returncode != 0
    assert _stored_refresh_token(path) == server._families[1].current_refresh
    assert [entry["status"] for entry in server.token_log] == [200], server.token_log
    assert not server.revoked


def test_close_without_an_unsaved_token_writes_nothing(
    server: AuthServer, memory_keyring: MemoryKeyring, session_for: Any
) -> None:
    storage = KeyringStorage("shutdown-api", "alice")
    storage.save(_fresh(server))
    session, adapter = session_for(server, None, storage=storage)
    assert session.get(server.url + "/api/data", timeout=30).status_code == 200
    writes = memory_keyring.writes
    adapter.close()
    assert memory_keyring.writes == writes


def _fresh(server: AuthServer) -> Any:
    from requests_tokenrefresh import Token

    return Token.from_response(server.issue())


_DAEMON_SCRIPT = """
import sys, threading, time
import requests
from requests_tokenrefresh import FileStorage, TokenRefreshAdapter

path, base = sys.argv[1:3]
session = requests.Session()
session.mount(base + "/", TokenRefreshAdapter(FileStorage(path), token_url=base + "/token", refresh_timeout=20))
threading.Thread(target=lambda: session.get(base + "/api/data", timeout=30), daemon=True).start()
time.sleep(1.0)  # the refresh is under way in the daemon thread's request; the script ends
"""


def test_a_refresh_begun_by_a_daemon_thread_is_finished_before_exit(
    server: AuthServer, tmp_path: Path, expired: Any
) -> None:
    """The refresh's worker is not a daemon even when the thread that needed it is one."""
    path = tmp_path / "token.json"
    FileStorage(path).save(expired(server.issue()))
    server.hold_refresh()
    process = subprocess.Popen(
        [sys.executable, "-c", _DAEMON_SCRIPT, str(path), server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: server.refresh_calls == 1 or process.poll() is not None, PROCESS_TIMEOUT, "the refresh")
        time.sleep(1.5)  # the script's main thread has ended meanwhile
        server.release_refresh()
        _, err = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 0, err[-3000:]
    assert _stored_refresh_token(path) == server._families[1].current_refresh
    assert [entry["status"] for entry in server.token_log] == [200]
