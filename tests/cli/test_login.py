"""``login``, ``logout`` and the refresh token's expiry in ``status``, driven as a user drives them.

The command runs in this process (``cli.main(argv)``, tests/cli_support.py) against the loopback
AuthServer and the test's own keyring; a login that waits runs in a thread, its standard error
read as it comes. The browser is played by requests: the test reads the address the command
prints on standard error, fetches the server's login form, submits it, and follows the redirect
to the command's loopback listener. The device login is approved on the server's page while the
command polls (every 0.2 s here). Ctrl-C is sent to a real process (``python -m
requests_tokenrefresh``), with keyring pointed at the demo's file backend in ``tmp_path``.
"""

from __future__ import annotations

import html
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring.backend
import pytest
import requests

from requests_tokenrefresh.testing import AuthServer

from ..cli_support import Background, CommandLine, Result, process_environment

ENTRY = ["--service", "example-api", "--username", "alice"]
AUTHORIZE_URL = re.compile(r"http://127\.0\.0\.1:\d+/authorize\?\S+")
DEVICE_URL = re.compile(r"http://127\.0\.0\.1:\d+/device\?user_code=\S+")
HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
DAY = 86400

Backend = keyring.backend.KeyringBackend


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    """A loopback authorization server for public clients, with an issuer and its metadata."""
    with AuthServer(ttl=3600) as server:
        yield server


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CommandLine:
    """``cli(*args)``: run the command in this process, from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return CommandLine(capsys, monkeypatch)


@pytest.fixture
def start(cli: CommandLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``start(*args)``: a :class:`Background` command (a login that waits); ended when the test ends."""
    started: list[Background] = []

    def run(*args: str) -> Background:
        started.append(Background(monkeypatch, *args))
        return started[-1]

    yield run
    for command in started:
        command.join(30)


class Command:
    """The command running as a process (for Ctrl-C); its standard error is read as it comes."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "requests_tokenrefresh", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=process_environment(tmp_path / "keyring.json"),
        )
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stdout = ""

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30) -> str:
        """The first match of ``pattern`` on standard error, waiting for it at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.stderr)
            if found:
                return found.group(0)
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"not printed: {pattern.pattern}; stderr so far: {self.stderr!r}")

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit; standard output is a line or two, so the pipe never fills."""
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:  # only this test's own process
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()
        self.process.stdout.close()
        return self.process.returncode


def browse(url: str) -> requests.Response:
    """What the user does with the printed address: open it, approve, land on the command's page."""
    with requests.Session() as s:
        s.trust_env = False
        form = s.get(url, timeout=10)
        assert form.status_code == 200, form.text
        fields = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(form.text)}
        answer = s.post(url.split("?")[0], data={**fields, "approve": "1"}, timeout=10, allow_redirects=False)
        assert answer.status_code == 302, answer.text
        return s.get(answer.headers["Location"], timeout=30)


def approve_device(auth: AuthServer, url: str) -> None:
    """The user opens the printed verification address on a phone and presses Allow."""
    with requests.Session() as s:
        s.trust_env = False
        page = s.get(url, timeout=10)
        code = re.findall(r'name="user_code" value="([^"]+)"', page.text)[0]
        assert s.post(auth.url + "/device", data={"user_code": code, "approve": "1"}, timeout=10).ok


def stored(backend: Backend) -> dict[str, Any] | None:
    """The record in the test's keyring, read without the package."""
    raw = backend.get_password("example-api", "alice")
    return None if raw is None else json.loads(raw)


def store(backend: Backend, record: dict[str, Any]) -> None:
    backend.set_password("example-api", "alice", json.dumps(record))


def stored_in_file(tmp_path: Path) -> dict[str, Any] | None:
    """The record in the file keyring of a command run as a process, read without the package."""
    path = tmp_path / "keyring.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text()).get("example-api", {}).get("alice")
    return None if raw is None else json.loads(raw)


def secrets_of(auth: AuthServer) -> list[str]:
    found = [*auth._access, *auth._refresh]
    for entry in auth.login_log:
        found += [v for k, v in entry.items() if k in ("code", "verifier", "device_code") and v]
    return found


def assert_no_secret(auth: AuthServer, *texts: str) -> None:
    secrets = secrets_of(auth)
    assert secrets, "no secret to look for"
    for text in texts:
        for secret in secrets:
            assert secret not in text


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("requests-tokenrefresh: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(refresh_expires_in: float, obtained: float) -> dict[str, Any]:
    now = time.time()
    return {
        "version": 1,
        "access_token": "access-secret-0123456789",
        "refresh_token": "refresh-secret-0123456789",
        "token_type": "Bearer",
        "expires_at": now - 60,
        "obtained_at": now - obtained,
        "scope": "api",
        "extra": {"refresh_expires_in": refresh_expires_in},
    }


# -- login ------------------------------------------------------------------------------------------


def test_browser_login_stores_a_record_that_status_shows(
    auth: AuthServer, cli: CommandLine, start: Any, memory_keyring: Backend
) -> None:
    auth.refresh_expires_in = 30 * DAY
    login = ["login", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli", "--scope", "api"]
    command = start(*login, "--browser", "--no-browser", "--timeout", "30")
    page = browse(command.wait_for(AUTHORIZE_URL))
    assert command.finish() == 0, command.stderr
    assert "The login worked" in page.text
    lines = command.stdout.splitlines()
    assert len(lines) == 1, command.stdout
    assert re.fullmatch(
        r"logged in: token [0-9a-f]{8} stored in keyring entry example-api/alice; it expires in 59 min \d+ s "
        r"\(.+\), the refresh token in 29 d 23 h \(.+\)",
        lines[0],
    ), lines[0]
    assert "Log in with your browser at this address" in command.stderr
    saved = stored(memory_keyring)
    assert saved is not None
    assert saved["scope"] == "api"
    assert saved["access_token"] in auth._access
    assert auth.login_log[-1]["grant"] == "authorization_code"

    status = cli("status", *ENTRY)
    assert status.returncode == 0, status.stderr
    assert re.search(r"refresh token +present, expires in 29 d 23 h \(", status.stdout), status.stdout
    info = json.loads(cli("status", *ENTRY, "--json").stdout)
    assert info["refresh_token_expires_at"] == pytest.approx(saved["obtained_at"] + 30 * DAY)
    assert info["refresh_token_expired"] is False
    assert_no_secret(auth, command.stdout, command.stderr, status.stdout)


def test_device_login_polls_until_approved_into_a_token_file(
    auth: AuthServer, cli: CommandLine, start: Any, tmp_path: Path
) -> None:
    auth.device_interval = 0.2
    token_file = tmp_path / "config" / "token.json"
    login = ["login", "--file", str(token_file), "--issuer", auth.issuer, "--client-id", "cli", "--device"]
    command = start(*login)
    url = command.wait_for(DEVICE_URL)
    time.sleep(0.5)  # a few polls answered authorization_pending first
    approve_device(auth, url)
    assert command.finish() == 0, command.stderr
    assert "confirm the code" in command.stderr
    assert re.fullmatch(
        rf"logged in: token [0-9a-f]{{8}} stored in token file {re.escape(str(token_file))}; it expires in .+",
        command.stdout.strip(),
    ), command.stdout
    device = auth.devices[auth.login_log[-1]["device_code"]]
    assert device["polls"] >= 2
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    status = cli("status", "--file", str(token_file))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"token file      {token_file}\n")
    assert_no_secret(auth, command.stdout, command.stderr, status.stdout)


def test_ctrl_c_ends_a_waiting_login_at_once_and_releases_the_port(auth: AuthServer, tmp_path: Path) -> None:
    port = free_port()
    login = ["login", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli", "--browser", "--no-browser"]
    command = Command(tmp_path, *login, "--port", str(port))
    command.wait_for(re.compile("press Ctrl-C to cancel"))
    started = time.monotonic()
    command.process.send_signal(signal.SIGINT)
    assert command.finish(timeout=15) == 130
    assert time.monotonic() - started < 10
    assert command.stderr.splitlines()[-1] == "requests-tokenrefresh: interrupted"
    assert stored_in_file(tmp_path) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the listener is gone


def test_an_unknown_issuer_is_a_one_line_error(auth: AuthServer, cli: CommandLine, memory_keyring: Backend) -> None:
    for issuer, fragment in (
        (auth.url + "/nobody", "metadata_not_found"),
        (f"http://127.0.0.1:{free_port()}", "network_error"),
    ):
        result = cli("login", *ENTRY, "--issuer", issuer, "--client-id", "cli", "--browser")
        assert_one_line_error(result, fragment)
        assert result.stdout == ""
    assert stored(memory_keyring) is None


def test_login_leaves_a_value_that_is_not_a_token_alone(
    auth: AuthServer, cli: CommandLine, memory_keyring: Backend
) -> None:
    memory_keyring.set_password("example-api", "alice", "hunter2-not-json")
    login = ["login", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli", "--browser", "--no-browser"]

    result = cli(*login, "--timeout", "5")

    assert_one_line_error(
        result,
        "the keyring entry 'example-api'/'alice' holds a value that is not a token (not valid JSON at character 0)",
        "so login leaves it alone: pass --force to replace it",
    )
    assert "hunter2" not in result.stderr
    assert result.stdout == ""
    assert auth.login_log == []
    assert memory_keyring.get_password("example-api", "alice") == "hunter2-not-json"


def test_login_with_force_replaces_a_value_that_is_not_a_token(
    auth: AuthServer, start: Any, memory_keyring: Backend
) -> None:
    memory_keyring.set_password("example-api", "alice", "hunter2-not-json")
    login = ["login", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli", "--browser", "--no-browser"]

    forced = start(*login, "--force", "--timeout", "30")
    browse(forced.wait_for(AUTHORIZE_URL))

    assert forced.finish() == 0, forced.stderr
    assert "in keyring entry example-api/alice (replacing the value stored there, which was not a token);" in (
        forced.stdout
    )
    first = stored(memory_keyring)
    assert first is not None
    assert first["access_token"] in auth._access
    # A token is replaced without --force, and the line says so.
    again = start(*login, "--timeout", "30")
    browse(again.wait_for(AUTHORIZE_URL))
    assert again.finish() == 0, again.stderr
    assert "in keyring entry example-api/alice (replacing the token stored there);" in again.stdout
    assert stored(memory_keyring)["access_token"] != first["access_token"]  # type: ignore[index]
    assert "hunter2" not in forced.stdout + forced.stderr + again.stdout + again.stderr


def test_a_busy_port_is_a_one_line_error(auth: AuthServer, cli: CommandLine, memory_keyring: Backend) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        login = ["login", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli", "--browser", "--no-browser"]
        result = cli(*login, "--port", str(port), "--timeout", "30")
    assert_one_line_error(result, "port_in_use", f"port {port}")
    assert stored(memory_keyring) is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--client-id", "cli", "--token-url", "http://127.0.0.1:9/token"], "name the authorization server"),
        (
            ["--client-id", "cli", "--device", "--authorization-url", "http://127.0.0.1:9/a", "--token-url", "x"],
            "--device needs --issuer, or --device-authorization-url",
        ),
    ],
)
def test_login_without_the_server_is_a_usage_error(cli: CommandLine, args: list[str], fragment: str) -> None:
    result = cli("login", *ENTRY, *args)
    assert result.returncode == 2, result
    assert fragment in result.stderr


# -- logout -----------------------------------------------------------------------------------------


def test_logout_revokes_both_tokens_then_deletes(auth: AuthServer, cli: CommandLine, memory_keyring: Backend) -> None:
    issued = auth.issue()
    store(memory_keyring, {"version": 1, **issued, "extra": {}, "obtained_at": time.time()})
    result = cli("logout", *ENTRY, "--issuer", auth.issuer, "--client-id", "cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"revoked the refresh token and the access token at the revocation endpoint of {auth.issuer} and "
        "deleted the token in keyring entry example-api/alice\n"
    )
    assert [(e["hint"], e["token"]) for e in auth.revocation_log] == [
        ("refresh_token", issued["refresh_token"]),
        ("access_token", issued["access_token"]),
    ]
    assert stored(memory_keyring) is None
    assert auth.revoked
    again = cli("logout", *ENTRY, "--issuer", auth.issuer)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "nothing is stored in keyring entry example-api/alice: nothing to log out of\n"
    assert len(auth.revocation_log) == 2
    assert_no_secret(auth, result.stdout, result.stderr)


def test_logout_with_a_failing_revocation_endpoint_still_deletes(
    auth: AuthServer, cli: CommandLine, memory_keyring: Backend
) -> None:
    auth.revocation_mode = "fail"
    store(memory_keyring, {"version": 1, **auth.issue(), "extra": {}})
    result = cli("logout", *ENTRY, "--revocation-url", auth.url + "/revoke", "--client-id", "cli")
    assert_one_line_error(
        result,
        "the refresh_token was not revoked: temporarily_unavailable",
        "the token in keyring entry example-api/alice was deleted all the same",
    )
    assert stored(memory_keyring) is None
    assert len(auth.revocation_log) == 2
    assert_no_secret(auth, result.stdout, result.stderr)


def test_logout_without_a_revocation_endpoint_just_deletes(cli: CommandLine, memory_keyring: Backend) -> None:
    store(memory_keyring, record(refresh_expires_in=DAY, obtained=0))
    result = cli("logout", *ENTRY)
    assert result.returncode == 0, result.stderr
    assert "nothing was revoked (no --issuer or --revocation-url)" in result.stdout
    assert stored(memory_keyring) is None


# -- the refresh token's expiry in status -----------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "obtained", "exit_status", "row", "usable"),
    [
        (DAY, 2 * DAY, 1, r"present, but it expired 1 d ago \(.+\): log in again", "no (expired, and so has"),
        # Obtained an hour and 30 s ago: 22 h 59 min 30 s left, far from where the display turns to "23 h".
        (DAY, 3630, 0, r"present, expires in 22 h 59 min \(.+\): less than a day left, log in again soon", "yes"),
    ],
)
def test_status_says_when_the_refresh_token_expires(
    cli: CommandLine, memory_keyring: Backend, lifetime: float, obtained: float, exit_status: int, row: str, usable: str
) -> None:
    store(memory_keyring, record(refresh_expires_in=lifetime, obtained=obtained))
    result = cli("status", *ENTRY)
    assert result.returncode == exit_status, result
    rows = dict(re.findall(r"^(refresh token|usable) +(.*)$", result.stdout, re.MULTILINE))
    assert re.fullmatch(row, rows["refresh token"]), rows
    assert rows["usable"].startswith(usable), rows
    assert "refresh-secret" not in result.stdout


def test_status_names_a_key_its_user_holds(cli: CommandLine, tmp_path: Path) -> None:
    from requests_tokenrefresh import DPoPKey, FileStorage, Token, TokenRefreshAdapter

    key = DPoPKey.generate()
    token_file = tmp_path / "token.json"
    with AuthServer(ttl=3600, dpop=True) as auth:
        FileStorage(token_file).save(Token.from_response(auth.issue()))
        # A refresh by an adapter given the key: bound to it, and the record names it only.
        TokenRefreshAdapter(FileStorage(token_file), token_url=auth.token_url, dpop=key).refresh()
    status = cli("status", "--file", str(token_file), "--json")
    text = cli("status", "--file", str(token_file))

    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert (info["dpop_jkt"], info["dpop_key_in_record"]) == (key.thumbprint, False)
    assert f"thumbprint {key.thumbprint} (held by its user: not in the record)" in text.stdout


def test_login_with_dpop_keeps_the_key_with_the_record_and_status_shows_its_thumbprint(
    cli: CommandLine, start: Any, tmp_path: Path
) -> None:
    with AuthServer(ttl=3600, dpop=True) as auth:
        auth.dpop_nonce = True  # the login's first poll meets use_dpop_nonce and answers it
        auth.device_interval = 0.2
        token_file = tmp_path / "token.json"
        login = ["login", "--file", str(token_file), "--issuer", auth.issuer, "--client-id", "cli", "--device"]
        command = start(*login, "--dpop")
        approve_device(auth, command.wait_for(DEVICE_URL))
        assert command.finish() == 0, command.stderr
        record = json.loads(token_file.read_text())
        assert record["token_type"] == "DPoP"
        from requests_tokenrefresh import DPoPKey

        jkt = DPoPKey.from_jwk(record["dpop_key"]).thumbprint
        assert f"bound to DPoP key {jkt}" in command.stdout
        assert {entry["jkt"] for entry in auth.dpop_log} == {jkt}
        status = cli("status", "--file", str(token_file))
        assert status.returncode == 0, status.stderr
        assert f"DPoP key        thumbprint {jkt} (kept with the record)" in status.stdout
        assert record["dpop_key"]["d"] not in status.stdout + command.stdout + command.stderr
        # The next refresh signs with the record's key, though the command is not told of DPoP.
        refresh = cli("refresh", "--file", str(token_file), "--token-url", auth.token_url, "--client-id", "cli")
        assert refresh.returncode == 0, refresh.stderr
        assert json.loads(token_file.read_text())["dpop_key"] == record["dpop_key"]
        assert [e["jkt"] for e in auth.dpop_log][-1] == jkt
        assert not auth.revoked
