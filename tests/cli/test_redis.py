"""The command line over Redis: ``--redis URL --key KEY`` and ``demo --hosts``, against a real redis-server.

The commands run in this process (``cli.main(argv)``, tests/cli_support.py) with keyring's fail
backend installed: a command that touched the keyring instead of Redis would fail. ``demo
--hosts`` runs as a user runs it, ``python -m requests_tokenrefresh`` in a subprocess from
``tmp_path``, with keyring pointed at its fail backend too. The redis-server is started by
tests/redis_support.py on 127.0.0.1 and stopped by PID; without one the tests fail and say how
to install it.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring.backends.fail
import pytest

from requests_tokenrefresh.testing import AuthServer, use_keyring

from ..cli_support import CommandLine, Result, run_process
from ..redis_support import INSTALL_HELP, RedisServer, free_port, redis_server_path, wait_for

KEY = "example-api:alice"
PASSWORD = "redis-pass-0123456789"
CLIENT = ["--client-id", "cli-app", "--client-secret", "client-secret-42"]
#: Seconds one command may take, a demo's start-up on a loaded machine included.
COMMAND_TIMEOUT = 180.0

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    with AuthServer(ttl=3600, rotation="reuse-detection", client_id="cli-app", client_secret="client-secret-42") as srv:
        yield srv


def environment(**env: str) -> dict[str, str]:
    """A demo's environment: no keyring (the fail backend), no inherited settings of ours."""
    result = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKEN"))}
    result.update(PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring", **env)
    return result


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CommandLine]:
    """``cli(*args, stdin="", env=None)``: run the command in this process, from ``tmp_path``, with no keyring."""
    monkeypatch.chdir(tmp_path)
    with use_keyring(keyring.backends.fail.Keyring()):
        yield CommandLine(capsys, monkeypatch)


@pytest.fixture
def cli_process(tmp_path: Path) -> Run:
    """``cli_process(*args, env=None)``: run ``python -m requests_tokenrefresh``, return the result."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_process(tmp_path, *args, env=environment(**(env or {})), timeout=COMMAND_TIMEOUT)

    return run


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("requests-tokenrefresh: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "usage: requests-tokenrefresh" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def stored(server: RedisServer, key: str = KEY) -> dict[str, Any] | None:
    """The record in Redis, read without the package."""
    with server.client() as client:
        raw = client.get(key)
    return None if raw is None else json.loads(raw)


def status_json(cli: CommandLine, *store: str) -> dict[str, Any]:
    result = cli("status", *store, "--json")
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


# --- status, import, refresh, clear --------------------------------------------------------------


def test_import_status_refresh_status_clear(
    cli: CommandLine, redis_server: RedisServer, auth_server: AuthServer
) -> None:
    store = ["--redis", redis_server.url, "--key", KEY]
    login = {**auth_server.issue(), "expires_in": 120}  # short, so the refreshed expiry is plainly later

    imported = cli("import", *store, stdin=json.dumps(login))
    assert imported.returncode == 0, imported.stderr
    assert f"in Redis key {KEY} at {redis_server.url}" in imported.stdout
    assert re.search(rf"Redis key +{KEY} at {re.escape(redis_server.url)}", imported.stdout)
    record = stored(redis_server)
    assert record is not None
    assert record["refresh_token"] == login["refresh_token"]

    before = status_json(cli, *store)
    assert before["redis"] == redis_server.url
    assert before["key"] == KEY
    assert 60 < before["expires_in"] <= 120
    table = cli("status", *store)
    assert table.returncode == 0
    assert re.search(r"expires +in (1 min \d+ s|2 min)", table.stdout), table.stdout

    refreshed = cli("refresh", *store, "--token-url", auth_server.token_url, *CLIENT)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "refresh token rotated" in refreshed.stdout
    assert auth_server.refresh_calls == 1
    assert auth_server.token_log[0]["refresh_token"] == login["refresh_token"]
    record = stored(redis_server)
    assert record is not None
    assert record["refresh_token"] not in (None, login["refresh_token"])

    after = status_json(cli, *store)
    assert after["expires_at"] > before["expires_at"] + 3000  # the server's hour, not the imported 2 minutes
    assert 3500 < after["expires_in"] <= 3600
    assert after["refresh_token_fingerprint"] != before["refresh_token_fingerprint"]
    assert re.search(r"expires +in (59 min \d+ s|1 h)", cli("status", *store).stdout)

    cleared = cli("clear", *store)
    assert cleared.returncode == 0, cleared.stderr
    assert f"deleted the token in Redis key {KEY}" in cleared.stdout
    assert stored(redis_server) is None
    assert_one_line_error(cli("status", *store), f"no token is stored in Redis key {KEY!r}")
    assert cli("clear", *store).returncode == 0  # nothing to delete is not an error

    outputs = "".join(r.stdout + r.stderr for r in (imported, table, refreshed, cleared))
    for secret in (login["access_token"], login["refresh_token"], record["access_token"], record["refresh_token"]):
        assert secret not in outputs
    assert not auth_server.revoked


def test_the_url_can_come_from_the_environment(
    cli: CommandLine, redis_server: RedisServer, auth_server: AuthServer
) -> None:
    env = {"REQUESTS_TOKENREFRESH_REDIS_URL": redis_server.url}

    assert cli("import", "--key", KEY, stdin=json.dumps(auth_server.issue()), env=env).returncode == 0

    result = cli("status", "--key", KEY, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["redis"] == redis_server.url


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["status", "--service", "s", "--username", "u", "--redis", "redis://127.0.0.1:1/0", "--key", "k"], "two"),
        (["import", "--service", "s", "--key", "k"], "two different stores"),
        (["refresh", "--username", "u", "--redis", "redis://127.0.0.1:1/0", "--token-url", "x"], "two"),
        (["status", "--redis", "redis://127.0.0.1:1/0"], "--redis needs --key"),
        (["clear", "--key", "k"], "REQUESTS_TOKENREFRESH_REDIS_URL"),
        (["status"], "--redis and --key"),
        (["status", "--service", "s"], "--service needs --username"),
        (["demo", "--redis", "redis://127.0.0.1:1/0"], "--redis needs --hosts"),
        (["demo", "--hosts", "2", "--timeline", "t.json"], "--timeline is for the demo in one process"),
        (["demo", "--hosts", "0"], "from 1 to 64"),
    ],
)
def test_mixed_or_incomplete_store_options_are_usage_errors(cli: CommandLine, args: list[str], fragment: str) -> None:
    assert_usage_error(cli(*args), fragment)


def test_unreachable_redis_is_a_one_line_error(cli: CommandLine) -> None:
    url = f"redis://alice:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there

    for args in (["status"], ["clear"], ["import"], ["refresh", "--token-url", "http://127.0.0.1:9/token"]):
        result = cli(*args, "--redis", url, "--key", KEY, stdin=json.dumps({"access_token": "at-0123456789"}))

        assert_one_line_error(result, f"Redis key {KEY!r}", "redis://alice:***@127.0.0.1:")
        assert PASSWORD not in result.stdout + result.stderr
        assert "at-0123456789" not in result.stderr


def test_a_value_that_is_not_a_token_record(cli: CommandLine, redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.set(KEY, json.dumps({"access_token": "at-0123456789", "expires_in": 60}))  # a response, no version

    result = cli("status", "--redis", redis_server.url, "--key", KEY)

    assert_one_line_error(result, "holds a token response, not a token record", "GET", "import --redis")
    assert "at-0123456789" not in result.stderr


def test_refresh_when_redis_cannot_store_the_new_token(
    cli: CommandLine, tmp_path: Path, redis_server: RedisServer, auth_server: AuthServer
) -> None:
    """A user that may read the record but not write it: the rotated token goes to a file, never lost."""
    admin = ["--redis", redis_server.url, "--key", KEY]
    login = auth_server.issue()
    assert cli("import", *admin, stdin=json.dumps(login)).returncode == 0
    with redis_server.client() as client:  # read-only on the record, everything on the lease's keys
        client.execute_command("ACL", "SETUSER", "reader", "on", f">{PASSWORD}", f"~{KEY}:*", f"%R~{KEY}", "+@all")
    reader = ["--redis", redis_server.url.replace("redis://", f"redis://reader:{PASSWORD}@"), "--key", KEY]
    unsaved = tmp_path / "unsaved.json"

    result = cli(
        "refresh", *reader, "--token-url", auth_server.token_url, *CLIENT, "--timeout", "3",
        "--unsaved-token-file", str(unsaved),
    )  # fmt: skip

    assert_one_line_error(result, "Redis could not store it", str(unsaved), "import --redis", "reader:***@")
    assert result.stdout == ""
    assert PASSWORD not in result.stderr
    assert auth_server.refresh_calls == 1
    assert stored(redis_server)["refresh_token"] == login["refresh_token"]  # type: ignore[index]
    assert stat.S_IMODE(unsaved.stat().st_mode) == 0o600
    rescued = json.loads(unsaved.read_text())
    assert rescued["refresh_token"] not in (None, login["refresh_token"])
    for secret in (rescued["access_token"], rescued["refresh_token"]):
        assert secret not in result.stderr
    # Stored as the message says (with a user that may write), the rotated refresh token works.
    assert cli("import", *admin, str(unsaved)).returncode == 0
    again = cli("refresh", *admin, "--token-url", auth_server.token_url, *CLIENT)
    assert again.returncode == 0, again.stderr
    assert not auth_server.revoked


def test_refresh_keeps_the_login_on_invalid_grant_unless_asked(
    cli: CommandLine, redis_server: RedisServer, auth_server: AuthServer
) -> None:
    store = ["--redis", redis_server.url, "--key", KEY]
    login = {**auth_server.issue(), "refresh_token": "rt-not-known-to-the-server-0123"}
    assert cli("import", *store, stdin=json.dumps(login)).returncode == 0
    refresh = ["refresh", *store, "--token-url", auth_server.token_url, *CLIENT]

    kept = cli(*refresh)

    assert_one_line_error(kept, "rejected the refresh token", "was kept (--delete-on-invalid-grant deletes it)")
    assert stored(redis_server) is not None
    deleted = cli(*refresh, "--delete-on-invalid-grant")
    assert_one_line_error(deleted, "the stored token was deleted")
    assert stored(redis_server) is None


@pytest.mark.parametrize(
    ("kind", "described"),
    [("string", "(not valid JSON at character 0)"), ("hash", "(a Redis hash, not a string)")],
)
def test_import_and_login_leave_a_key_that_is_not_a_token_alone(
    cli: CommandLine, redis_server: RedisServer, auth_server: AuthServer, kind: str, described: str
) -> None:
    with redis_server.client() as client:
        if kind == "string":
            client.set(KEY, "hunter2-not-json")
        else:
            client.hset(KEY, mapping={"user": "bob", "password": "hunter2"})
        before = client.dump(KEY)
    store = ["--redis", redis_server.url, "--key", KEY]
    login = {**auth_server.issue(), "expires_in": 120}
    refused = f"the Redis key {KEY!r} at {redis_server.url} holds a value that is not a token {described}"

    imported = cli("import", *store, stdin=json.dumps(login))
    logged_in = cli(
        "login", *store, "--issuer", auth_server.issuer, "--client-id", "cli-app", "--browser", "--no-browser",
        "--timeout", "5",
    )  # fmt: skip

    assert_one_line_error(imported, refused, "so import leaves it alone: pass --force to replace it")
    assert_one_line_error(logged_in, refused, "so login leaves it alone: pass --force to replace it")
    assert "hunter2" not in imported.stderr + logged_in.stderr
    with redis_server.client() as client:
        assert client.dump(KEY) == before
    forced = cli("import", *store, "--force", stdin=json.dumps(login))
    assert forced.returncode == 0, forced.stderr
    assert stored(redis_server)["refresh_token"] == login["refresh_token"]  # type: ignore[index]


# --- demo --hosts ------------------------------------------------------------------------------


def hosts_summary(stdout: str, hosts: int) -> dict[str, Any]:
    """The numbers of the summary of ``demo --hosts``."""
    numbers: dict[str, Any] = {}
    for name, pattern in {
        "hosts": r"summary after [\d.]+ s with (\d+) hosts",
        "ok": r"requests +(\d+) ok, \d+ failed \(all hosts\)",
        "failed": r"requests +\d+ ok, (\d+) failed \(all hosts\)",
        "refresh_calls": r"refresh calls +(\d+) for \d+ expiries across all hosts",
        "expiries": r"refresh calls +\d+ for (\d+) expiries across all hosts",
        "presented_twice": r"presented twice: (\d+)",
    }.items():
        match = re.search(pattern, stdout)
        assert match, f"no {name} in {stdout}"
        numbers[name] = int(match.group(1))
    numbers["per_host"] = [
        (int(n), int(ok), int(failed))
        for n, ok, failed in re.findall(r"^  host (\d+) +(\d+) ok, (\d+) failed", stdout, re.M)
    ]
    assert len(numbers["per_host"]) == hosts, stdout
    return numbers


def assert_clean_run(result: subprocess.CompletedProcess[str], hosts: int) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    numbers = hosts_summary(result.stdout, hosts)
    assert numbers["hosts"] == hosts
    assert numbers["failed"] == 0
    assert numbers["ok"] > 0
    assert numbers["expiries"] >= 1  # the seed is stored expired: at least its refresh
    assert numbers["refresh_calls"] == numbers["expiries"]
    assert numbers["presented_twice"] == 0
    assert [n for n, _, _ in numbers["per_host"]] == list(range(1, hosts + 1))
    assert all(ok > 0 and failed == 0 for _, ok, failed in numbers["per_host"])
    assert sum(ok for _, ok, _ in numbers["per_host"]) == numbers["ok"]
    assert "token family revoked: no" in result.stdout
    assert "result: OK, one refresh call per expiry across" in result.stdout
    return numbers


@pytest.mark.slow
@pytest.mark.timeout(COMMAND_TIMEOUT + 60)
def test_demo_hosts_over_a_given_redis(cli_process: Run, redis_server: RedisServer) -> None:
    url = redis_server.url

    result = cli_process("demo", "--hosts", "3", "--duration", "4", "--redis", url)

    assert_clean_run(result, 3)
    assert re.search(r"3 processes x 8 threads for 4 s", result.stdout)
    with redis_server.client() as client:
        assert client.keys("requests-tokenrefresh-demo:*") == []  # the run's keys are deleted at the end
    assert redis_server.process is not None
    assert redis_server.process.poll() is None  # a given server is left running


@pytest.mark.slow
@pytest.mark.timeout(COMMAND_TIMEOUT + 60)
def test_demo_hosts_starts_its_own_redis_server(cli_process: Run) -> None:
    executable = redis_server_path()
    if executable is None:
        pytest.fail(INSTALL_HELP)
    path = os.pathsep.join([os.path.dirname(executable), os.environ.get("PATH", "")])

    result = cli_process("demo", "--hosts", "2", "--duration", "3", env={"PATH": path})

    assert_clean_run(result, 2)
    match = re.search(r"redis: +redis://127\.0\.0\.1:(\d+)/0, a redis-server the demo started", result.stdout)
    assert match, result.stdout
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5):
        pass  # stopped at the end


def test_demo_hosts_without_redis_server_says_how_to_get_one(cli_process: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    result = cli_process("demo", "--hosts", "2", "--duration", "1", env={"PATH": str(empty)})

    assert_one_line_error(result, "apt-get install redis-server", "--redis URL")


def test_demo_hosts_with_an_unreachable_redis(cli_process: Run) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"

    result = cli_process("demo", "--hosts", "2", "--duration", "1", "--redis", url)

    assert_one_line_error(result, "redis://:***@127.0.0.1:")
    assert PASSWORD not in result.stdout + result.stderr


DEMO_CTRL_C = ["--hosts", "2", "--threads", "2", "--duration", "90"]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            found += [int(child) for child in f.read().split()]
    return found


@pytest.mark.slow
@pytest.mark.timeout(COMMAND_TIMEOUT + 60)
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child PIDs from /proc (Linux)")
def test_demo_hosts_ends_every_host_on_ctrl_c(tmp_path: Path, redis_server: RedisServer) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "requests_tokenrefresh", "demo", *DEMO_CTRL_C, "--redis", redis_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=environment(),
    )
    try:
        assert process.stderr is not None
        # Piped, the progress line comes once a second once the hosts run: wait for the first.
        ready, _, _ = select.select([process.stderr], [], [], COMMAND_TIMEOUT)
        assert ready, "no progress line"
        assert b"requests" in process.stderr.readline()
        hosts = [
            pid for pid in children(process.pid) if Path(f"/proc/{pid}/cmdline").read_bytes().find(b"host_main") > 0
        ]
        assert len(hosts) == 2

        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(30)

        assert process.returncode == 130
        assert time.monotonic() - started < 15
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in hosts), 15, "the hosts to end")
        assert "Traceback" not in process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()  # by PID: the demo this test started
            process.wait(30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    with redis_server.client() as client:
        assert client.keys("requests-tokenrefresh-demo:*") == []


def test_redis_server_is_there() -> None:
    """The Redis tests need a real server; say how to get one instead of skipping."""
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
