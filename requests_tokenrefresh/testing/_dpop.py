"""The testing kit's DPoP checks (RFC 9449): proof verification, the replay cache and the nonces.

:class:`~requests_tokenrefresh.testing.AuthServer` owns the settings, counters and logs (its
``dpop_*`` attributes); this module owns the rules. A proof is checked in this order, and the first
rule broken names the answer:

1. The ``DPoP`` header is there, once (else ``invalid_dpop_proof``, or, when the server accepts
   bearer requests too, no proof at all).
2. The JWT's header: ``typ`` ``dpop+jwt``, ``alg`` one of :data:`ALGORITHMS`, ``jwk`` a public key
   of that algorithm's type with no private member; the signature valid with that key.
3. The claims: ``htm`` the request's method, ``htu`` the request's URL (scheme and host compared
   case-insensitively, a default port dropped; a query or fragment is an error), ``iat`` within
   the window, a ``jti``; at the API ``ath`` the hash of the access token sent.
4. The nonce, when the server requires one: the current one of the endpoint kind, else
   ``use_dpop_nonce``. Only the current nonce is accepted, so a client's retry is visible.
5. The ``jti`` never seen before (the cache forgets a ``jti`` once its proof's ``iat`` is out of
   the window, when the proof could not be accepted anyway).

Nothing here logs a proof or a token: the logs keep the key's thumbprint and the proof's claims
``htm``, ``htu``, and whether it carried a nonce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = ["ALGORITHMS", "DPoPGuard", "DPoPSettings", "ProofError", "access_token_hash", "jwk_thumbprint"]

#: The JWS algorithms a proof may use.
ALGORITHMS = ("ES256", "RS256", "PS256")
_KTY = {"ES256": "EC", "RS256": "RSA", "PS256": "RSA"}
# RFC 7638 §3.2: the members a thumbprint hashes, per key type.
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
# RFC 7517/7518: the members only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a JWK, base64url without padding: a DPoP ``jkt``.

    Raises:
        ValueError: the key type is not EC, RSA or OKP, or a required member is missing.
    """
    members = _REQUIRED_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("not a public EC, RSA or OKP JWK")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    """A proof's ``ath`` for ``access_token``: base64url of its SHA-256 (RFC 9449 §4.2)."""
    return _b64(hashlib.sha256(access_token.encode()).digest())


def _normal_url(url: str) -> str:
    """``url`` with its scheme and host in lower case, a default port dropped and an empty path "/"."""
    parts = urlsplit(url)
    scheme, host, port = parts.scheme.lower(), parts.hostname or "", parts.port  # .port: ValueError if bad
    host = f"[{host}]" if ":" in host else host
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class ProofError(ValueError):
    """A proof the server refuses: :attr:`error` is ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class DPoPSettings(Protocol):
    """What :class:`DPoPGuard` reads from its server (the ``dpop_*`` attributes) and writes to it."""

    lock: threading.Lock
    dpop_nonce: bool
    dpop_nonce_interval: float
    dpop_nonce_shared: bool
    dpop_iat_window: float
    dpop_log: list[dict[str, Any]]
    dpop_rejections: list[str]
    dpop_nonce_errors: dict[str, int]


class DPoPGuard:
    """Checks DPoP proofs for one server: its replay cache and its nonces, one per endpoint kind.

    The kinds are ``"token"`` (the token endpoint) and ``"api"`` (the protected API, the resource
    server of RFC 9449 §9); they get separate nonces unless ``settings.dpop_nonce_shared``.

    Args:
        settings: the server, whose ``dpop_*`` attributes are read at every check.
    """

    def __init__(self, settings: DPoPSettings) -> None:
        self._settings = settings
        self._jtis: dict[str, float] = {}  # jti -> when the cache may forget it
        self._nonces: dict[str, tuple[str, float]] = {}  # kind -> (nonce, monotonic time it was made)

    def nonce(self, kind: str) -> str | None:
        """The current nonce of the endpoint ``kind`` (made anew once its interval passed), or None when off."""
        settings = self._settings
        if not settings.dpop_nonce:
            return None
        kind = "server" if settings.dpop_nonce_shared else kind
        with settings.lock:
            value, made = self._nonces.get(kind, ("", 0.0))
            if not value or time.monotonic() - made >= settings.dpop_nonce_interval:
                value = secrets.token_urlsafe(16)
                self._nonces[kind] = (value, time.monotonic())
            return value

    def rotate(self) -> None:
        """Replace every nonce: the next proof carrying an old one is answered ``use_dpop_nonce``."""
        with self._settings.lock:
            self._nonces.clear()

    def check(
        self,
        kind: str,
        proofs: Sequence[str],
        *,
        method: str,
        urls: Sequence[str],
        endpoint: str,
        access_token: str | None = None,
    ) -> str:
        """Check the ``DPoP`` header(s) of one request; return the key's thumbprint (``jkt``).

        Args:
            kind: ``"token"`` or ``"api"``: whose nonce the proof must carry.
            proofs: every ``DPoP`` header value the request carried.
            method: the request's method.
            urls: the URLs the request was sent to, as the server knows them (its own URL and the
                one the ``Host`` header names, each with the request's path).
            endpoint: the request's path, for :attr:`DPoPSettings.dpop_log`.
            access_token: the access token sent with the proof (at the API), whose hash ``ath`` must be.

        Raises:
            ProofError: the proof is invalid (logged in ``dpop_rejections``) or carries no current
                nonce (counted in ``dpop_nonce_errors``).
        """
        settings = self._settings
        try:
            jkt, claims = self._verified(proofs, method, urls, access_token)
        except ProofError as exc:
            with settings.lock:
                settings.dpop_rejections.append(exc.description)
            raise
        current = self.nonce(kind)
        with settings.lock:
            if current is not None and claims.get("nonce") != current:
                settings.dpop_nonce_errors[kind] = settings.dpop_nonce_errors.get(kind, 0) + 1
                raise ProofError("use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
            now = time.time()
            self._jtis = {jti: until for jti, until in self._jtis.items() if until > now}
            if claims["jti"] in self._jtis:
                settings.dpop_rejections.append("replayed jti")
                raise ProofError("invalid_dpop_proof", "replayed jti")
            self._jtis[claims["jti"]] = claims["iat"] + settings.dpop_iat_window + 1
            settings.dpop_log.append(
                {
                    "kind": kind,
                    "endpoint": endpoint,
                    "jkt": jkt,
                    "htm": claims["htm"],
                    "htu": claims["htu"],
                    "nonce": "nonce" in claims,
                }
            )
        return jkt

    def _verified(
        self, proofs: Sequence[str], method: str, urls: Sequence[str], access_token: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The proof's key thumbprint and claims, checked by rules 1 to 3 of the module docstring."""
        import jwt  # here: only a server in DPoP mode needs PyJWT

        if len(proofs) != 1:
            raise ProofError("invalid_dpop_proof", "expected exactly one DPoP header" if proofs else "no DPoP proof")
        try:
            header = jwt.get_unverified_header(proofs[0])
        except jwt.PyJWTError as exc:
            raise ProofError("invalid_dpop_proof", f"malformed proof: {type(exc).__name__}") from exc
        alg, jwk = header.get("alg"), header.get("jwk")
        if str(header.get("typ", "")).lower() != "dpop+jwt":
            raise ProofError("invalid_dpop_proof", "typ is not dpop+jwt")
        if alg not in ALGORITHMS:
            raise ProofError("invalid_dpop_proof", "alg not supported")
        if not isinstance(jwk, dict) or jwk.get("kty") != _KTY[alg]:
            raise ProofError("invalid_dpop_proof", "jwk missing or not a key for alg")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise ProofError("invalid_dpop_proof", "jwk holds a private key")
        if alg == "ES256" and jwk.get("crv") != "P-256":
            raise ProofError("invalid_dpop_proof", "ES256 needs a P-256 key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            jkt = jwk_thumbprint(jwk)
            claims: dict[str, Any] = jwt.decode(
                proofs[0],
                key,
                algorithms=[alg],
                options={"require": ["jti", "htm", "htu", "iat"], "verify_iat": False, "verify_aud": False},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise ProofError("invalid_dpop_proof", f"{type(exc).__name__}: {exc}") from exc
        self._check_claims(claims, method, urls, access_token)
        return jkt, claims

    def _check_claims(self, claims: dict[str, Any], method: str, urls: Sequence[str], access_token: str | None) -> None:
        if claims["htm"] != method:
            raise ProofError("invalid_dpop_proof", "htm is not the request's method")
        htu = claims["htu"]
        if not isinstance(htu, str) or "?" in htu or "#" in htu:
            raise ProofError("invalid_dpop_proof", "htu is not a URL without query and fragment")
        try:
            matches = _normal_url(htu) in {_normal_url(url) for url in urls}
        except ValueError:
            matches = False
        if not matches:
            raise ProofError("invalid_dpop_proof", "htu is not the request's URL")
        iat = claims["iat"]
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise ProofError("invalid_dpop_proof", "iat is not a number")
        if abs(time.time() - iat) > self._settings.dpop_iat_window:
            raise ProofError("invalid_dpop_proof", "iat outside the accepted window")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise ProofError("invalid_dpop_proof", "no jti")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise ProofError(
                "invalid_dpop_proof", "ath is not the access token's hash" if "ath" in claims else "no ath"
            )
