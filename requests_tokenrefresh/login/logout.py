"""Logout: revoke the stored token where the server allows it, then delete the record."""

from __future__ import annotations

import logging

import requests

from .._client_auth import ClientAuth, ClientCert
from .._discovery import DEFAULT_TIMEOUT
from .._revocation import revoke_token
from ..exceptions import (
    InsecureTransportError,
    LoginError,
    RevocationError,
    TokenRefreshError,
)
from ..storage import TokenStorage
from ..storage.base import read_token

__all__ = ["logout"]

log: logging.Logger = logging.getLogger(__name__)


def logout(
    storage: TokenStorage,
    *,
    revocation_url: str | None = None,
    issuer: str | None = None,
    token_url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_auth: ClientAuth | None = None,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_insecure_http: bool = False,
    client_cert: ClientCert | None = None,
) -> bool:
    """Revoke the stored token where the server allows it, then delete the record, whatever happened.

    With neither ``revocation_url`` nor an ``issuer`` whose metadata has a revocation endpoint,
    nothing is revoked: the tokens stay valid at the server until they expire.

    Args:
        storage: the record to log out of.
        revocation_url: the revocation endpoint; from the ``issuer``'s metadata if not given.
        issuer: the authorization server.
        token_url: the token endpoint, the audience of a :class:`~requests_tokenrefresh.PrivateKeyJWT`
            assertion; from the ``issuer``'s metadata if not given.
        client_id: the client identifier.
        client_secret: the client secret of a confidential client.
        client_auth: how the client authenticates: ``"basic"`` (HTTP Basic), ``"post"`` (form body), a
            :class:`~requests_tokenrefresh.PrivateKeyJWT` or a :class:`~requests_tokenrefresh.ClientAssertion`
            (on every request to the server; see :doc:`/client-auth`). None: chosen from the
            issuer's metadata, else ``"basic"``.
        session: the session to send with; a private one by default.
        timeout: seconds for each HTTP request.
        allow_insecure_http: allow plain http to hosts that are not loopback (tests only).
        client_cert: a client certificate for mutual TLS (RFC 8705), as requests' ``cert``.

            .. versionadded:: 0.2

    Returns:
        True if the tokens were revoked at the server; False if there was nothing stored or no
        revocation endpoint.

    Raises:
        RevocationError: the revocation failed; the local record was deleted all the same
            (``deleted`` is True).
        TokenStorageError: the record could not be read (then nothing is revoked or deleted: a
            storage that is down, an encrypted record without its key; ``storage.delete()``
            removes it unread), or could not be deleted.
        ValueError: a :class:`~requests_tokenrefresh.PrivateKeyJWT` without an audience: neither
            ``token_url`` nor ``issuer`` is given; nothing is deleted.

    .. versionadded:: 0.2
    """
    failure: TokenRefreshError | None = None
    revoked = False
    # A record that cannot be read (a storage that is down, an encrypted record without its key)
    # is neither revoked nor deleted: TokenStorageError, and it stays as it is (storage.delete()
    # removes it unread).
    token = read_token(storage)
    if token is not None:
        try:
            if revocation_url is not None or issuer is not None:
                revoke_token(
                    token,
                    revocation_url=revocation_url,
                    issuer=issuer,
                    token_url=token_url,
                    client_id=client_id,
                    client_secret=client_secret,
                    client_auth=client_auth,
                    session=session,
                    timeout=timeout,
                    allow_insecure_http=allow_insecure_http,
                    client_cert=client_cert,
                )
                revoked = True
            else:
                log.info("logout: no revocation endpoint given; the token stays valid until it expires")
        except (LoginError, RevocationError) as exc:
            if exc.error != "missing_endpoint":
                failure = exc
            else:
                log.info("logout: %s; the token stays valid until it expires", exc)
        except InsecureTransportError as exc:
            failure = exc  # reported below, after the delete
    storage.delete()
    log.info("logout: deleted the stored token")
    if failure is not None:
        raise RevocationError(
            f"{failure} (the local record was deleted)",
            error=getattr(failure, "error", "revocation_failed"),
            retryable=getattr(failure, "retryable", False),
            deleted=True,
        ) from failure
    return revoked
