"""How the client proves who it is to the authorization server: a shared secret, or a signed assertion.

``client_auth`` is one of:

- ``"basic"``: ``client_secret_basic``, the id and secret in HTTP Basic (RFC 6749 §2.3.1);
- ``"post"``: ``client_secret_post``, the id and secret in the form body;
- :class:`PrivateKeyJWT`: ``private_key_jwt`` (RFC 7523 §2.2, OpenID Connect Core §9), a JWT this
  client signs with its private key, made anew for every request;
- :class:`ClientAssertion`: an assertion issued by someone else (a Kubernetes projected
  service-account token, a SPIFFE JWT-SVID) and read anew for every request (RFC 7521 §4.2).

An assertion goes in the form body as ``client_assertion_type`` and ``client_assertion``, with
``client_id``, on every call to the authorization server: the token endpoint (refresh, client
credentials, code exchange, device polls), the device authorization endpoint and the revocation
endpoint. Its audience is always the token endpoint's URL, as OpenID Connect Core §9 says it
SHOULD be (RFC 7523 §3 asks only for a value identifying the authorization server): a server
that wants its issuer identifier instead is given ``PrivateKeyJWT(..., audience=issuer)``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

__all__ = [
    "ALGORITHMS",
    "ASSERTION_LIFETIME",
    "CLIENT_ASSERTION_TYPE",
    "CLIENT_AUTH_METHODS",
    "ClientAssertion",
    "ClientAuth",
    "PrivateKeyJWT",
    "add_client_auth",
    "check_client_auth",
    "check_client_cert",
    "choose_client_auth",
    "method_name",
]

#: ``client_auth`` values that send a ``client_secret``: HTTP Basic (the default) or in the form body.
CLIENT_AUTH_METHODS = ("basic", "post")
#: The ``client_assertion_type`` of a JWT assertion (RFC 7523 §2.2).
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The signing algorithms :class:`PrivateKeyJWT` takes: RSA PKCS#1 v1.5, ECDSA P-256, RSA-PSS.
ALGORITHMS = ("RS256", "ES256", "PS256")
#: Seconds from ``iat`` to ``exp`` of a :class:`PrivateKeyJWT` assertion: one request's worth.
ASSERTION_LIFETIME = 60


class PrivateKeyJWT:
    """Authenticate the client with a JWT signed by its private key (``private_key_jwt``).

    Every request to the authorization server carries a new assertion: ``iss`` and ``sub`` are
    the ``client_id``, ``aud`` the token endpoint's URL (or ``audience``), ``jti`` a new random
    value, ``iat`` now and ``exp`` :data:`ASSERTION_LIFETIME` seconds later. The key is read once,
    here; it appears in no repr, log or error message.

    Example::

        auth = PrivateKeyJWT(Path("client-key.pem").read_bytes(), kid="2024-06", alg="ES256")
        adapter = TokenRefreshAdapter(storage, token_url=..., client_id="svc", client_auth=auth)

    Args:
        private_key: the PEM (PKCS#8 or traditional) of an RSA key (``RS256``, ``PS256``; 2048
            bits or more) or an EC P-256 key (``ES256``).
        kid: the key id registered at the server (the JWT header's ``kid``), if it wants one.
        alg: ``"RS256"`` (the default), ``"ES256"`` or ``"PS256"``.
        audience: the ``aud`` to send instead of the token endpoint's URL (a server that wants its
            issuer identifier).
        password: the password of an encrypted PEM.

    Raises:
        ValueError: ``private_key`` is no PEM private key (or the password is wrong), or does not
            fit ``alg``, or ``alg`` is not one of :data:`ALGORITHMS`.
        ImportError: the ``cryptography`` package is missing (``pip install
            'requests-tokenrefresh[crypto]'``).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        private_key: str | bytes,
        *,
        kid: str | None = None,
        alg: str = "RS256",
        audience: str | None = None,
        password: bytes | None = None,
    ) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"alg must be one of {ALGORITHMS}, not {alg!r}")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise ValueError("kid must be a non-empty string or None")
        if audience is not None and (not isinstance(audience, str) or not audience):
            raise ValueError("audience must be a non-empty string or None")
        self.kid = kid
        self.alg = alg
        self.audience = audience
        self._key = _load_private_key(private_key, alg, password)

    def __repr__(self) -> str:
        return f"PrivateKeyJWT(kid={self.kid!r}, alg={self.alg!r})"

    def __reduce__(self) -> Any:
        # A pickle would hold the key in the clear, wherever the bytes go: refuse.
        raise TypeError("a PrivateKeyJWT cannot be pickled (it holds a private key); make one in each process")

    def assertion(self, client_id: str, audience: str, now: float) -> str:
        """A new signed assertion of ``client_id`` for ``audience`` (``audience`` given here wins), at ``now``."""
        import jwt  # here: PyJWT is slow to import and only a refresh needs it

        issued = int(now)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.audience or audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.kid} if self.kid else None
        return str(jwt.encode(claims, self._key, algorithm=self.alg, headers=headers))


class ClientAssertion:
    """Authenticate the client with an assertion issued by someone else, read anew for every request.

    For workload identities: a Kubernetes projected service-account token, a SPIFFE JWT-SVID, a
    CI system's OIDC token. The file is read (or the callable called) on every request to the
    authorization server, so a token its issuer replaces while the process runs is picked up at
    the next request. Give exactly one of ``source`` and ``path``.

    Example::

        auth = ClientAssertion(path="/var/run/secrets/tokens/oauth-token")
        adapter = TokenRefreshAdapter(storage, token_url=..., grant_type="client_credentials",
                                      client_id="svc", client_auth=auth)

    Args:
        source: a callable that returns the assertion (a compact JWT).
        path: a file that holds it (surrounding whitespace is ignored).

    .. versionadded:: 0.2
    """

    def __init__(self, source: Callable[[], str] | None = None, *, path: str | os.PathLike[str] | None = None) -> None:
        if (source is None) == (path is None):
            raise ValueError("give exactly one of source (a callable) and path= (a file)")
        if source is not None and not callable(source):
            raise ValueError("source must be a callable that returns the assertion")
        self.source: Callable[[], str] | None = source
        self.path: Path | None = None if path is None else Path(path)

    def __repr__(self) -> str:
        if self.path is not None:
            return f"ClientAssertion(path={str(self.path)!r})"
        return f"ClientAssertion({getattr(self.source, '__qualname__', type(self.source).__name__)})"

    def assertion(self) -> str:
        """The assertion as it is now.

        Raises:
            OSError: the file could not be read.
            ValueError: it is empty, or the callable returned no string.
            Exception: whatever the callable raises.
        """
        if self.path is not None:
            value: object = self.path.read_text(encoding="utf-8")
        else:
            assert self.source is not None
            value = self.source()
        if not isinstance(value, str) or not value.strip():
            raise ValueError("the client assertion is empty")
        return value.strip()


#: A ``client_auth=`` value.
ClientAuth = str | PrivateKeyJWT | ClientAssertion
#: ``client_cert=``: a certificate file with its key in it, or the files of both (requests' ``cert``).
ClientCert = str | tuple[str, str]


def check_client_cert(cert: object) -> None:
    """Refuse a ``client_cert=`` requests could not use, now rather than at the first request.

    Raises:
        ValueError: not a path or a pair of paths, a file that is not there, or a key with a
            password (requests, through urllib3, cannot ask for it).
    """
    paths = cert if isinstance(cert, tuple) else (cert,)
    if (isinstance(cert, tuple) and len(cert) != 2) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError("client_cert must be a file path (certificate and key) or a (certificate, key) pair of paths")
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"client_cert: no file at {path!r}")
    try:
        with open(paths[-1], "rb") as file:  # the key: the second path, or the one file with both
            head = file.read(_PEM_HEAD_LIMIT)
        # PKCS#8's encrypted key, or a traditional PEM key with a Proc-Type header.
        encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in head or b"Proc-Type: 4,ENCRYPTED" in head
    except OSError as exc:
        raise ValueError(f"client_cert: cannot read {paths[-1]!r} ({exc.strerror})") from None
    if encrypted:
        raise ValueError(
            f"client_cert: the key in {paths[-1]!r} has a password, which requests cannot ask for: "
            "give it a copy without one (openssl pkey -in key.pem -out key-plain.pem), kept as a secret"
        )


#: Bytes of a key file read to see whether the key has a password (a PEM header says it).
_PEM_HEAD_LIMIT = 1 << 16
# RFC 8705 §2: the two ways a client's certificate authenticates it.
_MTLS_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")


def method_name(client_auth: ClientAuth | None, client_secret: str | None, client_cert: ClientCert | None) -> str:
    """The RFC 8414 name of how the client authenticates (``token_endpoint_auth_methods_supported``)."""
    if isinstance(client_auth, (PrivateKeyJWT, ClientAssertion)):
        return "private_key_jwt"
    if client_secret is None:
        return "tls_client_auth" if client_cert is not None else "none"
    return "client_secret_post" if client_auth == "post" else "client_secret_basic"


def choose_client_auth(
    client_auth: ClientAuth | None,
    client_secret: str | None,
    client_cert: ClientCert | None,
    metadata: Mapping[str, Any],
) -> ClientAuth:
    """The method to use with a server whose metadata lists ``token_endpoint_auth_methods_supported``.

    ``client_auth=None`` (not said) with a secret takes ``client_secret_basic`` if the server
    lists it, else ``client_secret_post``. A method the server does not list is an error, said
    before any credential is sent; a public client (``none``) is not checked, as many servers
    take one without listing it.

    Raises:
        LoginError: ``unsupported_client_auth``.
    """
    listed = metadata.get("token_endpoint_auth_methods_supported")
    if not isinstance(listed, list) or not listed:
        return client_auth if client_auth is not None else "basic"
    if client_auth is None and client_secret is not None:
        for name, method in (("client_secret_basic", "basic"), ("client_secret_post", "post")):
            if name in listed:
                return method
    chosen: ClientAuth = client_auth if client_auth is not None else "basic"
    name = method_name(chosen, client_secret, client_cert)
    if name == "none" or name in listed or (name == "tls_client_auth" and _MTLS_METHODS[1] in listed):
        return chosen
    from .exceptions import LoginError

    shown = ", ".join(str(m) for m in listed[:10])
    raise LoginError(
        f"unsupported_client_auth: the client authenticates with {name}, which the authorization server does "
        f"not list in token_endpoint_auth_methods_supported ({shown}); pass client_auth= (or client_cert=) "
        "for one it lists",
        error="unsupported_client_auth",
    )


def check_client_auth(client_auth: object, client_id: str | None, client_secret: str | None) -> None:
    """Refuse a ``client_auth`` that cannot work with ``client_id`` and ``client_secret``.

    Raises:
        ValueError: an unknown method, a secret with an assertion, a PrivateKeyJWT without ``client_id``.
    """
    if client_auth is None:
        return  # chosen from the server's metadata, else "basic"
    if isinstance(client_auth, (PrivateKeyJWT, ClientAssertion)):
        if client_secret is not None:
            raise ValueError(f"client_secret cannot be used with client_auth={client_auth!r}: give one or the other")
        if isinstance(client_auth, PrivateKeyJWT) and client_id is None:
            raise ValueError("client_auth=PrivateKeyJWT(...) needs client_id= (the assertion's iss and sub)")
        return
    if not isinstance(client_auth, str) or client_auth not in CLIENT_AUTH_METHODS:
        raise ValueError(
            f"client_auth must be one of {CLIENT_AUTH_METHODS}, a PrivateKeyJWT or a ClientAssertion, "
            f"not {client_auth!r}"
        )


def add_client_auth(
    data: dict[str, str],
    *,
    client_id: str | None,
    client_secret: str | None,
    client_auth: ClientAuth | None,
    audience: str,
    now: float,
) -> requests.auth.HTTPBasicAuth | None:
    """Put the client's credentials in the form ``data``; return the HTTP Basic auth to send, if any.

    Args:
        audience: the token endpoint's URL, the ``aud`` of a :class:`PrivateKeyJWT` assertion.
        now: epoch seconds, the assertion's ``iat``.

    Raises:
        OSError, ValueError, Exception: a :class:`ClientAssertion` could not be read (the caller
            translates it).
    """
    if isinstance(client_auth, PrivateKeyJWT):
        assert client_id is not None  # check_client_auth
        data["client_id"] = client_id
        data["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        data["client_assertion"] = client_auth.assertion(client_id, audience, now)
        return None
    if isinstance(client_auth, ClientAssertion):
        assertion = client_auth.assertion()
        if client_id is not None:
            data["client_id"] = client_id
        data["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        data["client_assertion"] = assertion
        return None
    if client_id is None:
        return None
    if client_auth in ("basic", None) and client_secret is not None:
        # RFC 6749 §2.3.1: form-encode id and secret before Basic encoding.
        return requests.auth.HTTPBasicAuth(quote(client_id, safe=""), quote(client_secret, safe=""))
    data["client_id"] = client_id
    if client_secret is not None:
        data["client_secret"] = client_secret
    return None


def _load_private_key(pem: str | bytes, alg: str, password: bytes | None) -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise ImportError(
            "PrivateKeyJWT needs the cryptography package: pip install 'requests-tokenrefresh[crypto]'"
        ) from None
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    if not isinstance(pem, bytes):
        raise ValueError(f"private_key must be the PEM of a private key (str or bytes), not {type(pem).__name__}")
    try:
        key = load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        # cryptography's message is about the data; say only what went wrong, never the bytes.
        wrong_password = isinstance(exc, TypeError) or password is not None
        reason = "the password is wrong or missing" if wrong_password else "not a PEM private key"
        raise ValueError(f"private_key cannot be loaded: {reason}") from None
    if alg in ("RS256", "PS256"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"alg={alg!r} needs an RSA private key, not {_kind(key)}")
        if key.key_size < 2048:
            raise ValueError(f"alg={alg!r} needs an RSA key of 2048 bits or more, not {key.key_size}")
    elif not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"alg='ES256' needs an EC private key on P-256, not {_kind(key)}")
    return key


def _kind(key: Any) -> str:
    curve = getattr(key, "curve", None)
    return f"an EC key on {curve.name}" if curve is not None else f"a {type(key).__name__.lstrip('_')}"
