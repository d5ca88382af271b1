"""The public testing kit: the fakes of requests_tokenrefresh.testing, and its pytest plugin run as a user runs it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keyring
import keyring.backends.fail
import keyring.errors
import pytest
import requests

from requests_tokenrefresh import (
    KeyringStorage,
    MemoryStorage,
    Token,
    TokenRefreshAdapter,
    testing,
)
from requests_tokenrefresh import pytest_plugin as plugin_under_its_first_name
from requests_tokenrefresh.testing import (
    AuthServer,
    Canned,
    FakeClock,
    FileKeyring,
    MemoryKeyring,
    pytest_plugin,
    use_keyring,
)
from requests_tokenrefresh.testing import authserver as _authserver
from requests_tokenrefresh.testing import filekeyring as _filekeyring

pytest_plugins = ["pytester"]

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.rst"

# More of a user's tests, run beside the ten-line test file of docs/testing.rst.
USER_TESTS = """
import keyring
import requests
from requests_tokenrefresh import KeyringStorage, Token
from requests_tokenrefresh.testing import Canned, MemoryKeyring


def fetch_report(session: requests.Session, base_url: str) -> dict:  # the code under test
    response = session.get(base_url + "/reports/1")
    response.raise_for_status()
    return response.json()


def test_a_failed_refresh_is_retried(auth_server, token_session, fake_clock):
    auth_server.canned.append(Canned(503, {"error": "temporarily_unavailable"}))
    fake_clock.advance(3600)
    assert fetch_report(token_session, auth_server.url)["ok"]
    assert [entry["status"] for entry in auth_server.token_log] == [503, 200]


def test_the_login_is_kept_in_the_keyring(auth_server, token_keyring, tmp_path):
    KeyringStorage("my-api", "alice", lock_dir=str(tmp_path)).save(Token.from_response(auth_server.issue()))
    assert token_keyring.writes == 1
    assert ("my-api", "alice") in token_keyring.entries
    assert keyring.get_keyring() is token_keyring


def test_no_fixture_is_autouse():
    assert not isinstance(keyring.get_keyring(), MemoryKeyring)
"""

STRICT_INI = """
[pytest]
addopts = --strict-markers --strict-config
filterwarnings = error
xfail_strict = true
"""


def documented_example() -> str:
    """The test file of docs/testing.rst: its first python code block."""
    _, found, rest = DOCS_PAGE.read_text(encoding="utf-8").partition(".. code-block:: python\n\n")
    assert found, f"no python code block in {DOCS_PAGE}"
    lines = []
    for line in rest.splitlines():
        if line and not line.startswith("   "):
            break
        lines.append(line[3:])
    return "\n".join(lines).strip() + "\n"


def test_the_documented_test_file_and_a_users_tests_pass_with_the_plugin(pytester: pytest.Pytester) -> None:
    example = documented_example()
    assert "def test_" in example
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(test_documented=example, test_user=USER_TESTS)

    result = pytester.runpytest_subprocess(
        "-p", "requests_tokenrefresh.testing.pytest_plugin", "-p", "no:cacheprovider", timeout=90
    )

    result.assert_outcomes(passed=4)


def test_the_documented_get_adapter_call_returns_the_fixtures_adapter(pytester: pytest.Pytester) -> None:
    calls = re.findall(r"``(token_session\.get_adapter\(.*?\))``", DOCS_PAGE.read_text(encoding="utf-8"))
    assert len(calls) == 1, calls
    assert calls[0] in Path(pytest_plugin.__file__).read_text(encoding="utf-8")  # the fixture's docstring
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(
        test_user=f"""
from requests.adapters import HTTPAdapter
from requests_tokenrefresh import TokenRefreshAdapter


def test_it(auth_server, token_session):
    adapter = {calls[0]}
    assert isinstance(adapter, TokenRefreshAdapter)
    adapter.refresh()
    assert auth_server.refresh_calls == 1
    # Mounted with the slash: a URL whose port starts with the server's digits is not under it.
    assert type(token_session.get_adapter(auth_server.url + "0/")) is HTTPAdapter
"""
    )

    result = pytester.runpytest_subprocess(
        "-p", "requests_tokenrefresh.testing.pytest_plugin", "-p", "no:cacheprovider", timeout=60
    )

    result.assert_outcomes(passed=1)


def test_a_conftest_may_import_the_kit_and_name_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI)  # pytest warns (here: fails) if a plugin module was imported before it is named
    pytester.makeconftest(
        "from requests_tokenrefresh.testing import AuthServer\n"
        'pytest_plugins = ["requests_tokenrefresh.testing.pytest_plugin"]\n'
    )
    pytester.makepyfile(test_user="def test_it(auth_server, fake_clock):\n    assert auth_server.url\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)

    result.assert_outcomes(passed=1)


def test_the_fixtures_need_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_it(auth_server):\n    pass\n")

    result = pytester.runpytest("-p", "no:cacheprovider")  # in this process: nothing registered it here either

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'auth_server' not found*"])


def test_importing_the_kit_does_not_import_pytest() -> None:
    code = "import sys, requests_tokenrefresh.testing; assert 'pytest' not in sys.modules, 'pytest imported'"

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_kit_re_exports_the_server() -> None:
    assert testing.AuthServer is _authserver.AuthServer
    assert testing.Canned is _authserver.Canned
    assert testing.FileKeyring is _filekeyring.FileKeyring
    assert set(testing.__all__) >= {"AuthServer", "Canned", "FakeClock", "FileKeyring", "MemoryKeyring", "use_keyring"}


# --- FakeClock --------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(1_000.0)

    assert clock() == clock.now == 1_000.0
    assert clock.advance(59.5) == 1_059.5
    assert clock() == 1_059.5
    clock.now = 5.0
    assert clock() == 5.0
    assert repr(clock) == "FakeClock(now=5.0)"


def test_fake_clock_starts_at_the_current_time() -> None:
    before = time.time()
    clock = FakeClock()

    assert before <= clock() <= time.time()


def test_fake_clock_expires_the_adapters_token() -> None:
    clock = FakeClock()
    with AuthServer(ttl=60, rotation="rotate") as server:
        storage = MemoryStorage(Token.from_response(server.issue(), now=clock()))
        adapter = TokenRefreshAdapter(storage, token_url=server.token_url, clock=clock)
        with requests.Session() as session:
            session.mount(server.url + "/", adapter)
            assert session.get(server.url + "/a").status_code == 200
            clock.advance(60)
            assert session.get(server.url + "/b").status_code == 200
            assert session.get(server.url + "/c").status_code == 200

        assert server.refresh_calls == 1
        token = storage.load()
        assert token is not None
        assert token.expires_at == pytest.approx(clock() + 60, abs=1)


# --- MemoryKeyring and use_keyring ------------------------------------------------------------


def test_memory_keyring_counts_and_keeps_entries() -> None:
    backend = MemoryKeyring()

    assert backend.get_password("svc", "alice") is None
    backend.set_password("svc", "alice", "s3cret-token")
    assert backend.get_password("svc", "alice") == "s3cret-token"
    assert backend.entries == {("svc", "alice"): "s3cret-token"}
    backend.delete_password("svc", "alice")
    with pytest.raises(keyring.errors.PasswordDeleteError):
        backend.delete_password("svc", "alice")

    assert (backend.reads, backend.writes, backend.deletes) == (2, 1, 2)
    assert backend.entries == {}


def test_memory_keyring_repr_shows_no_secret() -> None:
    backend = MemoryKeyring()
    backend.set_password("svc", "alice", "s3cret-token")

    assert "s3cret" not in repr(backend)
    assert "1 entries" in repr(backend)


def test_memory_keyring_is_never_chosen_by_keyring_itself() -> None:
    assert MemoryKeyring.viable
    assert MemoryKeyring.priority < keyring.backends.fail.Keyring.priority


def test_memory_keyring_backs_keyring_storage(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    storage = KeyringStorage("svc", "alice", backend=backend, lock_dir=str(tmp_path))

    storage.save(Token("at-1", "rt-1", expires_at=2e9))

    assert storage.load() == Token("at-1", "rt-1", expires_at=2e9)
    assert backend.writes == 1
    assert backend.reads >= 1


def test_use_keyring_installs_the_backend_and_restores_the_previous_one() -> None:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()

    with use_keyring(backend) as installed:
        assert installed is backend
        assert keyring.get_keyring() is backend
        keyring.set_password("svc", "alice", "x")

    assert keyring.get_keyring() is previous
    assert backend.entries == {("svc", "alice"): "x"}


def test_use_keyring_restores_after_an_exception() -> None:
    previous = keyring.get_keyring()

    with pytest.raises(RuntimeError, match="boom"), use_keyring():
        raise RuntimeError("boom")

    assert keyring.get_keyring() is previous


def test_use_keyring_without_a_backend_gives_a_new_memory_keyring() -> None:
    with use_keyring() as first, use_keyring() as second:
        assert isinstance(first, MemoryKeyring)
        assert first is not second
        assert keyring.get_keyring() is second
    with use_keyring() as third:
        assert third.entries == {}


def test_memory_keyring_fails_the_calls_it_is_told_to() -> None:
    backend = MemoryKeyring()
    backend.set_password("svc", "alice", "old")
    backend.fail("set")
    backend.fail("get", after=1, times=2)

    with pytest.raises(keyring.errors.KeyringLocked):
        backend.set_password("svc", "alice", "new")
    assert backend.get_password("svc", "alice") == "old"  # the failed write changed nothing
    for _ in range(2):
        with pytest.raises(keyring.errors.KeyringLocked):
            backend.get_password("svc", "alice")
    backend.set_password("svc", "alice", "new")

    assert backend.get_password("svc", "alice") == "new"
    assert (backend.reads, backend.writes) == (4, 3)  # failed calls count
    assert backend.failures == {"get": [], "set": []}


def test_memory_keyring_fails_every_operation_with_the_given_error_until_cleared() -> None:
    backend = MemoryKeyring()
    error = OSError(5, "I/O error")
    backend.fail(error=error, times=2)

    with pytest.raises(OSError, match="I/O error") as caught:
        backend.get_password("s", "u")
    assert caught.value is error
    with pytest.raises(OSError, match="I/O error"):
        backend.set_password("s", "u", "p")
    with pytest.raises(OSError, match="I/O error"):
        backend.delete_password("s", "u")
    assert backend.failures == {operation: [error] for operation in ("get", "set", "delete")}  # one more each
    backend.failures.clear()

    backend.set_password("s", "u", "p")
    assert backend.get_password("s", "u") == "p"
    backend.delete_password("s", "u")


@pytest.mark.parametrize(
    ("operations", "options"),
    [(("get", "read"), {}), (("get",), {"times": -1}), (("get",), {"after": -1})],
    ids=["unknown-operation", "negative-times", "negative-after"],
)
def test_memory_keyring_fail_refuses_what_it_cannot_do(operations: tuple[str, ...], options: dict[str, Any]) -> None:
    backend = MemoryKeyring()
    with pytest.raises(ValueError, match="fail"):
        backend.fail(*operations, **options)
    assert backend.failures == {}


# --- FileKeyring --------------------------------------------------------------------------------

# Each worker process writes its own entries and reads back each one; a torn file would break a read.
FILE_WORKER = """
import sys
from requests_tokenrefresh.testing import FileKeyring

backend, worker = FileKeyring(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    backend.set_password("svc", f"{worker}-{i}", f"secret-{worker}-{i}")
    assert backend.get_password("svc", f"{worker}-{i}") == f"secret-{worker}-{i}", "lost"
"""


def test_file_keyring_keeps_entries_in_a_private_json_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    backend = FileKeyring(path)

    assert backend.get_password("svc", "alice") is None
    backend.set_password("svc", "alice", "s3cret-token")
    backend.set_password("svc", "bob", "other")

    assert FileKeyring(str(path)).get_password("svc", "alice") == "s3cret-token"  # another instance reads it
    assert json.loads(path.read_text()) == {"svc": {"alice": "s3cret-token", "bob": "other"}}
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    backend.delete_password("svc", "alice")
    backend.delete_password("svc", "bob")
    with pytest.raises(keyring.errors.PasswordDeleteError):
        backend.delete_password("svc", "alice")
    assert json.loads(path.read_text()) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json", "keyring.json.lock"]  # no temporary left
    assert repr(backend) == f"FileKeyring({str(path)!r})"
    assert "s3cret" not in repr(backend)
    assert FileKeyring.priority < keyring.backends.fail.Keyring.priority


def test_file_keyring_replaces_the_file_instead_of_rewriting_it(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    backend = FileKeyring(path)
    backend.set_password("svc", "alice", "first")
    with path.open(encoding="utf-8") as reader:  # a reader that opened the file before the change
        backend.set_password("svc", "alice", "second")
        assert json.load(reader) == {"svc": {"alice": "first"}}  # still the whole old file, not a torn one

    assert backend.get_password("svc", "alice") == "second"


def test_file_keyring_refuses_a_file_that_is_no_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text('["not", "a", "keyring"]')

    with pytest.raises(keyring.errors.KeyringError, match="not a JSON keyring file"):
        FileKeyring(path).get_password("svc", "alice")
    with pytest.raises(keyring.errors.KeyringError, match="not a JSON keyring file"):
        FileKeyring(path).set_password("svc", "alice", "x")
    assert path.read_text() == '["not", "a", "keyring"]'


def test_file_keyring_error_on_a_torn_file_carries_none_of_its_text(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text('{"svc": {"alice": "secret-refresh-token"')  # cut short

    with pytest.raises(keyring.errors.KeyringError, match=r"not a JSON keyring file \(Expecting") as caught:
        FileKeyring(path).get_password("svc", "alice")
    chain, exc = [], caught.value
    while exc is not None:  # every exception it carries, shown or not
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert len(chain) == 1
    assert "secret-refresh-token" not in str(caught.value)


def test_file_keyring_backs_keyring_storage(tmp_path: Path) -> None:
    storage = KeyringStorage("svc", "alice", backend=FileKeyring(tmp_path / "keyring.json"), lock_dir=str(tmp_path))
    storage.save(Token("at-1", "rt-1", expires_at=2e9))

    again = KeyringStorage("svc", "alice", backend=FileKeyring(tmp_path / "keyring.json"), lock_dir=str(tmp_path))
    assert again.load() == Token("at-1", "rt-1", expires_at=2e9)


def test_file_keyring_shared_by_processes_loses_no_write(tmp_path: Path) -> None:
    path, workers, count = tmp_path / "keyring.json", 4, 25
    processes = [
        subprocess.Popen([sys.executable, "-c", FILE_WORKER, str(path), str(worker), str(count)])
        for worker in range(workers)
    ]
    assert [process.wait(timeout=60) for process in processes] == [0] * workers

    entries = json.loads(path.read_text())["svc"]
    assert entries == {f"{w}-{i}": f"secret-{w}-{i}" for w in range(workers) for i in range(count)}


def test_file_keyring_shared_by_threads_loses_no_write(tmp_path: Path) -> None:
    backend = FileKeyring(tmp_path / "keyring.json")
    barrier = threading.Barrier(8)

    def write(worker: int) -> None:
        barrier.wait(timeout=10)
        for i in range(10):
            backend.set_password("svc", f"{worker}-{i}", "x")

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert len(json.loads((tmp_path / "keyring.json").read_text())["svc"]) == 80


# --- AuthServer through the kit ---------------------------------------------------------------


def test_canned_answers_come_first_and_spend_no_refresh_token() -> None:
    with AuthServer(rotation="reuse-detection") as server:
        refresh = server.issue()["refresh_token"]
        server.canned.append(Canned(429, {"error": "slow_down"}, headers={"Retry-After": "1"}))
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        with requests.Session() as session:
            first = session.post(server.token_url, data=form, timeout=10)
            second = session.post(server.token_url, data=form, timeout=10)

    assert (first.status_code, first.headers["Retry-After"], first.json()) == (429, "1", {"error": "slow_down"})
    assert second.status_code == 200
    assert server.refresh_calls == 2
    assert not server.revoked


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
def test_the_api_answers_every_method(method: str) -> None:
    with AuthServer() as server, requests.Session() as session:
        bearer = {"Authorization": "Bearer " + server.issue()["access_token"]}
        ok = session.request(method, f"{server.url}/items/1", data=b"abc", headers=bearer, timeout=10)
        rejected = session.request(method, f"{server.url}/items/1", timeout=10)

    assert ok.status_code == 200
    assert ok.json() == {"ok": True, "length": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    assert rejected.status_code == 401
    assert rejected.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert (server.api_calls, server.api_rejections) == (2, 1)


def test_the_api_answers_head_as_get_without_the_body() -> None:
    with AuthServer() as server, requests.Session() as session:
        url, bearer = f"{server.url}/items/1", {"Authorization": "Bearer " + server.issue()["access_token"]}
        head = session.head(url, headers=bearer, timeout=10)
        # Next on the same connection: a body sent after the HEAD's headers would be read as its answer.
        get = session.get(url, headers=bearer, timeout=10)
        rejected = session.head(url, timeout=10)

    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.content))
    assert get.json()["ok"] is True
    assert (rejected.status_code, rejected.content) == (401, b"")


def _basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!not base64!!", "Basic YXBw=x", _basic(b"\xffapp:s3cret"), _basic(b"app:s3cret\xff"), "Basic "],
    ids=["not-base64", "bad-padding", "not-utf8-id", "not-utf8-secret", "empty"],
)
def test_a_malformed_basic_header_is_answered_invalid_client(authorization: str) -> None:
    with AuthServer(client_id="app", client_secret="s3cret") as server, requests.Session() as session:
        form = {"grant_type": "client_credentials"}
        refused = session.post(server.token_url, data=form, headers={"Authorization": authorization}, timeout=10)
        granted = session.post(server.token_url, data=form, auth=("app", "s3cret"), timeout=10)

    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert granted.status_code == 200


def test_a_token_request_whose_body_is_not_utf8_is_answered_invalid_request() -> None:
    with AuthServer() as server, requests.Session() as session:
        refresh = server.issue()["refresh_token"]
        form = f"grant_type=refresh_token&refresh_token={refresh}".encode() + b"\xff"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        refused = session.post(server.token_url, data=form, headers=headers, timeout=10)
        granted = session.post(
            server.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh}, timeout=10
        )

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert granted.status_code == 200  # the refused request spent nothing
    assert [entry["status"] for entry in server.token_log] == [400, 200]


def test_auth_server_stop_without_start_returns() -> None:
    server = AuthServer()
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (server.stop(), server.stop(), done.set()), daemon=True)
    stopper.start()
    assert done.wait(10), "stop() of a server that never started blocked"


def test_auth_server_stops_without_waiting_out_a_poll() -> None:
    # serve_forever's default poll is 0.5 s, so these ten stops took ~5 s; now ~0.1 s. The bound is
    # half the old cost, far above the new one, so a loaded machine does not fail it.
    started = time.monotonic()
    for _ in range(10):
        with AuthServer():
            pass
    assert time.monotonic() - started < 2.5


def test_the_plugin_keeps_its_first_name() -> None:
    """``-p requests_tokenrefresh.pytest_plugin`` (0.2's name) serves the same fixtures."""
    for name in pytest_plugin.__all__:
        assert getattr(plugin_under_its_first_name, name) is getattr(pytest_plugin, name)
