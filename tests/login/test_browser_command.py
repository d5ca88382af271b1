"""A browser whose launcher does not return: the login still completes, and its timeout still runs.

``webbrowser.open`` waits until the browser exits for a ``BROWSER`` command line with ``%s`` and
no trailing ``&``, for an unknown wrapper (a Windows browser under WSL) and for the console
browsers Python picks without a display (``www-browser``, ``lynx``, ``w3m``). Here ``BROWSER`` is a
real command: a small script that plays the user (it fetches the URL, submits the server's login
form, follows the redirect to the login's loopback listener and keeps the page) and then stays
open, as a browser does, until the test tells it to exit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import pytest

from requests_tokenrefresh import LoginError, MemoryStorage
from requests_tokenrefresh._discovery import _clear_cache
from requests_tokenrefresh.login import login_browser
from requests_tokenrefresh.testing import AuthServer

# argv: the directory it reports in, "login" or "idle", then the URL. It writes "pid" at once,
# "page" (the listener's status and page) once the redirect was answered, and exits when "stop"
# appears (or after 30 s at most, so that a launcher which waits for it ends on the old code too).
BROWSER_SCRIPT = r"""
import html, os, pathlib, re, sys, time, urllib.error, urllib.parse, urllib.request

here, mode, url = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(here / "pid").write_text(str(os.getpid()))
if mode == "login":
    http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    form = http.open(url, timeout=20).read().decode()
    hidden = re.findall(r'type="hidden" name="([^"]*)" value="([^"]*)"', form)
    fields = {html.unescape(k): html.unescape(v) for k, v in hidden}
    fields["approve"] = "1"
    try:  # the 302 to the loopback listener is followed; the listener answers once the login is done
        answer = http.open(url.split("?")[0], data=urllib.parse.urlencode(fields).encode(), timeout=20)
        status, page = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, page = exc.code, exc.read().decode()
    except OSError as exc:
        status, page = 0, repr(exc)
    (here / "page").write_text(f"{status}\n{page}")
deadline = time.monotonic() + 30
while not (here / "stop").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


class BrowserCommand:
    """The ``BROWSER`` command line, and what its process reported."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        script = directory / "browser.py"
        script.write_text(BROWSER_SCRIPT)
        self.script = script

    def command(self, mode: str) -> str:
        return " ".join(shlex.quote(a) for a in (sys.executable, str(self.script), str(self.directory), mode)) + " %s"

    def pid(self) -> int | None:
        path = self.directory / "pid"
        return int(path.read_text()) if path.exists() and path.read_text() else None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def page(self) -> str | None:
        path = self.directory / "page"
        return path.read_text() if path.exists() else None

    def wait_for(self, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (self.directory / what).exists():
            assert time.monotonic() < deadline, f"the browser command wrote no {what!r} within {timeout} s"
            time.sleep(0.05)

    def stop(self) -> None:
        """Let the browser exit, and wait (bounded) until it and the login's launcher thread are gone."""
        (self.directory / "stop").touch()
        deadline = time.monotonic() + 30
        while self.running() or _launcher_threads():
            if time.monotonic() > deadline:
                pid = self.pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                pytest.fail("the browser command or the login's launcher thread did not end within 30 s")
            time.sleep(0.05)


def _launcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "login-browser" and t.is_alive()]


def assert_port_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # fails if the login still listens


@pytest.fixture
def browser_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[BrowserCommand]:
    """webbrowser with a fresh registry, so that it reads the BROWSER the test sets."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):  # no graphical browser, no xdg-settings call
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    monkeypatch.setattr(webbrowser, "_os_preferred_browser", None)
    command = BrowserCommand(tmp_path)
    try:
        yield command
    finally:
        command.stop()


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    _clear_cache()
    with AuthServer(ttl=3600) as srv:
        yield srv
    _clear_cache()


@pytest.mark.timeout(90)
def test_a_browser_command_that_waits_for_the_browser_still_logs_in(
    auth: AuthServer, browser_command: BrowserCommand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWSER", browser_command.command("login"))
    storage = MemoryStorage()
    out = io.StringIO()
    started = time.monotonic()
    token = login_browser(client_id="cli", issuer=auth.issuer, storage=storage, stream=out, timeout=60)
    took = time.monotonic() - started
    # The login ended while the browser, which webbrowser.open waits for, still runs.
    assert browser_command.running()
    assert took < 30
    assert storage.load() == token
    assert [e["grant"] for e in auth.login_log] == ["authorization_code"]
    assert "Logged in." in out.getvalue()
    assert "No browser could be opened" not in out.getvalue()
    # The browser got the page that says so, not "did not finish the login in time".
    browser_command.wait_for("page")
    page = browser_command.page() or ""
    assert page.startswith("200\n"), page
    assert "The login worked" in page
    # When the browser exits, the launcher thread ends with it.
    browser_command.stop()
    assert not _launcher_threads()


@pytest.mark.timeout(90)
def test_the_timeout_runs_while_the_browser_command_has_not_returned(
    auth: AuthServer, browser_command: BrowserCommand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWSER", browser_command.command("idle"))
    storage = MemoryStorage()
    out = io.StringIO()
    started = time.monotonic()
    with pytest.raises(LoginError, match=r"timeout: no login arrived within 2 seconds") as info:
        login_browser(client_id="cli", issuer=auth.issuer, storage=storage, stream=out, timeout=2)
    assert time.monotonic() - started < 20
    assert info.value.error == "timeout"
    browser_command.wait_for("pid")
    assert browser_command.running()  # webbrowser.open has not returned: the browser is still open
    port = int(re.findall(r"%3A(\d+)%2F", out.getvalue())[0])
    assert_port_free(port)
    assert storage.load() is None
