"""The HTTP clients under test, each configured the way its documentation says for refreshing.

Every client is built from a :class:`Seed` (the token an app would have persisted) and exposes a
``requests.Session`` to send with and :meth:`BenchClient.current` (the token it holds now), so the
scenarios treat all libraries alike. Library-specific notes, kept next to the code they explain:

* requests-tokenrefresh: ``TokenRefreshAdapter`` on a ``MemoryStorage``; plain http is allowed
  because the host is loopback (the adapter refuses plain http anywhere else).
* requests-oauthlib: ``OAuth2Session(client_id, token=, auto_refresh_url=, auto_refresh_kwargs=,
  token_updater=)``; oauthlib refuses http URLs, so ``OAUTHLIB_INSECURE_TRANSPORT=1`` is set in
  this process. It has no leeway: it refreshes only once the token has expired.
* Authlib: ``authlib.integrations.requests_client.OAuth2Session(client_id, client_secret,
  token=, token_endpoint=, update_token=, leeway=)``; accepts a loopback http token endpoint as is.
  Its expiry check ignores a non-integer ``expires_at``, so the seed's is rounded down.
* requests-oauth2client: ``OAuth2Client(token_endpoint=, client_id=, client_secret=,
  testing=True)`` + ``OAuth2AccessTokenAuth(client, token=BearerToken(...), leeway=)`` as the
  session's ``auth``; ``testing=True`` is its documented switch to accept a non-https endpoint.
* google-auth: ``google.oauth2.credentials.Credentials(token=, refresh_token=, token_uri=,
  client_id=, client_secret=, expiry=)`` with ``AuthorizedSession``; accepts http as is. It treats a
  token as due for refresh 3 min 45 s before expiry (``_helpers.REFRESH_THRESHOLD``, not settable).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import requests
from _control import CLIENT_ID, CLIENT_SECRET, ServerProcess
from requests.adapters import HTTPAdapter

__all__ = [
    "BARE",
    "BASELINE",
    "COMPETITORS",
    "LIBRARIES",
    "OURS",
    "OURS_NO_ENV",
    "OURS_NO_NETRC",
    "OVERHEAD_CLIENTS",
    "BareAdapter",
    "BenchClient",
    "Seed",
    "library_versions",
    "make_client",
    "make_overhead_client",
]

OURS = "requests-tokenrefresh"
COMPETITORS = ("requests-oauthlib", "Authlib", "requests-oauth2client", "google-auth")
LIBRARIES = (OURS, *COMPETITORS)
_DISTRIBUTIONS = {
    OURS: "requests-tokenrefresh",
    "requests-oauthlib": "requests-oauthlib",
    "Authlib": "Authlib",
    "requests-oauth2client": "requests-oauth2client",
    "google-auth": "google-auth",
    "requests": "requests",
    "urllib3": "urllib3",
    "oauthlib": "oauthlib",
}

os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")  # requests-oauthlib: allow http://127.0.0.1


@dataclasses.dataclass(frozen=True)
class Seed:
    """A token as an app would have persisted it."""

    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds
    obtained_at: float

    @classmethod
    def from_response(cls, response: dict[str, Any]) -> Seed:
        issued = float(response["issued_at"])
        return cls(response["access_token"], response["refresh_token"], issued + response["expires_in"], issued)

    def expired(self, ago: float = 1.0) -> Seed:
        """The same tokens, with an access token that expired ``ago`` seconds ago."""
        now = time.time()
        return dataclasses.replace(self, expires_at=now - ago, obtained_at=now - ago - 3600)


@dataclasses.dataclass
class BenchClient:
    name: str
    session: requests.Session
    current: Callable[[], Seed]  # the token this client holds now

    def close(self) -> None:
        self.session.close()


def library_versions() -> dict[str, str]:
    found = {}
    for label, dist in _DISTRIBUTIONS.items():
        try:
            found[label] = version(dist)
        except PackageNotFoundError:
            found[label] = "not installed"
    return found


def _pool(session: requests.Session, pool_maxsize: int) -> None:
    # Same connection pool size for every client, so no library pays for discarded connections.
    session.mount("http://", HTTPAdapter(pool_maxsize=pool_maxsize))


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)


def _ours(server: ServerProcess, seed: Seed, pool_maxsize: int, leeway: float) -> BenchClient:
    from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter

    storage = MemoryStorage(
        Token(
            seed.access_token,
            refresh_token=seed.refresh_token,
            expires_at=seed.expires_at,
            obtained_at=seed.obtained_at,
            scope="api",
        )
    )
    adapter = TokenRefreshAdapter(
        storage,
        token_url=server.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        leeway=leeway,
        pool_maxsize=pool_maxsize,
    )
    session = requests.Session()
    session.mount(server.url + "/", adapter)

    def current() -> Seed:
        token = storage.load()
        assert token is not None
        assert token.refresh_token is not None
        assert token.expires_at is not None
        return Seed(token.access_token, token.refresh_token, token.expires_at, token.obtained_at or 0.0)

    return BenchClient(OURS, session, current)


def _oauthlib(server: ServerProcess, seed: Seed, pool_maxsize: int, leeway: float) -> BenchClient:
    from requests_oauthlib import OAuth2Session

    saved: dict[str, Any] = {}
    token = {
        "access_token": seed.access_token,
        "refresh_token": seed.refresh_token,
        "token_type": "Bearer",
        "expires_at": seed.expires_at,
    }
    session = OAuth2Session(
        CLIENT_ID,
        token=token,
        auto_refresh_url=server.token_url,
        auto_refresh_kwargs={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        token_updater=saved.update,  # the app's "save the new token" callback
    )
    _pool(session, pool_maxsize)

    def current() -> Seed:
        t = session.token
        return Seed(t["access_token"], t.get("refresh_token") or seed.refresh_token, float(t["expires_at"]), 0.0)

    return BenchClient("requests-oauthlib", session, current)


def _authlib(server: ServerProcess, seed: Seed, pool_maxsize: int, leeway: float) -> BenchClient:
    from authlib.integrations.requests_client import OAuth2Session

    saved: dict[str, Any] = {}
    session = OAuth2Session(
        CLIENT_ID,
        CLIENT_SECRET,
        token={
            "access_token": seed.access_token,
            "refresh_token": seed.refresh_token,
            "token_type": "Bearer",
            "expires_at": int(seed.expires_at),
        },
        token_endpoint=server.token_url,
        update_token=lambda token, refresh_token=None, access_token=None: saved.update(token),
        leeway=int(leeway),
    )
    _pool(session, pool_maxsize)

    def current() -> Seed:
        t = session.token
        return Seed(t["access_token"], t.get("refresh_token") or seed.refresh_token, float(t["expires_at"]), 0.0)

    return BenchClient("Authlib", session, current)


def _oauth2client(server: ServerProcess, seed: Seed, pool_maxsize: int, leeway: float) -> BenchClient:
    from requests_oauth2client import BearerToken, OAuth2AccessTokenAuth, OAuth2Client

    client = OAuth2Client(
        token_endpoint=server.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, testing=True
    )
    auth = OAuth2AccessTokenAuth(
        client,
        token=BearerToken(seed.access_token, refresh_token=seed.refresh_token, expires_at=_utc(seed.expires_at)),
        leeway=int(leeway),
    )
    session = requests.Session()
    session.auth = auth
    _pool(session, pool_maxsize)

    def current() -> Seed:
        t = auth.token
        assert t is not None
        assert t.expires_at is not None
        return Seed(t.access_token, t.refresh_token or seed.refresh_token, t.expires_at.timestamp(), 0.0)

    def close() -> None:
        client.session.close()

    bench = BenchClient("requests-oauth2client", session, current)
    bench.close = lambda: (session.close(), close())  # type: ignore[method-assign]
    return bench


def _google(server: ServerProcess, seed: Seed, pool_maxsize: int, leeway: float) -> BenchClient:
    from google.auth.transport.requests import AuthorizedSession
    from google.oauth2.credentials import Credentials

    credentials = Credentials(
        token=seed.access_token,
        refresh_token=seed.refresh_token,
        token_uri=server.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        expiry=_utc(seed.expires_at).replace(tzinfo=None),  # google-auth keeps naive UTC datetimes
    )
    session = AuthorizedSession(credentials)
    _pool(session, pool_maxsize)

    def current() -> Seed:
        expiry = credentials.expiry.replace(tzinfo=datetime.timezone.utc)
        return Seed(credentials.token, credentials.refresh_token or seed.refresh_token, expiry.timestamp(), 0.0)

    return BenchClient("google-auth", session, current)


_FACTORIES = {
    OURS: _ours,
    "requests-oauthlib": _oauthlib,
    "Authlib": _authlib,
    "requests-oauth2client": _oauth2client,
    "google-auth": _google,
}


def make_client(
    name: str, server: ServerProcess, seed: Seed, *, pool_maxsize: int = 10, leeway: float = 60
) -> BenchClient:
    """Build library ``name``'s client for ``server``, holding ``seed``."""
    return _FACTORIES[name](server, seed, pool_maxsize, leeway)


# -- overhead-only clients ----------------------------------------------------------------------


class BareAdapter(HTTPAdapter):
    """The floor for any adapter: sets a fixed Authorization header, nothing else."""

    def __init__(self, authorization: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.authorization = authorization

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        request.headers["Authorization"] = self.authorization
        return super().send(request, *args, **kwargs)


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """A session ``auth`` that does nothing; having one makes requests skip its ~/.netrc lookup."""
    return request


BASELINE = "plain requests (static header)"
BARE = "bare adapter (sets header only)"
OURS_NO_NETRC = OURS + " + session.auth no-op"
OURS_NO_ENV = OURS + " + trust_env=False"
OVERHEAD_CLIENTS = (BARE, OURS, OURS_NO_NETRC, OURS_NO_ENV, *COMPETITORS)


def make_overhead_client(name: str, server: ServerProcess, seed: Seed) -> requests.Session:
    """A session for the overhead scenario: the baseline, the floor, ours (and variants), or a competitor."""
    if name == BASELINE:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {seed.access_token}"
        return session
    if name == BARE:
        session = requests.Session()
        session.mount(server.url + "/", BareAdapter(f"Bearer {seed.access_token}"))
        return session
    if name in (OURS_NO_NETRC, OURS_NO_ENV):
        session = make_client(OURS, server, seed).session
        if name == OURS_NO_NETRC:
            session.auth = _no_auth
        else:
            session.trust_env = False
        return session
    return make_client(name, server, seed).session
