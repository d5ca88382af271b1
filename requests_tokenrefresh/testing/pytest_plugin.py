"""The pytest plugin of the testing kit: fixtures with an auth server, a session, a keyring and a clock.

Opt in with ``pytest -p requests_tokenrefresh.testing.pytest_plugin``, or with ``pytest_plugins =
["requests_tokenrefresh.testing.pytest_plugin"]`` in the ``conftest.py`` at the root of the tests
(``requests_tokenrefresh.pytest_plugin``, its first name, works as well). No
fixture is autouse. The fakes themselves are in :mod:`requests_tokenrefresh.testing`, which does
not import pytest; this module does.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from ..adapters import TokenRefreshAdapter
from ..storage import MemoryStorage
from ..tokens import Token
from .authserver import AuthServer
from .clock import FakeClock
from .keyrings import MemoryKeyring, use_keyring

__all__ = ["auth_server", "fake_clock", "token_keyring", "token_session"]


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    """A started :class:`AuthServer`: hour-long access tokens, rotation with reuse detection; stopped after."""
    with AuthServer(ttl=3600, rotation="reuse-detection") as server:
        yield server


@pytest.fixture
def token_keyring() -> Iterator[MemoryKeyring]:
    """A :class:`MemoryKeyring` installed as keyring's backend for the test; the previous one is put back."""
    with use_keyring(MemoryKeyring()) as backend:
        yield backend


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`FakeClock` at the current time; :meth:`FakeClock.advance` moves it."""
    return FakeClock()


@pytest.fixture
def token_session(auth_server: AuthServer, fake_clock: FakeClock) -> Iterator[requests.Session]:
    """A Session whose TokenRefreshAdapter is mounted on ``auth_server``, logged in; closed after.

    The adapter's storage is a MemoryStorage holding a fresh login and its clock is
    ``fake_clock``: the token expires, for the adapter, when the test advances the clock by the
    server's ``ttl``. ``token_session.get_adapter(auth_server.url + "/")`` is the adapter: it is
    mounted with the slash, so that it matches no other port whose digits start with the server's.
    """
    token = Token.from_response(auth_server.issue(), now=fake_clock())
    adapter = TokenRefreshAdapter(MemoryStorage(token), token_url=auth_server.token_url, clock=fake_clock)
    with requests.Session() as session:
        session.mount(auth_server.url + "/", adapter)
        yield session
