"""The command line, driven as a user drives it: ``python -m requests_tokenrefresh`` in a subprocess.

Every run points keyring at the demo's file backend in ``tmp_path`` (or at keyring's fail
backend), never at the machine's keyring, and runs from ``tmp_path`` so the installed package,
not the checkout, is imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from requests_tokenrefresh._authserver import AuthServer
from requests_tokenrefresh._demo import DemoFileKeyring

FILE_BACKEND = "requests_tokenrefresh._demo.DemoFileKeyring"
FAIL_BACKEND = "keyring.backends.fail.Keyring"
ENTRY = ["--service", "example-api", "--username", "alice"]
# What the loopback server's tokens look like; none may ever appear in output without --show-secrets.
SERVER_SECRET = re.compile(r"\b(?:at|rt)-[A-Za-z0-9_-]{20,}")
RESPONSE = {
    "access_token": "access-secret-0123456789",
    "refresh_token": "refresh-secret-0123456789",
    "token_type": "bearer",
    "expires_in": 3600,
    "scope": "read write",
    "user": {"id": 7},
}

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def cli(tmp_path: Path, keyring_file: Path) -> Run:
    """``cli(*args, stdin=None, backend=FILE_BACKEND, env=None)``: run the command, return the result."""

    def run(
        *args: str, stdin: str | None = None, backend: str = FILE_BACKEND, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKEN"))}
        environment.update(
            PYTHON_KEYRING_BACKEND=backend, REQUESTS_TOKENREFRESH_DEMO_KEYRING=str(keyring_file), **(env or {})
        )
        return subprocess.run(
            [sys.executable, "-m", "requests_tokenrefresh", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=60,
            check=False,
        )

    return run


def stored(keyring_file: Path, service: str = "example-api", username: str = "alice") -> dict[str, Any] | None:
    """The record in the file keyring, read without the package."""
    if not keyring_file.exists():
        return None
    raw = json.loads(keyring_file.read_text()).get(service, {}).get(username)
    return None if raw is None else json.loads(raw)


def store(keyring_file: Path, record: dict[str, Any] | str) -> None:
    raw = record if isinstance(record, str) else json.dumps(record)
    keyring_file.write_text(json.dumps({"example-api": {"alice": raw}}))


def record(**fields: Any) -> dict[str, Any]:
    now = time.time()
    base = {
        "version": 1,
        "access_token": "access-secret-0123456789",
        "refresh_token": "refresh-secret-0123456789",
        "token_type": "Bearer",
        "expires_at": now + 600,
        "obtained_at": now,
        "scope": "api",
        "extra": {},
    }
    return {**base, **fields}


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("requests-tokenrefresh: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- the command itself ------------------------------------------------------------------------


def test_console_script_is_declared() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "requests-tokenrefresh"] == ["requests_tokenrefresh.cli:main"]


def test_help_lists_the_commands_and_version_prints(cli: Run) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("demo", "status", "import", "refresh", "clear"):
        assert command in result.stdout
    assert (
        cli("--version").stdout.strip()
        == f"requests-tokenrefresh {importlib.metadata.version('requests-tokenrefresh')}"
    )
    assert "exit status: 0 if a usable token is stored" in cli("status", "--help").stdout


@pytest.mark.parametrize(
    "args",
    [[], ["status"], ["status", "--service", "s"], ["demo", "--threads", "0"], ["demo", "--ttl", "x"], ["nope"]],
)
def test_usage_errors_exit_2(cli: Run, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "usage: requests-tokenrefresh" in result.stderr
    assert "Traceback" not in result.stderr


# --- import and status -------------------------------------------------------------------------


def test_import_from_a_file_then_status(cli: Run, tmp_path: Path, keyring_file: Path) -> None:
    (tmp_path / "login.json").write_text(json.dumps(RESPONSE))

    imported = cli("import", *ENTRY, "login.json")
    status = cli("status", *ENTRY)

    assert imported.returncode == 0, imported.stderr
    assert "stored token" in imported.stdout
    assert status.returncode == 0, status.stderr
    assert re.search(r"expires +in (59 min \d+ s|1 h)", status.stdout)
    assert re.search(r"scope +read write", status.stdout)
    assert re.search(r"refresh token +present", status.stdout)
    assert re.search(r"extra fields +user", status.stdout)
    assert re.search(r"fingerprints +access token [0-9a-f]{8}, refresh token [0-9a-f]{8}", status.stdout)
    for output in (imported.stdout + imported.stderr, status.stdout + status.stderr):
        assert "secret" not in output
    saved = stored(keyring_file)
    assert saved is not None
    assert saved["access_token"] == RESPONSE["access_token"]
    assert saved["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert saved["extra"] == {"user": {"id": 7}}


def test_import_from_stdin_then_status_json(cli: Run) -> None:
    assert cli("import", *ENTRY, "-", stdin=json.dumps(RESPONSE)).returncode == 0
    assert cli("import", *ENTRY, stdin=json.dumps(RESPONSE)).returncode == 0  # - is the default

    result = cli("status", *ENTRY, "--json")

    assert result.returncode == 0
    info = json.loads(result.stdout)
    assert info["service"] == "example-api"
    assert info["token_type"] == "Bearer"
    assert info["scope"] == "read write"
    assert info["has_refresh_token"] is True
    assert info["usable"] is True
    assert 3500 < info["expires_in"] <= 3600
    assert info["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert re.fullmatch(r"[0-9a-f]{8}", info["access_token_fingerprint"])
    assert re.fullmatch(r"[0-9a-f]{8}", info["refresh_token_fingerprint"])
    assert "secret" not in result.stdout


def test_show_secrets_prints_the_tokens(cli: Run) -> None:
    cli("import", *ENTRY, stdin=json.dumps(RESPONSE))

    text = cli("status", *ENTRY, "--show-secrets")
    info = json.loads(cli("status", *ENTRY, "--json", "--show-secrets").stdout)

    assert "access-secret-0123456789" in text.stdout
    assert "refresh-secret-0123456789" in text.stdout
    assert info["access_token"] == "access-secret-0123456789"
    assert info["refresh_token"] == "refresh-secret-0123456789"


def test_import_takes_the_expiry_of_a_jwt_without_expires_in(cli: Run, keyring_file: Path) -> None:
    exp = int(time.time()) + 900
    access = jwt.encode({"exp": exp, "sub": "alice"}, "a-signing-key-of-at-least-32-bytes!", algorithm="HS256")

    result = cli("import", *ENTRY, stdin=json.dumps({"access_token": access}))

    assert result.returncode == 0, result.stderr
    saved = stored(keyring_file)
    assert saved is not None
    assert saved["expires_at"] == exp
    assert access not in result.stdout


@pytest.mark.parametrize(
    ("fields", "code", "usable"),
    [
        ({"expires_at": time.time() - 60}, 0, "yes (expired; the refresh token can renew it)"),
        ({"expires_at": time.time() - 60, "refresh_token": None}, 1, "no (expired and no refresh token"),
        ({"expires_at": None, "obtained_at": None, "refresh_token": None}, 0, "yes"),
    ],
)
def test_status_exit_status_says_whether_the_token_is_usable(
    cli: Run, keyring_file: Path, fields: dict[str, Any], code: int, usable: str
) -> None:
    store(keyring_file, record(**fields))

    result = cli("status", *ENTRY)

    assert result.returncode == code
    assert re.search(r"usable +" + re.escape(usable), result.stdout)
    assert json.loads(cli("status", *ENTRY, "--json").stdout)["usable"] is (code == 0)


@pytest.mark.parametrize(
    ("file", "content", "fragments"),
    [
        ("missing.json", None, ["cannot read missing.json: No such file or directory"]),
        ("bad.json", "{not json", ["bad.json is not valid JSON", "line 1, column 2"]),
        ("empty.json", "", ["empty.json is not valid JSON"]),
        ("no-token.json", '{"token_type": "Bearer", "refresh_token": "refresh-secret"}', ["has no access_token"]),
        ("list.json", '["access-secret"]', ["must be a JSON object"]),
        ("bad-expiry.json", '{"access_token": "access-secret", "expires_in": "soon"}', ["expires_in"]),
    ],
)
def test_import_errors(
    cli: Run, tmp_path: Path, keyring_file: Path, file: str, content: str | None, fragments: list[str]
) -> None:
    if content is not None:
        (tmp_path / file).write_text(content)

    result = cli("import", *ENTRY, file)

    assert_one_line_error(result, *fragments)
    assert "secret" not in result.stderr
    assert stored(keyring_file) is None


def test_invalid_json_on_stdin(cli: Run) -> None:
    assert_one_line_error(cli("import", *ENTRY, stdin="access_token=x"), "standard input is not valid JSON")


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["clear"]])
def test_unknown_entry(cli: Run, command: list[str]) -> None:
    assert_one_line_error(cli(*command, *ENTRY), "no token is stored in keyring entry 'example-api'/'alice'")


def test_a_record_that_is_not_a_token(cli: Run, keyring_file: Path) -> None:
    store(keyring_file, "hunter2-not-json")

    result = cli("status", *ENTRY)

    assert_one_line_error(result, "does not hold a token record")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "command", [["status"], ["import", "-"], ["clear"], ["refresh", "--token-url", "https://auth.example/token"]]
)
def test_no_keyring_backend(cli: Run, command: list[str]) -> None:
    result = cli(*command[:1], *ENTRY, *command[1:], stdin=json.dumps(RESPONSE), backend=FAIL_BACKEND)

    assert_one_line_error(result, "no usable keyring backend")


def test_an_unloadable_keyring_backend(cli: Run) -> None:
    assert_one_line_error(cli("status", *ENTRY, backend="no_such_module.Keyring"), "ModuleNotFoundError")


# --- clear -------------------------------------------------------------------------------------


def test_clear_deletes_the_record(cli: Run, keyring_file: Path) -> None:
    store(keyring_file, record())

    result = cli("clear", *ENTRY)

    assert result.returncode == 0
    assert "deleted" in result.stdout
    assert stored(keyring_file) is None
    assert cli("status", *ENTRY).returncode == 1


def test_clear_deletes_a_broken_record(cli: Run, keyring_file: Path) -> None:
    store(keyring_file, "not a record")

    assert cli("clear", *ENTRY).returncode == 0
    assert json.loads(keyring_file.read_text()) == {"example-api": {}}


# --- refresh -----------------------------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    with AuthServer(ttl=3600, rotation="reuse-detection", client_id="cli-app", client_secret="client-secret-42") as srv:
        yield srv


def refresh_args(server: AuthServer, *extra: str) -> list[str]:
    return ["refresh", *ENTRY, "--token-url", server.token_url, "--client-id", "cli-app", *extra]


def test_refresh_rotates_the_stored_token(cli: Run, keyring_file: Path, auth_server: AuthServer) -> None:
    login = auth_server.issue()
    cli("import", *ENTRY, stdin=json.dumps(login))

    result = cli(*refresh_args(auth_server), env={"REQUESTS_TOKENREFRESH_CLIENT_SECRET": "client-secret-42"})

    assert result.returncode == 0, result.stderr
    assert auth_server.refresh_calls == 1
    assert auth_server.token_log[0]["refresh_token"] == login["refresh_token"]
    assert "refresh token rotated" in result.stdout
    saved = stored(keyring_file)
    assert saved is not None
    assert saved["refresh_token"] not in (None, login["refresh_token"])
    assert saved["access_token"] != login["access_token"]
    for secret in (login["access_token"], saved["access_token"], saved["refresh_token"], "client-secret-42"):
        assert secret not in result.stdout + result.stderr


def test_refresh_with_the_secret_as_an_option_and_post_auth(cli: Run, auth_server: AuthServer) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))

    result = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42", "--client-auth", "post"))

    assert result.returncode == 0, result.stderr
    assert auth_server.token_log[0]["status"] == 200


def test_refresh_with_a_wrong_client_secret_keeps_the_token(
    cli: Run, keyring_file: Path, auth_server: AuthServer
) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))
    before = stored(keyring_file)

    result = cli(*refresh_args(auth_server, "--client-secret", "wrong"))

    assert_one_line_error(result, "invalid_client")
    assert stored(keyring_file) == before


def test_refresh_with_a_revoked_refresh_token_ends_the_session(
    cli: Run, keyring_file: Path, auth_server: AuthServer
) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))
    auth_server.revoke_families()

    result = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42"))

    assert_one_line_error(result, "invalid_grant", "the stored token was deleted")
    assert stored(keyring_file) is None


def test_refresh_without_a_refresh_token(cli: Run, keyring_file: Path, auth_server: AuthServer) -> None:
    store(keyring_file, record(refresh_token=None))

    assert_one_line_error(cli(*refresh_args(auth_server)), "no refresh token")
    assert auth_server.refresh_calls == 0
    assert stored(keyring_file) is not None


def test_refresh_refuses_plain_http_to_another_host(cli: Run, keyring_file: Path) -> None:
    store(keyring_file, record())

    result = cli("refresh", *ENTRY, "--token-url", "http://auth.example/token")

    assert_one_line_error(result, "token_url must use https")


# --- demo --------------------------------------------------------------------------------------


def summary(stdout: str) -> dict[str, int]:
    """The numbers of the demo's summary."""
    patterns = {
        "ok": r"requests +(\d+) ok",
        "failed": r"(\d+) failed",
        "refresh_calls": r"refresh calls +(\d+) for",
        "expiries": r"for (\d+) expiries",
        "presented_twice": r"presented twice: (\d+)",
        "waited": r"waited for refresh +(\d+) requests",
        "replays": r"stale-401 replays +(\d+)",
    }
    numbers = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, stdout)
        assert match, f"no {name} in {stdout}"
        numbers[name] = int(match.group(1))
    return numbers


@pytest.mark.slow
def test_demo_with_short_settings(cli: Run, keyring_file: Path) -> None:
    started = time.monotonic()
    result = cli("demo", "--threads", "8", "--duration", "3", "--ttl", "1")

    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    numbers = summary(result.stdout)
    assert numbers["failed"] == 0
    assert numbers["ok"] > 0
    assert numbers["refresh_calls"] == numbers["expiries"] >= 2  # 1 s tokens over 3 s: one refresh a second
    assert numbers["presented_twice"] == 0
    assert numbers["waited"] >= 1  # at least the threads released onto the expired seed
    assert "token family revoked: no" in result.stdout
    assert "result: OK" in result.stdout
    assert "server:   http://127.0.0.1:" in result.stdout
    assert "keyring get requests-tokenrefresh-demo demo" in result.stdout  # the selected (file) backend
    assert stored(keyring_file, "requests-tokenrefresh-demo", "demo") is None  # deleted at the end
    progress = result.stderr.splitlines()
    assert 1 <= len(progress) <= 8  # not a TTY: a line per second, no carriage returns
    assert all(
        re.match(r" *\d+\.\ds  requests \d+ ok, \d+ failed  refresh calls \d+  token ", line) for line in progress
    )
    assert "\r" not in result.stderr
    assert not SERVER_SECRET.search(result.stdout + result.stderr)


@pytest.mark.slow
def test_demo_keep_leaves_the_record(cli: Run, keyring_file: Path) -> None:
    result = cli("demo", "--threads", "2", "--duration", "1", "--ttl", "1", "--keep", "--service", "svc")

    assert result.returncode == 0, result.stdout + result.stderr
    kept = stored(keyring_file, "svc", "demo")
    assert kept is not None
    assert kept["version"] == 1


@pytest.mark.slow
def test_demo_without_a_keyring_uses_a_temporary_file_keyring(cli: Run, tmp_path: Path) -> None:
    result = cli("demo", "--threads", "4", "--duration", "1", "--ttl", "1", backend=FAIL_BACKEND)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no usable keyring backend" in result.stdout
    command = next(line for line in result.stdout.splitlines() if "keyring get" in line)
    words = shlex.split(command)
    assignments = dict(word.split("=", 1) for word in words if "=" in word)
    keyring_path = Path(assignments["REQUESTS_TOKENREFRESH_DEMO_KEYRING"])
    try:
        assert assignments["PYTHON_KEYRING_BACKEND"] == FILE_BACKEND
        assert words[len(assignments) :] == ["keyring", "get", "requests-tokenrefresh-demo", "demo"]
        assert keyring_path.stat().st_mode & 0o077 == 0  # plaintext: for the owner only
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKEN"))}
        inspected = subprocess.run(
            [sys.executable, "-m", "keyring", *words[len(assignments) + 1 :]],
            capture_output=True,
            text=True,
            env={**environment, **assignments},
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert inspected.returncode == 0, inspected.stderr
        kept = json.loads(inspected.stdout)
        assert kept["version"] == 1
        assert kept["refresh_token"]
        assert kept["scope"] == "api"
    finally:
        shutil.rmtree(keyring_path.parent, ignore_errors=True)


def test_demo_file_keyring_is_never_chosen_without_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_TOKENREFRESH_DEMO_KEYRING", raising=False)
    assert DemoFileKeyring.viable is False

    monkeypatch.setenv("REQUESTS_TOKENREFRESH_DEMO_KEYRING", "/nonexistent/keyring.json")
    assert DemoFileKeyring.viable is True
