"""The exceptions of requests-tokenrefresh.

Every exception this package raises derives from :class:`TokenRefreshError`, which is a
:class:`requests.RequestException`, so code that already catches requests' errors keeps working::

    requests.RequestException
     └── TokenRefreshError
          ├── EndpointError                the authorization server (or a refresher) said no or failed
          │    ├── RefreshError            a refresh failed
          │    │    └── SessionExpiredError    the refresh token is gone or rejected: log in again
          │    ├── LoginError              a login or discovery step failed; nothing was stored
          │    └── RevocationError         a token could not be revoked at logout
          ├── TokenStorageError            the token store (keyring) failed or holds a bad record
          │    └── LeaseLostError          a shared refresh lease ran out or another holder wrote
          └── InsecureTransportError       a token would go over plain http (also a ValueError)

Messages never contain a token, a refresh token or a client secret.
"""

from __future__ import annotations

from typing import Any

import requests

__all__ = [
    "EndpointError",
    "InsecureTransportError",
    "LeaseLostError",
    "LoginError",
    "RefreshError",
    "RevocationError",
    "SessionExpiredError",
    "TokenRefreshError",
    "TokenStorageError",
]


class TokenRefreshError(requests.RequestException):
    """Root of every error raised by requests-tokenrefresh.

    .. versionadded:: 0.1
    """


class EndpointError(TokenRefreshError):
    """The authorization server (or a user's refresher) refused a request or could not be reached.

    Its subclasses say which request: a refresh, a login step, a revocation. ``except
    RefreshError`` catches failed refreshes only; ``except EndpointError`` all three.

    Args:
        message: human-readable text; never contains a secret.
        error: the OAuth ``error`` code (RFC 6749 §5.2) or one of ours, such as
            ``"temporarily_unavailable"`` or ``"invalid_token_response"``.
        error_description: the server's ``error_description``, if any.
        retryable: whether sending again later may succeed (network trouble, 5xx, 429).
        retry_after: seconds the server asked us to wait (``Retry-After``), if any.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        message: str,
        *,
        error: str = "endpoint_error",
        error_description: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.error = error
        self.error_description = error_description
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword-only attributes when the error crosses a process boundary.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


class RefreshError(EndpointError):
    """A refresh failed.

    Takes the arguments of :class:`EndpointError`; ``error`` is ``"refresh_failed"`` unless given.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       A subclass of :class:`EndpointError`, as are :class:`LoginError` and
       :class:`RevocationError`, which are no longer subclasses of this one.
    """

    def __init__(self, message: str, *, error: str = "refresh_failed", **kwargs: Any) -> None:
        super().__init__(message, error=error, **kwargs)


class SessionExpiredError(RefreshError):
    """The session is over: no refresh token, or the server rejected it (``invalid_grant``).

    The stored tokens have been deleted; the user must log in again.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, error: str = "invalid_grant", **kwargs: Any) -> None:
        kwargs["retryable"] = False
        super().__init__(message, error=error, **kwargs)


class LoginError(EndpointError):
    """A login, discovery or revocation step failed; nothing was stored.

    ``error`` is the OAuth error code (``access_denied``, ``expired_token``, ``invalid_grant``
    ...) or one of ours (``timeout``, ``port_in_use``, ``invalid_metadata``, ``missing_endpoint``,
    ``network_error``). Messages never contain a code, verifier, token or client secret.

    .. versionadded:: 0.2
    """

    def __init__(self, message: str, *, error: str = "login_failed", **kwargs: Any) -> None:
        super().__init__(message, error=error, **kwargs)


class RevocationError(EndpointError):
    """A token could not be revoked at the revocation endpoint (RFC 7009).

    Attributes:
        deleted: whether the local record was deleted anyway (a logout always tries).

    .. versionadded:: 0.2
    """

    def __init__(self, message: str, *, error: str = "revocation_failed", deleted: bool = False, **kwargs: Any) -> None:
        super().__init__(message, error=error, **kwargs)
        self.deleted = deleted


class TokenStorageError(TokenRefreshError):
    """The token store could not be read or written, or holds a record that is not a token.

    .. versionadded:: 0.1
    """


class LeaseLostError(TokenStorageError):
    """A refresh lease on shared storage is no longer ours.

    Raised before a refresh request would be sent with a lease that ran out (or has too little
    time left), and by a conditional save when another holder wrote a newer token meanwhile. The
    refresh is not made, or its token is not stored over the newer one; it is safe to try again.

    .. versionadded:: 0.2
    """


class InsecureTransportError(TokenRefreshError, ValueError):
    """A token would be sent over plain ``http://`` to a host that is not loopback.

    Pass ``allow_insecure_http=True`` to the adapter to allow it anyway.

    .. versionadded:: 0.1
    """


def _rebuild(cls: type[EndpointError], args: tuple[Any, ...], state: dict[str, Any]) -> EndpointError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc
