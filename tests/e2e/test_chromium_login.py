"""A real browser: headless Chromium completes one browser login against the loopback server.

``webbrowser.open`` is pointed at Chromium (Debian's ``chromium`` package), which opens the URL
the login prints, gets the server's login page, whose "auto-approve" mode submits the form by
itself, follows the redirect to the login's loopback listener and shows its page. The test then
checks the stored record. Chromium missing is a failure, not a skip: CI must install it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
import requests

from requests_tokenrefresh import KeyringStorage
from requests_tokenrefresh.login import login_browser
from requests_tokenrefresh.testing import AuthServer

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: run `apt-get install chromium` (Debian's package; .ci/run installs it)")


class Chromium:
    """webbrowser.open's stand-in: runs headless Chromium on the URL; stopped at the end of the test."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = profile.parent / "chromium.log"

    def open(self, url: str, *args: object, **kwargs: object) -> bool:
        with open(self.log, "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", url],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "HOME": str(self.profile.parent)},
                    start_new_session=True,  # its own process group: stop() signals all of it
                )
            )
        return True

    def stop(self) -> None:
        """End every Chromium process this test started, and wait until none is left.

        The launched process is the browser; its zygotes, renderers and network service share its
        process group and its crash handlers run in groups of their own. The network service
        writes the profile as it shuts down, after the browser has exited (a fixed sleep is not
        enough: removing the profile then failed with "Directory not empty" on a loaded CI
        machine). So the whole group is signalled, and the test waits until no live process names
        the test's directory on its command line before that directory is removed.
        """
        for process in self.processes:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        root = str(self.profile.parent)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + 15
            while (left := _live_processes_naming(root)) and time.monotonic() < deadline:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                time.sleep(0.05)
            if not left:
                return
        pytest.fail(f"Chromium processes {left} did not end within 30 s of the test")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _live_processes_naming(path: str) -> list[int]:
    """PIDs of processes, not zombies, whose command line contains ``path`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue  # ended while we looked
        if path.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Chromium]:
    executable = _chromium()
    with tempfile.TemporaryDirectory(prefix="rtr-chromium-") as tmp:
        browser = Chromium(executable, Path(tmp) / "profile")
        monkeypatch.setattr(webbrowser, "open", browser.open)
        try:
            yield browser
        finally:
            browser.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_headless_chromium_completes_a_browser_login(chromium: Chromium) -> None:
    with AuthServer(ttl=3600) as auth:
        auth.authorize_mode = "auto-approve"  # the login page submits its form: no clicking needed
        storage = KeyringStorage("chromium-test", "alice")
        out = io.StringIO()
        try:
            token = login_browser(client_id="cli", issuer=auth.issuer, storage=storage, stream=out, timeout=60)
        except Exception:
            print(chromium.log.read_text(errors="replace") if chromium.log.exists() else "no chromium output")
            raise
        assert len(chromium.processes) == 1
        assert "Logged in." in out.getvalue()
        # The stored record is the JSON the adapter and `keyring get` read, and it works on the API.
        record = json.loads(keyring.get_password("chromium-test", "alice") or "{}")
        assert record["access_token"] == token.access_token
        assert record["refresh_token"] == token.refresh_token
        assert storage.load() == token
        api = requests.get(auth.url + "/api", headers={"Authorization": token.authorization}, timeout=5)
        assert api.status_code == 200
        assert [e["grant"] for e in auth.login_log] == ["authorization_code"]
