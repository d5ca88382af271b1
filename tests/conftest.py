"""Fixtures shared by the tests: a keyring per test, a loopback auth server, helpers.

No test reaches the machine's keyring. keyring's own choice of backend is its fail backend, in
this process and in every subprocess that names none; each test gets its own keyring from the
autouse ``memory_keyring`` fixture. That keyring is a dict by default (the testing kit's
:class:`~requests_tokenrefresh.testing.MemoryKeyring`). With
``RTR_TEST_KEYRING=secretservice`` it is the Secret Service of the private D-Bus session that
``.ci/secret-service`` starts (gnome-keyring in a temporary directory) and nothing else: the
run stops on any other session bus or when no Secret Service is there, and a test whose keyring
call fails fails; nothing falls back to another backend.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import keyring
import keyring.backend
import keyring.backends.fail
import keyring.errors
import pytest
import requests

from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring, use_keyring

# Hypothesis profiles: "dev" (the default) draws new schedules on every run; "ci" (tox -e slow)
# draws the same ones every run, so CI checks what was checked before a push and a failure replays.
hypothesis.settings.register_profile("dev", print_blob=True)
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


class SecretServiceKeyring(MemoryKeyring):
    """The Secret Service, counted like :class:`MemoryKeyring`; ``entries`` holds what this test stored.

    Every call goes to the daemon; ``entries`` mirrors the records written and not yet deleted,
    so that tests can inspect them and the fixture can delete them afterwards.
    """

    def __init__(self, inner: keyring.backend.KeyringBackend) -> None:
        super().__init__()
        self.inner = inner

    def get_password(self, service: str, username: str) -> str | None:
        self.reads += 1
        return self.inner.get_password(service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        self.writes += 1
        self.inner.set_password(service, username, password)
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.inner.delete_password(service, username)
        self.entries.pop((service, username), None)

    def clear(self) -> None:
        """Delete from the daemon every record this test stored."""
        for service, username in list(self.entries):
            try:
                self.delete_password(service, username)
            except keyring.errors.PasswordDeleteError:
                self.entries.pop((service, username), None)


KEYRINGS = ("memory", "secretservice")


def keyring_under_test_name() -> str:
    """``RTR_TEST_KEYRING``: the keyring the tests stand on (``memory`` unless set)."""
    return os.environ.get("RTR_TEST_KEYRING", "") or "memory"


def secret_service() -> keyring.backend.KeyringBackend:
    """keyring's SecretService backend on the private session of ``.ci/secret-service``, checked usable."""
    from keyring.backends import SecretService

    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not bus or bus != os.environ.get("RTR_TEST_SECRET_SERVICE_BUS"):
        raise pytest.UsageError(
            "RTR_TEST_KEYRING=secretservice runs only under .ci/secret-service (a private D-Bus session "
            "and keyring daemon), never on the session's own login keyring"
        )
    try:
        SecretService.Keyring.priority  # noqa: B018  # raises, saying why, when the service is unusable
    except Exception as exc:
        raise pytest.UsageError(f"RTR_TEST_KEYRING=secretservice, but the Secret Service is unusable: {exc}") from exc
    return SecretService.Keyring()


def pytest_configure(config: pytest.Config) -> None:
    """Make keyring's own backend choice the fail backend; check the keyring RTR_TEST_KEYRING asks for."""
    name = keyring_under_test_name()
    if name not in KEYRINGS:
        raise pytest.UsageError(f"RTR_TEST_KEYRING={name!r}: expected one of {', '.join(KEYRINGS)}")
    if name == "secretservice":
        secret_service()
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # for subprocesses that name none
    keyring.set_keyring(keyring.backends.fail.Keyring())
    # The Ctrl-C tests send SIGINT to the commands they start. A shell's background job (and some
    # CI runners) starts pytest with SIGINT ignored, which its children would inherit, and Python
    # keeps an inherited SIG_IGN: Ctrl-C would do nothing. A handled signal is reset to the
    # default at exec, so handling it here gives every child the default a terminal gives.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def keyring_under_test() -> str:
    """The name of the keyring ``memory_keyring`` stands on: ``memory`` or ``secretservice``."""
    return keyring_under_test_name()


@pytest.fixture(autouse=True)
def memory_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKeyring]:
    """Install the test's keyring and restore the previous backend after it.

    An in-memory keyring; with ``RTR_TEST_KEYRING=secretservice``, the Secret Service, and the
    records the test stored there are deleted after it. The user cache directory (where
    KeyringStorage keeps its refresh lock files) moves to the test's temporary directory too.
    """
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backend = (
        SecretServiceKeyring(secret_service()) if keyring_under_test_name() == "secretservice" else MemoryKeyring()
    )
    try:
        with use_keyring(backend):
            yield backend
    finally:
        if isinstance(backend, SecretServiceKeyring):
            backend.clear()


@pytest.fixture(autouse=True)
def close_sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every requests.Session a test opened (and so its adapters' pools) when it ends.

    Warnings are errors here, and an unclosed socket collected during a later test would fail
    that test instead of the one that leaked it.
    """
    opened: list[requests.Session] = []
    original = requests.Session.__init__

    def init(self: requests.Session) -> None:
        original(self)
        opened.append(self)

    monkeypatch.setattr(requests.Session, "__init__", init)
    yield
    for session in opened:
        session.close()


@pytest.fixture
def server() -> Iterator[AuthServer]:
    """A loopback token endpoint + API that rotates refresh tokens and revokes the family on reuse."""
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        yield srv


def _expired(response: dict[str, Any]) -> Token:
    """The token of ``response`` as if it had expired a second ago."""
    token = Token.from_response(response)
    now = time.time()
    return Token(token.access_token, token.refresh_token, expires_at=now - 1, obtained_at=now - 3601)


def _run_threads(count: int, target: Callable[[int], None], timeout: float = 30.0) -> None:
    """Start ``count`` threads released together by a barrier; fail if any is still alive after ``timeout``."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            target(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} threads still running after {timeout}s"
    if errors:
        raise errors[0]


@pytest.fixture
def expired() -> Callable[[dict[str, Any]], Token]:
    """Turn a token response into a Token that expired a second ago."""
    return _expired


@pytest.fixture
def run_threads() -> Callable[..., None]:
    """``run_threads(count, target, timeout=30)``: barrier-released threads, joined with a timeout."""
    return _run_threads


@pytest.fixture
def session_for() -> Iterator[Callable[..., tuple[requests.Session, TokenRefreshAdapter]]]:
    """``session_for(server, token, **options)``: a Session with the adapter mounted on the server."""
    sessions: list[requests.Session] = []

    def make(srv: AuthServer, token: Token | None, **options: Any) -> tuple[requests.Session, TokenRefreshAdapter]:
        options.setdefault("token_url", srv.token_url)
        options.setdefault("pool_maxsize", 64)
        storage = options.pop("storage", None) or MemoryStorage(token)
        adapter = TokenRefreshAdapter(storage, **options)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        sessions.append(session)
        return session, adapter

    yield make
    for session in sessions:
        session.close()
