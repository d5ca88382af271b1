"""Authorization server metadata: OpenID Connect discovery, then RFC 8414, read once per issuer.

The document is fetched from ``ISSUER/.well-known/openid-configuration`` and, when that is not
there, from RFC 8414's ``/.well-known/oauth-authorization-server`` (inserted before the issuer's
path). Its ``issuer`` must be the one asked for (RFC 8414 §3.3; a trailing slash is forgiven):
otherwise a document copied from, or pointing at, another server would route the user's
credentials there. A good document is cached for the life of the process. The whole discovery
is bounded by its timeout, not each read: a server trickling its answer cannot stretch it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import types
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from ._grant import request_before
from ._redact import without_request
from ._urls import check_url, origin
from .exceptions import InsecureTransportError, LoginError

__all__ = ["DEFAULT_TIMEOUT", "ProviderMetadata", "check_endpoint", "discover", "metadata_urls"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds to wait for each HTTP request to the authorization server.
DEFAULT_TIMEOUT = 30.0

_OIDC = "/.well-known/openid-configuration"
_RFC8414 = "/.well-known/oauth-authorization-server"
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "revocation_endpoint")
# Which flow needs which endpoint, for the error message.
_NEEDED_FOR = {
    "authorization_endpoint": "the browser login (authorization code grant)",
    "token_endpoint": "any login",
    "device_authorization_endpoint": "the device login (RFC 8628)",
    "revocation_endpoint": "token revocation (RFC 7009)",
}

_cache: dict[tuple[str, bool], ProviderMetadata] = {}
_cache_lock = threading.Lock()


# Kept here so that this module needs nothing from the login package; it belongs in exceptions.py.
@dataclasses.dataclass(frozen=True)
class ProviderMetadata:
    """What an authorization server publishes about itself (RFC 8414 / OpenID Connect Discovery).

    Attributes:
        issuer: the issuer identifier, as asked for.
        authorization_endpoint: where the browser goes to log in, or None.
        token_endpoint: where codes and refresh tokens are exchanged, or None.
        device_authorization_endpoint: where a device login starts (RFC 8628), or None.
        revocation_endpoint: where tokens are revoked (RFC 7009), or None.
        code_challenge_methods_supported: the PKCE methods the server lists, or None when it
            does not say (then S256 is assumed, as most servers support it without listing it).
        document: the whole metadata document, read-only.

    .. versionadded:: 0.2
    """

    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    document: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "document", types.MappingProxyType(dict(self.document)))

    @classmethod
    def from_document(cls, document: Mapping[str, Any], issuer: str) -> ProviderMetadata:
        """Check ``document`` against the ``issuer`` asked for and keep what the flows need.

        Raises:
            LoginError: the document is not an object, or names another issuer (``invalid_metadata``).
        """
        if not isinstance(document, Mapping):
            raise LoginError(
                f"invalid_metadata: the metadata of {issuer} is not a JSON object", error="invalid_metadata"
            )
        published = document.get("issuer")
        if not isinstance(published, str) or published.rstrip("/") != issuer.rstrip("/"):
            shown = published[:200] if isinstance(published, str) else repr(published)[:50]
            raise LoginError(
                f"invalid_metadata: asked for the issuer {issuer} but its metadata names the issuer {shown}; "
                "check the issuer URL (a document for another server is never used)",
                error="invalid_metadata",
            )
        fields: dict[str, Any] = {}
        for name in _ENDPOINTS:
            value = document.get(name)
            fields[name] = value if isinstance(value, str) and value else None
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list):
            fields["code_challenge_methods_supported"] = tuple(str(m) for m in methods)
        return cls(issuer=issuer, document=document, **fields)

    def endpoint(self, name: str, *, allow_insecure_http: bool = False) -> str:
        """Return the endpoint ``name`` (``"token_endpoint"`` ...), checked to be https (or loopback).

        Raises:
            LoginError: the server publishes no such endpoint (``missing_endpoint``), or not a URL.
            InsecureTransportError: it is plain http to a host that is not loopback.
        """
        value = getattr(self, name, None) if name in _ENDPOINTS else None
        if value is None:
            raise LoginError(
                f"missing_endpoint: the authorization server {self.issuer} publishes no {name} in its metadata, "
                f"which {_NEEDED_FOR.get(name, 'this flow')} needs",
                error="missing_endpoint",
            )
        return check_endpoint(name, value, allow_insecure_http)

    def check_pkce(self) -> None:
        """Make sure the server takes PKCE with S256 (RFC 7636), when it says which methods it takes.

        Raises:
            LoginError: ``code_challenge_methods_supported`` is published without ``S256``.
        """
        methods = self.code_challenge_methods_supported
        if methods is not None and "S256" not in methods:
            raise LoginError(
                f"unsupported_pkce: the authorization server {self.issuer} lists code_challenge_methods_supported "
                f"{list(methods)!r} without S256, which the browser login requires (RFC 7636)",
                error="unsupported_pkce",
            )


def check_endpoint(name: str, url: str, allow_insecure_http: bool) -> str:
    """Return ``url`` if it is an absolute https URL (or http to loopback, or allowed).

    Raises:
        InsecureTransportError: plain http to a host that is not loopback.
        LoginError: not an absolute http(s) URL.
    """
    try:
        check_url(name, url, allow_http=True)
    except ValueError as exc:
        raise LoginError(f"invalid_metadata: {exc}", error="invalid_metadata") from None
    try:
        check_url(name, url, allow_http=allow_insecure_http)
    except ValueError as exc:
        raise InsecureTransportError(str(exc)) from None
    return url


def metadata_urls(issuer: str) -> list[str]:
    """The two places metadata may be, in the order they are tried."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, path + _OIDC, "", ""))
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, _RFC8414 + path, "", ""))
    return [oidc, rfc8414]


def discover(
    issuer: str,
    *,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
) -> ProviderMetadata:
    """Read the metadata of the authorization server ``issuer``, once per process.

    OpenID Connect discovery is tried first, then RFC 8414. The result is cached per issuer;
    a failure is not.

    Args:
        issuer: the issuer identifier, such as ``"https://id.example.com"`` or
            ``"https://login.example.com/realms/main"``.
        session: the session to fetch with; a new one by default.
        timeout: seconds for the whole discovery, both documents and every byte of them: a
            server that trickles its answer is given up on then, as one that cannot be reached.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).

    Returns:
        The server's metadata; use :meth:`ProviderMetadata.endpoint` to get an endpoint a flow needs.

    Raises:
        InsecureTransportError: ``issuer`` is plain http to a host that is not loopback.
        LoginError: no metadata document was found (``metadata_not_found``), it could not be
            fetched within ``timeout`` (``network_error``, retryable), or it is invalid or names
            another issuer (``invalid_metadata``).
        ValueError: ``issuer`` is not an absolute http(s) URL.

    .. versionadded:: 0.2
    """
    check_url("issuer", issuer, allow_http=True)
    if urlsplit(issuer).query or urlsplit(issuer).fragment:
        raise ValueError("issuer must have no query or fragment (RFC 8414 §2)")
    try:
        check_url("issuer", issuer, allow_http=allow_insecure_http)
    except ValueError as exc:
        raise InsecureTransportError(str(exc)) from None
    key = (issuer, allow_insecure_http)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    own = session is None
    http = requests.Session() if session is None else session
    try:
        metadata = _fetch(http, issuer, timeout)
    finally:
        if own:
            http.close()
    with _cache_lock:
        _cache[key] = metadata
    return metadata


def _fetch(session: requests.Session, issuer: str, timeout: float) -> ProviderMetadata:
    """Read the metadata within ``timeout`` seconds from now, every request and every byte included.

    requests' timeout bounds each wait for a byte, so a server that trickles its answer (status
    line, headers or body) would hold the caller, an adapter's first refresh perhaps, for as long
    as it likes. The requests run in a daemon thread that the caller waits for until the deadline.
    A body still arriving then is cut off by :func:`read_before`'s watchdog, which ends the thread
    too; headers still arriving keep it until the server stops or one read waits ``timeout``.
    """
    deadline = time.monotonic() + timeout
    outcome: list[ProviderMetadata | BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(_read(session, issuer, timeout, deadline))
        except BaseException as exc:  # handed to the caller, who raises it
            outcome.append(exc)
        finally:
            done.set()

    try:
        threading.Thread(target=run, name="metadata-fetch", daemon=True).start()
    except RuntimeError:
        run()  # no new thread while the interpreter exits: then each read is bounded, not the whole
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise _too_slow(issuer, timeout)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _too_slow(issuer: str, timeout: float) -> LoginError:
    return LoginError(
        f"network_error: the metadata of {origin(issuer)} did not arrive within {timeout:g} seconds",
        error="network_error",
        retryable=True,
    )


def _read(session: requests.Session, issuer: str, timeout: float, deadline: float) -> ProviderMetadata:
    tried: list[str] = []
    for url in metadata_urls(issuer):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _too_slow(issuer, timeout)
        log.debug("reading authorization server metadata from %s", url)
        try:
            response = request_before(session, "GET", url, deadline, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise LoginError(
                f"network_error: could not read the metadata of {origin(issuer)} ({type(exc).__name__})",
                error="network_error",
                retryable=True,
            ) from without_request(exc)
        if response.status_code == 200:
            try:
                document = response.json()
            except (ValueError, RecursionError):
                raise LoginError(
                    f"invalid_metadata: {url} did not answer with JSON", error="invalid_metadata"
                ) from None
            return ProviderMetadata.from_document(document, issuer)
        tried.append(f"{url} (HTTP {response.status_code})")
        if response.status_code >= 500:
            break  # a broken server, not a missing document: do not guess further
    raise LoginError(
        f"metadata_not_found: no authorization server metadata for {issuer}: tried {', '.join(tried)}; "
        "check the issuer URL, or pass the endpoint URLs instead",
        error="metadata_not_found",
        retryable=any("HTTP 5" in t for t in tried),
    )


def _clear_cache() -> None:
    """Forget every cached document (tests)."""
    with _cache_lock:
        _cache.clear()
