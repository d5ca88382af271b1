"""Interop: the adapter against panva's oidc-provider (npm), a certified OpenID Provider we did not write.

The provider (``interop/oidcprovider/server.mjs``) runs under Node.js on 127.0.0.1 with access
tokens of TTL s, refresh-token rotation (a refresh token sent twice revokes its whole grant),
client credentials, revocation, DPoP with nonces required (RFC 9449: a public client's refresh
tokens bound to its key), and its development login and consent pages (any login name, any
password). oidc-provider has no resource server: server.mjs adds one on a second origin, whose
``GET /api/me`` checks each access token in the provider's own store (a DPoP-bound one with its
proof, and a nonce of that origin which changes every NONCE_ROTATION s), and whose ``/stats``
says what both servers saw, per client. The tests compare those counts with what the adapter did:
every run crosses three expiries with no failed request and exactly one token request per expiry.

Node.js 20.18 or later and npm are required: without them these tests fail, they never skip.
The fixture installs the locked packages (``npm ci``) into ``$OIDC_PROVIDER_DIR`` (tox: the
environment's temporary directory), or else next to server.mjs (``node_modules`` is ignored by git).

Run as a script (``python test_oidc_provider.py worker ...``), this file is one process of the
multi-process test: see :func:`_worker_main`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import io
import itertools
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from interop_support import FormBrowser, Forms, stop

from requests_tokenrefresh import (
    ClientAssertion,
    DPoPKey,
    FileStorage,
    MemoryStorage,
    PrivateKeyJWT,
    Token,
    TokenRefreshAdapter,
    TokenStorage,
)
from requests_tokenrefresh.login import login_browser, logout

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "oidcprovider"
#: What the fixture copies into $OIDC_PROVIDER_DIR before ``npm ci`` there.
PACKAGE_FILES = ("package.json", "package-lock.json", "server.mjs")
#: URL.parse and crypto.hash, which oidc-provider 9 uses, are in Node.js 20.18 and later.
NODE_MIN = (20, 18)
NODE_HELP = (
    "install Node.js 20.18 or later, with npm: on Debian 13, apt-get install nodejs npm; Debian 12's nodejs "
    "is 18, too old: take one from https://nodejs.org/en/download (or NodeSource's Debian packages)"
)
NPM_TIMEOUT = 300.0
START_TIMEOUT = 30.0

TTL = 4  # seconds an access token lives (the provider's ttl.AccessToken and ttl.ClientCredentials)
LEEWAY = 2.0  # refresh that long before expiry: half the lifetime, so the refresh window is TTL/2 s
#: Seconds of each run: a little over three refresh periods (TTL - LEEWAY), so three expiries are crossed.
RUN = 3.35 * (TTL - LEEWAY)
THREADS = 8
PROCESSES = 3
THINK = 0.01  # pause of each thread between two requests
NONCE_ROTATION = 3.0  # seconds between two DPoP nonces of the resource server
#: How late after its window opened a refresh may start: requests come every few ms, so a refresh
#: starts within a few ms of it; this allows for a loaded machine.
LATE = 1.0
LOGIN = "alice"


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Provider:
    issuer: str
    resource: str
    key_pem: bytes  # the private_key_jwt clients' EC P-256 key
    kid: str
    secret: str  # the client_secret_basic client's
    log_path: Path

    @property
    def token_url(self) -> str:
        return self.issuer + "/token"

    @property
    def userinfo_url(self) -> str:
        return self.issuer + "/me"

    @property
    def api(self) -> str:
        return self.resource + "/api/me"

    def stats(self, client_id: str, reset: bool = False) -> dict[str, Any]:
        """What both servers saw for ``client_id`` since the last reset (of every client's counts)."""
        r = requests.get(self.resource + "/stats", params={"reset": "1"} if reset else None, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["serverErrors"] == [], body["serverErrors"]
        return body["clients"].get(client_id) or {
            "grants": {},
            "errors": {},
            "issued": [],
            "refreshTokens": {"saved": 0, "consumed": 0, "bound": 0},
            "grantsRevoked": 0,
            "api": {"ok": 0, "errors": {}, "tokens": 0},
        }

    def reset(self) -> None:
        requests.get(self.resource + "/stats", params={"reset": "1"}, timeout=10).raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def _node_and_npm() -> tuple[str, str]:
    """The node and npm programs, or the test fails saying how to install them (never a skip)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found on PATH: {NODE_HELP}", pytrace=False)
    assert node is not None
    assert npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    found = re.match(r"v(\d+)\.(\d+)", version.stdout.strip())
    if found is None or (int(found[1]), int(found[2])) < NODE_MIN:
        pytest.fail(
            f"Node.js {version.stdout.strip() or '?'} is too old for oidc-provider 9: {NODE_HELP}", pytrace=False
        )
    return node, npm


def _install(npm: str) -> Path:
    """The directory of server.mjs with its packages installed from the lock file (``npm ci``, once)."""
    target = Path(os.environ["OIDC_PROVIDER_DIR"]) if os.environ.get("OIDC_PROVIDER_DIR") else SOURCE
    target.mkdir(parents=True, exist_ok=True)
    if target != SOURCE:
        for name in PACKAGE_FILES:
            shutil.copyfile(SOURCE / name, target / name)
    lock = hashlib.sha256(b"".join((SOURCE / name).read_bytes() for name in PACKAGE_FILES[:2])).hexdigest()
    stamp = target / "node_modules" / ".interop-installed"
    if stamp.exists() and stamp.read_text() == lock:
        return target
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        cwd=target,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        env={**os.environ, "CI": "true", "npm_config_update_notifier": "false"},
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci in {target} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    stamp.write_text(lock)
    return target


def _ec_key() -> tuple[bytes, dict[str, str]]:
    """A new EC P-256 key: its PEM, and its public JWK for the provider's client registration."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode("ascii")

    return pem, {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "use": "sig", "alg": "ES256"}


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """oidc-provider and our resource server, on loopback, for the module's tests."""
    node, npm = _node_and_npm()
    directory = _install(npm)
    tmp = tmp_path_factory.mktemp("oidc-provider")
    pem, jwk = _ec_key()
    kid = "interop-" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    config = tmp / "config.json"
    settings = {"ttl": TTL, "jwk": {**jwk, "kid": kid}, "secret": secret, "nonceRotation": NONCE_ROTATION}
    config.write_text(json.dumps(settings))
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [node, "server.mjs", str(config)], cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (ready := _ready_line(log_path)) is None:
            if proc.poll() is not None:
                pytest.fail(f"oidc-provider exited with {proc.returncode}:\n{log_path.read_text()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"oidc-provider was not ready within {START_TIMEOUT}s:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield Provider(ready["issuer"], ready["resource"], pem, kid, secret, log_path)
    finally:
        stop(proc)


def _ready_line(log_path: Path) -> dict[str, str] | None:
    # oidc-provider writes its NOTICEs to stdout too: the ready line is the one JSON object.
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith('{"issuer"'):
            return dict(json.loads(line))
    return None


# -- many threads, and the one-refresh-per-expiry check -----------------------------------------------


def _hammer(session: requests.Session, url: str, threads: int, stop_at: float) -> collections.Counter[str]:
    """``threads`` threads GET ``url`` until ``stop_at`` (epoch s); the outcomes counted ("ok" for a 200)."""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait(timeout=30)
        while time.time() < stop_at:
            try:
                r = session.get(url, timeout=30)
                outcome = "ok" if r.status_code == 200 else f"HTTP {r.status_code}: {r.headers.get('WWW-Authenticate')}"
            except Exception as exc:  # counted as a failure by the test
                outcome = repr(exc)
            with lock:
                outcomes[outcome] += 1
            time.sleep(THINK)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + (stop_at - time.time()) + 60
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in workers)
    assert not alive, f"{alive} threads still running 60 s after the run"
    return outcomes


@dataclass(frozen=True, order=True)
class Lifetime:
    """When a token was asked for and when it expires, by the client's clock (epoch s)."""

    obtained_at: float
    expires_at: float

    @classmethod
    def of(cls, token: Token) -> Lifetime:
        assert token.obtained_at is not None
        assert token.expires_at is not None
        return cls(token.obtained_at, token.expires_at)

    def window(self, leeway: float) -> float:
        """When its refresh window opens (the adapter's leeway is at most half the lifetime)."""
        return self.expires_at - min(leeway, (self.expires_at - self.obtained_at) / 2)


def _assert_one_refresh_per_expiry(chain: list[Lifetime], leeway: float, start: float, stop_at: float) -> int:
    """Every token was replaced once, as its refresh window opened, and the last was not yet due.

    ``chain`` is the tokens in the order they were obtained, the first one the run started with.
    Each later one was asked for after its predecessor's window opened (not early: no second
    refresh in one lifetime) and soon after (not late: requests never stopped); and the run ended
    before the last one's window opened, else a refresh is missing. The number of refreshes is
    then the number of expiries (windows) the run crossed, which is returned.
    """
    for n, (old, new) in enumerate(itertools.pairwise(chain), start=1):
        opened = old.window(leeway)
        assert new.obtained_at >= opened - 0.01, f"refresh {n} came {opened - new.obtained_at:.3f}s early: {chain}"
        assert new.obtained_at < max(opened, start) + LATE, f"refresh {n} came late: {chain}"
    assert stop_at < max(chain[-1].window(leeway), start) + LATE, f"the last window passed with no refresh: {chain}"
    return len(chain) - 1


def _assert_served_until_replaced(issued: list[dict[str, float]]) -> None:
    """By the provider's clock: each access token was issued before its predecessor expired there."""
    issued = sorted(issued, key=lambda t: t["at"])
    for old, new in itertools.pairwise(issued):
        assert new["at"] < old["exp"], f"a token was issued {new['at'] - old['exp']:.3f}s after the last expired"


def _assert_api_with_nonces(
    stats: dict[str, Any], outcomes: collections.Counter[str], expiries: int, elapsed: float, threads: int = THREADS
) -> None:
    """Every DPoP request was taken; the resource server's nonce challenges cost a retry each, never a refresh.

    Its nonce changes every NONCE_ROTATION s and only the current one is taken: each thread is
    told at most once per nonce (its first request, and one in flight at each change).
    """
    api = dict(stats["api"])
    errors = dict(api.pop("errors"))
    challenges = errors.pop("use_dpop_nonce", 0)
    assert errors == {}, errors
    assert api == {"ok": outcomes["ok"], "tokens": expiries + 1}  # each token was used
    assert 1 <= challenges <= threads * (math.ceil(elapsed / NONCE_ROTATION) + 1), challenges


def _print(what: str, outcomes: collections.Counter[str], stats: dict[str, Any], elapsed: float) -> None:
    print(
        f"\n[{what}] {sum(outcomes.values())} requests in {elapsed:.1f}s: {dict(outcomes)}; "
        f"token endpoint {stats['grants']} errors {stats['errors']}; api {stats['api']}"
    )


# -- client credentials with a private key (private_key_jwt) -------------------------------------------


class _Assertions:
    """A ``ClientAssertion`` source: a new private_key_jwt assertion, signed here with PyJWT, per call."""

    def __init__(self, oidc: Provider, client_id: str) -> None:
        self.oidc = oidc
        self.client_id = client_id
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        import jwt

        with self._lock:
            self.calls += 1
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.oidc.token_url,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + 60,
        }
        return str(jwt.encode(claims, self.oidc.key_pem, algorithm="ES256", headers={"kid": self.oidc.kid}))


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("auth", "dpop"),
    [("private_key_jwt", False), ("client_assertion", False), ("private_key_jwt", True)],
    ids=["private_key_jwt", "client_assertion", "private_key_jwt-dpop"],
)
def test_client_credentials_with_an_assertion_many_threads_across_expiries(
    oidc: Provider, auth: str, dpop: bool
) -> None:
    """8 threads, 3 expiries, the client signing its assertions: 0 failures, one token request per expiry (+1).

    With DPoP, the client's own key (a DPoPKey it holds, never stored) signs a proof for every
    token request and every API request, each with the nonce of its origin.
    """
    client_id = "service-jwt-dpop" if dpop else "service-jwt"
    assertions = _Assertions(oidc, client_id)
    client_auth = PrivateKeyJWT(oidc.key_pem, kid=oidc.kid, alg="ES256") if auth == "private_key_jwt" else None
    key = DPoPKey.generate() if dpop else None
    storage = MemoryStorage()  # nothing stored: client credentials need no login
    obtained: list[Token] = []
    adapter = TokenRefreshAdapter(
        storage,
        issuer=oidc.issuer,  # the token endpoint from its metadata
        grant_type="client_credentials",
        client_id=client_id,
        client_auth=client_auth or ClientAssertion(assertions),
        leeway=LEEWAY,
        on_refresh=obtained.append,
        pool_maxsize=THREADS,
        **({"dpop": key} if key else {}),
    )
    oidc.reset()
    with requests.Session() as session:
        session.mount(oidc.resource + "/", adapter)
        start = time.time()
        outcomes = _hammer(session, oidc.api, THREADS, start + RUN)
        stop_at = start + RUN
    elapsed = time.time() - start
    stats = oidc.stats(client_id)
    _print(f"{client_id}, {auth}", outcomes, stats, elapsed)

    assert set(outcomes) == {"ok"}, outcomes  # 0 failed requests
    # The first token is obtained by the first request, each one after by a refresh: on_refresh
    # is called for every token the grant mints.
    expiries = _assert_one_refresh_per_expiry([Lifetime.of(t) for t in obtained], LEEWAY, start, stop_at)
    assert expiries >= 3
    assert stats["grants"] == {"client_credentials": expiries + 1}  # token requests == expiries crossed + 1
    _assert_served_until_replaced(stats["issued"])
    assert storage.load() == obtained[-1]
    if auth == "client_assertion":
        assert assertions.calls == expiries + 1  # read anew for every token request, once
    if not dpop:
        assert stats["errors"] == {}
        assert stats["api"] == {"ok": outcomes["ok"], "errors": {}, "tokens": expiries + 1}  # each token was used
        return
    assert key is not None
    # The provider's nonce was asked for once (the first token request had none to send).
    assert stats["errors"] == {"client_credentials use_dpop_nonce": 1}
    assert all(t["jkt"] for t in stats["issued"])  # every token bound to the key
    # Bound to the user's key in memory; the key is never written to the record.
    assert all(t.token_type == "DPoP" and t.dpop_key == key for t in obtained)
    assert all("dpop_key" not in t.to_record() for t in obtained)
    _assert_api_with_nonces(stats, outcomes, expiries, elapsed)


def test_client_secret_basic_client_credentials_and_a_revoked_token(oidc: Provider) -> None:
    """The baseline client (client_secret_basic): its token works; revoked at the provider, a 401, one new token."""
    storage = MemoryStorage()
    adapter = TokenRefreshAdapter(
        storage, token_url=oidc.token_url, grant_type="client_credentials", client_id="basic", client_secret=oidc.secret
    )
    oidc.reset()
    with requests.Session() as session:
        session.mount(oidc.resource + "/", adapter)
        first = session.get(oidc.api, timeout=10)
        assert first.status_code == 200
        assert first.json() == {"sub": None, "client_id": "basic", "dpop": False}
        token = storage.load()
        assert token is not None
        assert token.refresh_token is None  # RFC 6749 §4.4.3: none for this grant
        revoked = requests.post(
            oidc.issuer + "/token/revocation",
            data={"token": token.access_token, "token_type_hint": "access_token"},
            auth=("basic", oidc.secret),
            timeout=10,
        )
        assert revoked.status_code == 200, revoked.text
        second = session.get(oidc.api, timeout=10)  # 401, a new token, the replay
    assert second.status_code == 200
    assert [r.status_code for r in second.history] == [401]
    stats = oidc.stats("basic")
    assert stats["grants"] == {"client_credentials": 2}
    assert stats["api"] == {"ok": 2, "errors": {}, "tokens": 2}
    assert oidc.stats("(unknown token)")["api"]["errors"] == {"unknown": 1}  # the revoked one
    current = storage.load()
    assert current is not None
    assert current.access_token != token.access_token


# -- the public client: a login through the provider's pages, then rotation -----------------------


class DevBrowser(FormBrowser):
    """:class:`FormBrowser` on oidc-provider's development pages (devInteractions).

    On the sign-in form it types a login name and a password (any will do), on the consent form
    it presses Continue. It stops at the login's loopback listener.
    """

    max_steps = 12

    def __init__(self, oidc: Provider, login: str = LOGIN) -> None:
        super().__init__(oidc.issuer + "/")
        self.login = login

    def _page(self, url: str) -> str:
        """The provider's path (/interaction/UID as /interaction)."""
        return re.sub(r"/[A-Za-z0-9_-]{10,}$", "", super()._page(url))

    def _submit(self, s: requests.Session, page: requests.Response) -> requests.Response:
        parser = Forms()
        parser.feed(page.text)
        assert len(parser.forms) == 1, f"not one form on {page.url}: {page.text[:500]}"
        form = parser.forms[0]
        data = {f["name"]: f.get("value", "") for f in form["inputs"] if f.get("name")}
        if "login" in data:
            data.update(login=self.login, password="any")
        return s.post(urljoin(page.url, form["action"]), data=data, allow_redirects=False, timeout=10)


def _login(
    oidc: Provider, monkeypatch: pytest.MonkeyPatch, storage: TokenStorage, client_id: str, dpop: bool = False
) -> Token:
    """login_browser through the provider's sign-in and consent pages; the token is stored."""
    browser = DevBrowser(oidc)
    monkeypatch.setattr(webbrowser, "open", browser.open)
    token = login_browser(
        client_id=client_id,
        issuer=oidc.issuer,
        scope="openid",
        storage=storage,
        stream=io.StringIO(),
        timeout=40,
        dpop=dpop,
    )
    browser.join()
    auth, interaction = oidc.issuer + "/auth", oidc.issuer + "/interaction"
    # The sign-in page and its form's answer, then the consent page and its form's answer.
    assert browser.trail == [auth, interaction, interaction, auth, interaction, interaction, auth], browser.trail
    assert browser.final is not None
    assert browser.final.status_code == 200
    assert "The login worked" in browser.final.text
    assert token.refresh_token
    return token


@pytest.mark.timeout(90)
def test_public_client_login_then_rotation_across_expiries_in_threads(
    oidc: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """login_browser (PKCE, discovery), then 8 threads for 3 expiries: one rotation each, 0 failures; logout."""
    storage = MemoryStorage()
    token = _login(oidc, monkeypatch, storage, "native")
    me = requests.get(oidc.userinfo_url, headers={"Authorization": token.authorization}, timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["sub"] == LOGIN  # the provider's own resource takes the token

    oidc.reset()
    refreshed: list[Token] = []
    adapter = TokenRefreshAdapter(
        storage,
        issuer=oidc.issuer,
        client_id="native",
        leeway=LEEWAY,
        on_refresh=refreshed.append,
        pool_maxsize=THREADS,
    )
    with requests.Session() as session:
        session.mount(oidc.resource + "/", adapter)
        start = time.time()
        outcomes = _hammer(session, oidc.api, THREADS, start + RUN)
    elapsed = time.time() - start
    stats = oidc.stats("native")
    _print("native, threads", outcomes, stats, elapsed)

    assert set(outcomes) == {"ok"}, outcomes
    chain = [token, *refreshed]
    expiries = _assert_one_refresh_per_expiry([Lifetime.of(t) for t in chain], LEEWAY, start, start + RUN)
    assert expiries >= 3
    assert stats["grants"] == {"refresh_token": expiries}  # one refresh per expiry
    assert stats["errors"] == {}  # never a rotated-out refresh token sent again (that revokes the grant)
    assert stats["grantsRevoked"] == 0
    # Every refresh rotated the refresh token, and every generation of access token was used.
    assert stats["refreshTokens"] == {"saved": expiries, "consumed": expiries, "bound": 0}
    assert len({t.refresh_token for t in chain}) == expiries + 1
    assert stats["api"] == {"ok": outcomes["ok"], "errors": {}, "tokens": expiries + 1}
    _assert_served_until_replaced(stats["issued"])
    current = storage.load()
    assert current == refreshed[-1]

    # Logout revokes the refresh token at the revocation endpoint (from the metadata): the grant
    # goes with it, and so does the access token.
    assert logout(storage, issuer=oidc.issuer, client_id="native") is True
    assert storage.load() is None
    assert requests.get(oidc.api, headers={"Authorization": current.authorization}, timeout=10).status_code == 401
    again = requests.post(
        oidc.token_url,
        data={"grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": "native"},
        timeout=10,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def _refresh_signed_by(oidc: Provider, client_id: str, refresh_token: str, key: DPoPKey) -> requests.Response:
    """A refresh_token grant with a proof signed by ``key`` (and the provider's nonce, asked for first)."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    nonce = None
    for _ in range(2):
        headers = {"DPoP": key.proof("POST", oidc.token_url, nonce=nonce)}
        response = requests.post(oidc.token_url, data=data, headers=headers, timeout=10)
        if response.status_code != 400 or response.json().get("error") != "use_dpop_nonce":
            break
        nonce = response.headers["DPoP-Nonce"]
    return response


@pytest.mark.timeout(90)
def test_dpop_public_client_login_then_threads_across_expiries(oidc: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    """login_browser(dpop=True), then 8 threads for 3 expiries: bound rotations, one per expiry; another key refused."""
    storage = MemoryStorage()
    token = _login(oidc, monkeypatch, storage, "native-dpop", dpop=True)
    assert token.token_type == "DPoP"
    key = token.dpop_key
    assert key is not None  # generated for the login, kept in the record
    login = oidc.stats("native-dpop", reset=True)
    assert login["grants"] == {"authorization_code": 1}
    assert login["refreshTokens"]["bound"] == 1  # the provider bound the refresh token to the key
    assert all(t["jkt"] for t in login["issued"])

    refreshed: list[Token] = []
    adapter = TokenRefreshAdapter(
        storage,
        issuer=oidc.issuer,
        client_id="native-dpop",
        leeway=LEEWAY,
        dpop=True,
        on_refresh=refreshed.append,
        pool_maxsize=THREADS,
    )
    with requests.Session() as session:
        session.mount(oidc.resource + "/", adapter)
        # The provider's own resource (its nonce is the token endpoint's: same origin, same server).
        session.mount(oidc.userinfo_url, adapter)
        me = session.get(oidc.userinfo_url, timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == LOGIN
        oidc.reset()
        start = time.time()
        outcomes = _hammer(session, oidc.api, THREADS, start + RUN)
    elapsed = time.time() - start
    stats = oidc.stats("native-dpop")
    _print("native-dpop, threads", outcomes, stats, elapsed)

    assert set(outcomes) == {"ok"}, outcomes
    chain = [token, *refreshed]
    expiries = _assert_one_refresh_per_expiry([Lifetime.of(t) for t in chain], LEEWAY, start, start + RUN)
    assert expiries >= 3
    assert stats["grants"] == {"refresh_token": expiries}  # one refresh per expiry
    # The adapter asks for the token endpoint's nonce at most once (at its first refresh).
    asked = stats["errors"].pop("refresh_token use_dpop_nonce", 0)
    assert stats["errors"] == {}
    assert asked <= 1
    assert stats["grantsRevoked"] == 0
    assert stats["refreshTokens"] == {"saved": expiries, "consumed": expiries, "bound": expiries}
    assert all(t["jkt"] for t in stats["issued"])
    assert all(t.token_type == "DPoP" and t.dpop_key == key for t in refreshed)  # one key for the family
    assert len({t.refresh_token for t in chain}) == expiries + 1
    _assert_served_until_replaced(stats["issued"])
    _assert_api_with_nonces(stats, outcomes, expiries, elapsed)

    # Another key cannot refresh the family: its refresh token is bound to the login's key ...
    current = storage.load()
    assert current == refreshed[-1]
    assert current.refresh_token is not None
    foreign = _refresh_signed_by(oidc, "native-dpop", current.refresh_token, DPoPKey.generate())
    assert foreign.status_code == 400, foreign.text
    assert foreign.json()["error"] == "invalid_grant"
    # ... and trying costs the family nothing: a new adapter refreshes it with the key in the record.
    fresh = TokenRefreshAdapter(storage, issuer=oidc.issuer, client_id="native-dpop", dpop=True)
    try:
        again = fresh.refresh()
    finally:
        fresh.close()
    assert again.refresh_token not in (None, current.refresh_token)
    assert again.dpop_key == key
    assert oidc.stats("native-dpop")["grantsRevoked"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dpop", [False, True], ids=["bearer", "dpop"])
def test_public_client_rotation_across_processes_sharing_a_file(
    oidc: Provider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dpop: bool
) -> None:
    """3 processes x 4 threads on one FileStorage for 3 expiries: one rotation per expiry in all, 0 failures.

    With DPoP, the key the login generated is in the record: every process signs with it.
    """
    client_id = "native-dpop" if dpop else "native"
    path = tmp_path / "token.json"
    token = _login(oidc, monkeypatch, FileStorage(path), client_id, dpop=dpop)
    oidc.reset()
    go = tmp_path / "go"
    threads = 4
    args = [str(path), oidc.issuer, oidc.api, client_id, str(threads), str(go), "dpop" if dpop else "bearer"]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "worker", *args],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        # Released together once every interpreter has started (its imports take a while).
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{p.pid}").exists() for p in procs):
            assert all(p.poll() is None for p in procs), [p.communicate(timeout=10) for p in procs if p.poll()]
            assert time.monotonic() < deadline, "the workers did not start within 60 s"
            time.sleep(0.02)
        start = time.time()
        (tmp_path / "go.tmp").write_text(str(start + RUN))
        (tmp_path / "go.tmp").rename(go)  # whole, or not yet there
        outputs = [p.communicate(timeout=RUN + 60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    results = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.time() - start
    stats = oidc.stats(client_id)
    outcomes = sum((collections.Counter(r["outcomes"]) for r in results), collections.Counter())
    _print(f"{client_id}, {PROCESSES} processes x {threads} threads, FileStorage", outcomes, stats, elapsed)
    print(f"refreshes per process: {[len(r['refreshes']) for r in results]}")

    assert set(outcomes) == {"ok"}, outcomes
    refreshes = sorted(Lifetime(*r) for result in results for r in result["refreshes"])
    chain = [Lifetime.of(token), *refreshes]
    expiries = _assert_one_refresh_per_expiry(chain, LEEWAY, start, start + RUN)
    assert expiries >= 3
    assert stats["grants"] == {"refresh_token": expiries}  # one refresh per expiry, in all processes
    assert stats["grantsRevoked"] == 0  # no process ever sent a rotated-out refresh token
    bound = expiries if dpop else 0  # a public client's refresh tokens are bound to the key
    assert stats["refreshTokens"] == {"saved": expiries, "consumed": expiries, "bound": bound}
    _assert_served_until_replaced(stats["issued"])
    stored = FileStorage(path).load()
    assert stored is not None
    assert Lifetime.of(stored) == refreshes[-1]  # the newest rotation is the one stored
    if not dpop:
        assert stats["errors"] == {}
        assert stats["api"] == {"ok": outcomes["ok"], "errors": {}, "tokens": expiries + 1}
        return
    # Each process that refreshed asked for the provider's nonce once, at its first refresh.
    asked = stats["errors"].pop("refresh_token use_dpop_nonce", 0)
    assert stats["errors"] == {}
    assert asked <= sum(bool(r["refreshes"]) for r in results)
    assert all(t["jkt"] for t in stats["issued"])
    assert token.dpop_key is not None
    assert stored.dpop_key == token.dpop_key  # one key for the family, kept in the record
    _assert_api_with_nonces(stats, outcomes, expiries, elapsed, threads=PROCESSES * threads)


def _worker_main(argv: list[str]) -> int:
    """One process of the multi-process test: THREADS threads through one adapter on a FileStorage (DPoP or not).

    Writes ``ready-PID`` next to the token file once started, waits for the GO file (which holds
    the epoch second to stop at), runs, and prints one JSON line: the outcomes, and the lifetime
    of each token its own refreshes obtained.
    """
    parser = argparse.ArgumentParser()
    for name in ("mode", "path", "issuer", "api", "client_id", "threads", "go", "dpop"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    refreshes: list[Token] = []
    adapter = TokenRefreshAdapter(
        FileStorage(args.path),
        issuer=args.issuer,
        client_id=args.client_id,
        leeway=LEEWAY,
        on_refresh=refreshes.append,
        pool_maxsize=int(args.threads),
        dpop=args.dpop == "dpop",
    )
    session = requests.Session()
    session.mount(args.api.rsplit("/api/", 1)[0] + "/", adapter)
    go = Path(args.go)
    Path(args.path).with_name(f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go within 60 s")
        time.sleep(0.005)
    outcomes = _hammer(session, args.api, int(args.threads), float(go.read_text()))
    session.close()
    lifetimes = [[t.obtained_at, t.expires_at] for t in refreshes]
    print(json.dumps({"outcomes": dict(outcomes), "refreshes": lifetimes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
