"""DPoP (RFC 9449): a key that tokens are bound to, and the proofs that show its possession.

A DPoP-bound access token goes out as ``Authorization: DPoP <token>`` with a ``DPoP`` header: a
JWT signed by the key (a *proof*) that names the request's method (``htm``) and URL without query
and fragment (``htu``), is fresh (``iat``, a new ``jti``), hashes the access token (``ath``) and
repeats the server's last nonce. Every token request carries one too (without ``ath``), and for a
public client the refresh token is bound to the key: whoever refreshes must sign with it. So a
key the library makes lives inside the token record, and every thread, process and host that
shares the record signs with the same key (an :class:`~requests_tokenrefresh.EncryptedStorage`
keeps it encrypted at rest).

Nonces (RFC 9449 §8, §9) are kept per origin: the authorization server and each resource server
send their own in ``DPoP-Nonce``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

__all__ = ["DPOP_ALGORITHMS", "DPoPKey", "DPoPPolicy", "Nonces", "htu", "nonce_challenge", "policy", "thumbprint"]

#: The signing algorithms a :class:`DPoPKey` takes: ECDSA P-256 (the default), RSA-PSS, RSA PKCS#1 v1.5.
DPOP_ALGORITHMS = ("ES256", "PS256", "RS256")
# The members of a public JWK that its RFC 7638 thumbprint hashes, by key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
#: The smallest RSA key a proof may be signed with (as for client assertions).
_RSA_MIN_BITS = 2048
# Members of a JWK that are private (RFC 7518 §6.2.2, §6.3.2): never in a proof's header.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class DPoPKey:
    """A key that DPoP-bound tokens are bound to; it signs the proofs.

    Make one with :meth:`generate` (ES256, P-256), :meth:`from_pem` (a key you keep), or
    :meth:`from_signer` (a key in a KMS or HSM that never leaves it). Give it to the adapter as
    ``TokenRefreshAdapter(..., dpop=key)``; with ``dpop=True`` the adapter generates one at the
    first token request and keeps it in the token record instead.

    The private key appears in no repr, log or error; :attr:`thumbprint` (RFC 7638, the ``jkt``
    the server binds tokens to) is what to show.

    Example::

        key = DPoPKey.from_pem(Path("dpop-key.pem").read_bytes())
        adapter = TokenRefreshAdapter(storage, issuer="https://id.example.com", client_id="cli", dpop=key)

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        private_key: Any,
        *,
        alg: str = "ES256",
        _signer: Callable[[bytes], bytes] | None = None,
        _public_jwk: Mapping[str, Any] | None = None,
    ) -> None:
        """Use :meth:`generate`, :meth:`from_pem`, :meth:`from_signer` or :meth:`from_jwk`.

        Args:
            private_key: a ``cryptography`` private key (EC P-256 or RSA), or None with ``_signer``.
            alg: the JWS algorithm of the proofs.
        """
        if alg not in DPOP_ALGORITHMS:
            raise ValueError(f"alg must be one of {DPOP_ALGORITHMS}, not {alg!r}")
        self.alg = alg
        self._key = private_key
        self._signer = _signer
        self._held = False  # given to an adapter or a login as dpop=: the user keeps it, never a record
        public = dict(_public_jwk) if _public_jwk is not None else _jwk(private_key.public_key())
        #: The public key as a JWK (a dict): what a proof's header carries.
        self.public_jwk: dict[str, Any] = {k: v for k, v in public.items() if k in _THUMBPRINT_MEMBERS[public["kty"]]}
        #: The key's RFC 7638 thumbprint (SHA-256, base64url): the ``jkt`` tokens are bound to.
        self.thumbprint: str = thumbprint(self.public_jwk)
        self._header = {"typ": "dpop+jwt", "alg": alg, "jwk": self.public_jwk}

    @classmethod
    def generate(cls) -> DPoPKey:
        """A new ES256 (EC P-256) key.

        Raises:
            ImportError: the ``cryptography`` package is missing.
        """
        ec = _ec()
        return cls(ec.generate_private_key(ec.SECP256R1()), alg="ES256")

    @classmethod
    def from_pem(cls, pem: str | bytes, *, alg: str = "ES256", password: bytes | None = None) -> DPoPKey:
        """A key from the PEM of an EC P-256 (``ES256``) or RSA (``PS256``, ``RS256``) private key.

        Raises:
            ValueError: not a PEM private key, a wrong password, or a key that does not fit ``alg``.
            ImportError: the ``cryptography`` package is missing.
        """
        from ._client_auth import _load_private_key

        if alg not in DPOP_ALGORITHMS:
            raise ValueError(f"alg must be one of {DPOP_ALGORITHMS}, not {alg!r}")
        return cls(_load_private_key(pem, alg, password), alg=alg)

    @classmethod
    def from_signer(
        cls, public_jwk: Mapping[str, Any], sign: Callable[[bytes], bytes], *, alg: str = "ES256"
    ) -> DPoPKey:
        """A key held elsewhere (a KMS, an HSM): ``sign`` signs a proof's signing input.

        Args:
            public_jwk: the public key as a JWK (``kty`` ``EC`` with ``crv``, ``x``, ``y``; or ``RSA``).
            sign: takes the JWS signing input (bytes) and returns the JWS signature for ``alg``
                (for ES256 the 64-byte ``R || S``, not DER).
            alg: the JWS algorithm ``sign`` makes.

        Such a key cannot be stored with a token record; every process must be given it.

        Raises:
            ValueError: ``public_jwk`` is no public JWK, or ``sign`` is not callable.
        """
        if not isinstance(public_jwk, Mapping) or public_jwk.get("kty") not in _THUMBPRINT_MEMBERS:
            raise ValueError("public_jwk must be a public JWK with kty EC, RSA or OKP")
        missing = [m for m in _THUMBPRINT_MEMBERS[public_jwk["kty"]] if not isinstance(public_jwk.get(m), str)]
        if missing or _PRIVATE_MEMBERS & set(public_jwk):
            raise ValueError(
                "public_jwk must be a public JWK: " + (f"{missing} missing" if missing else "it holds private members")
            )
        if not callable(sign):
            raise ValueError("sign must be a callable that signs bytes")
        if alg in DPOP_ALGORITHMS:  # else __init__ says which algorithms there are
            _check_key_type(public_jwk, alg, "public_jwk")
        return cls(None, alg=alg, _signer=sign, _public_jwk=public_jwk)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> DPoPKey:
        """A key from the private JWK a token record holds (:meth:`to_jwk`).

        Raises:
            ValueError: not a private EC P-256 or RSA JWK with an ``alg`` of :data:`DPOP_ALGORITHMS`.
            ImportError: the ``cryptography`` package is missing.
        """
        if not isinstance(jwk, Mapping) or "d" not in jwk or jwk.get("alg", "ES256") not in DPOP_ALGORITHMS:
            raise ValueError("the DPoP key must be a private JWK (with d) of alg ES256, PS256 or RS256")
        _ec()
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        alg = str(jwk.get("alg", "ES256"))
        _check_key_type(jwk, alg, "the DPoP key")
        try:
            key = (ECAlgorithm if alg == "ES256" else RSAAlgorithm).from_jwk(json.dumps(dict(jwk)))
        except Exception:  # PyJWT raises InvalidKeyError, ValueError, KeyError ... by member
            raise ValueError(f"the DPoP key is not a valid {alg} private JWK") from None
        if alg != "ES256" and key.key_size < _RSA_MIN_BITS:  # as from_pem
            raise ValueError(f"alg={alg!r} needs an RSA key of {_RSA_MIN_BITS} bits or more, not {key.key_size}")
        return cls(key, alg=alg)

    def _as_held(self) -> DPoPKey:
        """This key, as one the user holds: never written to a token record."""
        held = object.__new__(DPoPKey)  # not copy.copy: a DPoPKey refuses __reduce__
        held.__dict__.update(self.__dict__)
        held._held = True
        return held

    @property
    def storable(self) -> bool:
        """Whether a token record keeps the key: not a :meth:`from_signer` key, nor one given as ``dpop=``.

        A key the library made at a token request is kept with the token it is bound to; a key
        the user gave (``dpop=key``) is the user's to keep, and every process is given it.
        """
        return self._key is not None and not self._held

    def to_jwk(self) -> dict[str, Any]:
        """The private key as a JWK, with ``alg``: what a token record holds. Handle it as a secret.

        Raises:
            TypeError: a :meth:`from_signer` key, whose private part is elsewhere.
        """
        if self._key is None:
            raise TypeError("a DPoPKey.from_signer key has no private part here")
        return {**_jwk(self._key), "alg": self.alg}

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        now: float | None = None,
    ) -> str:
        """A new proof (a signed JWT) for a ``method`` request to ``url``.

        Args:
            nonce: the server's last ``DPoP-Nonce`` for ``url``'s origin, if any.
            access_token: the access token the request carries (its hash goes in ``ath``).
            now: epoch seconds for ``iat`` (the current time by default).
        """
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
        if self._signer is None:
            import jwt  # here: PyJWT is slow to import

            return str(jwt.encode(claims, self._key, algorithm=self.alg, headers=self._header))
        signing_input = f"{_b64(_compact(self._header))}.{_b64(_compact(claims))}".encode("ascii")
        return f"{signing_input.decode('ascii')}.{_b64(self._signer(signing_input))}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DPoPKey) and other.thumbprint == self.thumbprint and other.alg == self.alg

    def __hash__(self) -> int:
        return hash(self.thumbprint)

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, thumbprint={self.thumbprint!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a DPoPKey cannot be pickled (it holds a private key); store it with the token record")


class Nonces:
    """The last ``DPoP-Nonce`` each origin (authorization server, resource server) sent."""

    def __init__(self) -> None:
        self._by_origin: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> str | None:
        return self._by_origin.get(_origin(url))

    def learn(self, url: str, response: requests.Response) -> None:
        """Keep ``response``'s ``DPoP-Nonce``, if any, for ``url``'s origin."""
        nonce = response.headers.get("DPoP-Nonce")
        if not nonce or len(nonce) > 1024 or not nonce.isascii() or not nonce.isprintable():
            return
        key = _origin(url)
        with self._lock:
            if len(self._by_origin) >= 256 and key not in self._by_origin:
                self._by_origin.clear()  # many origins: bounded; each asks again once
            self._by_origin[key] = nonce


def nonce_challenge(response: requests.Response) -> bool:
    """Whether a resource server's 401 asks for a proof with its nonce (RFC 9449 §9)."""
    challenge = response.headers.get("WWW-Authenticate", "")
    return response.status_code == 401 and "use_dpop_nonce" in challenge and "DPoP-Nonce" in response.headers


def htu(url: str) -> str:
    """The ``htu`` of a proof: ``url`` without query, fragment and user info (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    scheme = parts.scheme.lower()
    default = parts.port is None or (scheme, parts.port) in (("https", 443), ("http", 80))
    return urlunsplit((scheme, host if default else f"{host}:{parts.port}", parts.path or "/", "", ""))


def _check_key_type(jwk: Mapping[str, Any], alg: str, what: str) -> None:
    """Refuse a JWK that ``alg`` cannot sign with: ES256 is EC P-256, PS256 and RS256 are RSA."""
    wanted = ("EC", "P-256") if alg == "ES256" else ("RSA", None)
    if (jwk.get("kty"), jwk.get("crv")) != wanted:
        shown = "/".join(str(v) for v in (jwk.get("kty"), jwk.get("crv")) if v is not None)
        needed = "/".join(w for w in wanted if w)
        raise ValueError(f"{what} is a {shown or 'JWK without kty'} key: {alg} signs with {needed} keys")
    if wanted[0] == "RSA" and isinstance(jwk.get("n"), str):
        bits = len(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)).lstrip(b"\0")) * 8
        if bits < _RSA_MIN_BITS:
            raise ValueError(f"alg={alg!r} needs an RSA key of {_RSA_MIN_BITS} bits or more, not about {bits}")


def thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of ``public_jwk``."""
    members = {name: public_jwk[name] for name in _THUMBPRINT_MEMBERS[public_jwk["kty"]]}
    return _b64(hashlib.sha256(_compact(members)).digest())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return f"{scheme}://{(parts.hostname or '').lower()}:{parts.port or _DEFAULT_PORTS.get(scheme, '')}"


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _jwk(key: Any) -> dict[str, Any]:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    ec = _ec()
    kind = ECAlgorithm if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) else RSAAlgorithm
    return dict(json.loads(kind.to_jwk(key)))


def _ec() -> Any:
    """cryptography's EC module, or an ImportError that says how to get it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise ImportError("DPoP needs the cryptography package: pip install 'requests-tokenrefresh[crypto]'") from None
    return ec


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DPoPPolicy:
    """What an adapter or login was told of DPoP, and the nonces it has learned.

    Args:
        key: a key the user holds (never stored with the record), or None: a key is generated
            at the first token request that has none, and kept in the token record.
        allow_downgrade: accept a ``Bearer`` token answered to a request with a proof.
    """

    def __init__(self, key: DPoPKey | None = None, *, allow_downgrade: bool = False) -> None:
        # A copy marked as the user's: the tokens bound to it keep only its thumbprint in their
        # record. The user's own object is left as it is (a token that holds it still stores it).
        self.key = key._as_held() if key is not None else None
        self.allow_downgrade = allow_downgrade
        self.nonces = Nonces()

    def __reduce__(self) -> Any:
        # A pickled adapter learns its nonces anew; a key it holds refuses to be pickled.
        return (DPoPPolicy, (self.key,), {"allow_downgrade": self.allow_downgrade})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.allow_downgrade = state["allow_downgrade"]

    def key_for(self, bound: DPoPKey | None, elsewhere: bool = False) -> DPoPKey | None:
        """The key to sign with: the user's, else the one the token is ``bound`` to, else a new
        one, unless the token is bound to a key that is not here (``elsewhere``): then None."""
        if self.key is not None:
            return self.key
        if bound is not None:
            return bound
        return None if elsewhere else DPoPKey.generate()


def policy(dpop: object, allow_downgrade: bool = False) -> DPoPPolicy | None:
    """The :class:`DPoPPolicy` of a ``dpop=`` argument (False, True or a :class:`DPoPKey`).

    Raises:
        ValueError: ``dpop`` is none of those.
    """
    if dpop is False or dpop is None:
        return None
    if dpop is True:
        _ec()  # the ImportError now, not at the first refresh
        return DPoPPolicy(allow_downgrade=allow_downgrade)
    if isinstance(dpop, DPoPKey):
        return DPoPPolicy(dpop, allow_downgrade=allow_downgrade)
    raise ValueError(f"dpop must be True, False or a DPoPKey, not {type(dpop).__name__}")
