"""Running the command line in the test's own process, and, for what only a process shows, in a child.

:class:`CommandLine` calls :func:`requests_tokenrefresh.cli.main` with ``argv``, standard input
from the test, its output captured by pytest's ``capsys``, and the environment of a user who set
none of the command's variables (``REQUESTS_TOKENREFRESH_*``), no proxy and no SSH session. The
keyring is whatever the test installed: the autouse ``memory_keyring`` fixture's, unless the
test installs another with :func:`~requests_tokenrefresh.testing.use_keyring`.
:class:`Background` runs a command that waits (a login) in a thread, its standard error readable
as it comes. :func:`run_process` runs ``python -m requests_tokenrefresh`` as a user does; such
tests point keyring at a file in the test's directory (:func:`process_environment`).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.errors
import pytest

from requests_tokenrefresh.cli import main

__all__ = ["Background", "CommandLine", "Result", "process_environment", "run_process"]

#: Environment variables a command reads that the user running the tests may have set.
OWN_PREFIXES = ("REQUESTS_TOKEN", "SSH_")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
#: The demo's file keyring, for commands run as processes.
FILE_BACKEND = "requests_tokenrefresh._demo.DemoFileKeyring"


@dataclass
class Result:
    """What a command did: its exit status and what it wrote (the fields of ``CompletedProcess``)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _status(code: Any) -> int:
    """The exit status of ``SystemExit(code)``, as the interpreter would give it."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(OWN_PREFIXES) or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)


class CommandLine:
    """``cli(*args, stdin="", env=None)``: run the command in this process and return a :class:`Result`.

    ``stdin`` is text (sent as UTF-8) or bytes (sent as they are, for a byte order mark); ``env``
    sets variables for this run only. A usage error or ``--help`` ends ``main`` with SystemExit,
    whose code becomes the exit status, as it would in a process.
    """

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        _clean_environment(monkeypatch)

    def __call__(self, *args: str, stdin: str | bytes = "", env: Mapping[str, str] | None = None) -> Result:
        self._capsys.readouterr()  # what the test printed before is not the command's
        data = stdin.encode() if isinstance(stdin, str) else stdin
        with self._monkeypatch.context() as patch:
            patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = _status(exc.code)
        out, err = self._capsys.readouterr()
        return Result(list(args), code, out, err)


class Background:
    """A command that waits (a login) running in a thread of this process; its output read as it comes.

    The command's standard output and error are replaced by buffers from the start until
    :meth:`finish`, which returns its exit status.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
        self.args = list(args)
        self._out, self._err = io.StringIO(), io.StringIO()
        self._streams = sys.stdout, sys.stderr
        monkeypatch.setattr(sys, "stdout", self._out)  # undone at the test's end, should it fail first
        monkeypatch.setattr(sys, "stderr", self._err)
        self.returncode: int | None = None
        self.error: BaseException | None = None
        self.stdout = ""
        self._thread = threading.Thread(target=self._run, name="command", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.returncode = main(self.args)
        except SystemExit as exc:
            self.returncode = _status(exc.code)
        except BaseException as exc:  # re-raised by finish(), in the test's thread
            self.error = exc

    @property
    def stderr(self) -> str:
        return self._err.getvalue()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30) -> str:
        """The first match of ``pattern`` on standard error, waiting for it at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.stderr)
            if found:
                return found.group(0)
            if not self._thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"not printed: {pattern.pattern}; stderr so far: {self.stderr!r}")

    def join(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the command to end, as a test that failed early does."""
        self._thread.join(timeout)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the command to end (at most ``timeout`` seconds); return its exit status."""
        self._thread.join(timeout)
        sys.stdout, sys.stderr = self._streams  # the test's own streams again
        assert not self._thread.is_alive(), f"the command still runs after {timeout} s; stderr: {self.stderr!r}"
        if self.error is not None:
            raise self.error
        self.stdout = self._out.getvalue()
        assert self.returncode is not None
        return self.returncode


def process_environment(keyring_file: Path, backend: str = FILE_BACKEND, **env: str) -> dict[str, str]:
    """A child's environment: keyring pointed at ``backend`` (the file keyring ``keyring_file``).

    Without the command's variables of the user running the tests, a proxy or an SSH session.
    """
    result = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON_KEYRING", *OWN_PREFIXES)) and k.lower() not in PROXY_VARIABLES
    }
    result.update(PYTHON_KEYRING_BACKEND=backend, REQUESTS_TOKENREFRESH_DEMO_KEYRING=str(keyring_file), **env)
    return result


def run_process(
    cwd: Path, *args: str, env: Mapping[str, str], stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m requests_tokenrefresh ARGS`` from ``cwd`` (so the installed package is imported)."""
    return subprocess.run(
        [sys.executable, "-m", "requests_tokenrefresh", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env),
        timeout=timeout,
        check=False,
    )


class ReadOnlyKeyring(keyring.backend.KeyringBackend):
    """A keyring whose writes fail (a locked keychain, a full disk); reads and deletes go to ``inner``."""

    priority = -1  # a subclass registers with keyring's detection: never let it win there

    def __init__(self, inner: keyring.backend.KeyringBackend) -> None:
        super().__init__()
        self.inner = inner

    def get_password(self, service: str, username: str) -> str | None:
        return self.inner.get_password(service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("the keychain is locked")

    def delete_password(self, service: str, username: str) -> None:
        self.inner.delete_password(service, username)
