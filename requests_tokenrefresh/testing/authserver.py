"""A small OAuth 2.0 token endpoint and protected API on loopback, for the demo, tests and benchmarks.

Its public home is :mod:`requests_tokenrefresh.testing`, which re-exports :class:`AuthServer` and
:class:`Canned`; this module keeps the implementation (and the name the package's own tests import).

It behaves like a strict production server: refresh tokens rotate, and presenting a refresh token
that was already used revokes the whole token family (RFC 9700 §4.14), so a client that refreshes
twice with one refresh token logs its user out. Every call is counted and logged so that tests can
check what the client did against what the server saw.

For the logins it also publishes its metadata (OpenID Connect and RFC 8414), an ``/authorize``
page with a login form (authorization code + PKCE S256), a device authorization endpoint with a
``/device`` approval page (RFC 8628) and a revocation endpoint (RFC 7009), each with modes for the
pitfalls a client must survive (see the ``*_mode`` attributes).

Two modes bind tokens to a key the client holds: DPoP (RFC 9449; the rules are in :mod:`._dpop`)
and mutual TLS (RFC 8705; the certificates and the TLS layer are in :mod:`._tls`).

This module is the server's public face: :class:`AuthServer`'s settings, counters, logs and
token table (its attributes, under its one lock), its life cycle, the test controls, and the
endpoint methods subclasses override (``token_endpoint``, ``api``, ``login_endpoint``); and
:class:`Canned`. The rules are in private modules, each a set of functions of the server:

* :mod:`._http`: the threaded HTTP server and its request handler;
* :mod:`._tokens`: the token table's rules: minting, the refresh and client credentials grants
  (rotation, reuse detection), binding tokens to a key, revocation;
* :mod:`._client_auth`: client authentication (secret, ``private_key_jwt``, ``tls_client_auth``);
* :mod:`._login`: the metadata, ``/authorize`` and the code grant, the device flow, ``/revoke``;
* :mod:`._api`: the protected API's checks of a token and its proof of possession.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

from . import _api, _login, _tokens
from ._client_auth import client_ok, public_key
from ._dpop import DPoPGuard
from ._http import Request, Server, handler, json_answer
from ._tls import KitTLS

__all__ = ["AUTHORIZE_MODES", "AuthServer", "Canned", "DEVICE_MODES", "MAX_ASSERTION_LIFETIME", "ROTATION_MODES"]

#: ``rotation``: "none" (the refresh token stays the same), "rotate" (every refresh returns a new
#: one; an old one gets ``invalid_grant``), "reuse-detection" (rotation, and presenting an old one
#: also revokes its whole family, RFC 9700 §4.14).
ROTATION_MODES = ("none", "rotate", "reuse-detection")
#: ``authorize_mode``: the login page's behaviour. "form": a form the user submits (Allow / Deny);
#: "auto-approve": the page submits itself (a headless browser); "wrong-state": the redirect
#: carries another state; "no-code": it carries neither code nor error; "deny": always access_denied.
AUTHORIZE_MODES = ("form", "auto-approve", "wrong-state", "no-code", "deny")
#: ``device_mode``: "normal" (pending until approved on /device), "slow_down" (the first poll is
#: answered slow_down), "access_denied", "expired_token" (every poll answered so).
DEVICE_MODES = ("normal", "slow_down", "access_denied", "expired_token")
#: Seconds from now within which a client assertion's ``exp`` must lie by default (see
#: :attr:`AuthServer.max_assertion_lifetime`).
MAX_ASSERTION_LIFETIME = 300


@dataclasses.dataclass
class Canned:
    """A response the token endpoint gives instead of a token, for fault tests.

    Append instances to :attr:`AuthServer.canned`; each token request takes the first one and is
    answered with it (and counted in :attr:`AuthServer.refresh_calls`) instead of being processed,
    so the refresh token it carried is *not* spent. Once the list is empty the server answers
    normally again.

    Args:
        status: the HTTP status, e.g. ``503``, ``429`` or ``400``.
        body: the body: bytes as they are, a str encoded as UTF-8, a dict as JSON, e.g.
            ``{"error": "invalid_grant"}``. Empty by default.
        headers: extra response headers, e.g. ``{"Retry-After": "2"}``. ``Content-Type:
            application/json`` is sent unless replaced here.
        delay: seconds to wait before sending the answer (a slow server).
        trickle: seconds between two bytes of the body (a server that dribbles its answer; the
            ``Content-Length`` is right, the body just takes ``len(body) * trickle`` seconds).

    Example::

        server.canned += [Canned(503), Canned(429, headers={"Retry-After": "1"})]
        server.canned.append(Canned(400, {"error": "invalid_grant"}))  # an early revocation

    .. versionadded:: 0.2
    """

    status: int
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0  # seconds between two bytes of the body (a server that dribbles its answer)


class AuthServer:
    """An OAuth 2.0 authorization server and a protected API on loopback, in a thread of this process.

    ``POST /token`` is the token endpoint (grants ``refresh_token``, ``client_credentials``,
    ``authorization_code`` with PKCE and the device code); any other path is the protected API,
    whatever the method (``HEAD`` gets the headers without the body): it answers ``200`` and a
    JSON object (``ok``, the request body's ``length`` and ``sha256``) to a request whose
    ``Authorization: Bearer`` token is valid and unexpired, and ``401`` with
    ``WWW-Authenticate: Bearer error="invalid_token"`` otherwise. The login endpoints are there
    too: ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``
    (metadata), ``/authorize`` (a login form), ``/device_authorization`` and ``/device`` (RFC
    8628), ``/revoke`` (RFC 7009).

    By default it behaves like a strict production server: access tokens live an hour, refresh
    tokens rotate, and a refresh token presented twice revokes its whole family. Tokens expire
    in real time (:func:`time.time`); a client under a :class:`~requests_tokenrefresh.testing.FakeClock`
    sees its token expire earlier, while the server still accepts it. A token request it cannot
    read is refused as such a server does: a malformed ``Basic`` header with ``401``
    ``invalid_client``, a body that is not UTF-8 with ``400`` ``invalid_request``.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`)::

        with AuthServer(ttl=60, rotation="reuse-detection") as server:
            token = Token.from_response(server.issue())          # a login
            adapter = TokenRefreshAdapter(MemoryStorage(token), token_url=server.token_url)
            session.mount(server.url + "/", adapter)
            session.get(server.url + "/items")
            server.revoke_access_tokens()                         # the next call gets 401,
            session.get(server.url + "/items")                    # refreshes and replays
            assert server.refresh_calls == 1 and not server.revoked

    Every attribute below may be read or set while the server runs; the counters and logs are
    updated under :attr:`lock`.

    Args:
        ttl: access token lifetime in seconds (``expires_in``).
        rotation: ``"none"``, ``"rotate"``, or ``"reuse-detection"`` (rotation, and reuse of an
            old refresh token revokes the family); see :data:`ROTATION_MODES`.
        reuse_grace: seconds during which the refresh token just replaced is still accepted (as
            Xero, Auth0, Okta and Cognito allow): it gets a new access token and the current
            refresh token, and revokes nothing. 0 (the default) is a server without one.
        client_id, client_secret: if set, the token endpoint requires these (Basic or form body),
            and the ``client_credentials`` grant is enabled.
        client_public_key: the client's registered public key (a PEM, or a ``cryptography``
            public key), with ``client_id``: every request to the token, device authorization
            and revocation endpoints must then authenticate with a JWT assertion
            (``private_key_jwt``, RFC 7523 §2.2) signed by its private key: RS256 or PS256 for
            an RSA key, ES256 for EC P-256; ``iss`` and ``sub`` the ``client_id``, ``aud`` the
            :attr:`token_url`, ``exp`` not passed and at most :attr:`max_assertion_lifetime`
            seconds away, a ``jti`` never seen before. Anything else, a request without an
            assertion included, is answered ``401`` ``invalid_client``. Each accepted assertion's
            claims go to :attr:`assertion_log`.
        jwt: issue access tokens as unsigned-looking JWTs with an ``exp`` claim instead of
            opaque strings (the client reads ``exp`` without verifying); a bound token's JWT
            carries its ``cnf`` claim.
        host: the loopback address to listen on (on a free port).
        dpop: DPoP mode (RFC 9449): every grant at the token endpoint needs a ``DPoP`` proof
            (``ES256``, ``RS256`` or ``PS256``; see :attr:`dpop_required`), and issues
            ``token_type`` ``DPoP`` tokens bound to the proof key's thumbprint (``cnf``
            ``{"jkt": ...}``; the refresh token's family too: a refresh with a proof of another
            key is answered ``invalid_grant``, revoking nothing). The API then wants a bound
            token as ``Authorization: DPoP <token>`` with a proof whose ``ath`` is the token's
            hash, of the same key; else ``401`` and ``WWW-Authenticate: DPoP
            error="invalid_token"`` (or ``"invalid_dpop_proof"``, ``"use_dpop_nonce"``). A
            refused proof at the token endpoint is answered ``400`` ``invalid_dpop_proof`` (or
            ``use_dpop_nonce`` with a ``DPoP-Nonce`` header). An authorization request's
            ``dpop_jkt`` binds its code to that key.
        tls: serve HTTPS (:attr:`url` is ``https://...``) with a certificate of a CA made for
            this server alone (:attr:`ca`, :attr:`ca_path`); needs ``trustme``.
        client_cert_auth: with ``tls``, mutual TLS (RFC 8705): the server asks for a client
            certificate of :attr:`ca` (see :meth:`issue_client_cert`); a client with
            ``client_id`` and neither secret nor public key authenticates by presenting one whose
            subject is ``CN=<client_id>`` (``tls_client_auth``, with ``client_id`` in the form), else ``401``
            ``invalid_client``; tokens issued on a connection with a certificate are bound to it
            (``cnf`` ``{"x5t#S256": ...}``), and the API refuses them (``401``
            ``invalid_token``) on a connection without that certificate.

    Attributes:
        refresh_calls (int): requests to ``/token`` so far, of any grant, canned ones included.
        api_calls (int): requests to the protected API so far.
        api_rejections (int): API requests answered ``401``.
        token_log (list[dict]): one entry per ``/token`` request: ``t`` (epoch seconds),
            ``refresh_token`` (the one presented, or None) and ``status``.
        api_log (list[dict]): one entry per API request: ``t``, ``token`` and ``status``.
        canned (list[Canned]): scripted answers, served in order by ``/token`` before any real
            one.
        denied_paths (set[str]): API paths that answer ``401`` whatever the token (a step-up
            login, a missing entitlement).
        ttl (float): as the argument; may be changed between requests.
        rotation (str): as the argument.
        reuse_grace (float): as the argument.
        refresh_expires_in (float | None): when set, token responses carry
            ``refresh_expires_in`` (the refresh token's lifetime, as Keycloak sends it).
        authorize_mode (str): the login page's behaviour, one of :data:`AUTHORIZE_MODES`.
        device_mode (str): the device grant's behaviour, one of :data:`DEVICE_MODES`.
        device_interval (float | None): the polling ``interval`` sent (None: not sent).
        device_expires_in (int): the device code's lifetime.
        device_complete (bool): whether ``verification_uri_complete`` is sent.
        revocation_mode (str): ``"ok"``, or ``"fail"`` (``/revoke`` answers ``503``).
        metadata_format (str): ``"oidc"`` (both metadata documents), ``"rfc8414"`` (only RFC
            8414's) or ``"none"``.
        metadata_omit (set[str]): fields left out of the metadata.
        metadata_extra (dict): fields added to (or replaced in) the metadata.
        issuer_override (str | None): the issuer the metadata names instead of :attr:`url`.
        login_log (list[dict]): one entry per authorization code or device grant answered.
        revocation_log (list[dict]): one entry per revocation request: ``token``, ``hint``.
        assertion_log (list[dict]): the claims of every client assertion accepted, and
            ``endpoint``: the path it was sent to (``/token``, ``/revoke`` ...).
        assertion_rejections (list[str]): why each refused client assertion was refused.
        max_assertion_lifetime (float): the furthest ``exp`` of a client assertion, in seconds
            from now: :data:`MAX_ASSERTION_LIFETIME` (300) by default; raise it for workload
            identity tokens, which live an hour or more.
        codes (dict): the authorization codes issued and not yet redeemed.
        devices (dict): the device codes issued: ``user_code``, ``approved``, ``polls`` ...
        dpop (bool): as the argument.
        dpop_required (bool): in DPoP mode, whether a token request without a proof is refused
            (``True``, the default) or granted ``Bearer`` tokens.
        dpop_nonce (bool): whether proofs must carry the server's current nonce (RFC 9449 §8,
            §9); off by default. Token responses and API answers then carry ``DPoP-Nonce``.
            The token endpoint and the API have a nonce each (an authorization server's and a
            resource server's), unless :attr:`dpop_nonce_shared`. Only the current nonce is
            accepted, so each rotation costs a client one retry.
        dpop_nonce_interval (float): seconds after which a nonce is replaced (300).
        dpop_nonce_shared (bool): one nonce for the token endpoint and the API (both are on one
            origin here); False by default.
        dpop_iat_window (float): how far (seconds) a proof's ``iat`` may be from now (60).
        dpop_log (list[dict]): one entry per proof accepted: ``kind`` (``"token"`` or
            ``"api"``), ``endpoint`` (the path), ``jkt``, ``htm``, ``htu``, ``nonce`` (whether
            it carried one).
        dpop_rejections (list[str]): why each refused proof was refused.
        dpop_nonce_errors (dict[str, int]): ``use_dpop_nonce`` answers per kind (``"token"``,
            ``"api"``).
        client_cert_auth (bool): as the argument.
        mtls_aliases (bool): serve the token endpoint also at ``/mtls/token`` and advertise it
            in the metadata's ``mtls_endpoint_aliases`` (RFC 8705 §5).
        lock (threading.Lock): guards the counters, logs and token tables.
        gate (threading.Event): ``/token`` waits on it (up to 60 s) while it is clear; see
            :meth:`hold_refresh`.

    .. versionadded:: 0.2
       Public, as :class:`requests_tokenrefresh.testing.AuthServer`.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600,
        rotation: str = "reuse-detection",
        reuse_grace: float = 0.0,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_public_key: Any = None,
        jwt: bool = False,
        host: str = "127.0.0.1",
        dpop: bool = False,
        tls: bool = False,
        client_cert_auth: bool = False,
    ) -> None:
        if rotation not in ROTATION_MODES:
            raise ValueError(f"rotation must be one of {ROTATION_MODES}")
        if client_public_key is not None and (client_id is None or client_secret is not None):
            raise ValueError("client_public_key needs client_id, and no client_secret")
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth needs tls=True")
        # Long (about 90 lines) as a list of the server's attributes, each with its default and a
        # word on it; the class docstring documents them.
        self.ttl = ttl
        self.rotation = rotation
        self.reuse_grace = reuse_grace
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_public_key: Any = public_key(client_public_key)
        self.jwt = jwt
        self.lock: threading.Lock = threading.Lock()
        self.refresh_calls: int = 0
        self.api_calls: int = 0
        self.api_rejections: int = 0
        self.token_log: list[dict[str, Any]] = []  # one entry per token endpoint call
        self.api_log: list[dict[str, Any]] = []  # one entry per API call: token, status, body digest
        self.canned: list[Canned] = []  # served in order by /token before any real answer
        self.denied_paths: set[str] = set()  # API paths that answer 401 whatever the token (2FA, entitlement)
        self.gate: threading.Event = threading.Event()  # /token waits on it while hold_refresh is set
        self.gate.set()
        self._drop_upto = 0  # token requests numbered up to this are dropped after the gate
        self._access: dict[str, tuple[float, int]] = {}  # access token -> (expires_at, family id)
        self._refresh: dict[str, int] = {}  # every refresh token ever issued -> family id
        self._families: dict[int, _tokens.Family] = {}  # family id -> its refresh tokens (rules in _tokens.py)
        # -- the login endpoints (_login.py) and their modes (set the attributes after construction) --
        self.issuer_override: str | None = None  # the metadata names this issuer (a pitfall)
        self.metadata_format = "oidc"  # "oidc" (both documents), "rfc8414" (only RFC 8414's), "none"
        self.metadata_omit: set[str] = set()  # fields left out of the metadata
        self.metadata_extra: dict[str, Any] = {}  # fields added to (or replaced in) the metadata
        self.authorize_mode = "form"
        self.device_mode = "normal"
        self.device_interval: float | None = 5  # None: no "interval" in the answer
        self.device_expires_in = 600
        self.device_complete = True  # send verification_uri_complete
        self.revocation_mode = "ok"  # "fail": the revocation endpoint answers 503
        self.refresh_expires_in: float | None = None  # sent in token responses when set
        self.codes: dict[str, dict[str, Any]] = {}  # authorization code -> its request
        self.devices: dict[str, dict[str, Any]] = {}  # device code -> user_code, approved, polls
        self.login_log: list[dict[str, Any]] = []  # one entry per code or device grant answered
        self.revocation_log: list[dict[str, Any]] = []  # one entry per revocation request
        # -- client authentication (_client_auth.py) --
        self.assertion_log: list[dict[str, Any]] = []  # the claims of each client assertion accepted
        self.assertion_rejections: list[str] = []  # why each refused one was refused
        self.max_assertion_lifetime: float = MAX_ASSERTION_LIFETIME
        self._jtis: dict[str, float] = {}  # jti of every assertion accepted -> its exp
        # -- proof of possession: DPoP (the rules in _dpop.py) and mutual TLS (_tls.py) --
        self.dpop = dpop
        self.dpop_required = True
        self.dpop_nonce = False
        self.dpop_nonce_interval: float = 300
        self.dpop_nonce_shared = False
        self.dpop_iat_window: float = 60
        self.dpop_log: list[dict[str, Any]] = []
        self.dpop_rejections: list[str] = []
        self.dpop_nonce_errors: dict[str, int] = {"token": 0, "api": 0}
        self._dpop = DPoPGuard(self)
        self._cnf: dict[str, dict[str, str]] = {}  # access token -> the cnf it is bound to
        # The request each handler thread serves: token_endpoint, api and login_endpoint keep
        # their signatures (subclasses override them) and find its proofs and certificate here.
        self._serving = threading.local()
        self.client_cert_auth = client_cert_auth
        self.mtls_aliases = False
        self._tls = KitTLS(host, client_cert_auth=client_cert_auth) if tls else None
        self._server = Server((host, 0), handler(self))
        self._server.ssl_context = self._tls.context if self._tls else None
        # serve_forever notices shutdown() only between polls (0.5 s by default): a short poll lets
        # stop() return at once, which a suite of hundreds of server fixtures feels.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="authserver", daemon=True
        )

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> AuthServer:
        """Start serving in a daemon thread; return the server itself."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held token requests, stop serving and close the listening socket.

        Stopping a server that was never started (or was stopped already) only closes the socket.
        """
        self.gate.set()
        if self._thread.is_alive():  # shutdown() waits for serve_forever: it would block for ever
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
        if self._tls is not None:
            self._tls.close()

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT`` (``https://`` with ``tls``; no trailing slash)."""
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def token_url(self) -> str:
        """The token endpoint, :attr:`url` + ``/token``: the adapter's ``token_url``."""
        return self.url + "/token"

    @property
    def ca(self) -> Any:
        """The ``trustme.CA`` of a TLS server's certificates, or None without ``tls``."""
        return self._tls.ca if self._tls else None

    @property
    def ca_path(self) -> str | None:
        """The CA's certificate as a PEM file, for ``verify=`` (removed at :meth:`stop`); None without ``tls``."""
        return self._tls.ca_path if self._tls else None

    # -- test controls ----------------------------------------------------------------------

    def issue(self, *, cnf: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Start a new token family (a login) and return its token response.

        Args:
            cnf: bind the tokens, as RFC 7800 names it: ``{"jkt": thumbprint}`` to a DPoP key
                (the response's ``token_type`` is then ``DPoP``, and the family's refresh tokens
                are bound too), ``{"x5t#S256": thumbprint}`` to a client certificate. A family
                issued without a DPoP key is bound to the key of the first proof that refreshes it.

        Returns:
            The JSON object a token endpoint sends (``access_token``, ``refresh_token``,
            ``expires_in``, ``token_type``, ``scope``): give it to
            :meth:`Token.from_response <requests_tokenrefresh.Token.from_response>`.

        .. versionchanged:: 0.2
           The ``cnf`` argument.
        """
        cnf = dict(cnf or {})
        with self.lock:
            return _tokens.new_family(self, cnf)

    def issue_client_cert(self, name: str | None = None) -> tuple[str, str]:
        """Make a client certificate whose subject is ``CN=<name>``, signed by :attr:`ca`; for
        ``cert=`` in requests. ``name`` is :attr:`client_id` unless given (``"client"`` without
        one): with ``tls_client_auth`` only a certificate of the client's own name authenticates it.

        Returns:
            The paths of its PEM file and of its private key's, removed at :meth:`stop`.

        Raises:
            RuntimeError: the server serves no TLS.

        .. versionadded:: 0.2
        """
        if self._tls is None:
            raise RuntimeError("issue_client_cert needs AuthServer(tls=True)")
        return self._tls.issue_client_cert(name if name is not None else (self.client_id or "client"))

    def rotate_dpop_nonce(self) -> None:
        """Replace the DPoP nonces now: the next proof with an old one gets ``use_dpop_nonce``.

        .. versionadded:: 0.2
        """
        self._dpop.rotate()

    def current_dpop_nonce(self, kind: str = "token") -> str | None:
        """The DPoP nonce a proof must carry now at the token endpoint (``kind="token"``) or the API (``"api"``).

        None when :attr:`dpop_nonce` is off.

        .. versionadded:: 0.2
        """
        return self._dpop.nonce(kind)

    def revoke_access_tokens(self) -> None:
        """Make every access token issued so far invalid (as a server does on a password change)."""
        with self.lock:
            self._access.clear()
            self._cnf.clear()

    def revoke_families(self) -> None:
        """Revoke every refresh token: the next refresh gets ``invalid_grant``."""
        with self.lock:
            for family in self._families.values():
                family.revoked = True

    @property
    def revoked(self) -> bool:
        """Whether any token family was revoked (a client presented an old refresh token)."""
        with self.lock:
            return any(f.revoked for f in self._families.values())

    def hold_refresh(self) -> None:
        """Make the token endpoint wait until :meth:`release_refresh`."""
        self.gate.clear()

    def release_refresh(self, drop: bool = False) -> None:
        """Let held token requests go on; with ``drop``, answer those held so far 503, unprocessed.

        Dropping stands for a request whose client died before the server acted on it.
        """
        if drop:
            with self.lock:
                self._drop_upto = self.refresh_calls
        self.gate.set()

    # -- the endpoints ----------------------------------------------------------------------

    def _respond(
        self, request: Request, method: str, query: str, body: bytes, authorization: str | None
    ) -> tuple[int, bytes, dict[str, str], float]:
        """Route one HTTP request to its endpoint; return the answer and its trickle (called by the handler).

        ``method`` is the request's, but ``GET`` for a ``HEAD``.
        """
        login = self.login_endpoint(method, request.path, query, body, authorization)
        if login is not None:
            return (*login, 0.0)
        if request.path in self._token_paths() and request.method == "POST":
            try:
                form = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
            except UnicodeDecodeError:
                return (*json_answer(*self._unreadable_token_request()), 0.0)
            status, result = self.token_endpoint(form, authorization)
            if isinstance(result, Canned):
                time.sleep(result.delay)
                raw = result.body
                if isinstance(raw, dict):
                    raw = json.dumps(raw)
                data = raw.encode() if isinstance(raw, str) else raw
                return status, data, {"Content-Type": "application/json", **result.headers}, result.trickle
            headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **request.headers}
            return status, json.dumps(result).encode(), headers, 0.0
        status, payload = self.api(authorization, body, request.path)
        return status, json.dumps(payload).encode(), {"Content-Type": "application/json", **request.headers}, 0.0

    def token_endpoint(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any] | Canned]:
        """Answer one ``POST /token`` (called by the HTTP handler): count and log it, then grant.

        Args:
            form: the decoded form body.
            authorization: the ``Authorization`` header, if any.

        Returns:
            The status and either the JSON object to send or the :class:`Canned` answer.
        """
        with self.lock:
            self.refresh_calls += 1
            number = self.refresh_calls
            entry: dict[str, Any] = {"t": time.time(), "refresh_token": form.get("refresh_token"), "status": None}
            self.token_log.append(entry)
            canned = self.canned.pop(0) if self.canned else None
        if not self.gate.wait(timeout=60) or number <= self._drop_upto:  # held by hold_refresh()
            entry["status"] = 503
            return 503, Canned(503)
        if canned is not None:
            entry["status"] = canned.status
            return canned.status, canned
        status, body = self._grant(form, authorization, self._current_request("POST", "/token"))
        entry["status"] = status
        return status, body

    def _current_request(self, method: str, path: str) -> Request:
        """The request this thread's handler serves, or (called outside a handler) a plain one."""
        request: Request | None = getattr(self._serving, "request", None)
        return request if request is not None else Request(method, path, (self.url + path,))

    def _token_paths(self) -> tuple[str, ...]:
        return ("/token", "/mtls/token") if self.mtls_aliases else ("/token",)

    def _unreadable_token_request(self) -> tuple[int, dict[str, Any]]:
        """Count and log a ``POST /token`` whose body is not UTF-8 form data, and refuse it unread."""
        with self.lock:
            self.refresh_calls += 1
            self.token_log.append({"t": time.time(), "refresh_token": None, "status": 400})
        return 400, {"error": "invalid_request", "error_description": "The request body is not UTF-8 form data"}

    def _grant(self, form: dict[str, str], authorization: str | None, request: Request) -> tuple[int, dict[str, Any]]:
        cnf, refusal = _tokens.binding(self, request)  # first: a retry for a nonce spends no client assertion
        if refusal is not None:
            return refusal
        if not client_ok(self, form, authorization, "/token", request.cert):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        if form.get("grant_type") == "authorization_code":
            return _login.code_grant(self, form, cnf)
        if form.get("grant_type") == _login.DEVICE_GRANT:
            return _login.device_grant(self, form, cnf)
        if form.get("grant_type") == "client_credentials":
            return _tokens.client_credentials_grant(self, cnf)
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        return _tokens.refresh_grant(self, form, cnf)

    def api(self, authorization: str | None, body: bytes, path: str = "/") -> tuple[int, dict[str, Any]]:
        """Answer one request to the protected API (called by the HTTP handler).

        Returns:
            ``200`` and ``{"ok": True, "length": ..., "sha256": ...}`` (of the request body) for a
            valid token on a path not in :attr:`denied_paths`, else ``401`` and ``{"error":
            "invalid_token"}`` (or ``"invalid_dpop_proof"``, ``"use_dpop_nonce"``). A bearer
            token comes as ``Authorization: Bearer``; a DPoP-bound one as ``Authorization:
            DPoP`` with its proof; a certificate-bound one on a connection with its certificate.
        """
        return _api.answer(self, authorization, body, path)

    def requests_with(self, token: str) -> Iterator[dict[str, Any]]:
        """The :attr:`api_log` entries of the API requests that carried the access token ``token``."""
        return (e for e in list(self.api_log) if e["token"] == token)

    # -- the login endpoints ----------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The issuer identifier (the server's URL)."""
        return self.url

    def metadata(self) -> dict[str, Any]:
        """The metadata document, as modified by the ``metadata_*`` and ``issuer_override`` attributes."""
        return _login.metadata(self)

    def approve_device(self, user_code: str | None = None, approve: bool = True) -> bool:
        """Approve (or deny) the login of ``user_code`` (the latest if None), as a user does on /device."""
        with self.lock:
            pending = [d for d in self.devices.values() if user_code is None or d["user_code"] == user_code]
            if not pending:
                return False
            pending[-1]["approved"] = approve
            return True

    def login_endpoint(
        self, method: str, path: str, query: str, body: bytes, authorization: str | None
    ) -> tuple[int, bytes, dict[str, str]] | None:
        """Answer a request for one of the login endpoints, or None if it is for another path."""
        return _login.endpoint(self, method, path, query, body, authorization)
