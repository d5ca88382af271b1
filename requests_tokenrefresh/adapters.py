"""The transport adapter that keeps an access token valid for every request sent through it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import UnrewindableBodyError
from requests.utils import rewind_body

from ._client_auth import ClientAuth, ClientCert
from ._clock import Clock, as_clock
from ._coordinator import Coordinator
from ._dpop import DPoPKey, Nonces, nonce_challenge, policy
from ._grant import CallableGrant, ClientCredentialsGrant, OAuthRefreshGrant
from ._redact import fingerprint
from ._settings import (
    DEFAULT_LEEWAY,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REFRESH_TIMEOUT,
    GRANT_TYPES,
    Refresher,
    Settings,
    scope_string,
    status_codes,
    without_statuses,
)
from ._urls import is_secure, is_under, origin, without_userinfo
from .exceptions import (
    InsecureTransportError,
    LoginError,
    RefreshError,
    RevocationError,
    SessionExpiredError,
)
from .storage import TokenStorage
from .storage.base import read_token
from .tokens import Token

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_REFRESH_STATUS_CODES",
    "DEFAULT_REFRESH_TIMEOUT",
    "GRANT_TYPES",
    "Refresher",
    "TokenRefreshAdapter",
]

log: logging.Logger = logging.getLogger(__name__)

# Seconds a thread waits for another thread's refresh beyond DEFAULT_REFRESH_TIMEOUT (storage I/O).
_WAIT_MARGIN = 10.0
# Replays of one request at most: one after the refresh, one more only for a token replaced meanwhile.
_MAX_REPLAYS = 2


class TokenRefreshAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` that adds a valid access token to every request.

    Mount it on the URL prefix of the API; requests outside the mount (and outside ``base_url``,
    if given) never see the token:

        >>> import requests
        >>> from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter
        >>> storage = MemoryStorage(Token("access", refresh_token="refresh", expires_at=None))
        >>> adapter = TokenRefreshAdapter(storage, token_url="https://auth.example.com/oauth/token",
        ...                               client_id="my-app", client_secret="s3cret", pool_maxsize=32)
        >>> session = requests.Session()
        >>> session.mount("https://api.example.com/", adapter)

    The token is refreshed before it expires (``leeway`` seconds before, at most half its lifetime)
    and when a response has a status in ``refresh_status_codes``; then the request is sent once
    more. However many threads need a new token, one refresh is made.

    Args:
        storage: where the token is loaded from and saved to.
        token_url: the OAuth 2.0 token endpoint for the refresh_token grant (RFC 6749 §6).
        issuer: instead of ``token_url``, the authorization server (``"https://id.example.com"``):
            its token endpoint is read from its OpenID Connect / RFC 8414 metadata at the first
            refresh (once per process), and its revocation endpoint at :meth:`logout`.
        revocation_url: where :meth:`logout` revokes the tokens (RFC 7009), if not the issuer's.
        grant_type: ``"refresh_token"`` (the default), or ``"client_credentials"`` (RFC 6749
            §4.4) for a service account: each new token is fetched with ``client_id`` and
            ``client_secret`` alone, the first one too (nothing needs to be stored first), with the
            same single refresh per expiry, proactive window, 401 handling and retries.
        refresher: instead of ``token_url``, a callable that takes the current :class:`Token` and
            returns a new :class:`Token` or a token-response mapping; it raises
            :class:`SessionExpiredError` when the refresh token is rejected.
        client_id, client_secret: client credentials for the token endpoint, both optional.
        client_auth: how the client authenticates on every call to the authorization server:
            ``"basic"`` (``client_secret`` in HTTP Basic), ``"post"`` (in the form body), a
            :class:`PrivateKeyJWT` (a JWT signed with the client's key, made anew for each call,
            its audience the token endpoint) or a :class:`ClientAssertion` (a workload identity
            token, read anew for each call); neither of the last two with ``client_secret``. Not
            given (None): with an ``issuer`` whose metadata lists
            ``token_endpoint_auth_methods_supported``, ``client_secret_basic`` if listed, else
            ``client_secret_post``; otherwise ``"basic"``. A method the server does not list is
            refused at the first refresh (``unsupported_client_auth``), before any secret is sent.

            .. versionchanged:: 0.2
               :class:`PrivateKeyJWT` and :class:`ClientAssertion`; chosen from the issuer's
               metadata when not given.
        client_cert: a client certificate for mutual TLS (RFC 8705): the path of a PEM holding
            the certificate and its key, or a ``(certificate, key)`` pair of paths, as requests'
            ``cert``. It is presented on every token request (``tls_client_auth`` with no
            ``client_secret``; the issuer's ``mtls_endpoint_aliases`` are used) and on every request
            through the adapter that names no ``cert`` of its own, so that certificate-bound
            access tokens go out on connections that present their certificate.

            .. versionadded:: 0.2
        scope: a scope to ask for on refresh: a string, or strings (a list or tuple, sent in its
            order, or a set, sent sorted) joined with spaces; by default the granted scope is kept.
        leeway: seconds before expiry at which to refresh; never more than half the lifetime.
        refresh_status_codes: statuses that lead to a refresh and one replay.
        refresh_timeout: seconds one refresh may take, retries of transient failures included.
        on_refresh: called with the new :class:`Token` after every successful refresh made by this
            adapter, in the thread that made it: one of the adapter's own, never the caller's
            (every refresh runs in a worker thread, so that Ctrl-C cannot cut it short).
        on_session_expired: called with the :class:`SessionExpiredError`, once per expiry, in
            the adapter's worker thread too.
        on_refresh_token_expiring: called with the :class:`Token` (once per refresh token) when
            the server said when the refresh token expires and that is less than a day away (a
            quarter of its lifetime, if shorter): log in again before then. A WARNING is logged too.
        base_url: if given, only requests under this URL get the token.
        allow_insecure_http: allow sending the token over plain ``http://`` to hosts that are
            not loopback (or through a proxy that is not).
        dpop: ``True`` to ask for DPoP-bound tokens (RFC 9449): a key (ES256) is generated at the
            first token request and kept in the token record, so that every thread, process and
            host sharing the record signs with it; or a :class:`DPoPKey` you hold (never stored).
            Every token request and every request through the adapter then carries a new proof,
            with the nonce its origin last sent (a ``use_dpop_nonce`` answer is sent again once
            with it, with no refresh). A token whose record holds a key is sent with proofs
            whatever this says.

            .. versionadded:: 0.2
        allow_dpop_downgrade: with ``dpop``, accept a ``Bearer`` token answered to a token
            request that carried a proof; by default that is refused (``dpop_downgrade``), as a
            server that ignores the proof issues tokens anyone who sees them can use.
        clock: the source of time, for tests: a :class:`~requests_tokenrefresh.testing.FakeClock`
            (wall time, monotonic time and sleep: expiries, retry pauses and deadlines move only
            with it), or a callable returning epoch seconds (expiries only). What a server checks
            against its own clock, a DPoP proof's and a client assertion's ``iat``, is always
            the wall clock's.
        **kwargs: passed to :class:`~requests.adapters.HTTPAdapter` (``pool_maxsize``,
            ``max_retries`` ...). A ``urllib3.Retry`` whose ``status_forcelist`` names a status
            of ``refresh_status_codes`` is given without it: that status must reach the adapter,
            which answers it with a refresh and a replay, not with the rejected token again.

    Raises:
        ValueError: an argument is missing, unknown or out of range.

    .. versionadded:: 0.1
    """

    __attrs__: list[str] = [*HTTPAdapter.__attrs__, "_settings"]

    def __init__(
        self,
        storage: TokenStorage,
        *,
        token_url: str | None = None,
        issuer: str | None = None,
        revocation_url: str | None = None,
        grant_type: str = "refresh_token",
        refresher: Refresher | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_auth: ClientAuth | None = None,
        scope: str | Sequence[str] | AbstractSet[str] | None = None,
        leeway: float = DEFAULT_LEEWAY,
        refresh_status_codes: Iterable[int] = DEFAULT_REFRESH_STATUS_CODES,
        refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT,
        on_refresh: Callable[[Token], object] | None = None,
        on_session_expired: Callable[[SessionExpiredError], object] | None = None,
        on_refresh_token_expiring: Callable[[Token], object] | None = None,
        base_url: str | None = None,
        allow_insecure_http: bool = False,
        clock: Clock | Callable[[], float] = time.time,
        dpop: bool | DPoPKey = False,
        allow_dpop_downgrade: bool = False,
        client_cert: ClientCert | None = None,
        **kwargs: Any,
    ) -> None:
        self._settings = Settings(  # checks itself, as a Token does
            storage=storage,
            token_url=token_url,
            issuer=issuer,
            revocation_url=revocation_url,
            grant_type=grant_type,
            refresher=refresher,
            client_id=client_id,
            client_secret=client_secret,
            client_auth=client_auth,
            scope=scope_string(scope),
            leeway=leeway,
            refresh_status_codes=status_codes(refresh_status_codes),
            refresh_timeout=refresh_timeout,
            on_refresh=on_refresh,
            on_session_expired=on_session_expired,
            on_refresh_token_expiring=on_refresh_token_expiring,
            base_url=base_url,
            allow_insecure_http=allow_insecure_http,
            clock=clock,
            dpop=policy(dpop, allow_dpop_downgrade),
            client_cert=client_cert,
        )
        if "max_retries" in kwargs:
            kwargs["max_retries"] = without_statuses(kwargs["max_retries"], self._settings.refresh_status_codes)
        super().__init__(**kwargs)
        self._start()

    def _start(self) -> None:
        s = self._settings
        self._secure_origins: dict[str, bool] = {}  # "http://host:port" -> loopback?
        # ("http://host:port/", "http://host:port0"): the URLs under the origin last found to be
        # this machine sort between the two ("0" follows "/"), so one with no proxy needs no call.
        self._http_origin = ("", "")
        # Read on every request: plain attributes, not a walk through the settings.
        self._base_url = s.base_url
        self._allow_http = s.allow_insecure_http
        self._refresh_codes = s.refresh_status_codes
        self._client_cert = s.client_cert  # certificate-bound tokens go on connections that present it
        self._allow_downgrade = s.dpop is not None and s.dpop.allow_downgrade
        clock = as_clock(s.clock)
        self._clock = clock.time
        # The class after this one in the method resolution order (HTTPAdapter, or a transport
        # mixed in after it): `self._transport.send(self, ...)` is super().send(...), looked up
        # at each call (so a patched HTTPAdapter.send, as responses makes, is seen) without the
        # super object and bound method that cost CPython 3.11 as much as the rest of send().
        mro = type(self).__mro__
        self._transport: type[HTTPAdapter] = mro[mro.index(TokenRefreshAdapter) + 1]
        self._grant: OAuthRefreshGrant | CallableGrant
        if s.refresher is None:
            kind = ClientCredentialsGrant if s.grant_type == "client_credentials" else OAuthRefreshGrant
            self._grant = kind(
                s.token_url,
                issuer=s.issuer,
                client_id=s.client_id,
                client_secret=s.client_secret,
                client_auth=s.client_auth,
                scope=s.scope,
                allow_insecure_http=s.allow_insecure_http,
                clock=clock,
                dpop=s.dpop,
                client_cert=s.client_cert,
            )
        else:
            self._grant = CallableGrant(s.refresher, clock=clock)
        self._mints = self._grant.mints  # client credentials: a token of another key is replaced
        # The resource servers' DPoP nonces, one per origin; the grant keeps the token endpoint's
        # apart (RFC 9449 §8, §9: an authorization server and an API on one origin have their own).
        self._nonces = Nonces()
        self._coordinator = Coordinator(
            s.storage,
            self._grant,
            leeway=s.leeway,
            refresh_timeout=s.refresh_timeout,
            # Another process may hold the lease for a whole refresh; then ours takes as long. A
            # Redis lease waiter waits out two leases (a crashed holder's, then the next refresh),
            # so a thread waits for that and the refresh of its own leader.
            lease_timeout=s.refresh_timeout + _WAIT_MARGIN,
            wait_timeout=3 * (s.refresh_timeout + _WAIT_MARGIN),
            clock=clock,
            on_refresh=s.on_refresh,
            on_session_expired=s.on_session_expired,
            on_refresh_token_expiring=s.on_refresh_token_expiring,
        )

    @property
    def storage(self) -> TokenStorage:
        """The token storage this adapter loads from and saves to."""
        return self._settings.storage

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Send ``request`` with a valid token; refresh and replay once on a refresh status.

        Raises:
            SessionExpiredError: no token is stored, or the refresh token was rejected.
            RefreshError: the token could not be refreshed (see ``retryable``).
            TokenStorageError: the storage failed while no usable token was in memory.
            InsecureTransportError: the request would send the token over plain http.
            requests.exceptions.UnrewindableBodyError: the request needed a replay, but its
                body cannot be sent again; the token has been refreshed, so sending anew works.
        """
        # The common case (https, no base_url, no user info, a fresh token) makes no call of its
        # own: every call here costs more than the rest of the adapter's work (benchmarks/instructions.py).
        url = request.url or ""
        # `"https://" <= url < "https:/0"` is url.startswith("https://") without a call: the strings
        # with that prefix sort between the two ("0" follows "/"). requests lower-cases the scheme.
        https = "https://" <= url < "https:/0"
        if not https or self._base_url is not None or "@" in url:
            if self._base_url is None:
                # requests picks an adapter by str.startswith on the mount prefix, so a mount without
                # a trailing slash also matches "http://localhost@other/": user info means another host.
                if "@" in url and "@" in urlsplit(url).netloc:
                    return super().send(
                        request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
                    )
            elif not is_under(url, self._base_url):
                return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
            if not https and not self._allow_http:
                low, high = self._http_origin  # the last origin found on this machine, as a sort range
                if proxies or not low <= url < high:
                    self._check_transport(url, proxies)
        coordinator = self._coordinator
        fresh = coordinator.fresh  # the lock-free snapshot (the coordinator's Rule 1)
        if fresh is not None and self._clock() < fresh[1]:
            token, request.headers["Authorization"] = fresh[0], fresh[2]
        else:
            token = coordinator.token_for_request()
            request.headers["Authorization"] = token.authorization
        dpop = token.token_type == "DPoP"
        if dpop and self._mints and self._signing_key(token) is None:
            # Client credentials: a token minted with another key (another worker's, or before a
            # key change) is not ours to sign; mint one as a 401 would have made us, and send that.
            replacement = coordinator.token_after_rejection(token)
            if replacement is not None:
                token = replacement
                request.headers["Authorization"] = token.authorization
                dpop = token.token_type == "DPoP"
        if dpop:
            nonce = self._sign(request, token)
        elif token.dpop_jkt is not None and not self._allow_downgrade:
            raise RefreshError(
                f"dpop_downgrade: the token endpoint answered a {token.token_type!r} token to a request with a "
                "DPoP proof; it is stored, not sent: pass allow_dpop_downgrade=True to send it, or log in again",
                error="dpop_downgrade",
            )
        # By keyword, as requests calls an adapter: a transport or a mock (responses before 0.24)
        # may take them only so.
        if cert is None:
            cert = self._client_cert
        response = self._transport.send(
            self, request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )
        if dpop:
            options = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert, "proxies": proxies}
            response = self._nonce_retry(request, response, token, options, nonce)
        status = response.status_code
        if status < 300:  # refresh statuses are 4xx/5xx, redirects 3xx
            if coordinator.doubting:  # rarely: a new token was rejected on its replay
                coordinator.note_success(token)
            return response
        if status in self._refresh_codes and not (dpop and nonce_challenge(response)):
            # (A use_dpop_nonce answer to the nonce's retry wants yet another nonce, not a new
            # token: a refresh would not help, and would rotate the refresh token for nothing.)
            options = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert, "proxies": proxies}
            response = self._replay(request, response, token, options)
            status = response.status_code
        elif coordinator.doubting:
            coordinator.note_success(token)
        if 300 <= status < 400 and response.is_redirect:
            # requests builds the next hop from a copy of `request` and keeps Authorization when
            # the origin stays the same, whichever adapter then sends it. Leave no token on it:
            # if the next hop is ours again, it gets the current token here. Nor on the request
            # this response keeps (`request`, or a replay's copy): requests puts a redirect it
            # follows in the final response's history, which a response cache writes to disk, and
            # whether it follows (or where to) is decided after we return, often by another adapter.
            del request.headers["Authorization"]
            request.headers.pop("DPoP", None)  # a proof names this URL: the next hop gets its own
            sent = response.request
            if sent is not None and sent is not request:
                sent.headers.pop("Authorization", None)
                sent.headers.pop("DPoP", None)
        return response

    def refresh(self) -> Token:
        """Refresh the token now, whatever its expiry, and return the new one.

        Threads sending meanwhile share this refresh, as they would share one started by a 401.

        Raises:
            SessionExpiredError: no token is stored, or the refresh token was rejected.
            RefreshError: the token could not be refreshed (see ``retryable``).
            TokenStorageError: the storage failed.

        .. versionadded:: 0.1
        """
        token = self._coordinator.token_after_rejection(None)
        assert token is not None  # an explicit refresh is never declined
        return token

    def save_token(self, token: Token) -> None:
        """Save ``token`` to the storage and send with it from the next request on (an account switch).

        A refresh under way in another thread is dropped, never saved over ``token``. Other
        processes sharing the storage pick ``token`` up at their next store read (a refresh or
        a rejected request).

        Raises:
            TokenStorageError: the storage failed; this adapter sends with ``token`` anyway and
                saves it again later.

        .. versionadded:: 0.2
        """
        if not isinstance(token, Token):
            raise TypeError(f"save_token() takes a Token, not {type(token).__name__}")
        self._coordinator.reset(token)

    def logout(self, *, revoke: bool = True) -> None:
        """Sign out: stop sending the token, delete it from the storage, then revoke it.

        Requests then raise :class:`SessionExpiredError` (``no_token``) until a token is saved
        again (:meth:`save_token`). A refresh under way in another thread is dropped, never saved.
        Other processes sharing the storage stop at their next store read. With ``revoke`` and a
        revocation endpoint (``revocation_url``, or the ``issuer``'s), the refresh token and then
        the access token are revoked (RFC 7009) once nothing here can use them any more.

        Raises:
            RevocationError: a token could not be revoked; ``deleted`` is True: the local
                record is gone all the same.
            TokenStorageError: the storage failed; the token is no longer used here, but may still
                be stored (nothing was revoked). With no token in memory, a record that could not
                be read (a storage that is down, an encrypted record without its key) is neither
                deleted nor revoked, and nothing changes here.

        .. versionadded:: 0.2
        """
        token = self._coordinator.current()
        if token is None and revoke:
            # A record that cannot be read (the storage is down, a key is missing) is neither
            # revoked nor deleted: the error says so, and the record stays as it is.
            token = read_token(self._settings.storage)
        self._coordinator.reset(None)
        s = self._settings
        if not revoke or token is None or (s.revocation_url is None and s.issuer is None):
            return
        from ._revocation import revoke_token  # only a logout that revokes needs it

        try:
            revoke_token(
                token,
                revocation_url=s.revocation_url,
                issuer=s.issuer,
                # The assertion's audience (the metadata's token_endpoint, also behind an mTLS alias).
                token_url=self._grant.audience if isinstance(self._grant, OAuthRefreshGrant) else None,
                client_id=s.client_id,
                client_secret=s.client_secret,
                client_auth=getattr(self._grant, "client_auth", s.client_auth),  # as the metadata chose
                client_cert=s.client_cert,
                timeout=s.refresh_timeout,
                allow_insecure_http=s.allow_insecure_http,
            )
        except RevocationError as exc:
            exc.deleted = True
            raise
        except LoginError as exc:
            if exc.error != "missing_endpoint":
                raise RevocationError(f"{exc} (the local record was deleted)", error=exc.error, deleted=True) from None
            log.debug("the issuer publishes no revocation endpoint: nothing to revoke")

    def _replay(
        self, request: requests.PreparedRequest, rejected: requests.Response, used: Token, options: dict[str, Any]
    ) -> requests.Response:
        log.debug(
            "HTTP %s with token %s: refreshing and replaying", rejected.status_code, fingerprint(used.access_token)
        )
        history = [_released(rejected)]  # before the refresh, which may fail: the pool needs it back
        token = self._coordinator.token_after_rejection(used)
        if token is None:
            return rejected  # a token issued moments ago: this endpoint, not the token, says no
        while True:
            replay = _rewound_copy(request, rejected)
            replay.headers["Authorization"] = token.authorization
            if token.token_type == "DPoP":
                nonce = self._sign(replay, token)
                response = self._nonce_retry(replay, super().send(replay, **options), token, options, nonce)
            else:
                replay.headers.pop("DPoP", None)
                response = super().send(replay, **options)
            if response.status_code not in self._refresh_codes or len(history) >= _MAX_REPLAYS:
                break
            # A 401 on the replay is returned, never answered with another refresh. But if the
            # replay's token was itself replaced while it was in flight (a server that revokes the
            # old access token on each rotation, under load), replay once more with the newer one.
            token = self._coordinator.replacement(token)
            if token is None:
                break
            rejected = response
            history.append(_released(rejected))
        for old in history:
            # The rejected responses stay readable, but hold no live credential (a response
            # cache or a log of history must not capture a token).
            old.request = old.request.copy()
            old.request.headers.pop("Authorization", None)
            old.request.headers.pop("DPoP", None)
        response.history.extend(history)
        return response

    def _key_for(self, token: Token) -> DPoPKey | None:
        """The key to sign ``token``'s proofs with: this adapter's, else the record's."""
        dpop = self._settings.dpop
        return dpop.key if dpop is not None and dpop.key is not None else token.dpop_key

    def _signing_key(self, token: Token) -> DPoPKey | None:
        """:meth:`_key_for`, unless there is none or the token is bound to another: then None."""
        key = self._key_for(token)
        return None if key is None or token.dpop_jkt not in (None, key.thumbprint) else key

    def _sign(self, request: requests.PreparedRequest, token: Token, nonce: str | None = None) -> str | None:
        """Put a new DPoP proof for ``request`` and ``token`` in its ``DPoP`` header; the nonce it holds
        (``nonce``, else the one last learned for its origin)."""
        key = self._signing_key(token)
        if key is None:
            key = self._key_for(token)  # for the message: none, or another
            raise RefreshError(
                "dpop_key_missing: the token is bound to the DPoP key "
                + (f"{token.dpop_jkt}, " if token.dpop_jkt else "")
                + (
                    "which its record does not hold and this adapter was not given"
                    if key is None
                    else f"and this adapter's key is another ({key.thumbprint})"
                )
                + ": pass dpop=<the DPoPKey it was issued to>",
                error="dpop_key_missing",
            )
        url = request.url or ""
        if nonce is None:
            nonce = self._nonces.get(url)
        request.headers["DPoP"] = key.proof(
            request.method or "GET",
            url,
            nonce=nonce,
            access_token=token.access_token,  # iat: the wall clock's
        )
        return nonce

    def _nonce_retry(
        self,
        request: requests.PreparedRequest,
        response: requests.Response,
        token: Token,
        options: dict[str, Any],
        sent: str | None,
    ) -> requests.Response:
        """Learn the origin's DPoP nonce; a 401 asking for another than ``sent`` is sent again once with it."""
        url = request.url or ""
        self._nonces.learn(url, response)
        if not nonce_challenge(response) or response.headers["DPoP-Nonce"] == sent:
            return response
        log.debug("HTTP 401 use_dpop_nonce from %s: sending again with its nonce", origin(url))
        retry = _rewound_copy(request, response)
        _released(response)
        # The challenge's own nonce: another thread's answer may have put an older one in the cache.
        self._sign(retry, token, response.headers["DPoP-Nonce"])
        answer = self._transport.send(self, retry, **options)
        self._nonces.learn(url, answer)
        response.request = response.request.copy()
        response.request.headers.pop("Authorization", None)
        response.request.headers.pop("DPoP", None)
        answer.history.insert(0, response)
        return answer

    def _check_transport(self, url: str, proxies: Any) -> None:
        """Raise InsecureTransportError unless plain http to ``url`` stays on this machine."""
        if proxies:  # requests merged the environment's proxies in: the bytes go to the proxy
            secure = is_secure(url, proxies)
        else:
            cut = url.find("/", len("http://"))
            origin_ = url[:cut] if cut > 0 else url  # "http://host:port", the decision's only input
            cached = self._secure_origins.get(origin_)
            secure = is_secure(url) if cached is None else cached
            if cached is None and len(self._secure_origins) < 64:  # a few API hosts; never unbounded
                self._secure_origins[origin_] = secure
            if secure:
                self._http_origin = (origin_ + "/", origin_ + "0")
        if not secure:
            raise InsecureTransportError(
                f"refusing to send a token over plain http to {origin(url)}, which is not this machine or is "
                "reached through a proxy that is not; use https, or pass allow_insecure_http=True"
            )

    def close(self) -> None:
        """Wait for a refresh under way (at most ``refresh_timeout``), then close the pools.

        A refresh started in the background is given time to save a rotated refresh token
        before the process may end.
        """
        self._coordinator.close(self._settings.refresh_timeout + _WAIT_MARGIN)
        super().close()
        self._grant.close()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._start()  # a new coordinator: tokens are not pickled; the copy loads from storage

    def __repr__(self) -> str:
        s = self._settings
        if s.token_url:
            where = f"token_url={without_userinfo(s.token_url)!r}"
        elif s.issuer:
            where = f"issuer={without_userinfo(s.issuer)!r}"
        else:
            where = f"refresher={s.refresher!r}"
        secret = ", client_secret=<set>" if s.client_secret else ""
        if s.client_auth is not None and not isinstance(s.client_auth, str):
            secret = f", client_auth={s.client_auth!r}"
        return f"TokenRefreshAdapter({s.storage!r}, {where}, client_id={s.client_id!r}{secret})"


def _released(response: requests.Response) -> requests.Response:
    """Read ``response``'s body and give its connection back to the pool (it stays readable)."""
    response.content  # noqa: B018
    response.close()
    return response


def _rewound_copy(request: requests.PreparedRequest, rejected: requests.Response) -> requests.PreparedRequest:
    """A copy of ``request`` to send again, its file body rewound; never one with a spent body."""
    replay = request.copy()
    if replay.body is not None and not isinstance(replay.body, (bytes, str)):
        try:
            rewind_body(replay)
        except UnrewindableBodyError:
            # The error keeps the request and the 401 for the caller, without the token.
            replay.headers.pop("Authorization", None)
            rejected.request = replay
            raise UnrewindableBodyError(
                f"HTTP {rejected.status_code}: the token was refreshed, but the request body cannot "
                "be sent again (a generator or a spent stream); send the request anew",
                response=rejected,
                request=replay,
            ) from None
    return replay
