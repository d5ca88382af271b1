"""The command line: ``cli.main(argv)`` in this process, and as a process where only a process shows it.

Most tests call :func:`requests_tokenrefresh.cli.main` in this process (tests/cli_support.py):
its output captured with ``capsys``, standard input and the environment set by the test, the
keyring the test's own (the autouse ``memory_keyring`` fixture), never the machine's. A few run
``python -m requests_tokenrefresh`` from ``tmp_path`` (so the installed package, not the
checkout, is imported) with keyring pointed at the demo's file backend in ``tmp_path`` or at
keyring's fail backend: the module's exit status, a keyring backend named in the environment, a
reader that goes away, the demo (it serves, starts threads and takes Ctrl-C as a process does).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.backends.fail
import keyring.errors
import pytest

from requests_tokenrefresh._demo import DemoFileKeyring
from requests_tokenrefresh.cli.format import _duration
from requests_tokenrefresh.testing import AuthServer, use_keyring

from ..cli_support import FILE_BACKEND, CommandLine, ReadOnlyKeyring, Result, process_environment, run_process
from ..jwt_support import make_jwt

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
Backend = keyring.backend.KeyringBackend


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CommandLine:
    """``cli(*args, stdin="", env=None)``: run the command in this process, from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return CommandLine(capsys, monkeypatch)


def stored(backend: Backend, service: str = "example-api", username: str = "alice") -> dict[str, Any] | None:
    """The record in the test's keyring, read without the package."""
    raw = backend.get_password(service, username)
    return None if raw is None else json.loads(raw)


def store(backend: Backend, record: dict[str, Any] | str) -> None:
    backend.set_password("example-api", "alice", record if isinstance(record, str) else json.dumps(record))


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


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("requests-tokenrefresh: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# The commands run as processes: keyring is the demo's file backend in tmp_path, or keyring's fail backend.


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def cli_process(tmp_path: Path, keyring_file: Path) -> Run:
    """``cli_process(*args, backend=FILE_BACKEND, env=None)``: run ``python -m requests_tokenrefresh``."""

    def run(
        *args: str, backend: str = FILE_BACKEND, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_process(tmp_path, *args, env=process_environment(keyring_file, backend, **(env or {})))

    return run


def stored_in_file(keyring_file: Path, service: str = "example-api", username: str = "alice") -> dict[str, Any] | None:
    """The record in the file keyring, read without the package."""
    if not keyring_file.exists():
        return None
    raw = json.loads(keyring_file.read_text()).get(service, {}).get(username)
    return None if raw is None else json.loads(raw)


def store_in_file(keyring_file: Path, record: dict[str, Any] | str) -> None:
    raw = record if isinstance(record, str) else json.dumps(record)
    keyring_file.write_text(json.dumps({"example-api": {"alice": raw}}))


# --- the command itself ------------------------------------------------------------------------


def test_console_script_is_declared() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "requests-tokenrefresh"] == ["requests_tokenrefresh.cli:main"]


def test_python_m_runs_the_command_and_exits_with_its_status(cli_process: Run, keyring_file: Path) -> None:
    version = cli_process("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"requests-tokenrefresh {importlib.metadata.version('requests-tokenrefresh')}"

    store_in_file(keyring_file, record(expires_at=time.time() - 60, refresh_token=None))
    unusable = cli_process("status", *ENTRY)
    assert unusable.returncode == 1, unusable.stderr
    assert re.search(r"usable +no \(expired and no refresh token", unusable.stdout)

    usage = cli_process("status")
    assert usage.returncode == 2
    assert "usage: requests-tokenrefresh status" in usage.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, keyring_file: Path) -> None:
    # `status --show-secrets | head -c 100`: a large token fills the pipe before the command is done.
    store_in_file(keyring_file, record(access_token="access-secret-" + "x" * 200_000))
    reader, writer = os.pipe()
    try:
        with os.fdopen(reader, "rb") as head:
            process = subprocess.Popen(
                [sys.executable, "-m", "requests_tokenrefresh", "status", *ENTRY, "--show-secrets"],
                stdout=writer,
                stderr=subprocess.PIPE,
                cwd=tmp_path,
                env=process_environment(keyring_file),
            )
            os.close(writer)
            writer = -1
            assert len(head.read(100)) == 100
        _, stderr = process.communicate(timeout=60)
    finally:
        if writer >= 0:
            os.close(writer)

    assert process.returncode == 1
    assert stderr == b""  # no traceback, nor "Exception ignored" at exit


def test_help_lists_the_commands_and_version_prints(cli: CommandLine) -> None:
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
def test_usage_errors_exit_2(cli: CommandLine, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "usage: requests-tokenrefresh" in result.stderr
    assert "Traceback" not in result.stderr


# --- import and status -------------------------------------------------------------------------


def test_import_from_a_file_then_status(cli: CommandLine, tmp_path: Path, memory_keyring: Backend) -> None:
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
    saved = stored(memory_keyring)
    assert saved is not None
    assert saved["access_token"] == RESPONSE["access_token"]
    assert saved["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert saved["extra"] == {"user": {"id": 7}}


def test_import_from_stdin_then_status_json(cli: CommandLine) -> None:
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


def test_show_secrets_prints_the_tokens(cli: CommandLine) -> None:
    cli("import", *ENTRY, stdin=json.dumps(RESPONSE))

    text = cli("status", *ENTRY, "--show-secrets")
    info = json.loads(cli("status", *ENTRY, "--json", "--show-secrets").stdout)

    assert "access-secret-0123456789" in text.stdout
    assert "refresh-secret-0123456789" in text.stdout
    assert info["access_token"] == "access-secret-0123456789"
    assert info["refresh_token"] == "refresh-secret-0123456789"


def test_import_takes_the_expiry_of_a_jwt_without_expires_in(cli: CommandLine, memory_keyring: Backend) -> None:
    exp = int(time.time()) + 900
    access = make_jwt(exp=exp, sub="alice")

    result = cli("import", *ENTRY, stdin=json.dumps({"access_token": access}))

    assert result.returncode == 0, result.stderr
    saved = stored(memory_keyring)
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
    cli: CommandLine, memory_keyring: Backend, fields: dict[str, Any], code: int, usable: str
) -> None:
    store(memory_keyring, record(**fields))

    result = cli("status", *ENTRY)

    assert result.returncode == code
    assert re.search(r"usable +" + re.escape(usable), result.stdout)
    assert json.loads(cli("status", *ENTRY, "--json").stdout)["usable"] is (code == 0)


@pytest.mark.parametrize(
    ("file", "content", "fragments"),
    [
        ("missing.json", None, ["cannot read missing.json: it (or its directory) does not exist"]),
        ("bad.json", "{not json", ["bad.json is not valid JSON", "line 1, column 2"]),
        ("empty.json", "", ["empty.json is not valid JSON"]),
        ("no-token.json", '{"token_type": "Bearer", "refresh_token": "refresh-secret"}', ["has no access_token"]),
        ("list.json", '["access-secret"]', ["must be a JSON object"]),
        ("bad-expiry.json", '{"access_token": "access-secret", "expires_in": "soon"}', ["expires_in"]),
    ],
)
def test_import_errors(
    cli: CommandLine,
    tmp_path: Path,
    memory_keyring: Backend,
    file: str,
    content: str | None,
    fragments: list[str],
) -> None:
    if content is not None:
        (tmp_path / file).write_text(content)

    result = cli("import", *ENTRY, file)

    assert_one_line_error(result, *fragments)
    assert "secret" not in result.stderr
    assert stored(memory_keyring) is None


def test_invalid_json_on_stdin(cli: CommandLine) -> None:
    assert_one_line_error(cli("import", *ENTRY, stdin="access_token=x"), "standard input is not valid JSON")


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        ({"expires_at": 1.7e12}, ["expires_at 1700000000000 is after the year 9999", "milliseconds"]),
        ({"expires_at": -5}, ["expires_at -5 is before 1970"]),
        ({"expires_in": -60}, ["expires_in is not a positive number"]),
        ({"expires_in": 1e300}, ["expires_in is not a positive number"]),
    ],
)
def test_import_refuses_an_expiry_that_is_not_a_time(
    cli: CommandLine, memory_keyring: Backend, fields: dict[str, Any], fragments: list[str]
) -> None:
    result = cli("import", *ENTRY, stdin=json.dumps({"access_token": "access-secret", **fields}))

    assert_one_line_error(result, *fragments)
    assert stored(memory_keyring) is None


@pytest.mark.parametrize(
    ("fields", "code", "expires"),
    [
        ({"expires_at": 1.7e12}, 0, r"in more than 100 years \(1700000000000 epoch seconds, after the year 9999"),
        ({"expires_at": 1e300, "obtained_at": -1e300}, 0, r"in more than 100 years"),
        ({"expires_at": -1e12}, 0, r"expired more than 100 years ago \(-1000000000000 epoch seconds"),
        ({"expires_at": -1e12, "refresh_token": None}, 1, r"expired more than 100 years ago"),
    ],
)
def test_status_never_fails_on_a_stored_expiry(
    cli: CommandLine, memory_keyring: Backend, fields: dict[str, Any], code: int, expires: str
) -> None:
    # What an older import stored (a JWT's exp in milliseconds, say). Token may also read an expiry
    # outside years 1-9999 as unknown, and an unknown expiry is usable.
    store(memory_keyring, record(**fields))

    result = cli("status", *ENTRY)
    as_json = cli("status", *ENTRY, "--json")

    assert result.stderr == ""
    assert re.search(r"expires +(" + expires + "|unknown)", result.stdout), result.stdout
    if re.search(r"expires +unknown", result.stdout):
        code = 0
    assert result.returncode == code, result.stdout
    assert as_json.returncode == code, as_json.stderr
    assert json.loads(as_json.stdout)["usable"] is (code == 0)


def test_status_shows_odd_stored_text_safely(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, record(scope="\x1b[2J\ud800 read", extra={"\x07bell": 1}))

    result = cli("status", *ENTRY)

    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert re.search(r"scope +\\x1b\[2J\\ud800 read", result.stdout), result.stdout


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_import_of_deeply_nested_json(cli: CommandLine, tmp_path: Path, memory_keyring: Backend, where: str) -> None:
    nested = "[" * 100_000
    (tmp_path / "deep.json").write_text(nested)

    result = cli("import", *ENTRY, "deep.json") if where == "file" else cli("import", *ENTRY, stdin=nested)

    assert_one_line_error(result, "nested too deeply")
    assert stored(memory_keyring) is None


def test_import_refuses_json_nested_deeper_than_a_token_response(cli: CommandLine, memory_keyring: Backend) -> None:
    # Parsable, but deep enough that storing it could exceed the recursion limit further down.
    response = {"access_token": "access-secret", "user": json.loads("[" * 900 + "]" * 900)}

    assert_one_line_error(cli("import", *ENTRY, stdin=json.dumps(response)), "nested more than 64 levels")
    assert stored(memory_keyring) is None


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_import_accepts_a_utf8_bom(cli: CommandLine, tmp_path: Path, memory_keyring: Backend, where: str) -> None:
    data = b"\xef\xbb\xbf" + json.dumps(RESPONSE).encode()
    (tmp_path / "bom.json").write_bytes(data)

    result = cli("import", *ENTRY, "bom.json") if where == "file" else cli("import", *ENTRY, stdin=data)

    assert result.returncode == 0, result.stderr
    assert stored(memory_keyring)["access_token"] == RESPONSE["access_token"]  # type: ignore[index]


def test_import_of_text_that_is_not_utf8(cli: CommandLine) -> None:
    assert_one_line_error(cli("import", *ENTRY, stdin=b"\xff{}"), "standard input is not UTF-8 text")


def test_a_stored_token_response_without_a_version(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, dict(RESPONSE))  # put there with `keyring set`, not by this package

    result = cli("status", *ENTRY)

    assert_one_line_error(
        result, "holds a token response", "keyring get example-api alice | requests-tokenrefresh import"
    )
    assert "keyring del" not in result.stderr
    assert "secret" not in result.stderr
    # Doing what it says keeps the token.
    assert cli("import", *ENTRY, stdin=json.dumps(RESPONSE)).returncode == 0
    assert cli("status", *ENTRY).returncode == 0


@pytest.mark.parametrize("command", [["status"], ["status", "--json"]])
def test_unknown_entry(cli: CommandLine, command: list[str]) -> None:
    assert_one_line_error(cli(*command, *ENTRY), "no token is stored in keyring entry 'example-api'/'alice'")


def test_a_record_that_is_not_a_token(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, "hunter2-not-json")

    result = cli("status", *ENTRY)

    assert_one_line_error(
        result, "does not hold a token record", "requests-tokenrefresh clear --service example-api --username alice"
    )
    assert "keyring del" not in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "command", [["status"], ["import", "-"], ["clear"], ["refresh", "--token-url", "https://auth.example/token"]]
)
def test_no_keyring_backend(cli: CommandLine, command: list[str]) -> None:
    with use_keyring(keyring.backends.fail.Keyring()):
        result = cli(*command[:1], *ENTRY, *command[1:], stdin=json.dumps(RESPONSE))

    assert_one_line_error(result, "no usable keyring backend")


def test_an_unloadable_keyring_backend(cli_process: Run) -> None:
    # keyring loads the backend PYTHON_KEYRING_BACKEND names at its first use in a process.
    assert_one_line_error(cli_process("status", *ENTRY, backend="no_such_module.Keyring"), "ModuleNotFoundError")


# --- what import replaces ----------------------------------------------------------------------

# Values another program may keep in the entry, and how the error names them (never quoting them).
NOT_TOKENS = {
    "a password": ("hunter2-not-json", "(not valid JSON at character 0)"),
    "a JSON secret": (
        '{"user": "bob", "password": "hunter2"}',
        "(JSON, but neither a token record nor a token response)",
    ),
    "a JSON list": ('["hunter2"]', "(JSON, but neither a token record nor a token response)"),
    "no record": (json.dumps({"version": 1, "password": "hunter2"}), "(JSON, but neither a token record nor"),
}


@pytest.mark.parametrize(("value", "kind"), NOT_TOKENS.values(), ids=NOT_TOKENS)
def test_import_leaves_a_value_that_is_not_a_token_alone(
    cli: CommandLine, memory_keyring: Backend, value: str, kind: str
) -> None:
    store(memory_keyring, value)

    result = cli("import", *ENTRY, stdin=json.dumps(RESPONSE))

    assert_one_line_error(
        result,
        f"the keyring entry 'example-api'/'alice' holds a value that is not a token {kind}",
        "it may belong to another program, so import leaves it alone: pass --force to replace it",
    )
    assert "hunter2" not in result.stderr
    assert result.stdout == ""
    assert memory_keyring.get_password("example-api", "alice") == value
    forced = cli("import", *ENTRY, "--force", stdin=json.dumps(RESPONSE))
    assert forced.returncode == 0, forced.stderr
    assert stored(memory_keyring)["access_token"] == RESPONSE["access_token"]  # type: ignore[index]


@pytest.mark.parametrize(
    "value",
    [record(access_token="older-access-0123456789"), dict(RESPONSE), record(version=2)],
    ids=["an earlier login", "a token response stored by hand", "a record of a newer layout"],
)
def test_import_replaces_a_token_without_force(
    cli: CommandLine, memory_keyring: Backend, value: dict[str, Any]
) -> None:
    store(memory_keyring, value)

    result = cli("import", *ENTRY, stdin=json.dumps({**RESPONSE, "access_token": "new-access-0123456789"}))

    assert result.returncode == 0, result.stderr
    assert stored(memory_keyring)["access_token"] == "new-access-0123456789"  # type: ignore[index]


@pytest.mark.parametrize("mode", [0o600, 0o644], ids=["private", "others may read it"])
@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"Host example\n    User alice\n    IdentityFile ~/.ssh/hunter2\n", "(not valid JSON at character 0)"),
        (b"\xffhunter2\x00", "(not UTF-8 text)"),
    ],
    ids=["an ssh config", "binary"],
)
def test_import_leaves_a_file_that_is_not_a_token_alone(
    cli: CommandLine, tmp_path: Path, content: bytes, kind: str, mode: int
) -> None:
    path = tmp_path / "config"
    path.write_bytes(content)
    path.chmod(mode)

    result = cli("import", "--file", str(path), stdin=json.dumps(RESPONSE))

    assert_one_line_error(
        result, f"the token file {str(path)!r} holds a value that is not a token {kind}", "pass --force to replace it"
    )
    assert "hunter2" not in result.stderr
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == mode
    forced = cli("import", "--file", str(path), "--force", stdin=json.dumps(RESPONSE))
    assert forced.returncode == 0, forced.stderr
    assert json.loads(path.read_text())["access_token"] == RESPONSE["access_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_import_replaces_a_token_file_that_others_may_read(cli: CommandLine, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text(json.dumps(record(access_token="older-access-0123456789")))
    path.chmod(0o644)

    result = cli("import", "--file", str(path), stdin=json.dumps(RESPONSE))

    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text())["access_token"] == RESPONSE["access_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- clear -------------------------------------------------------------------------------------


def test_clear_deletes_the_record(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, record())

    result = cli("clear", *ENTRY)

    assert result.returncode == 0
    assert "deleted" in result.stdout
    assert stored(memory_keyring) is None
    assert cli("status", *ENTRY).returncode == 1


def test_clear_deletes_a_broken_record(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, "not a record")

    assert cli("clear", *ENTRY).returncode == 0
    assert stored(memory_keyring) is None
    assert memory_keyring.entries == {}  # type: ignore[attr-defined]


def test_clear_on_an_empty_entry(cli: CommandLine) -> None:
    result = cli("clear", *ENTRY)

    assert result.returncode == 0, result.stderr
    assert "nothing is stored" in result.stdout
    assert result.stderr == ""


# --- refresh -----------------------------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    with AuthServer(ttl=3600, rotation="reuse-detection", client_id="cli-app", client_secret="client-secret-42") as srv:
        yield srv


def refresh_args(server: AuthServer, *extra: str) -> list[str]:
    return ["refresh", *ENTRY, "--token-url", server.token_url, "--client-id", "cli-app", *extra]


def test_refresh_rotates_the_stored_token(cli: CommandLine, memory_keyring: Backend, auth_server: AuthServer) -> None:
    login = auth_server.issue()
    cli("import", *ENTRY, stdin=json.dumps(login))

    result = cli(*refresh_args(auth_server), env={"REQUESTS_TOKENREFRESH_CLIENT_SECRET": "client-secret-42"})

    assert result.returncode == 0, result.stderr
    assert auth_server.refresh_calls == 1
    assert auth_server.token_log[0]["refresh_token"] == login["refresh_token"]
    assert "refresh token rotated" in result.stdout
    saved = stored(memory_keyring)
    assert saved is not None
    assert saved["refresh_token"] not in (None, login["refresh_token"])
    assert saved["access_token"] != login["access_token"]
    for secret in (login["access_token"], saved["access_token"], saved["refresh_token"], "client-secret-42"):
        assert secret not in result.stdout + result.stderr


def test_refresh_with_the_secret_as_an_option_and_post_auth(cli: CommandLine, auth_server: AuthServer) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))

    result = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42", "--client-auth", "post"))

    assert result.returncode == 0, result.stderr
    assert auth_server.token_log[0]["status"] == 200


def test_refresh_with_a_wrong_client_secret_keeps_the_token(
    cli: CommandLine, memory_keyring: Backend, auth_server: AuthServer
) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))
    before = stored(memory_keyring)

    result = cli(*refresh_args(auth_server, "--client-secret", "wrong"))

    assert_one_line_error(result, "invalid_client")
    assert stored(memory_keyring) == before


def test_refresh_with_a_rejected_refresh_token_keeps_the_login(
    cli: CommandLine, memory_keyring: Backend, auth_server: AuthServer
) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))
    before = stored(memory_keyring)
    auth_server.revoke_families()

    result = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42"))

    assert_one_line_error(
        result, "rejected the refresh token", "invalid_grant", "the stored token was kept", "--delete-on-invalid-grant"
    )
    assert stored(memory_keyring) == before  # a test command does not log the user out


def test_refresh_with_a_rejected_refresh_token_deletes_it_when_asked(
    cli: CommandLine, memory_keyring: Backend, auth_server: AuthServer
) -> None:
    cli("import", *ENTRY, stdin=json.dumps(auth_server.issue()))
    auth_server.revoke_families()

    result = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42", "--delete-on-invalid-grant"))

    assert_one_line_error(result, "invalid_grant", "the stored token was deleted")
    assert stored(memory_keyring) is None


def test_refresh_without_a_refresh_token(cli: CommandLine, memory_keyring: Backend, auth_server: AuthServer) -> None:
    store(memory_keyring, record(refresh_token=None))

    assert_one_line_error(cli(*refresh_args(auth_server)), "no refresh token")
    assert auth_server.refresh_calls == 0
    assert stored(memory_keyring) is not None


def test_refresh_refuses_plain_http_to_another_host(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, record())
    before = stored(memory_keyring)

    # A literal address of another host (TEST-NET-1): nothing is resolved and nothing is sent.
    result = cli("refresh", *ENTRY, "--token-url", "http://192.0.2.1/token")

    assert_one_line_error(result, "plain http", "http://192.0.2.1/token", "--allow-insecure-http")
    assert stored(memory_keyring) == before


def test_refresh_when_the_keyring_cannot_store_the_new_token(
    cli: CommandLine, tmp_path: Path, memory_keyring: Backend, auth_server: AuthServer
) -> None:
    login = auth_server.issue()
    store(memory_keyring, record(access_token=login["access_token"], refresh_token=login["refresh_token"]))
    unsaved = tmp_path / "unsaved.json"

    with use_keyring(ReadOnlyKeyring(memory_keyring)):
        result = cli(
            # --timeout: the save is retried until then (30 s by default) before the token goes to the file
            *refresh_args(
                auth_server,
                "--client-secret",
                "client-secret-42",
                "--unsaved-token-file",
                str(unsaved),
                "--timeout",
                "5",
            ),
        )

    assert_one_line_error(result, "could not store it", "the keychain is locked", str(unsaved), "import")
    assert result.stdout == ""  # no "refreshed" line
    assert auth_server.refresh_calls == 1
    assert stat.S_IMODE(unsaved.stat().st_mode) == 0o600
    rescued = json.loads(unsaved.read_text())
    assert rescued["refresh_token"] not in (None, login["refresh_token"])  # the rotated one, the only valid one
    for secret in (rescued["access_token"], rescued["refresh_token"], "client-secret-42"):
        assert secret not in result.stdout + result.stderr
    # The command the message gives stores it, and the rotated refresh token works.
    assert cli("import", *ENTRY, str(unsaved)).returncode == 0
    assert stored(memory_keyring)["refresh_token"] == rescued["refresh_token"]  # type: ignore[index]
    again = cli(*refresh_args(auth_server, "--client-secret", "client-secret-42"))
    assert again.returncode == 0, again.stderr
    assert not auth_server.revoked


def test_refresh_writes_an_unsaved_token_to_the_user_data_directory(
    cli: CommandLine, tmp_path: Path, memory_keyring: Backend, auth_server: AuthServer
) -> None:
    login = auth_server.issue()
    store(memory_keyring, record(access_token=login["access_token"], refresh_token=login["refresh_token"]))
    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}

    secret = ("--client-secret", "client-secret-42", "--timeout", "5")  # the save is retried until the timeout
    with use_keyring(ReadOnlyKeyring(memory_keyring)):
        result = cli(*refresh_args(auth_server, *secret), env=home)

    assert_one_line_error(result, "could not store it")
    [unsaved] = (tmp_path / "data" / "requests-tokenrefresh").glob("unsaved-token-*.json")
    assert str(unsaved) in result.stderr
    assert stat.S_IMODE(unsaved.stat().st_mode) == 0o600
    assert json.loads(unsaved.read_text())["refresh_token"] != login["refresh_token"]


def test_refresh_to_a_closed_port_says_which_url_and_why(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, record())
    with socket.socket() as bound:  # bound, never listening: connecting is refused, and no one else gets the port
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/oauth/token"

        result = cli("refresh", *ENTRY, "--token-url", url, "--timeout", "2")

    assert_one_line_error(result, f"cannot reach the token endpoint {url}", "refused")
    assert stored(memory_keyring) is not None


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
def test_demo_with_short_settings(cli_process: Run, keyring_file: Path) -> None:
    started = time.monotonic()
    result = cli_process("demo", "--threads", "8", "--duration", "3", "--ttl", "1")

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
    assert stored_in_file(keyring_file, "requests-tokenrefresh-demo", "demo") is None  # deleted at the end
    progress = result.stderr.splitlines()
    assert 1 <= len(progress) <= 8  # not a TTY: a line per second, no carriage returns
    assert all(
        re.match(r" *\d+\.\ds  requests \d+ ok, \d+ failed  refresh calls \d+  token ", line) for line in progress
    )
    assert "\r" not in result.stderr
    assert not SERVER_SECRET.search(result.stdout + result.stderr)


@pytest.mark.slow
def test_demo_keep_leaves_the_record(cli_process: Run, keyring_file: Path) -> None:
    result = cli_process("demo", "--threads", "2", "--duration", "1", "--ttl", "1", "--keep", "--service", "svc")

    assert result.returncode == 0, result.stdout + result.stderr
    kept = stored_in_file(keyring_file, "svc", "demo")
    assert kept is not None
    assert kept["version"] == 1


@pytest.mark.slow
def test_demo_without_a_keyring_uses_a_temporary_file_keyring(cli_process: Run, tmp_path: Path) -> None:
    result = cli_process("demo", "--threads", "4", "--duration", "1", "--ttl", "1", backend=FAIL_BACKEND)

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


def test_demo_leaves_an_entry_it_did_not_create_alone(cli_process: Run, keyring_file: Path) -> None:
    store_in_file(keyring_file, record())
    before = keyring_file.read_text()

    result = cli_process("demo", "--service", "example-api", "--username", "alice", "--duration", "1")

    assert_one_line_error(result, "'example-api'/'alice' already holds a token the demo did not create")
    assert keyring_file.read_text() == before  # neither overwritten nor deleted


def test_demo_leaves_a_value_that_is_not_a_token_alone(cli_process: Run, keyring_file: Path) -> None:
    store_in_file(keyring_file, "hunter2-not-json")

    result = cli_process("demo", "--service", "example-api", "--username", "alice", "--duration", "1")

    assert_one_line_error(result, "already holds a value that is not a demo token")
    assert "hunter2" not in result.stderr
    assert json.loads(keyring_file.read_text()) == {"example-api": {"alice": "hunter2-not-json"}}


@pytest.mark.slow
def test_demo_reuses_and_deletes_a_token_an_earlier_demo_kept(cli_process: Run, keyring_file: Path) -> None:
    demo = ["demo", "--threads", "2", "--duration", "1", "--ttl", "1"]
    assert cli_process(*demo, "--keep").returncode == 0
    assert stored_in_file(keyring_file, "requests-tokenrefresh-demo", "demo") is not None

    result = cli_process(*demo)

    assert result.returncode == 0, result.stdout + result.stderr
    assert stored_in_file(keyring_file, "requests-tokenrefresh-demo", "demo") is None


def test_demo_with_an_unwritable_timeline_says_so_in_a_sentence(cli_process: Run, tmp_path: Path) -> None:
    result = cli_process("demo", "--timeline", str(tmp_path / "no-such-dir" / "timeline.json"))

    assert_one_line_error(result, "no-such-dir/timeline.json: it (or its directory) does not exist")
    assert "Errno" not in result.stderr


def _demo_process(keyring_file: Path, tmp_path: Path, *args: str, stderr: Any, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "requests_tokenrefresh", "demo", "--threads", "4", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=tmp_path,
        env=process_environment(keyring_file, **env),
    )


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """Read ``fd`` until ``wanted`` appears, the stream ends or ``timeout`` passes."""
    deadline, data = time.monotonic() + timeout, b""
    while wanted not in data and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty whose other end has closed
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.slow
@pytest.mark.parametrize("when", ["starting", "running"])
def test_demo_ends_promptly_on_ctrl_c(tmp_path: Path, keyring_file: Path, when: str) -> None:
    process = _demo_process(keyring_file, tmp_path, "--duration", "60", stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        if when == "starting":  # the server is up, the client threads not yet
            assert b"server:" in _read_until(process.stdout.fileno(), b"server:", 30)
        else:
            assert b"clients:" in _read_until(process.stdout.fileno(), b"clients:", 30)
            assert _read_until(process.stderr.fileno(), b"\n", 10)  # the first progress line: requests are running

        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        status = process.wait(timeout=10)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        _, stderr = process.communicate(timeout=10)

    assert status == 130
    # 0.1-0.2 s on a quiet machine and with one core busy; once 5.6 s (py310, on 2 cores busy
    # with three test suites at once), not reproduced since. What the test guards is that Ctrl-C
    # ends the run instead of its 60 s; 10 s keeps that, with the demo's own words if it fails.
    assert took < 10.0, f"{took:.2f} s after SIGINT; the demo's stderr ends: {stderr.decode()[-600:]!r}"
    assert stderr.decode().endswith("requests-tokenrefresh: interrupted\n")
    assert b"Traceback" not in stderr
    assert stored_in_file(keyring_file, "requests-tokenrefresh-demo", "demo") is None  # cleaned up, or never stored


@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 40])
def test_demo_progress_fits_the_terminal(tmp_path: Path, keyring_file: Path, columns: int) -> None:
    controller, terminal = pty.openpty()
    try:
        process = _demo_process(
            keyring_file, tmp_path, "--duration", "1", "--ttl", "1", stderr=terminal, COLUMNS=str(columns)
        )
        os.close(terminal)
        terminal = -1
        output = _read_until(controller, b"\0", 30)  # everything, until the command closes the terminal
        assert process.wait(timeout=30) == 0
        process.communicate(timeout=10)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)

    updates = [part.replace(b"\x1b[K", b"").decode() for part in re.split(rb"[\r\n]+", output) if part.strip()]
    assert len(updates) >= 3  # rewritten in place about five times a second
    assert all(len(update) < columns for update in updates), updates
    assert all(re.match(r"\d+\.\ds  \d+ ok", update) for update in updates), updates


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5.0 s"),
        (59.7, "59 s"),  # never "60 s"
        (61, "1 min 1 s"),
        (3661, "1 h 1 min"),
        (86400 + 1, "1 d"),  # the unit below is 0: not "1 d 1 s" (a status read a second later)
        (86400 + 3600 + 5, "1 d 1 h"),
        (-2 * 86400, "2 d"),
    ],
)
def test_durations_show_the_largest_unit_and_the_one_below_it(seconds: float, shown: str) -> None:
    assert _duration(seconds) == shown


def test_refresh_with_a_client_certificate_over_mutual_tls(
    cli: CommandLine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuthServer(tls=True, client_cert_auth=True, client_id="svc", ttl=3600) as srv:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.ca_path))  # the kit's CA, for the token request
        token_file, response = tmp_path / "token.json", tmp_path / "response.json"
        response.write_text(json.dumps(srv.issue()))
        assert cli("import", "--file", str(token_file), str(response)).returncode == 0
        cert, key = srv.issue_client_cert()
        common = ["refresh", "--file", str(token_file), "--token-url", srv.token_url, "--client-id", "svc"]
        refused = cli(*common)
        assert refused.returncode == 1
        assert "invalid_client" in refused.stderr
        refreshed = cli(*common, "--client-cert", cert, "--client-key", key)
        assert refreshed.returncode == 0, refreshed.stderr
        assert srv.refresh_calls == 2
        assert not srv.revoked
        lonely = cli(*common, "--client-key", key)
        assert lonely.returncode != 0
        assert "--client-key needs --client-cert" in lonely.stderr
