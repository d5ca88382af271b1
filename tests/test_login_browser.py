"""A real browser: headless Chromium completes one browser login against the loopback server.

``webbrowser.open`` is pointed at Chromium (Debian's ``chromium`` package), which opens the URL
the login prints, gets the server's login page, whose "auto-approve" mode submits the form by
itself, follows the redirect to the login's loopback listener and shows its page. The test then
checks the stored record. Chromium missing is a failure, not a skip: CI must install it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
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
                )
            )
        return True

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


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
